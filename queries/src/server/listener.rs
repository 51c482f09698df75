//! The connection layer of the API. The accept loop holds at most a
//! configured number of connections, and at most a share of them from one
//! peer address; when either is reached, the oldest *idle* connection (one
//! with no request under way: kept alive between requests, or still sending
//! its headers) gives way to the new one, so that idle sockets cannot lock
//! clients out. When every held connection is busy, a few more are taken
//! into a reserve that answers only `/healthz` (and 503 for the rest), so a
//! probe gets through under any load. Each connection has a deadline to send
//! a request's headers, a bounded header buffer, and a deadline for every
//! write to make progress (a client that stops reading is closed, and the
//! answer it held freed). On stop, requests under way finish.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits of the connection layer.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections held at most; past it the oldest idle one is closed for
    /// a new one, or (none idle) the new one goes to the reserve.
    pub max_connections: usize,
    /// Connections held at most from one peer address.
    pub max_connections_per_peer: usize,
    /// Time a connection has to send a request's headers, idle keep-alive
    /// time included.
    pub header_timeout: Duration,
    /// Time a write to a client may wait for it to read; past it the
    /// connection is closed.
    pub write_timeout: Duration,
}

/// Bytes of request headers a connection may buffer (hyper's read buffer);
/// a request whose headers are larger is answered 431.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// Connections taken beyond the limit when every held one is busy: they
/// answer `/healthz` and nothing else, one request each.
pub const RESERVE_CONNECTIONS: usize = 32;

/// Time a reserve connection has to send its request.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The connections held: by age (the key grows), and a count per peer.
#[derive(Default)]
struct Table {
    next: u64,
    held: BTreeMap<u64, Held>,
    per_peer: HashMap<IpAddr, usize>,
    reserve: usize,
}

struct Held {
    peer: IpAddr,
    /// Requests under way (from the headers read to the answer sent).
    busy: Arc<AtomicUsize>,
    /// Cancelled when this connection gives way to a new one.
    evict: CancellationToken,
}

/// Where a new connection goes.
enum Admission {
    Held { id: u64, busy: Arc<AtomicUsize>, evict: CancellationToken },
    Reserve,
    Refused,
}

impl Table {
    /// Takes a connection from `peer` within `limits`, closing the oldest
    /// idle connection if it must.
    fn admit(&mut self, peer: IpAddr, limits: &ConnectionLimits) -> Admission {
        let from_peer = self.per_peer.get(&peer).copied().unwrap_or(0);
        let room = if from_peer >= limits.max_connections_per_peer {
            self.evict_oldest_idle(Some(peer))
        } else if self.held.len() >= limits.max_connections {
            self.evict_oldest_idle(None)
        } else {
            true
        };
        if !room {
            if self.reserve < RESERVE_CONNECTIONS {
                self.reserve += 1;
                return Admission::Reserve;
            }
            return Admission::Refused;
        }
        let id = self.next;
        self.next += 1;
        let (busy, evict) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        self.held.insert(id, Held { peer, busy: Arc::clone(&busy), evict: evict.clone() });
        *self.per_peer.entry(peer).or_default() += 1;
        Admission::Held { id, busy, evict }
    }

    /// Closes the oldest connection with no request under way (of `peer`
    /// when given); whether there was one.
    fn evict_oldest_idle(&mut self, peer: Option<IpAddr>) -> bool {
        let oldest = self
            .held
            .iter()
            .find(|(_, held)| peer.is_none_or(|peer| held.peer == peer) && held.busy.load(Ordering::Relaxed) == 0)
            .map(|(id, _)| *id);
        match oldest {
            Some(id) => {
                if let Some(held) = self.release(id) {
                    held.evict.cancel();
                }
                true
            }
            None => false,
        }
    }

    fn release(&mut self, id: u64) -> Option<Held> {
        let held = self.held.remove(&id)?;
        if let Some(count) = self.per_peer.get_mut(&held.peer) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&held.peer);
            }
        }
        Some(held)
    }
}

