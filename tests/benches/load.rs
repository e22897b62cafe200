//! Load test: the real release `vault-server` over TLS on loopback.
//!
//! 1. Authorized metadata requests (`GET /v1/resolve`: token check, Cedar
//!    decision, metadata read, manifest) from a fleet of deployer tokens on
//!    keep-alive connections, for a fixed time: requests/s and latency
//!    percentiles, beside `GET /healthz` (no auth, no policy, no metadata)
//!    over the same connections as the baseline.
//!    With MLVAULT_PG_URL (and MLVAULT_PG_CA) set, the same requests then
//!    run against two replicas whose metadata is in PostgreSQL, the
//!    connections split between them.
//! 2. 32 concurrent `vault-cli pull --no-cache` of one 256 MiB artifact, each
//!    verified, beside one pull alone; with the replicas (and Garage for
//!    their shared blobs, `scripts/garage.sh install`), the same pulls split
//!    across the two replicas.
//!
//! Run with `scripts/load.sh` (builds the release binaries first). Options
//! after `--`: `--secs N` (default 10), `--conns N` (default 32),
//! `--pulls N` (default 32), `--mib N` (default 256).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_api::Reference;
use vault_client::Client;
use vault_tests::{
    ok, peak_rss_kib, pg_database, postgres_config, random_file, sha256_file, test_tls, Garage,
    Server,
};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

struct Round {
    ok: u64,
    errors: u64,
    secs: f64,
    lat_us: Vec<u32>,
}

/// `conns` tasks, each on its own client (connection), for `secs` seconds.
async fn hammer(clients: &[Client], secs: u64, what: &'static str, r: Arc<Reference>) -> Round {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let (c, r) = (c.clone(), r.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(50_000));
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let res = if what == "resolve" {
                    c.resolve(&r).await.map(|_| ())
                } else {
                    c.health().await
                };
                let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                match res {
                    Ok(()) => {
                        ok += 1;
                        lat.push(us);
                    }
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("{what}: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            (ok, errors, lat)
        }));
    }
    let mut round = Round {
        ok: 0,
        errors: 0,
        secs: 0.0,
        lat_us: Vec::new(),
    };
    for t in tasks {
        let (o, e, l) = t.await.expect("load task");
        round.ok += o;
        round.errors += e;
        round.lat_us.extend(l);
    }
    round.secs = started.elapsed().as_secs_f64();
    round.lat_us.sort_unstable();
    round
}

fn print_round(name: &str, r: &Round) {
    println!(
        "{name:<34} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        r.ok,
        r.errors,
        r.ok as f64 / r.secs,
        pct(&r.lat_us, 0.50),
        pct(&r.lat_us, 0.90),
        pct(&r.lat_us, 0.99),
        pct(&r.lat_us, 1.0),
    );
}

