//! Connection caps and quiet-connection timeouts.

use super::observe_https as https;
use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP connection to `addr` from the loopback address `from`, so the
/// attacker's connections count under another client address than the
/// CLI's (127.0.0.1).
fn connect_from(rt: &tokio::runtime::Runtime, from: &str, addr: &str) -> Option<TcpStream> {
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().ok()?;
        sock.bind(format!("{from}:0").parse().ok()?).ok()?;
        sock.connect(addr.parse().ok()?).await.ok()?.into_std().ok()
    })?;
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(s)
}

fn tls_config(alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&test_tls().0).unwrap())
        .unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(c)
}

/// A TLS session that completes its handshake (and, for `h2`, sends
/// the HTTP/2 preface and its SETTINGS) and then says nothing more.
fn quiet_tls(
    tcp: &mut TcpStream,
    cfg: &Arc<rustls::ClientConfig>,
    h2: bool,
) -> Option<rustls::ClientConnection> {
    let mut c = rustls::ClientConnection::new(cfg.clone(), "127.0.0.1".try_into().unwrap()).ok()?;
    while c.is_handshaking() {
        c.complete_io(tcp).ok()?;
    }
    if h2 {
        let mut st = rustls::Stream::new(&mut c, tcp);
        st.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").ok()?;
        // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
        st.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).ok()?;
        st.flush().ok()?;
    }
    Some(c)
}

/// Whether the server closed `tcp` before `deadline` (anything it sends
/// first, such as TLS session tickets or HTTP/2 SETTINGS, is skipped).
fn closed_by(tcp: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        // At least one short look even past the deadline, so every
        // socket is judged on its own.
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tcp.set_read_timeout(Some(left.max(Duration::from_millis(50))));
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

#[test]
fn quiet_connections_are_capped_and_closed_while_others_are_served() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        cfg.path(),
        "[http]\nmax_connections_per_client = 32\nidle_timeout_secs = 4\nheader_timeout_secs = 4\n",
    )
    .unwrap();
    // 256 descriptors: before the caps, 300 silent sockets were enough
    // to stop /healthz answering.
    let s = Server::start_with_nofile(&["--config", cfg.path().to_str().unwrap()], 256);
    let src = s.tmp.path().join("m.dat");
    random_file(&src, 3 * MIB, 7);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    let addr = s.addr.trim_start_matches("https://").to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Several hundred quiet connections from three other addresses:
    // silent TCP, TLS quiet after the handshake, idle HTTP/2.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.extend(connect_from(&rt, "127.0.0.2", &addr));
    }
    let (plain_tls, h2) = (tls_config(b"http/1.1"), tls_config(b"h2"));
    let mut sessions = Vec::new();
    let mut established = 0;
    for i in 0..300 {
        let (from, cfg, is_h2) = if i % 2 == 0 {
            ("127.0.0.3", &plain_tls, false)
        } else {
            ("127.0.0.4", &h2, true)
        };
        if let Some(mut tcp) = connect_from(&rt, from, &addr) {
            if let Some(c) = quiet_tls(&mut tcp, cfg, is_h2) {
                established += 1;
                sessions.push((tcp, c));
            }
        }
    }
    assert_eq!(silent.len(), 300, "the kernel accepts every TCP connection");
    // 32 per address for each of the two TLS addresses; the rest were
    // closed before or during their handshake.
    assert!(
        (32..=64).contains(&established),
        "{established} TLS sessions held"
    );

    // Meanwhile the vault answers from its own address.
    let (code, _, body) = https(&s, "/healthz", None);
    assert_eq!(code, 200, "{body}");
    let dest = s.tmp.path().join("pulled");
    ok(s.cli().args(["pull", "t/m", "--to"]).arg(&dest));
    assert_eq!(sha256_file(&dest.join("m.dat")), sha256_file(&src));
    let (_, _, metrics) = https(&s, "/metrics", None);
    assert!(
        metrics.contains("mlvault_connections_refused_total{cap=\"client\"}"),
        "{metrics}"
    );

    // The held ones are closed by the server within the idle timeout
    // (4 s) plus scheduling slack.
    let deadline = Instant::now() + Duration::from_secs(20);
    let held_open = silent
        .iter_mut()
        .chain(sessions.iter_mut().map(|(t, _)| t))
        .filter_map(|t| (!closed_by(t, deadline)).then_some(()))
        .count();
    assert_eq!(held_open, 0, "connections the server never closed");
    let (_, _, metrics) = https(&s, "/metrics", None);
    assert!(
        metrics.contains("mlvault_connections_timed_out_total{why=\"idle\"}"),
        "{metrics}"
    );
    let (code, _, _) = https(&s, "/healthz", None);
    assert_eq!(code, 200);
}
