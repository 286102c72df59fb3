//! Accepting and holding HTTP connections so that no number of idle or slow clients can starve the
//! server (HTTP/1.1; what MCP clients speak).
//!
//! Guarantees:
//!
//! * **Every connection is bounded in time while it sends nothing useful.** A request's headers must
//!   arrive within `header_read_timeout` (a half-sent request is closed then), and the same timeout
//!   closes a keep-alive connection that sends no next request. Request bodies have their own bound
//!   (`http::BODY_READ_TIMEOUT`).
//! * **The number of connections is capped below the open-file limit.** At start the soft
//!   `RLIMIT_NOFILE` is raised to the hard one; the cap is `max_connections`, lowered so that
//!   [`FD_MARGIN`] descriptors stay free for the database pool, state files and child processes, so
//!   `accept` never fails for want of descriptors.
//! * **A full server still answers `/health`.** When every slot is taken, the connection that has been
//!   idle longest (no request in progress) is closed to make room for the new one; when every
//!   connection is busy with a request, up to [`PROBE_RESERVE`] more are accepted for `/health` and
//!   `/metrics` only (others get `503` with `Retry-After`), with a short header timeout and no
//!   keep-alive. Beyond that, a connection is closed as soon as it is accepted, which keeps the
//!   kernel's backlog moving.
//! * **Shutdown is graceful.** When `shutdown` is cancelled no connection is accepted any more, idle
//!   connections close, and requests in progress finish (waited for at most [`DRAIN_TIMEOUT`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

/// Connections accepted beyond the cap, for `/health` and `/metrics` only.
pub const PROBE_RESERVE: usize = 16;
/// Descriptors kept free for everything that is not a client connection.
pub const FD_MARGIN: u64 = 128;
/// The fewest connections the cap allows, whatever the open-file limit.
const MIN_CONNECTIONS: usize = 16;
/// Header timeout of a probe-only connection.
const PROBE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new connection waits for the slot of a connection it evicted.
const EVICTION_WAIT: Duration = Duration::from_millis(250);
/// How long shutdown waits for requests in progress.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force (`None` when
/// it cannot be read, or is unlimited).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    limit.current
}

/// The connection cap for `configured` under an open-file limit of `nofile`.
pub fn effective_max(configured: usize, nofile: Option<u64>) -> usize {
    let room = nofile.map_or(usize::MAX, |n| {
        usize::try_from(n.saturating_sub(FD_MARGIN)).unwrap_or(usize::MAX)
    });
    configured
        .min(room.saturating_sub(PROBE_RESERVE))
        .max(MIN_CONNECTIONS)
}

/// What the accept loop knows about a connection it may have to close.
struct Tracked {
    /// Requests whose response (body included) is not finished.
    busy: AtomicUsize,
    /// When the last request finished (or the connection opened).
    idle_since: Mutex<Instant>,
    close: CancellationToken,
}

/// Open full-service connections, for eviction.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
}

