//! Closes connections that keep rtbd waiting: a client must send each
//! request, head and body, within `header_read_timeout_ms` of connecting or
//! of its previous answer. Slow-loris connections and idle keep-alive
//! connections are closed that way.
//!
//! Written by hand, rather than using hyper's `header_read_timeout`, because
//! that arms a timer for every request: an allocation and two operations on
//! the runtime's timer wheel, measured at about a tenth of the server's CPU
//! per ping under load. Here a request costs one or two atomic stores, and
//! one task sweeps every open connection several times per timeout.
//!
//! A connection's mark is not a time but the number of sweeps begun when
//! it started waiting: reading the clock for every request costs more than
//! the mark is worth. Sweeps are at least `every_ms` apart, so a connection
//! marked at sweep `m` has waited at least `(E - m - 1) * every_ms` when
//! sweep `E` begins; it is closed once that reaches the timeout, that is
//! once `E > m + after_sweeps`. So never
//! early, and at most two sweeps late (a sweep every eighth of the timeout,
//! at least 10 ms and at most a second apart).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Sweeps begun (see the module's notes).
    sweeps: AtomicU64,
    /// Sweeps a connection must have waited through, whole, to be closed.
    after_sweeps: u64,
    /// How often the sweeper runs: a connection is closed between the
    /// timeout and the timeout plus two of these after its client
    /// went quiet (more if the runtime is too busy to sweep on time).
    every_ms: u64,
    next_id: AtomicU64,
    conns: Mutex<AHashMap<u64, Conn>>,
}

struct Conn {
    watch: Arc<Watch>,
    abort: Option<AbortHandle>,
}

/// One connection's mark: the sweeps begun when it started waiting for its
/// client, or [`BUSY`].
pub struct Watch {
    since: AtomicU64,
    inner: Arc<Inner>,
}

impl Watch {
    /// rtbd works on a request: no deadline runs.
    #[inline]
    pub fn busy(&self) {
        self.since.store(BUSY, Ordering::Release);
    }

    /// rtbd has answered: the client's time for its next request starts.
    #[inline]
    pub fn waiting(&self) {
        self.since.store(self.inner.sweeps.load(Ordering::Acquire), Ordering::Release);
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
        let every_ms = (timeout_ms / 8).clamp(10, 1_000);
        let inner = Arc::new(Inner {
            sweeps: AtomicU64::new(0),
            after_sweeps: timeout_ms.div_ceil(every_ms),
            every_ms,
            next_id: AtomicU64::new(0),
            conns: Mutex::new(AHashMap::new()),
        });
        let sweeper = tokio::spawn(sweep(inner.clone()));
        Idle { inner, sweeper }
    }

    /// Registers a new connection, waiting for its first request from now.
    pub fn watch(&self) -> (Arc<Watch>, Registered) {
        let watch = Arc::new(Watch { since: AtomicU64::new(0), inner: self.inner.clone() });
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

async fn sweep(inner: Arc<Inner>) {
    loop {
        // A sleep from the end of the last sweep, not an interval: an
        // interval's tick can come a little sooner after a late one, and
        // the count of sweeps must never run ahead of the time.
        tokio::time::sleep(Duration::from_millis(inner.every_ms)).await;
        // Counted before the marks are read: a mark that still reads the
        // last count started waiting no earlier than that sweep began.
        let sweep = inner.sweeps.fetch_add(1, Ordering::AcqRel) + 1;
        for conn in inner.conns.lock().values() {
            let since = conn.watch.since.load(Ordering::Acquire);
            if since != BUSY
                && sweep > since.saturating_add(inner.after_sweeps)
                && let Some(abort) = &conn.abort
            {
                abort.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps paused time a millisecond at a time until `task` ends, up to
    /// `limit_ms`; returns the milliseconds stepped.
    async fn step_until_closed(task: &JoinHandle<()>, limit_ms: u64) -> u64 {
        let mut waited = 0;
        while !task.is_finished() && waited < limit_ms {
            tokio::time::advance(Duration::from_millis(1)).await;
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            waited += 1;
        }
        waited
    }

    /// Steps time until `task` ends: it must end a timeout (1 s) after it
    /// started waiting, at most two sweeps late.
    async fn closed_a_timeout_later(task: &JoinHandle<()>) {
        let waited = step_until_closed(task, 5_000).await;
        assert!((1_000..=1_250).contains(&waited), "closed after {waited} ms");
    }

    fn watched(idle: &Idle) -> (Arc<Watch>, Registered, JoinHandle<()>) {
        let (watch, registered) = idle.watch();
        let task = tokio::spawn(std::future::pending::<()>());
        idle.closes_with(registered.id(), task.abort_handle());
        (watch, registered, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_connection_is_closed_after_the_timeout_and_never_before() {
        let idle = Idle::start(Duration::from_millis(1_000));
        let (_watch, _registered, task) = watched(&idle);
        closed_a_timeout_later(&task).await;
    }

    #[tokio::test(start_paused = true)]
    async fn each_answer_starts_the_time_again_and_work_stops_it() {
        let idle = Idle::start(Duration::from_millis(1_000));
        let (watch, _registered, task) = watched(&idle);
        // Answers every 900 ms (at odd moments between sweeps): never closed.
        for _ in 0..10 {
            assert_eq!(step_until_closed(&task, 900).await, 900);
            watch.waiting();
        }
        // A request being worked on for a long while: never closed.
        watch.busy();
        assert_eq!(step_until_closed(&task, 10_000).await, 10_000);
        // Then the answer: closed a timeout later.
        watch.waiting();
        closed_a_timeout_later(&task).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_sweep_closes_nothing_early() {
        let idle = Idle::start(Duration::from_millis(1_000));
        let (watch, _registered, task) = watched(&idle);
        // Time jumps past several sweeps at once (a runtime too busy to
        // sweep on time), then the client is answered.
        tokio::time::advance(Duration::from_millis(700)).await;
        watch.waiting();
        closed_a_timeout_later(&task).await;
    }
}
