//! Connection limits: a cap on open connections (total and per client
//! address), and timeouts for connections that go quiet.
//!
//! [`Limiter`] is an `axum_server` acceptor that runs on the raw TCP
//! stream, under TLS, so everything above it (the TLS handshake, hyper's
//! protocol detection, HTTP/1 keep-alive, HTTP/2) is covered:
//! - a connection over the cap is closed as soon as it is accepted;
//! - a connection that moved no byte for `idle` while no request of it is
//!   being handled is closed (silent TCP, TLS that goes quiet after the
//!   handshake, an idle HTTP/1 keep-alive or HTTP/2 connection);
//! - a connection that moved no byte for `stall` is closed even with a
//!   request in a handler (a client that stopped reading its download).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// File descriptors kept free for the store, the metadata and the audit
/// log when the connection cap is derived from `RLIMIT_NOFILE`.
const FD_RESERVE: u64 = 64;

/// The effective limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub max_total: usize,
    pub max_per_client: usize,
    pub idle: Duration,
    pub stall: Duration,
}

impl ConnLimits {
    /// From the config, with the total cap lowered to what the process's
    /// file-descriptor limit allows (after raising the soft limit to the
    /// hard one).
    pub fn from_config(h: &crate::config::HttpLimits) -> Self {
        let fds = raise_nofile();
        let by_fds = fds.map_or(usize::MAX, |n| {
            n.saturating_sub(FD_RESERVE).max(16) as usize
        });
        ConnLimits {
            max_total: h.max_connections.min(by_fds).max(1),
            max_per_client: h.max_connections_per_client.max(1),
            idle: Duration::from_secs(h.idle_timeout_secs.max(1)),
            stall: Duration::from_secs(h.stall_timeout_secs.max(h.idle_timeout_secs).max(1)),
        }
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; the soft limit after.
fn raise_nofile() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        let want = rustix::process::Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            l = getrlimit(Resource::Nofile);
        }
    }
    l.current
}

/// The key a client's connections are counted under: its IPv4 address, or
/// the /64 of an IPv6 address (one host usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Shared connection accounting.
pub struct Tracker {
    limits: ConnLimits,
    counts: Mutex<Counts>,
    epoch: Instant,
}

impl Tracker {
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Tracker {
            limits,
            counts: Mutex::new(Counts {
                total: 0,
                per_client: HashMap::new(),
            }),
            epoch: Instant::now(),
        })
    }

    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, &'static str> {
        let key = client_key(peer);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.limits.max_total {
            return Err("total");
        }
        let n = c.per_client.entry(key).or_insert(0);
        if *n >= self.limits.max_per_client {
            return Err("client");
        }
        *n += 1;
        c.total += 1;
        metrics::gauge!("mlvault_connections_open").set(c.total as f64);
        Ok(Slot {
            tracker: self.clone(),
            key,
        })
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// One admitted connection's place under the caps; freed on drop.
struct Slot {
    tracker: Arc<Tracker>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .tracker
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.key);
            }
        }
        metrics::gauge!("mlvault_connections_open").set(c.total as f64);
    }
}

/// What the stream and the service of one connection share.
struct ConnState {
    last_io: AtomicU64,
    in_flight: AtomicUsize,
}

/// The acceptor: admits under the caps, sets `TCP_NODELAY`, and wraps the
/// stream and the service.
#[derive(Clone)]
pub struct Limiter {
    tracker: Arc<Tracker>,
}

impl Limiter {
    pub fn new(tracker: Arc<Tracker>) -> Self {
        Limiter { tracker }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for Limiter {
    type Stream = Tracked;
    type Service = InFlight<S>;
    type Future = std::future::Ready<io::Result<(Tracked, InFlight<S>)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.admit(stream, service))
    }
}

impl Limiter {
    fn admit<S>(&self, stream: TcpStream, service: S) -> io::Result<(Tracked, InFlight<S>)> {
        let peer = stream.peer_addr()?;
        let slot = self.tracker.admit(peer.ip()).map_err(|which| {
            metrics::counter!("mlvault_connections_refused_total", "cap" => which).increment(1);
            tracing::debug!(client = %peer, cap = which, "connection refused: over the cap");
            io::Error::other(format!("connection from {peer} over the {which} cap"))
        })?;
        // Without TCP_NODELAY a small frame the server writes while
        // receiving (an HTTP/2 WINDOW_UPDATE) waits for the client's
        // delayed ACK, and an HTTP/2 upload crawled at about 30 MB/s.
        stream.set_nodelay(true)?;
        let state = Arc::new(ConnState {
            last_io: AtomicU64::new(self.tracker.millis()),
            in_flight: AtomicUsize::new(0),
        });
        let limits = self.tracker.limits;
        let tracked = Tracked {
            inner: stream,
            state: state.clone(),
            timer: Box::pin(tokio::time::sleep(limits.idle)),
            _slot: slot,
            tracker: self.tracker.clone(),
            peer,
        };
        Ok((
            tracked,
            InFlight {
                inner: service,
                state,
            },
        ))
    }
}

/// A TCP stream that records when it last moved a byte and fails once it
/// has been quiet too long.
pub struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
    timer: Pin<Box<Sleep>>,
    _slot: Slot,
    tracker: Arc<Tracker>,
    peer: SocketAddr,
}

impl Tracked {
    fn touch(&self) {
        self.state
            .last_io
            .store(self.tracker.millis(), Ordering::Relaxed);
    }

    /// Called when the inner stream is not ready: `Err` once the
    /// connection has been quiet past its limit. The timer is judged only
    /// when it fires (not re-armed on every pending poll, which a busy
    /// connection makes thousands of times a second); a fired timer is
    /// re-armed for the next moment the connection could be over.
    fn check_quiet(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let limits = self.tracker.limits;
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = self.tracker.millis();
            let quiet = Duration::from_millis(
                now.saturating_sub(self.state.last_io.load(Ordering::Relaxed)),
            );
            let busy = self.state.in_flight.load(Ordering::Relaxed) > 0;
            let limit = if busy { limits.stall } else { limits.idle };
            if quiet >= limit {
                let why = if busy { "stall" } else { "idle" };
                metrics::counter!("mlvault_connections_timed_out_total", "why" => why).increment(1);
                tracing::debug!(client = %self.peer, why, "closing a quiet connection");
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection {why} for {}s", quiet.as_secs()),
                ));
            }
            // While a request is in a handler, look again at least every
            // `idle` so a connection that goes idle is not kept a stall
            // limit long.
            let wait = (limit - quiet).min(limits.idle);
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + wait);
        }
        Ok(())
    }
}

impl Tracked {
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.check_quiet(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.check_quiet(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The connection's service, counting requests while their handler runs
/// (until the response head is ready; a response body moves bytes).
#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    state: Arc<ConnState>,
}

struct InFlightGuard(Arc<ConnState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, R> tower_service::Service<R> for InFlight<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlightGuard(self.state.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(guard);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(m), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn caps_count_and_release() {
        let t = Tracker::new(ConnLimits {
            max_total: 3,
            max_per_client: 2,
            idle: Duration::from_secs(1),
            stall: Duration::from_secs(1),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = t.admit(a).unwrap();
        let _s2 = t.admit(a).unwrap();
        assert_eq!(t.admit(a).err(), Some("client"));
        let _s3 = t.admit(b).unwrap();
        assert_eq!(t.admit(b).err(), Some("total"));
        drop(s1);
        assert!(t.admit(a).is_ok());
    }
}
