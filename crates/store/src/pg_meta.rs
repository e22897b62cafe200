//! The shared metadata backend: PostgreSQL, so that several `vault-server`
//! replicas serve one vault. Every table of [`Table`] is rows of one
//! relation, `mlvault_kv (tbl, k, v)`, with the key as bytes (so it sorts
//! as redb's keys do); a write is a SERIALIZABLE transaction, retried when
//! PostgreSQL reports a conflict with a concurrent one, so every rule the
//! conformance suite checks holds across replicas as it does in one
//! process. The schema is created at open under an advisory lock, so
//! replicas may start together. A database elsewhere is reached over TLS
//! (rustls, ring), verified, never in clear.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::types::Type;
use postgres::{IsolationLevel, NoTls};
use r2d2_postgres::PostgresConnectionManager;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::kv::{Journal, Kv, LogRow, Meta, Table, Tx};
use crate::{Error, Result};

/// Metadata in a PostgreSQL database.
pub type PgMeta = Meta<PgKv>;

/// The schema's version, recorded in `mlvault_schema`.
const SCHEMA_VERSION: i32 = 2;

/// Key of the advisory lock held while the schema is created or upgraded.
const MIGRATION_LOCK: i64 = 0x6d6c_7661_756c_7401;

/// How often a write that lost to a concurrent one is tried again.
const MAX_ATTEMPTS: u32 = 50;

const MIGRATIONS: &str = "
CREATE TABLE IF NOT EXISTS mlvault_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS mlvault_kv (
    tbl text NOT NULL,
    k bytea NOT NULL,
    v bytea NOT NULL,
    PRIMARY KEY (tbl, k)
);
CREATE TABLE IF NOT EXISTS mlvault_audit (seq bigint PRIMARY KEY, line text NOT NULL);
CREATE TABLE IF NOT EXISTS mlvault_audit_head (
    id integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    hash text NOT NULL
);
CREATE TABLE IF NOT EXISTS mlvault_usage (
    k text NOT NULL,
    win bigint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (k, win)
);
CREATE TABLE IF NOT EXISTS mlvault_pulls (
    principal text NOT NULL,
    at_ms bigint NOT NULL,
    bytes bigint NOT NULL,
    artifact text NOT NULL
);
CREATE INDEX IF NOT EXISTS mlvault_pulls_by_principal ON mlvault_pulls (principal, at_ms);
CREATE INDEX IF NOT EXISTS mlvault_pulls_by_time ON mlvault_pulls (at_ms);
INSERT INTO mlvault_audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (id) DO NOTHING;
";

/// Entries read per query when a whole log is walked.
const LOG_PAGE: i64 = 5000;

/// A connection and the statements prepared on it (a statement is parsed
/// and planned once per connection, not once per query).
struct Conn {
    client: postgres::Client,
    statements: Statements,
}

/// Statements prepared on one connection, by their text.
type Statements = std::collections::HashMap<&'static str, postgres::Statement>;

impl std::ops::Deref for Conn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

/// A manager of plain clients whose connections carry their statements.
#[derive(Debug)]
struct Prepared<M>(M);

impl<M> r2d2::ManageConnection for Prepared<M>
where
    M: r2d2::ManageConnection<Connection = postgres::Client, Error = postgres::Error>,
{
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<Conn, postgres::Error> {
        Ok(Conn {
            client: self.0.connect()?,
            statements: Statements::new(),
        })
    }

    fn is_valid(&self, c: &mut Conn) -> std::result::Result<(), postgres::Error> {
        self.0.is_valid(&mut c.client)
    }

    fn has_broken(&self, c: &mut Conn) -> bool {
        self.0.has_broken(&mut c.client)
    }
}

type PlainManager = Prepared<PostgresConnectionManager<NoTls>>;
type TlsManager = Prepared<PostgresConnectionManager<MakeRustlsConnect>>;

/// Connections in clear (loopback only) or over TLS.
enum Pool {
    Plain(r2d2::Pool<PlainManager>),
    Tls(r2d2::Pool<TlsManager>),
}

/// A pooled connection of either kind.
enum Pooled {
    Plain(r2d2::PooledConnection<PlainManager>),
    Tls(r2d2::PooledConnection<TlsManager>),
}

