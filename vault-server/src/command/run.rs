//! `vault-server run`: unseal, open, serve until SIGTERM / Ctrl-C.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::api;
use crate::cli::RunArgs;
use crate::exit::{fail, ExitStatus};
use crate::vault::Vault;

pub fn run(a: RunArgs) -> Result<()> {
    if !a.listen.ip().is_loopback() && !a.insecure_http {
        return Err(fail(ExitStatus::Usage,
            format!(
                "refusing to serve plain HTTP on non-loopback address {}: tokens would cross the network in clear (pass --insecure-http to override)",
                a.listen
            ),
        ));
    }
    let config = crate::config::ServerConfig::load(a.config.as_deref())?;
    crate::metrics_setup::install();
    tracing::info!(data_dir = %a.data_dir.display(), "unsealing vault");
    let mut vault = Vault::open(
        &a.data_dir,
        &a.unseal,
        a.segment_size,
        a.alias_ttl,
        !a.no_alias_renewal,
        a.policies.as_deref(),
        &config,
        a.reseal_audit.as_deref(),
    )?;
    tracing::info!("vault unsealed, key ring open");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(secs) = a.body_timeout_secs {
        vault.http.body_timeout_secs = secs;
    }
    if let Some(secs) = a.header_timeout_secs {
        vault.http.header_timeout_secs = secs;
    }
    let vault = Arc::new(vault);
    rt.block_on(serve(vault, a))
}

async fn serve(vault: Arc<Vault>, a: RunArgs) -> Result<()> {
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| {
                    fail(
                        ExitStatus::Usage,
                        format!("cannot load TLS certificate or key: {e}"),
                    )
                })?,
        ),
        _ => None,
    };
    let listener = std::net::TcpListener::bind(a.listen).map_err(|e| {
        fail(
            ExitStatus::Unavailable,
            format!("cannot listen on {}: {e}", a.listen),
        )
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, tls = tls.is_some(), "listening");
    let hup = {
        let v = vault.clone();
        tokio::spawn(async move {
            let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while s.recv().await.is_some() {
                let v2 = v.clone();
                match tokio::task::spawn_blocking(move || v2.reload_policy()).await {
                    Ok(Ok(n)) => tracing::info!(policies = n, "SIGHUP: policies reloaded"),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "SIGHUP: policy reload refused, the running set stays in force")
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: policy reload failed"),
                }
            }
        })
    };
    let sweeper = {
        let v = vault.clone();
        tokio::spawn(async move {
            // Often enough that an idle session goes soon after it expires.
            let every = (v.http.upload_idle_secs / 2).clamp(1, 60);
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            loop {
                tick.tick().await;
                match crate::domain::ingest::sweep(&v).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "abandoned expired upload sessions"),
                    Err(e) => tracing::warn!(error = %e, "session sweep failed"),
                }
            }
        })
    };
    let checkpointer = {
        let v = vault.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let v2 = v.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = api::flush_floods(&v2) {
                        tracing::warn!(error = %e, "cannot write flood summaries to the audit log");
                    }
                    v2.audit.checkpoint()
                })
                .await;
            }
        })
    };
    match crate::domain::anonymize::resume(&vault) {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "resumed interrupted anonymization jobs"),
        Err(e) => tracing::error!(error = %format!("{e:#}"), "could not resume jobs"),
    }
    // What aliases point at is judged by the scanner running now.
    let rescans = Some(tokio::spawn(crate::domain::admission::rescan_aliased(
        vault.clone(),
        None,
    )));
    let take_over = vault
        .shared
        .then(|| tokio::spawn(crate::domain::anonymize::take_over(vault.clone())));
    let policies = vault
        .shared
        .then(|| tokio::spawn(vault.clone().follow_policy_reloads()));
    let usage = vault.limits.shared().is_some().then(|| {
        let v = vault.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let v2 = v.clone();
                let synced = tokio::task::spawn_blocking(move || {
                    v2.limits.shared().map_or(Ok(()), |s| s.sync())
                })
                .await;
                if let Ok(Err(e)) = synced {
                    tracing::warn!(error = %e, "cannot share rate-limit counts with the other replicas");
                }
            }
        })
    });
    let handle = axum_server::Handle::new();
    {
        let h = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            h.graceful_shutdown(Some(Duration::from_secs(30)));
        });
    }
    let app = api::app(vault.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Slow-loris: a client gets this long to send its request headers, and
    // (through protocol detection and a quiet TLS session) its first request.
    let header_timeout = Duration::from_secs(vault.http.header_timeout_secs);
    let conn_limits = crate::conn::ConnLimits::from_config(&vault.http);
    tracing::info!(
        max_connections = conn_limits.max_total,
        per_client = conn_limits.max_per_client,
        idle_secs = conn_limits.idle.as_secs(),
        "connection limits"
    );
    let limiter = crate::conn::Limiter::new(crate::conn::Tracker::new(conn_limits));
    // HTTP settings shared by the plain and the TLS listener.
    macro_rules! tune {
        ($b:expr) => {{
            $b.http1().header_read_timeout(header_timeout);
            // Streams one HTTP/2 connection may open at once (hyper's
            // default is 200); each is a request the server works on.
            $b.http2().max_concurrent_streams(64);
        }};
    }
    match tls {
        Some(config) => {
            let mut server = axum_server::from_tcp_rustls(listener, config)?
                .map(|tls| tls.handshake_timeout(header_timeout).acceptor(limiter))
                .first_request_timeout(header_timeout);
            tune!(server.http_builder());
            server.handle(handle).serve(app).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(limiter)
                .first_request_timeout(header_timeout);
            tune!(server.http_builder());
            server.handle(handle).serve(app).await
        }
    }
    .context("server failed")?;
    sweeper.abort();
    hup.abort();
    checkpointer.abort();
    for t in [rescans, take_over, policies, usage].into_iter().flatten() {
        t.abort();
    }
    if let Err(e) = api::flush_floods(&vault) {
        tracing::warn!(error = %e, "cannot write flood summaries to the audit log");
    }
    match vault.audit.checkpoint() {
        Ok(()) => tracing::info!("audit log checkpointed"),
        Err(e) => tracing::error!(error = %e, "final audit checkpoint failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}