impl Registry {
    fn add(&self) -> (u64, Arc<Tracked>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let t = Arc::new(Tracked {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            close: CancellationToken::new(),
        });
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, t.clone());
        (id, t)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Closes the connection idle the longest; false when every connection is busy.
    fn evict_idlest(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let idlest = open
            .values()
            .filter(|t| t.busy.load(Ordering::Acquire) == 0 && !t.close.is_cancelled())
            .min_by_key(|t| *t.idle_since.lock().unwrap_or_else(|e| e.into_inner()));
        match idlest {
            Some(t) => {
                t.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Marks its connection busy until the response body is finished or dropped.
struct BusyGuard(Arc<Tracked>);

impl BusyGuard {
    fn new(t: Arc<Tracked>) -> Self {
        t.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(t)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy while it streams (server-sent events).
struct GuardedBody {
    inner: Body,
    _guard: BusyGuard,
}

impl http_body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn busy_response() -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": "the server is at its connection limit; only /health and /metrics are answered on this connection"
        })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A connection's place: a full-service slot or a probe-only one (held until the connection ends).
struct Slot {
    probe_only: bool,
    _permit: OwnedSemaphorePermit,
}

/// Serves `app` on `listener` until `shutdown` is cancelled (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    on_refused: impl Fn() + Send + 'static,
    shutdown: CancellationToken,
) {
    let full = Arc::new(Semaphore::new(limits.max_connections));
    let probes = Arc::new(Semaphore::new(PROBE_RESERVE));
    let registry = Arc::new(Registry::default());
    // Each connection task holds a receiver; shutdown waits until all are dropped.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE/ENFILE should not happen under the cap; wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // TCP_NODELAY: MCP answers in a session are server-sent events written in several small pieces
        // (rmcp's priming event, then the message); with Nagle's algorithm on, the second piece waits
        // for the client's delayed ACK, adding ~40 ms to every call.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
        let slot = match full.clone().try_acquire_owned() {
            Ok(permit) => Some(Slot {
                probe_only: false,
                _permit: permit,
            }),
            Err(_) => {
                let evicted = registry.evict_idlest();
                let waited = if evicted {
                    tokio::time::timeout(EVICTION_WAIT, full.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                match waited {
                    Some(permit) => Some(Slot {
                        probe_only: false,
                        _permit: permit,
                    }),
                    None => probes.clone().try_acquire_owned().ok().map(|permit| Slot {
                        probe_only: true,
                        _permit: permit,
                    }),
                }
            }
        };
        let Some(slot) = slot else {
            on_refused();
            drop(stream);
            continue;
        };
        let conn = Conn {
            app: app.clone(),
            remote,
            limits,
            registry: registry.clone(),
            shutdown: shutdown.clone(),
        };
        let open = open_rx.clone();
        tokio::spawn(async move {
            conn.run(stream, slot).await;
            drop(open);
        });
    }
    drop(open_rx);
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, open_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("requests still in progress after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}

struct Conn {
    app: Router,
    remote: SocketAddr,
    limits: ConnectionLimits,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
}

impl Conn {
    async fn run(self, stream: tokio::net::TcpStream, slot: Slot) {
        let probe_only = slot.probe_only;
        let tracked = (!probe_only).then(|| self.registry.add());
        let close = tracked
            .as_ref()
            .map_or_else(CancellationToken::new, |(_, t)| t.close.clone());
        let (app, remote, for_service) = (self.app, self.remote, tracked.clone());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut app = app.clone();
            let guard = for_service.as_ref().map(|(_, t)| BusyGuard::new(t.clone()));
            async move {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(remote));
                let path = req.uri().path();
                if probe_only && path != "/health" && path != "/metrics" {
                    return Ok::<_, Infallible>(busy_response());
                }
                let response = app.call(req).await.unwrap_or_else(|e| match e {});
                Ok(match guard {
                    Some(g) => response.map(|inner| Body::new(GuardedBody { inner, _guard: g })),
                    None => response,
                })
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(if probe_only {
                PROBE_HEADER_TIMEOUT.min(self.limits.header_read_timeout)
            } else {
                self.limits.header_read_timeout
            })
            .keep_alive(!probe_only);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            _ = self.shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.as_mut().await;
            }
            _ = close.cancelled() => {
                // Evicted while idle: nothing is in progress on it.
                connection.as_mut().graceful_shutdown();
                let _ = connection.as_mut().await;
            }
        }
        if let Some((id, _)) = tracked {
            self.registry.remove(id);
        }
        drop(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_free() {
        assert_eq!(effective_max(1024, Some(65_536)), 1024);
        assert_eq!(effective_max(1024, Some(1024)), 1024 - 128 - 16);
        assert_eq!(effective_max(1024, Some(100)), MIN_CONNECTIONS);
        assert_eq!(effective_max(50, None), 50);
    }
}