impl std::ops::Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        match self {
            Pooled::Plain(c) => c,
            Pooled::Tls(c) => c,
        }
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        match self {
            Pooled::Plain(c) => c,
            Pooled::Tls(c) => c,
        }
    }
}

/// A pool of connections to one database.
pub struct PgKv {
    /// Always `Some` until dropped.
    pool: Option<Pool>,
    /// The audit chain's head as this process last moved it: what the
    /// next append tries first.
    log_head: std::sync::Mutex<Option<(u64, String)>>,
}

impl Drop for PgKv {
    /// Closing a connection blocks on the client's own runtime, which
    /// cannot start on a thread inside another runtime (a server's, as it
    /// shuts down and drops the last handle): the pool is closed on a
    /// thread of its own then.
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl std::fmt::Debug for PgKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv").finish_non_exhaustive()
    }
}

fn pg(e: postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::Meta(format!(
            "PostgreSQL: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => Error::Backend(format!("PostgreSQL: {e}")),
    }
}

fn pool_error(e: r2d2::Error) -> Error {
    Error::Backend(format!("PostgreSQL unreachable: {e}"))
}

/// Whether PostgreSQL made this transaction fail because of a concurrent
/// one: running it again may succeed.
fn is_conflict(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The roots a TLS connection to the database is verified against: the
/// certificates of `ca_file` (PEM), else the system's.
fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::Meta(format!(
                        "cannot read the database CA `{}`: {e}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(Error::Meta(format!(
                    "the database CA `{}` holds no certificate",
                    path.display()
                )));
            }
            for c in certs {
                roots.add(c).map_err(|e| {
                    Error::Meta(format!("a database CA certificate is refused: {e}"))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(Error::Meta(
                    "no system root certificates to verify the database with; give its CA (`ca_file`)".into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// A pool over `manager`, after one connection made directly so that a
/// refusal (a certificate, a password, a missing database) is reported as
/// PostgreSQL or TLS gave it, not as the pool's timeout.
fn pool_of<M>(manager: M, connections: u32) -> Result<r2d2::Pool<M>>
where
    M: r2d2::ManageConnection<Error = postgres::Error>,
{
    let first = off_runtime(|| {
        manager
            .connect()
            .map(drop)
            .map_err(|e| Error::Backend(format!("cannot connect to PostgreSQL: {e}")))
    });
    first?;
    // A checkout is not tested with a query of its own (a round trip per
    // transaction): a connection that broke fails its transaction, and
    // the pool drops it.
    r2d2::Pool::builder()
        .max_size(connections.max(1))
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(10))
        .build(manager)
        .map_err(pool_error)
}

fn is_local(host: &postgres::config::Host) -> bool {
    match host {
        postgres::config::Host::Tcp(h) => {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        postgres::config::Host::Unix(_) => true,
    }
}

impl Meta<PgKv> {
    /// Connect to the database `url` names (`postgres://user@host:port/db`)
    /// with at most `connections` connections, and create or upgrade the
    /// schema. Connections use TLS, required (never downgraded) and
    /// verified against `ca_file` (PEM) or else the system's roots,
    /// whenever `ca_file` is given or the host is not this machine: only a
    /// loopback address or a Unix socket is used in clear.
    pub fn connect(url: &str, connections: u32, ca_file: Option<&Path>) -> Result<Self> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|_| Error::Meta("the PostgreSQL URL cannot be parsed".into()))?;
        let tls = ca_file.is_some() || !config.get_hosts().iter().all(is_local);
        let pool = if tls {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let client = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Meta(format!("TLS setup: {e}")))?
                .with_root_certificates(roots(ca_file)?)
                .with_no_client_auth();
            config.ssl_mode(SslMode::Require);
            let manager = Prepared(PostgresConnectionManager::new(
                config,
                MakeRustlsConnect::new(client),
            ));
            Pool::Tls(pool_of(manager, connections)?)
        } else {
            config.ssl_mode(SslMode::Disable);
            let manager = Prepared(PostgresConnectionManager::new(config, NoTls));
            Pool::Plain(pool_of(manager, connections)?)
        };
        let kv = PgKv {
            pool: Some(pool),
            log_head: std::sync::Mutex::new(None),
        };
        off_runtime(|| kv.migrate())?;
        Meta::over(kv)
    }

    /// Whether this store's connections to the database are encrypted
    /// (as PostgreSQL itself reports for one of them).
    pub fn connection_encrypted(&self) -> Result<bool> {
        let mut c = self.kv.client()?;
        off_runtime(|| {
            Ok(c.query_one(
                "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .map_err(pg)?
            .get(0))
        })
    }
}

fn read_log_head(c: &mut postgres::Client) -> Result<(u64, String)> {
    let row = c
        .query_one("SELECT seq, hash FROM mlvault_audit_head WHERE id = 1", &[])
        .map_err(pg)?;
    let seq: i64 = row.get(0);
    let seq = u64::try_from(seq)
        .map_err(|_| Error::Meta("the audit head's sequence number is negative".into()))?;
    Ok((seq, row.get(1)))
}

/// The sequence numbers and lines of `rows`, as the arrays an insert
/// of the log unnests.
fn columns(rows: &[LogRow]) -> Result<(Vec<i64>, Vec<&str>)> {
    let seqs = rows
        .iter()
        .map(|r| seq_i64(r.seq))
        .collect::<Result<Vec<i64>>>()?;
    Ok((seqs, rows.iter().map(|r| r.line.as_str()).collect()))
}

fn seq_i64(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| Error::Meta("a log sequence number out of range".into()))
}

/// The shared log: the audit chain of every server on this database, one
/// row per entry, and its head (last sequence number and hash) in a row of
/// its own that an append holds locked until it commits, so appends from
/// several servers form one chain.
impl Meta<PgKv> {
    /// Append the rows `build` makes on top of the head (sequence number
    /// and hash of the last entry), atomically: one statement moves the
    /// head from what `build` was given to the last row and inserts the
    /// rows, or does nothing when another server appended first; `build`
    /// is then called again on the new head. So appends from every server
    /// on this database form one chain, each in one round trip while
    /// nobody else appends (the head this process saw last is tried first).
    pub fn log_append(
        &self,
        build: &mut (dyn FnMut(u64, &str) -> Vec<LogRow> + Send),
    ) -> Result<()> {
        off_runtime(|| {
            let mut c = self.kv.client()?;
            let mut head = self
                .kv
                .log_head
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for _ in 0..MAX_ATTEMPTS {
                let (seq, hash) = match head.take() {
                    Some(h) => h,
                    None => read_log_head(&mut c)?,
                };
                let rows = build(seq, &hash);
                let Some(last) = rows.last() else {
                    return Ok(());
                };
                let (seqs, lines) = columns(&rows)?;
                let inserted = c
                    .execute(
                        "WITH head AS (
                            UPDATE mlvault_audit_head SET seq = $3, hash = $4
                            WHERE id = 1 AND seq = $1 AND hash = $2
                            RETURNING 1
                        )
                        INSERT INTO mlvault_audit (seq, line)
                        SELECT s, l FROM unnest($5::bigint[], $6::text[]) AS t(s, l), head",
                        &[
                            &seq_i64(seq)?,
                            &hash,
                            &seq_i64(last.seq)?,
                            &last.hash,
                            &seqs,
                            &lines,
                        ],
                    )
                    .map_err(pg)?;
                if inserted as usize == rows.len() {
                    *self.kv.log_head.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((last.seq, last.hash.clone()));
                    return Ok(());
                }
                // Another server appended first: build on its head.
            }
            Err(Error::Conflict(format!(
                "the audit chain moved under {MAX_ATTEMPTS} appends in a row; try again"
            )))
        })
    }

    /// The head: sequence number and hash of the last entry appended.
    pub fn log_head(&self) -> Result<(u64, String)> {
        off_runtime(|| read_log_head(&mut *self.kv.client()?))
    }

    /// Every entry's line in order of sequence number, until `visit`
    /// returns false.
    pub fn log_scan(&self, visit: &mut (dyn FnMut(&[u8]) -> bool + Send)) -> Result<()> {
        off_runtime(|| {
            let mut c = self.kv.client()?;
            let mut after = -1i64;
            loop {
                let rows = c
                    .query(
                        "SELECT seq, line FROM mlvault_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                        &[&after, &LOG_PAGE],
                    )
                    .map_err(pg)?;
                for row in &rows {
                    after = row.get(0);
                    let line: &str = row.get(1);
                    if !visit(line.as_bytes()) {
                        return Ok(());
                    }
                }
                if (rows.len() as i64) < LOG_PAGE {
                    return Ok(());
                }
            }
        })
    }

    /// The last `n` entries' lines, oldest first.
    pub fn log_tail(&self, n: usize) -> Result<Vec<String>> {
        off_runtime(|| {
            let mut c = self.kv.client()?;
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            let rows = c
                .query(
                    "SELECT line FROM mlvault_audit ORDER BY seq DESC LIMIT $1",
                    &[&n],
                )
                .map_err(pg)?;
            Ok(rows.iter().rev().map(|r| r.get(0)).collect())
        })
    }

    /// Move the whole log aside, as table `mlvault_audit_broken_SUFFIX`
    /// (returned), and start an empty one, holding the head locked.
    pub fn log_move_aside(&self, suffix: u64) -> Result<String> {
        off_runtime(|| {
            let mut c = self.kv.client()?;
            let mut tx = c.transaction().map_err(pg)?;
            tx.query_one(
                "SELECT seq FROM mlvault_audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .map_err(pg)?;
            let aside = format!("mlvault_audit_broken_{suffix}");
            tx.batch_execute(&format!(
                "ALTER TABLE mlvault_audit RENAME TO {aside};
                 ALTER TABLE {aside} RENAME CONSTRAINT mlvault_audit_pkey TO {aside}_pkey;
                 CREATE TABLE mlvault_audit (seq bigint PRIMARY KEY, line text NOT NULL);
                 UPDATE mlvault_audit_head SET seq = 0, hash = '{}' WHERE id = 1;",
                "0".repeat(64)
            ))
            .map_err(pg)?;
            tx.commit().map_err(pg)?;
            *self.kv.log_head.lock().unwrap_or_else(|p| p.into_inner()) = None;
            Ok(aside)
        })
    }
}

/// What the replicas count together: rate-limit windows and pulls.
impl Meta<PgKv> {
    /// Add `adds` (key, amount) to the counters of window `win`, and drop
    /// counters older than the window before the last; the totals of
    /// those keys in `win`, counting every replica's additions.
    pub fn usage_add(&self, win: u64, adds: &[(String, u64)]) -> Result<Vec<(String, u64)>> {
        let win = seq_i64(win)?;
        let keys: Vec<&str> = adds.iter().map(|(k, _)| k.as_str()).collect();
        let amounts: Vec<i64> = adds
            .iter()
            .map(|(_, n)| i64::try_from(*n).unwrap_or(i64::MAX))
            .collect();
        off_runtime(|| {
            let mut c = self.kv.client()?;
            c.execute("DELETE FROM mlvault_usage WHERE win < $1", &[&(win - 1)])
                .map_err(pg)?;
            let rows = c
                .query(
                    "INSERT INTO mlvault_usage (k, win, n)
                     SELECT k, $1, n FROM unnest($2::text[], $3::bigint[]) AS t(k, n)
                     ON CONFLICT (k, win) DO UPDATE SET n = mlvault_usage.n + EXCLUDED.n
                     RETURNING k, n",
                    &[&win, &keys, &amounts],
                )
                .map_err(pg)?;
            Ok(rows
                .iter()
                .map(|r| {
                    let n: i64 = r.get(1);
                    (r.get(0), u64::try_from(n).unwrap_or(0))
                })
                .collect())
        })
    }

    /// Record a pull of `bytes` of `artifact` by `principal` at `now_ms`,
    /// forget every pull before `since_ms`, and return the
    /// bytes and distinct artifacts it pulled since then, on every replica.
    pub fn observe_pull(
        &self,
        principal: &str,
        now_ms: u64,
        since_ms: u64,
        bytes: u64,
        artifact: &str,
    ) -> Result<(u64, u64)> {
        let (now_ms, since_ms) = (seq_i64(now_ms)?, seq_i64(since_ms)?);
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        off_runtime(|| {
            let mut c = self.kv.client()?;
            let mut tx = c.transaction().map_err(pg)?;
            // Every principal's pulls older than the window go, so that
            // one who stops pulling leaves nothing behind.
            tx.execute("DELETE FROM mlvault_pulls WHERE at_ms < $1", &[&since_ms])
                .map_err(pg)?;
            tx.execute(
                "INSERT INTO mlvault_pulls (principal, at_ms, bytes, artifact) VALUES ($1, $2, $3, $4)",
                &[&principal, &now_ms, &bytes, &artifact],
            )
            .map_err(pg)?;
            let row = tx
                .query_one(
                    "SELECT coalesce(sum(bytes), 0)::bigint, count(DISTINCT artifact)
                     FROM mlvault_pulls WHERE principal = $1",
                    &[&principal],
                )
                .map_err(pg)?;
            tx.commit().map_err(pg)?;
            let (total, distinct): (i64, i64) = (row.get(0), row.get(1));
            Ok((
                u64::try_from(total).unwrap_or(0),
                u64::try_from(distinct).unwrap_or(0),
            ))
        })
    }
}

impl PgKv {
    fn client(&self) -> Result<Pooled> {
        match &self.pool {
            Some(Pool::Plain(p)) => p.get().map(Pooled::Plain),
            Some(Pool::Tls(p)) => p.get().map(Pooled::Tls),
            None => return Err(Error::Backend("the PostgreSQL pool is closed".into())),
        }
        .map_err(pool_error)
    }

    /// Create the schema, or check it is one this build knows, holding an
    /// advisory lock so that replicas starting together take turns.
    fn migrate(&self) -> Result<()> {
        let mut c = self.client()?;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg)?;
        let done = (|| -> Result<()> {
            c.batch_execute(MIGRATIONS).map_err(pg)?;
            let row = c
                .query_opt("SELECT max(version) FROM mlvault_schema", &[])
                .map_err(pg)?;
            let have: Option<i32> = row.and_then(|r| r.get(0));
            match have {
                None => {
                    c.execute(
                        "INSERT INTO mlvault_schema (version) VALUES ($1)",
                        &[&SCHEMA_VERSION],
                    )
                    .map_err(pg)?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(Error::Meta(format!(
                        "the database's schema is version {v}, newer than this server's ({SCHEMA_VERSION}); upgrade the server"
                    )))
                }
                Some(v) if v < SCHEMA_VERSION => {
                    c.execute("UPDATE mlvault_schema SET version = $1", &[&SCHEMA_VERSION])
                        .map_err(pg)?;
                }
                Some(_) => {}
            }
            Ok(())
        })();
        let unlocked = c
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .map_err(pg);
        done.and(unlocked.map(|_| ()))
    }
}

/// One transaction (or, for [`Kv::read_single`], one statement on a bare
/// connection); remembers whether PostgreSQL failed it because of a
/// concurrent one.
struct PgTx<'c, C> {
    tx: &'c mut C,
    statements: &'c mut Statements,
    conflict: bool,
    /// Statements run; a bare connection allows one (see `check`).
    ran: u32,
    single: bool,
}

