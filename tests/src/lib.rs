//! Helpers for the end-to-end tests: start the real `vault-server` on a
//! loopback port in a temporary data directory and drive the real
//! `vault-cli` against it.
//!
//! The binaries are the ones `cargo test --workspace` builds beside this
//! test executable (`target/<profile>/`).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Directory holding the workspace binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf();
    for b in ["vault-server", "vault-cli"] {
        assert!(
            dir.join(b).exists(),
            "`{}` is missing: run the suite with `cargo test --workspace`, which builds it",
            dir.join(b).display()
        );
    }
    dir
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The Python of the interop tools (`MLVAULT_TEST_PYTHON`, a virtual
/// environment `scripts/test.sh` makes with securesystemslib); `None`
/// only when `MLVAULT_SKIP_INTEROP=1` says to skip, else the test fails.
pub fn interop_python() -> Option<PathBuf> {
    match std::env::var_os("MLVAULT_TEST_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("MLVAULT_SKIP_INTEROP").is_some() => None,
        None => panic!(
            "MLVAULT_TEST_PYTHON is not set: run the suite with scripts/test.sh, which installs securesystemslib, or set MLVAULT_SKIP_INTEROP=1 to skip this test"
        ),
    }
}

/// Namespaces the test trainer token may use.
pub const TEST_NAMESPACES: &[&str] = &[
    "fraud", "team", "acme", "t", "k", "d", "l", "open", "big", "demo", "no",
];

/// A test CA and a server certificate for 127.0.0.1, made once per test
/// process with the `openssl` command: (ca.pem, server.pem, server.key).
pub fn test_tls() -> &'static (PathBuf, PathBuf, PathBuf) {
    static TLS: std::sync::OnceLock<(TempDir, (PathBuf, PathBuf, PathBuf))> =
        std::sync::OnceLock::new();
    &TLS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sh = |cmd: &str| {
            let out = Command::new("sh").arg("-c").arg(cmd).current_dir(d).output().unwrap();
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        };
        sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj '/CN=mlvault test CA' -keyout ca.key -out ca.pem \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null");
        sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=127.0.0.1' \
            -keyout server.key -out server.csr 2>/dev/null");
        sh("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf && \
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out server.pem -extfile ext.cnf 2>/dev/null");
        let paths = (d.join("ca.pem"), d.join("server.pem"), d.join("server.key"));
        (dir, paths)
    })
    .1
}

/// A running server with its own data directory, served over TLS.
pub struct Server {
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    pub addr: String,
    /// A trainer token scoped to [`TEST_NAMESPACES`] (what `cli()` uses).
    pub token: String,
    /// The admin token from `init` (what `admin()` uses).
    pub admin_token: String,
    /// The vault's data directory.
    pub data_dir: PathBuf,
    /// The unseal identity (kept outside the data directory).
    pub identity: PathBuf,
    /// Where the server's stderr goes.
    pub log: PathBuf,
    /// Extra `run` arguments.
    pub extra: Vec<String>,
    /// Serve HTTPS (the default) or plain HTTP on loopback.
    pub tls: bool,
    /// A file-descriptor limit (`ulimit -n`) to run the server under.
    pub nofile: Option<u32>,
    /// Scratch space for the test (removed on drop).
    pub tmp: TempDir,
}

impl Server {
    /// Init a new vault and start serving it.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Like [`Server::start`], with extra `run` arguments.
    pub fn start_with(extra: &[&str]) -> Server {
        Self::start_inner(extra, true)
    }

    /// A server on plain HTTP (loopback), for raw-socket tests.
    pub fn start_plain(extra: &[&str]) -> Server {
        Self::start_inner(extra, false)
    }

    /// Like [`Server::start_with`], under a file-descriptor limit.
    pub fn start_with_nofile(extra: &[&str], nofile: u32) -> Server {
        Self::start_inner_limited(extra, true, Some(nofile))
    }

    fn start_inner(extra: &[&str], tls: bool) -> Server {
        Self::start_inner_limited(extra, tls, None)
    }

    fn start_inner_limited(extra: &[&str], tls: bool, nofile: Option<u32>) -> Server {
        Self::start_full(&[], extra, tls, nofile)
    }

