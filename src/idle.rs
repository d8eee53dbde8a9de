//! Closes connections that keep rtbd waiting: a client must send each
//! request, head and body, within `header_read_timeout_ms` of connecting or
//! of its previous answer. Slow-loris connections and idle keep-alive
//! connections are closed that way.
//!
//! Written by hand, rather than using hyper's `header_read_timeout`, because
//! that arms a timer for every request: an allocation and two operations on
//! the runtime's timer wheel, measured at about a tenth of the server's CPU
//! per ping under load. Here a request costs a clock read and one or two
//! atomic stores, and one task sweeps every open connection a few times per
//! timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use parking_lot::Mutex;
use tokio::task::{AbortHandle, JoinHandle};

/// The mark of a connection on which rtbd is working on a request.
const BUSY: u64 = u64::MAX;

/// Every open connection and how long it has been waiting for its client.
pub struct Idle {
    inner: Arc<Inner>,
    sweeper: JoinHandle<()>,
}

struct Inner {
    started: Instant,
    timeout_ms: u64,
    /// How often the sweeper runs: a connection is closed between
    /// `timeout_ms` and `timeout_ms` plus one of these after its client
    /// went quiet (more if the runtime is too busy to sweep on time).
    every_ms: u64,
    next_id: AtomicU64,
    conns: Mutex<AHashMap<u64, Conn>>,
}

struct Conn {
    watch: Arc<Watch>,
    abort: Option<AbortHandle>,
}

/// One connection's mark: since when (on the sweeper's clock) it has been
/// waiting for its client, or [`BUSY`].
pub struct Watch {
    since_ms: AtomicU64,
    inner: Arc<Inner>,
}

impl Watch {
    /// rtbd works on a request: no deadline runs.
    #[inline]
    pub fn busy(&self) {
        self.since_ms.store(BUSY, Ordering::Release);
    }

    /// rtbd has answered: the client's time for its next request starts.
    #[inline]
    pub fn waiting(&self) {
        self.since_ms.store(self.inner.elapsed_ms(), Ordering::Release);
    }
}

/// Keeps a connection registered while its task runs; dropping it (the
/// connection ended or was closed) takes it out.
pub struct Registered {
    id: u64,
    inner: Arc<Inner>,
}

impl Registered {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.inner.conns.lock().remove(&self.id);
    }
}

impl Idle {
    /// Starts the sweeper (on the current tokio runtime).
    pub fn start(timeout: Duration) -> Idle {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        let inner = Arc::new(Inner {
            started: Instant::now(),
            timeout_ms,
            every_ms: (timeout_ms / 4).clamp(10, 1_000),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(AHashMap::new()),
        });
        let sweeper = tokio::spawn(sweep(inner.clone()));
        Idle { inner, sweeper }
    }

    /// Registers a new connection, waiting for its first request from now.
    pub fn watch(&self) -> (Arc<Watch>, Registered) {
        let watch = Arc::new(Watch { since_ms: AtomicU64::new(0), inner: self.inner.clone() });
        watch.waiting();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.conns.lock().insert(id, Conn { watch: watch.clone(), abort: None });
        (watch, Registered { id, inner: self.inner.clone() })
    }

    /// How the sweeper closes connection `id`: by aborting the task that
    /// serves it (which drops the socket). A connection already gone is
    /// not there any more: nothing to do.
    pub fn closes_with(&self, id: u64, abort: AbortHandle) {
        if let Some(conn) = self.inner.conns.lock().get_mut(&id) {
            conn.abort = Some(abort);
        }
    }

    /// Closes every connection still open (at the end of a shutdown that
    /// waited long enough).
    pub fn close_all(&self) {
        for conn in self.inner.conns.lock().values() {
            if let Some(abort) = &conn.abort {
                abort.abort();
            }
        }
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

impl Inner {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }
}

async fn sweep(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(Duration::from_millis(inner.every_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = inner.elapsed_ms();
        for conn in inner.conns.lock().values() {
            let since = conn.watch.since_ms.load(Ordering::Acquire);
            if since != BUSY
                && now.saturating_sub(since) > inner.timeout_ms
                && let Some(abort) = &conn.abort
            {
                abort.abort();
            }
        }
    }
}