impl<'c, C: postgres::GenericClient> PgTx<'c, C> {
    fn new(tx: &'c mut C, statements: &'c mut Statements, single: bool) -> Self {
        Self {
            tx,
            statements,
            conflict: false,
            ran: 0,
            single,
        }
    }

    /// The prepared statement for `sql` (prepared on first use on this
    /// connection). Refuses a second statement outside a transaction: it
    /// would not read the snapshot the first did.
    fn statement(&mut self, sql: &'static str, types: &[Type]) -> Result<postgres::Statement> {
        self.ran += 1;
        if self.single && self.ran > 1 {
            return Err(Error::Meta(
                "a single-statement read made a second one (a bug)".into(),
            ));
        }
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let r = self.tx.prepare_typed(sql, types);
        let st = self.check(r)?;
        self.statements.insert(sql, st.clone());
        Ok(st)
    }

    /// Lock the log's head row for the rest of the transaction and read
    /// it: every other append waits until this transaction ends.
    fn lock_log_head(&mut self) -> Result<(u64, String)> {
        let st = self.statement(
            "SELECT seq, hash FROM mlvault_audit_head WHERE id = 1 FOR UPDATE",
            &[],
        )?;
        let r = self.tx.query_one(&st, &[]);
        let row = self.check(r)?;
        let seq: i64 = row.get(0);
        let seq = u64::try_from(seq)
            .map_err(|_| Error::Meta("the audit head's sequence number is negative".into()))?;
        Ok((seq, row.get(1)))
    }