    /// Like [`Server::start_with`], with extra `init` arguments too (the
    /// same `--config` for both, say).
    pub fn start_init_with(init_extra: &[&str], extra: &[&str]) -> Server {
        Self::start_full(init_extra, extra, true, None)
    }

    fn start_full(init_extra: &[&str], extra: &[&str], tls: bool, nofile: Option<u32>) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let identity = tmp.path().join("unseal.identity");
        let token_file = tmp.path().join("admin.token");
        let out = Command::new(bin("vault-server"))
            .args(["init", "--data-dir"])
            .arg(&data_dir)
            .arg("--unseal-identity")
            .arg(&identity)
            .arg("--admin-token-file")
            .arg(&token_file)
            .args(init_extra)
            .output()
            .expect("run vault-server init");
        assert!(out.status.success(), "init failed: {out:?}");
        let admin_token = fs::read_to_string(&token_file).unwrap().trim().to_owned();
        let mut s = Server {
            child: None,
            addr: String::new(),
            token: String::new(),
            admin_token,
            data_dir,
            identity,
            log: tmp.path().join("server.log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
            nofile,
            tmp,
        };
        s.spawn();
        s.token = s.create_token("tester", "trainer", TEST_NAMESPACES, None);
        s
    }

    /// Another replica of this vault, whose metadata is in PostgreSQL and
    /// blobs in a store both reach: `init --join` makes its data directory
    /// from the database with its own copy of the unseal identity;
    /// `init_args` (the same `--config`) go to `init`, `args` to `run`.
    /// It serves with the same tokens.
    pub fn replica(&self, init_args: &[&str], args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let identity = tmp.path().join("unseal.identity");
        fs::copy(&self.identity, &identity).expect("copy the unseal identity");
        let out = Command::new(bin("vault-server"))
            .args(["init", "--join", "--data-dir"])
            .arg(&data_dir)
            .arg("--unseal-identity")
            .arg(&identity)
            .args(init_args)
            .output()
            .expect("run vault-server init --join");
        assert!(out.status.success(), "init --join failed: {out:?}");
        let mut s = Server {
            child: None,
            addr: String::new(),
            token: self.token.clone(),
            admin_token: self.admin_token.clone(),
            data_dir,
            identity,
            log: tmp.path().join("server.log"),
            extra: args.iter().map(|s| s.to_string()).collect(),
            tls: self.tls,
            nofile: None,
            tmp,
        };
        s.spawn();
        s
    }

    /// Create a token with the admin token; returns the secret.
    pub fn create_token(
        &self,
        principal: &str,
        role: &str,
        namespaces: &[&str],
        ttl: Option<&str>,
    ) -> String {
        let mut c = self.admin();
        c.args(["token", "create", "--principal", principal, "--role", role]);
        for ns in namespaces {
            c.args(["--namespace", ns]);
        }
        if let Some(t) = ttl {
            c.args(["--ttl", t]);
        }
        ok(&mut c).trim().to_owned()
    }

    /// The public id of the (first listed) token of `principal`, from the
    /// admin's `token list`.
    pub fn token_id(&self, principal: &str) -> String {
        let list = json(&ok(self.admin().args(["--json", "token", "list"])));
        list.as_array()
            .and_then(|a| a.iter().find(|t| t["principal"] == principal))
            .and_then(|t| t["id"].as_str())
            .unwrap_or_else(|| panic!("no token of `{principal}` in {list}"))
            .to_owned()
    }