/// Serves `router` on `listener` until `cancel`, within `limits`, and
/// `reserve` (`/healthz` only) on connections beyond them; returns once
/// every connection has ended.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    reserve: Router,
    limits: ConnectionLimits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let table = Arc::new(Mutex::new(Table::default()));
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let mut reserve_builder = hyper::server::conn::http1::Builder::new();
    reserve_builder
        .timer(TokioTimer::new())
        .header_read_timeout(RESERVE_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(false);
    let mut full_logged = false;
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, a connection reset before accept: wait a moment, go on.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admission = table.lock().unwrap_or_else(PoisonError::into_inner).admit(peer.ip(), &limits);
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
        let cancel = cancel.clone();
        match admission {
            Admission::Held { id, busy, evict } => {
                full_logged = false;
                let service = Counted { inner: TowerToHyperService::new(router.clone()), busy };
                let connection = builder.serve_connection(io, service);
                let table = Arc::clone(&table);
                connections.spawn(async move {
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        // Idle, and its place taken: closed at once.
                        () = evict.cancelled() => {}
                        () = cancel.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                    table.lock().unwrap_or_else(PoisonError::into_inner).release(id);
                });
            }
            Admission::Reserve => {
                if !std::mem::replace(&mut full_logged, true) {
                    tracing::warn!(
                        max = limits.max_connections,
                        per_peer = limits.max_connections_per_peer,
                        "every connection is busy; new ones get /healthz only"
                    );
                }
                let connection = reserve_builder.serve_connection(io, TowerToHyperService::new(reserve.clone()));
                let table = Arc::clone(&table);
                connections.spawn(async move {
                    let _ = connection.await;
                    table.lock().unwrap_or_else(PoisonError::into_inner).reserve -= 1;
                });
            }
            Admission::Refused => drop(io),
        }
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The router's service, counting the requests under way on its connection.
#[derive(Clone)]
struct Counted {
    inner: TowerToHyperService<Router>,
    busy: Arc<AtomicUsize>,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Counted {
    type Response = hyper::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let guard = BusyGuard::new(Arc::clone(&self.busy));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // Busy until the answer is sent (or dropped).
            Ok(response.map(|body| Body::new(Guarded { body, _guard: guard })))
        })
    }
}

/// One request under way on a connection.
struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    fn new(busy: Arc<AtomicUsize>) -> BusyGuard {
        busy.fetch_add(1, Ordering::Relaxed);
        BusyGuard(busy)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted until it is dropped.
struct Guarded {
    body: Body,
    _guard: BusyGuard,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A stream whose writes fail with `TimedOut` when one waits longer than
/// its timeout for the peer to read (as nginx's `send_timeout`: the time
/// between two successful writes, not the whole answer's).
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> WriteDeadline<S> {
        WriteDeadline { inner, timeout, stalled: None }
    }

    /// What a write that returned `poll` makes of it: progress clears the
    /// deadline, waiting arms it, and waiting past it is an error.
    fn check<T>(&mut self, poll: Poll<std::io::Result<T>>, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the client read nothing for {} s", timeout.as_secs()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(poll, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(poll, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(poll, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        max_connections: 4,
        max_connections_per_peer: 3,
        header_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(30),
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn held(admission: Admission) -> (u64, Arc<AtomicUsize>, CancellationToken) {
        match admission {
            Admission::Held { id, busy, evict } => (id, busy, evict),
            Admission::Reserve => panic!("went to the reserve"),
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn idle_connections_give_way_oldest_first_and_busy_ones_never() {
        let mut table = Table::default();
        let (_, busy_a, evict_a) = held(table.admit(ip(1), &LIMITS));
        let (_, _, evict_b) = held(table.admit(ip(1), &LIMITS));
        let (_, _, evict_c) = held(table.admit(ip(1), &LIMITS));
        busy_a.fetch_add(1, Ordering::Relaxed);
        // The peer's fourth: its oldest idle one (b, a is busy) goes.
        held(table.admit(ip(1), &LIMITS));
        assert!(!evict_a.is_cancelled() && evict_b.is_cancelled() && !evict_c.is_cancelled());
        // Another peer fits; a third one, at the global limit, takes the
        // place of the oldest idle connection of anyone (c).
        held(table.admit(ip(2), &LIMITS));
        assert!(!evict_c.is_cancelled());
        held(table.admit(ip(3), &LIMITS));
        assert!(evict_c.is_cancelled() && !evict_a.is_cancelled());
        assert_eq!(table.held.len(), 4);
        assert_eq!(table.per_peer[&ip(1)], 2);
    }

    #[test]
    fn past_every_busy_connection_the_reserve_then_refusal() {
        let mut table = Table::default();
        let busy: Vec<_> = (0..4).map(|i| held(table.admit(ip(i), &LIMITS)).1).collect();
        busy.iter().for_each(|b| _ = b.fetch_add(1, Ordering::Relaxed));
        for _ in 0..RESERVE_CONNECTIONS {
            assert!(matches!(table.admit(ip(9), &LIMITS), Admission::Reserve));
        }
        assert!(matches!(table.admit(ip(9), &LIMITS), Admission::Refused));
        // A request ends: its connection is idle, and gives way.
        busy[2].fetch_sub(1, Ordering::Relaxed);
        held(table.admit(ip(9), &LIMITS));
    }
}