    /// Insert `rows` after the head locked by `lock_log_head` and move it.
    fn append_log(&mut self, rows: &[LogRow]) -> Result<()> {
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let (seqs, lines) = columns(rows)?;
        let st = self.statement(
            "WITH head AS (
                UPDATE mlvault_audit_head SET seq = $1, hash = $2 WHERE id = 1 RETURNING 1
            )
            INSERT INTO mlvault_audit (seq, line)
            SELECT s, l FROM unnest($3::bigint[], $4::text[]) AS t(s, l), head",
            &[Type::INT8, Type::TEXT, Type::INT8_ARRAY, Type::TEXT_ARRAY],
        )?;
        let r = self
            .tx
            .execute(&st, &[&seq_i64(last.seq)?, &last.hash, &seqs, &lines]);
        match self.check(r) {
            Ok(n) if n as usize == rows.len() => Ok(()),
            Ok(_) => Err(Error::Journal(
                "the audit chain's rows were not all inserted".into(),
            )),
            Err(Error::Meta(e)) => Err(Error::Journal(format!(
                "the shared audit chain cannot be appended to: {e}"
            ))),
            Err(e) => Err(e),
        }
    }

    fn check<T>(&mut self, r: std::result::Result<T, postgres::Error>) -> Result<T> {
        r.map_err(|e| {
            self.conflict |= is_conflict(&e);
            pg(e)
        })
    }
}