    /// A `vault-cli` command with the admin token.
    pub fn admin(&self) -> Command {
        self.cli_with_token(&self.admin_token)
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // A restart keeps its address, as a real deployment does.
        let listen = self
            .addr
            .split_once("://")
            .map_or("127.0.0.1:0", |(_, a)| a)
            .to_owned();
        let (_, cert, key) = test_tls();
        let mut cmd = match self.nofile {
            None => Command::new(bin("vault-server")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin("vault-server"));
                c
            }
        };
        cmd.args(["run", "--listen", &listen, "--data-dir"])
            .arg(&self.data_dir)
            .arg("--unseal-identity")
            .arg(&self.identity);
        if self.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = cmd
            .args(&self.extra)
            .env("MLVAULT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn vault-server run");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "server did not start: {line:?}\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
            .to_owned();
        self.addr = addr;
        self.child = Some(child);
    }

    /// Push one file, `file` holding `content`, as a new version of the
    /// dataset `name` with `token`; `args` go to `push` (such as
    /// `--sensitivity raw-pii`). Returns the `--json` result.
    pub fn push_dataset(
        &self,
        token: &str,
        name: &str,
        file: &str,
        content: &[u8],
        args: &[&str],
    ) -> serde_json::Value {
        let dir = tempfile::tempdir_in(self.tmp.path()).expect("temp dir");
        fs::write(dir.path().join(file), content).expect("write the dataset");
        json(&ok(self
            .cli_with_token(token)
            .args(["--json", "push", name, "--kind", "dataset"])
            .args(args)
            .arg(dir.path())))
    }

    /// A `vault-cli` command aimed at this server with the admin token.
    pub fn cli(&self) -> Command {
        self.cli_with_token(&self.token)
    }

    /// A `vault-cli` command with another token.
    pub fn cli_with_token(&self, token: &str) -> Command {
        let mut c = Command::new(bin("vault-cli"));
        c.env("MLVAULT_ADDR", &self.addr)
            .env("MLVAULT_TOKEN", token)
            .env("MLVAULT_CA_CERT", &test_tls().0)
            .env("MLVAULT_STATE_DIR", self.tmp.path().join("client-state"))
            .env("MLVAULT_CACHE_DIR", self.tmp.path().join("client-cache"))
            .env_remove("MLVAULT_CONFIG")
            .env_remove("MLVAULT_LOG");
        c
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Peak resident memory of the server so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.pid())
    }

    /// Stop with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop with SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start again on the same data directory (new port).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Peak RSS (KiB) of a live process.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Run and capture.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

/// Run; panic with both streams unless it exits 0. Returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command failed ({:?}): {cmd:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run; assert the exit code; returns stderr.
pub fn fails_with(cmd: &mut Command, code: i32) -> String {
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}: {cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parse stdout as JSON.
pub fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// A model file of exactly `size` bytes that the admission scan passes: a
/// safetensors header for one `U8` tensor, then pseudo-random data (as
/// [`random_file`]).
pub fn safetensors_file(path: &Path, size: u64, seed: u64) {
    let header =
        |n: u64| format!(r#"{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
    let mut data = size.saturating_sub(8 + header(size).len() as u64);
    while 8 + header(data).len() as u64 + data < size {
        data += 1;
    }
    random_file(path, data, seed);
    let body = fs::read(path).unwrap();
    let h = header(data);
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&body);
    assert_eq!(out.len() as u64, size, "safetensors_file of {size} bytes");
    fs::write(path, out).unwrap();
}

/// Write `size` pseudo-random bytes (xorshift, fast, reproducible by seed).
pub fn random_file(path: &Path, size: u64, seed: u64) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let mut f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// SHA-256 hex of a file.
pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    hex::encode(ctx.finish().as_ref())
}

/// Every regular file under `dir`, as paths relative to it, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Assert two trees hold the same files with the same bytes, ignoring
/// mlvault's own `.mlvault/` records in `pulled`.
pub fn assert_same_tree(src: &Path, pulled: &Path) {
    let a = tree(src);
    let b: Vec<String> = tree(pulled)
        .into_iter()
        .filter(|p| !p.starts_with(".mlvault/"))
        .collect();
    assert_eq!(a, b, "file lists differ");
    for p in &a {
        assert_eq!(
            sha256_file(&src.join(p)),
            sha256_file(&pulled.join(p)),
            "`{p}` differs"
        );
    }
}

/// Files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for rel in tree(dir) {
        let p = dir.join(&rel);
        let data = fs::read(&p).unwrap_or_default();
        if data.windows(needle.len()).any(|w| w == needle) {
            hits.push(p);
        }
    }
    hits
}

/// Every blob object file under a data directory.
pub fn blob_files(data_dir: &Path) -> Vec<PathBuf> {
    let blobs = data_dir.join("blobs");
    tree(&blobs).into_iter().map(|p| blobs.join(p)).collect()
}