fn pull(s: &Server, dest: &Path) -> Command {
    let mut c = s.cli();
    c.args(["pull", "t/model", "--no-cache", "--quiet", "--to"])
        .arg(dest)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A small model behind an alias (what deployers may resolve) on `s`, and
/// `conns` keep-alive clients over a fleet of deployer tokens (the default
/// rate limit is per token: 60,000 requests a minute), spread over `s` and
/// its `replicas`.
fn resolving_fleet(s: &Server, replicas: &[&Server], conns: usize, fleet: usize) -> Vec<Client> {
    let small = s.tmp.path().join("small");
    random_file(&small.join("config.json"), 600, 1);
    random_file(&small.join("weights.dat"), 4096, 2);
    ok(s.cli().args(["push", "t/small"]).arg(&small));
    ok(s.cli().args(["alias", "t/small:1", "stable"]));
    let tokens: Vec<String> = (0..fleet)
        .map(|i| s.create_token(&format!("deploy-{i}"), "deployer", &["t"], None))
        .collect();
    let servers: Vec<&Server> = std::iter::once(s).chain(replicas.iter().copied()).collect();
    (0..conns)
        .map(|i| {
            Client::new(
                &servers[i % servers.len()].addr,
                Some(tokens[i % fleet].clone()),
                Some(&test_tls().0),
            )
            .expect("client")
            .with_retries(0)
        })
        .collect()
}

/// Two replicas on a fresh PostgreSQL database, if MLVAULT_PG_URL names a
/// server (scripts/postgres.sh starts one), with their blobs in a Garage
/// when one is installed (else each in its own data directory: enough for
/// metadata requests, not for pulls across them).
struct Replicas {
    a: Server,
    b: Server,
    garage: Option<Garage>,
    _dir: tempfile::TempDir,
}

fn postgres_replicas() -> Option<Replicas> {
    std::env::var_os("MLVAULT_PG_URL")?;
    let url = pg_database("load")?;
    let dir = tempfile::tempdir().expect("config folder");
    let cfg = dir.path().join("server.toml");
    let garage = Garage::start("load: pulls across replicas");
    if let Some(g) = &garage {
        g.server_config(&cfg);
    }
    let mut text = std::fs::read_to_string(&cfg).unwrap_or_default();
    text.push_str(&postgres_config(&url).replace("connections = 4", "connections = 16"));
    std::fs::write(&cfg, text).expect("write the config");
    let c = cfg.to_str().expect("a UTF-8 path");
    let a = Server::start_init_with(&["--config", c], &["--config", c]);
    let b = a.replica(&["--config", c], &["--config", c]);
    Some(Replicas {
        a,
        b,
        garage,
        _dir: dir,
    })
}

/// `pulls` verified pulls at once of `t/model`, spread over `servers`:
/// wall time, sorted per-pull times, failures.
fn many_pulls(servers: &[&Server], pulls: usize, want: &str) -> (f64, Vec<f64>, usize) {
    let t0 = Instant::now();
    let children: Vec<_> = (0..pulls)
        .map(|i| {
            let s = servers[i % servers.len()];
            let dest = s.tmp.path().join(format!("p{i}"));
            (
                dest.clone(),
                Instant::now(),
                pull(s, &dest).spawn().expect("spawn pull"),
            )
        })
        .collect();
    let mut times = Vec::new();
    let mut failed = 0;
    for (dest, started, child) in children {
        let out = child.wait_with_output().expect("pull");
        times.push(started.elapsed().as_secs_f64());
        let good = out.status.success() && sha256_file(&dest.join("model.dat")) == want;
        if !good {
            failed += 1;
            eprintln!(
                "pull into {} failed: {}",
                dest.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&dest);
    }
    let wall = t0.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    (wall, times, failed)
}

fn print_pulls(name: &str, mib: u64, pulls: usize, (wall, times, failed): &(f64, Vec<f64>, usize)) {
    println!(
        "{:<34} {:>8.2} s  {:>8.0} MiB/s aggregate; per pull min {:.2} s, median {:.2} s, max {:.2} s; {} failed",
        name,
        wall,
        (mib as f64 * pulls as f64) / wall,
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        failed
    );
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs = arg("--secs", 10);
    let conns = arg("--conns", 32) as usize;
    let pulls = arg("--pulls", 32) as usize;
    let mib = arg("--mib", 256);
    let fleet = 16usize;

    let s = Server::start();
    println!(
        "\nmlvault load test, {} cores, release build, TLS 1.3 on loopback, server pid {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        s.pid()
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let clients = resolving_fleet(&s, &[], conns, fleet);
    let r = Arc::new("t/small:stable".parse::<Reference>().expect("reference"));

    println!(
        "\n1. metadata: {conns} keep-alive connections, {fleet} deployer tokens, {secs} s each"
    );
    println!(
        "{:<34} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "request", "ok", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    rt.block_on(hammer(&clients, 1, "resolve", r.clone())); // warm up
    let base = rt.block_on(hammer(&clients, secs, "health", r.clone()));
    print_round("GET /healthz (baseline)", &base);
    let meta = rt.block_on(hammer(&clients, secs, "resolve", r.clone()));
    print_round("GET /v1/resolve (authorized)", &meta);
    let rate = meta.ok as f64 / meta.secs;
    let p99 = pct(&meta.lat_us, 0.99);
    println!(
        "target >= 2000 req/s with p99 < 20 ms, no errors: {}",
        if rate >= 2000.0 && p99 < 20.0 && meta.errors == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("server peak RSS so far: {} KiB", peak_rss_kib(s.pid()));
    // The same requests against two replicas whose metadata is in
    // PostgreSQL (MLVAULT_PG_URL, over TLS with MLVAULT_PG_CA), from the
    // same run, the connections split between them.
    let replicas = postgres_replicas();
    let mut replica_errors = 0;
    if let Some(rs) = &replicas {
        let pg_clients = resolving_fleet(&rs.a, &[&rs.b], conns, fleet);
        rt.block_on(hammer(&pg_clients, 1, "resolve", r.clone()));
        let round = rt.block_on(hammer(&pg_clients, secs, "resolve", r.clone()));
        print_round("GET /v1/resolve (2 replicas, PG)", &round);
        let pg_rate = round.ok as f64 / round.secs;
        let pg_p99 = pct(&round.lat_us, 0.99);
        println!(
            "2 replicas on PostgreSQL: {:.2}x the requests/s of one server on redb in this run; target >= 2000 req/s with p99 < 20 ms, no errors: {}",
            pg_rate / rate,
            if pg_rate >= 2000.0 && pg_p99 < 20.0 && round.errors == 0 {
                "met"
            } else {
                "NOT met"
            }
        );
        replica_errors += round.errors;
    } else {
        println!("(replica round skipped: MLVAULT_PG_URL is not set)");
    }

    // 2. Concurrent pulls of one large artifact.
    let big = s.tmp.path().join("big");
    random_file(&big.join("model.dat"), mib << 20, 3);
    let want = sha256_file(&big.join("model.dat"));
    ok(s.cli().args(["push", "t/model"]).arg(&big));
    let _ = std::fs::remove_dir_all(&big);
    println!("\n2. pulls of a {mib} MiB artifact (verified, no cache)");
    let one = s.tmp.path().join("one");
    let t0 = Instant::now();
    let out = pull(&s, &one).output().expect("pull");
    let alone = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&one);
    println!(
        "{:<34} {:>8.2} s  {:>8.0} MiB/s",
        "1 pull alone (baseline)",
        alone,
        mib as f64 / alone
    );
    let together = many_pulls(&[&s], pulls, &want);
    print_pulls(&format!("{pulls} pulls at once"), mib, pulls, &together);
    let mut failed = together.2;
    println!("server peak RSS: {} KiB", peak_rss_kib(s.pid()));
    if let Some(rs) = replicas.as_ref().filter(|rs| rs.garage.is_some()) {
        let big = rs.a.tmp.path().join("big");
        random_file(&big.join("model.dat"), mib << 20, 3);
        ok(rs.a.cli().args(["push", "t/model"]).arg(&big));
        let _ = std::fs::remove_dir_all(&big);
        let across = many_pulls(&[&rs.a, &rs.b], pulls, &want);
        print_pulls(
            &format!("{pulls} pulls across 2 replicas (S3)"),
            mib,
            pulls,
            &across,
        );
        failed += across.2;
    } else if replicas.is_some() {
        println!("(pulls across replicas skipped: Garage is not installed)");
    }
    let ok_all = failed == 0;
    println!(
        "target: {pulls} concurrent pulls with no error: {}",
        if ok_all { "met" } else { "NOT met" }
    );
    if !ok_all || meta.errors > 0 || replica_errors > 0 {
        std::process::exit(1);
    }
}