impl<C: postgres::GenericClient + Send> Tx for PgTx<'_, C> {
    fn get(&mut self, t: Table, key: &str) -> Result<Option<Vec<u8>>> {
        let st = self.statement(
            "SELECT v FROM mlvault_kv WHERE tbl = $1 AND k = $2",
            &[Type::TEXT, Type::BYTEA],
        )?;
        let r = self.tx.query_opt(&st, &[&t.name(), &key.as_bytes()]);
        Ok(self.check(r)?.map(|row| row.get(0)))
    }

    fn range(&mut self, t: Table, lo: &str, hi: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
        let r = match hi {
            Some(hi) => {
                let st = self.statement(
                    "SELECT k, v FROM mlvault_kv WHERE tbl = $1 AND k >= $2 AND k < $3 ORDER BY k",
                    &[Type::TEXT, Type::BYTEA, Type::BYTEA],
                )?;
                self.tx
                    .query(&st, &[&t.name(), &lo.as_bytes(), &hi.as_bytes()])
            }
            None => {
                let st = self.statement(
                    "SELECT k, v FROM mlvault_kv WHERE tbl = $1 AND k >= $2 ORDER BY k",
                    &[Type::TEXT, Type::BYTEA],
                )?;
                self.tx.query(&st, &[&t.name(), &lo.as_bytes()])
            }
        };
        self.check(r)?
            .into_iter()
            .map(|row| {
                let k: Vec<u8> = row.get(0);
                let k = String::from_utf8(k).map_err(|_| Error::Corrupt {
                    table: t.name(),
                    detail: "a key that is not UTF-8".into(),
                })?;
                Ok((k, row.get(1)))
            })
            .collect()
    }

    fn put(&mut self, t: Table, key: &str, value: &[u8]) -> Result<()> {
        let st = self.statement(
            "INSERT INTO mlvault_kv (tbl, k, v) VALUES ($1, $2, $3)
             ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v",
            &[Type::TEXT, Type::BYTEA, Type::BYTEA],
        )?;
        let r = self.tx.execute(&st, &[&t.name(), &key.as_bytes(), &value]);
        self.check(r).map(|_| ())
    }

    fn remove(&mut self, t: Table, key: &str) -> Result<Option<Vec<u8>>> {
        let st = self.statement(
            "DELETE FROM mlvault_kv WHERE tbl = $1 AND k = $2 RETURNING v",
            &[Type::TEXT, Type::BYTEA],
        )?;
        let r = self.tx.query_opt(&st, &[&t.name(), &key.as_bytes()]);
        Ok(self.check(r)?.map(|row| row.get(0)))
    }
}

