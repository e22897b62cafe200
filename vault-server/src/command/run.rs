//! `vault-server run`: unseal, open, serve until SIGTERM / Ctrl-C.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::api;
use crate::cli::RunArgs;
use crate::exit::fail;
use crate::vault::Vault;

pub fn run(a: RunArgs) -> Result<()> {
    if !a.listen.ip().is_loopback() && !a.insecure_http {
        return Err(fail(
            2,
            format!(
                "refusing to serve plain HTTP on non-loopback address {}: tokens would cross the network in clear (pass --insecure-http to override)",
                a.listen
            ),
        ));
    }
    tracing::info!(data_dir = %a.data_dir.display(), "unsealing vault");
    let vault = Arc::new(Vault::open(
        &a.data_dir,
        &a.unseal,
        a.segment_size,
        a.alias_ttl,
        !a.no_alias_renewal,
    )?);
    tracing::info!("vault unsealed, key ring open");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(vault, a))
}

async fn serve(vault: Arc<Vault>, a: RunArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| fail(7, format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "listening");
    let sweeper = {
        let v = vault.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                match api::sweep(&v).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "abandoned expired upload sessions"),
                    Err(e) => tracing::warn!(error = ?e.message, "session sweep failed"),
                }
            }
        })
    };
    axum::serve(listener, api::app(vault))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    sweeper.abort();
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
