//! Heap allocations on the ping path. A ping is answered thousands of times
//! for every call, so what it allocates is watched: a ping for a new caller
//! on the load harness's config (ten targets, one of them paused) makes
//! four allocations (the decoded caller number, the answer's body, the two
//! parts of its header map), and every one of them is freed by the time its
//! answer is: nothing stays on the heap with the ping's record.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use hyper::Request;
use hyper::body::Body as _;
use rtbd::clock::ManualClock;
use rtbd::engine::Engine;
use rtbd::{config, http};

/// Counts the allocations and frees of the thread that turned counting on
/// (the test harness runs other tests on other threads meanwhile).
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
    static FREED: Cell<u64> = const { Cell::new(0) };
}

fn count(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    // `try_with`: a thread being torn down has no locals any more.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = counter.try_with(|c| c.set(c.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCATED);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(&FREED);
        unsafe { System.dealloc(ptr, layout) }
    }

    /// Not counted: the table's rings grow by reallocation (amortized over
    /// many pings), and the answer's body is shrunk to its length.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The body of a ready answer, without a runtime.
fn body(response: hyper::Response<rtbd::reply::Body>) -> bytes::Bytes {
    let mut body = response.into_body();
    match Pin::new(&mut body).poll_frame(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
        _ => panic!("the answer's body is not ready"),
    }
}

#[test]
fn a_ping_allocates_four_times_and_keeps_nothing_on_the_heap() {
    let text = std::fs::read_to_string("benches/load/rtbd.toml").unwrap();
    let routing = config::parse_with_env(&text, "benches/load/rtbd.toml", |_| None).unwrap();
    let clock = ManualClock::new(1_716_999_363_246);
    let engine = Engine::new(routing, clock.clock());
    let requests: Vec<_> = (0..20_000u64)
        .map(|i| {
            let uri = format!(
                "/rtbs.json?key=bench-key&publisher_id=pub1&caller_number=%2B1{}&caller_zip=10001&caller_state=NY",
                2_000_000_000 + i
            );
            Request::post(uri).body(()).unwrap().into_parts().0
        })
        .collect();
    // Warm up: the tables grow to their size first.
    for parts in &requests[..10_000] {
        let _ = http::respond(&engine, parts, &[]);
    }
    COUNTING.with(|on| on.set(true));
    for parts in &requests[10_000..] {
        let http::Handled::Response(response) = http::respond(&engine, parts, &[]) else {
            panic!("a ping of static targets is answered at once")
        };
        assert_eq!(response.status(), 200);
        let body = body(response);
        assert!(body.windows(19).any(|w| w == br#""status":"reserved""#), "{body:?}");
    }
    COUNTING.with(|on| on.set(false));
    let allocated = ALLOCATED.with(Cell::get) as f64 / 10_000.0;
    let kept = (ALLOCATED.with(Cell::get) as f64 - FREED.with(Cell::get) as f64) / 10_000.0;
    // Amortized table growth is the rest.
    assert!(allocated < 4.1, "a ping allocates {allocated:.2} times");
    assert!(kept < 0.1, "a ping keeps {kept:.2} allocations after its answer is gone");
}