thread_local! {
    /// Set while [`may_block`] runs work on this thread.
    static MAY_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` on a thread of a runtime's blocking pool (`spawn_blocking`),
/// saying so: such a thread is not inside the runtime, so the blocking
/// PostgreSQL client runs on it directly instead of on a thread of its own
/// per transaction. Never call it on an async worker.
pub fn may_block<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            MAY_BLOCK.with(|m| m.set(self.0));
        }
    }
    let _reset = Reset(MAY_BLOCK.with(|m| m.replace(true)));
    f()
}

/// Run `work` where the blocking PostgreSQL client may run: the client
/// drives its connection on a runtime of its own, which cannot start on a
/// thread that already runs one (a server's async workers, even its
/// blocking pool), so from such a thread the work moves to a thread of its
/// own for its duration.
fn off_runtime<R: Send>(work: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    if tokio::runtime::Handle::try_current().is_err() || MAY_BLOCK.with(std::cell::Cell::get) {
        return work();
    }
    std::thread::scope(|s| {
        s.spawn(work)
            .join()
            .unwrap_or_else(|_| Err(Error::Meta("a metadata transaction panicked".into())))
    })
}

impl Kv for PgKv {
    fn read<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        off_runtime(|| self.read_here(f))
    }

    fn read_single<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        off_runtime(|| self.read_single_here(f))
    }

    fn write<R: Send>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        off_runtime(|| self.write_here(|tx| f(tx)))
    }

    fn write_journaled(
        &self,
        f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send),
        journal: &mut Journal<'_>,
    ) -> Result<()> {
        let appended = off_runtime(|| {
            self.write_here(|tx| {
                // The head first: the transaction's snapshot then starts
                // holding it, so no append commits between the two.
                let (seq, hash) = tx.lock_log_head()?;
                f(tx)?;
                let rows = journal(Some((seq, &hash)))?;
                tx.append_log(&rows)?;
                Ok(rows.last().map(|r| (r.seq, r.hash.clone())))
            })
        })?;
        let mut head = self.log_head.lock().unwrap_or_else(|p| p.into_inner());
        *head = appended.or(head.take());
        Ok(())
    }
}

impl PgKv {
    fn read_here<R>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        let mut c = self.client()?;
        let Conn { client, statements } = &mut *c;
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
        let r = f(&mut PgTx::new(&mut tx, statements, false))?;
        tx.commit().map_err(pg)?;
        Ok(r)
    }

    fn read_single_here<R>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        let mut c = self.client()?;
        let Conn { client, statements } = &mut *c;
        f(&mut PgTx::new(client, statements, true))
    }

    fn write_here<R>(
        &self,
        mut f: impl FnMut(&mut PgTx<'_, postgres::Transaction<'_>>) -> Result<R>,
    ) -> Result<R> {
        let mut c = self.client()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Conn { client, statements } = &mut *c;
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::Serializable)
                .start()
                .map_err(pg)?;
            let mut ptx = PgTx::new(&mut tx, statements, false);
            let result = f(&mut ptx);
            let failed_by_conflict = ptx.conflict;
            let conflict = match result {
                Ok(r) => match tx.commit() {
                    Ok(()) => return Ok(r),
                    Err(e) if is_conflict(&e) => true,
                    Err(e) => return Err(pg(e)),
                },
                Err(e) if failed_by_conflict => {
                    drop(e);
                    true
                }
                Err(e) => return Err(e),
            };
            if conflict && attempt >= MAX_ATTEMPTS {
                return Err(Error::Conflict(format!(
                    "the metadata write lost to concurrent ones {MAX_ATTEMPTS} times; try again"
                )));
            }
            // A little jitter, so writers that collided do not again.
            std::thread::sleep(Duration::from_millis(u64::from(attempt.min(10)) + jitter()));
        }
    }
}

/// 0–7 ms from the clock's low bits: enough to spread retries apart.
fn jitter() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos() >> 10) % 8)
}