/// Flip one bit of a file at `offset`.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut data = fs::read(path).unwrap();
    data[offset as usize] ^= 0x01;
    fs::write(path, data).unwrap();
}

/// Copy a directory tree (files only).
pub fn copy_tree(from: &Path, to: &Path) {
    for rel in tree(from) {
        let dst = to.join(&rel);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(from.join(&rel), dst).unwrap();
    }
}

/// Run `vault-server run` expecting it to exit (a refused start); returns
/// (exit code, stderr).
pub fn failed_start(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let mut c = Command::new(bin("vault-server"));
    c.args(["run", "--listen", "127.0.0.1:0"]).args(args);
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A hostile server for client tests: answers every request on its port
/// with `GET /v1/resolve` → `resolve_body` (JSON), anything else → 500.
/// Returns its `http://` address. Serves until the process exits.
pub fn fake_server(resolve_body: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let req = String::from_utf8_lossy(&buf);
            let (status, body) = if req.starts_with("GET /v1/resolve") {
                ("200 OK", resolve_body.clone())
            } else {
                ("500 Internal Server Error", "{}".to_owned())
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// A private single-node Garage (S3) for one test, started with
/// `scripts/garage.sh` on free loopback ports; stopped on drop.
pub struct Garage {
    /// Its directory (config, data, env, log).
    pub dir: TempDir,
    /// S3 API port.
    pub port: u16,
    /// Variables from its env file (endpoint, bucket, credentials).
    pub env: std::collections::HashMap<String, String>,
}

fn garage_script() -> PathBuf {
    // Relative to this package's root, where cargo runs tests and benches
    // (a path compiled in goes stale when a cached build is reused from
    // another checkout).
    let p = Path::new("../scripts/garage.sh");
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn garage_available() -> bool {
    let cache = std::env::var_os("MLVAULT_GARAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/mlvault/garage-2.5.0")
        });
    cache.join("bin/garage").exists()
}

fn free_port_block() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        if p < 60000 && (1..4).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
}

impl Garage {
    /// Start one, or `None` (printing SKIPPED) when Garage is not installed
    /// and `MLVAULT_REQUIRE_S3` is not set.
    pub fn start(test: &str) -> Option<Garage> {
        if !garage_available() {
            assert!(
                std::env::var_os("MLVAULT_REQUIRE_S3").is_none(),
                "MLVAULT_REQUIRE_S3 is set but Garage is not installed (scripts/garage.sh install)"
            );
            eprintln!("SKIPPED {test}: Garage is not installed (scripts/garage.sh install; .ci/run does it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_block();
        let mut g = Garage {
            dir,
            port,
            env: Default::default(),
        };
        g.run("start");
        let env = fs::read_to_string(g.dir.path().join("env")).unwrap();
        g.env = env
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(g)
    }

    fn run(&self, verb: &str) {
        let out = Command::new("bash")
            .arg(garage_script())
            .arg(verb)
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop the server (data kept).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Start it again on the same data.
    pub fn resume(&self) {
        self.run("start");
    }

    /// A vault-server config file (TOML) using this Garage for blobs.
    pub fn server_config(&self, path: &Path) {
        let e = |k: &str| self.env.get(k).cloned().unwrap_or_default();
        fs::write(
            path,
            format!(
                "[storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n",
                e("MLVAULT_S3_ENDPOINT"),
                e("MLVAULT_S3_BUCKET"),
                e("MLVAULT_S3_REGION"),
                e("AWS_ACCESS_KEY_ID"),
                e("AWS_SECRET_ACCESS_KEY"),
            ),
        )
        .unwrap();
    }

    fn curl(&self, path_and_query: &str, out: Option<&Path>) -> Vec<u8> {
        let e = |k: &str| self.env.get(k).cloned().unwrap_or_default();
        let mut c = Command::new("curl");
        c.args(["-sf", "--aws-sigv4", "aws:amz:garage:s3", "--user"])
            .arg(format!(
                "{}:{}",
                e("AWS_ACCESS_KEY_ID"),
                e("AWS_SECRET_ACCESS_KEY")
            ))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
        if let Some(o) = out {
            c.arg("-o").arg(o);
        }
        let o = c
            .arg(format!(
                "{}/{}{path_and_query}",
                e("MLVAULT_S3_ENDPOINT"),
                e("MLVAULT_S3_BUCKET")
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "curl {path_and_query}: {o:?}");
        o.stdout
    }

    /// Every object key in the bucket (S3 ListObjectsV2 through curl).
    pub fn list_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let q = match &token {
                Some(t) => format!("?list-type=2&continuation-token={t}"),
                None => "?list-type=2".to_owned(),
            };
            let xml = String::from_utf8(self.curl(&q, None)).unwrap();
            for part in xml.split("<Key>").skip(1) {
                keys.push(part.split("</Key>").next().unwrap().to_owned());
            }
            token = xml.split("<NextContinuationToken>").nth(1).map(|t| {
                t.split('<')
                    .next()
                    .unwrap()
                    .replace('+', "%2B")
                    .replace('/', "%2F")
                    .replace('=', "%3D")
            });
            if token.is_none() {
                return keys;
            }
        }
    }

    /// Download one object to a file.
    pub fn get_to(&self, key: &str, out: &Path) {
        self.curl(&format!("/{key}"), Some(out));
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True if `needle` occurs in the file (streamed, so multi-GiB files are fine).
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let mut f = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        let mut window = std::mem::take(&mut carry);
        window.extend_from_slice(&buf[..n]);
        if window.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        carry = window[window.len().saturating_sub(needle.len() - 1)..].to_vec();
    }
}

/// A check this environment cannot run: the test fails, naming what is
/// missing, unless the environment variable `switch` is set to say that
/// skipping it is intended (then it returns and the caller skips).
pub fn cannot_check(why: &str, switch: &str) {
    if std::env::var_os(switch).is_some() {
        eprintln!("skipped ({switch} is set): {why}");
        return;
    }
    panic!("cannot run this check here: {why}. Set {switch}=1 to skip it on purpose.");
}

/// A fresh, empty database on the test PostgreSQL server, as a URL; `None`
/// (and a line saying the test is skipped) when MLVAULT_PG_URL names no
/// server, which fails instead when MLVAULT_REQUIRE_PG is set.
/// scripts/test.sh starts a server and sets both.
pub fn pg_database(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var("MLVAULT_PG_URL") else {
        assert!(
            std::env::var_os("MLVAULT_REQUIRE_PG").is_none(),
            "MLVAULT_REQUIRE_PG is set but MLVAULT_PG_URL is not"
        );
        eprintln!("SKIPPED: {test} (MLVAULT_PG_URL is not set; scripts/test.sh starts PostgreSQL)");
        return None;
    };
    let name = format!(
        "mlvault_{}_{}",
        test.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id()
    );
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        ok(Command::new("psql").arg(&admin).args(["-q", "-c", &sql]));
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

/// Write a server config at `path` whose metadata is the database `url`,
/// reached over TLS verified against MLVAULT_PG_CA when that is set.
pub fn write_postgres_config(path: &Path, url: &str) {
    fs::write(path, postgres_config(url)).expect("write the server config");
}

/// A vault initialized and served on the PostgreSQL database `url` (from
/// [`pg_database`]), `run_extra` added to `run`; the folder holding its
/// config lives as long as the returned guard.
pub fn start_on_postgres(url: &str, run_extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a config folder");
    let cfg = dir.path().join("server.toml");
    write_postgres_config(&cfg, url);
    let cfg_arg = cfg.to_str().expect("a UTF-8 path");
    let mut run = vec!["--config", cfg_arg];
    run.extend_from_slice(run_extra);
    let s = Server::start_init_with(&["--config", cfg_arg], &run);
    (s, dir)
}

/// The `[metadata]` section of a server config for the database `url`,
/// over TLS verified against MLVAULT_PG_CA when that is set.
pub fn postgres_config(url: &str) -> String {
    let ca = std::env::var("MLVAULT_PG_CA")
        .map(|ca| format!("ca_file = \"{ca}\"\n"))
        .unwrap_or_default();
    format!("[metadata]\nbackend = \"postgres\"\nurl = \"{url}\"\nconnections = 4\n{ca}")
}
