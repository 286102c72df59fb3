//! What the fake APIs share for fault injection: a listener whose connections end with a TCP reset
//! when dropped, a response that drops the connection before a byte of it is written (a "connection
//! reset by peer" for the client), and the check that no retry came earlier than the `Retry-After` the
//! fake asked for.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::Method;
use axum::response::Response;
use axum::serve::ListenerExt;

/// Binds 127.0.0.1 on a free port. Every accepted connection has `SO_LINGER = 0`, so a connection the
/// server drops (see [`reset_response`]) is answered with a TCP RST instead of an orderly close.
pub async fn listener() -> (
    std::net::SocketAddr,
    impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr>,
) {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind a fake API to 127.0.0.1");
    let addr = l.local_addr().expect("local address of the fake");
    let l = l.tap_io(|tcp| {
        let _ = tcp.set_zero_linger();
        let _ = tcp.set_nodelay(true);
    });
    (addr, l)
}

/// A body that fails before its first frame: hyper then aborts the connection without flushing the
/// status line it had buffered, so the client gets no answer at all, only a reset.
struct Broken;

impl http_body::Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected connection reset",
        ))))
    }
}

/// A "response" that resets the connection instead of answering.
pub fn reset_response() -> Response {
    Response::new(Body::new(Broken))
}

/// The status a fake records for a request whose connection it reset.
pub const RESET: u16 = 0;

/// One request as a fake saw it, for timing checks.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub method: Method,
    /// Path and query: a retry repeats both.
    pub target: String,
    pub at: Instant,
    pub status: u16,
    /// The `Retry-After` the fake answered with.
    pub retry_after: Option<Duration>,
}

/// Every request that came back sooner than the `Retry-After` its previous attempt was told to wait
/// (same method, path and query), as readable lines. Arrival times are compared: the client could
/// only start waiting once the answer left the fake, so a correct retry arrives at least
/// `Retry-After` after the attempt it repeats.
pub fn retry_after_violations(log: &[Attempt]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in log.iter().enumerate() {
        let Some(wait) = a.retry_after else { continue };
        if let Some(next) = log[i + 1..]
            .iter()
            .find(|b| b.method == a.method && b.target == a.target)
        {
            let gap = next.at.duration_since(a.at);
            if gap < wait {
                out.push(format!(
                    "{} {} came back after {:?}, but HTTP {} asked for Retry-After {:?}",
                    a.method, a.target, gap, a.status, wait
                ));
            }
        }
    }
    out
}

/// How many answers carried a `Retry-After`, and how many were followed by a retry of the same request.
pub fn retry_after_count(log: &[Attempt]) -> (usize, usize) {
    let mut told = 0;
    let mut retried = 0;
    for (i, a) in log.iter().enumerate() {
        if a.retry_after.is_none() {
            continue;
        }
        told += 1;
        if log[i + 1..]
            .iter()
            .any(|b| b.method == a.method && b.target == a.target)
        {
            retried += 1;
        }
    }
    (told, retried)
}
