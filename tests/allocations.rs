//! Heap allocations on the ping path. A ping is answered thousands of times
//! for every call, so what it allocates is watched: a ping for a new caller
//! on the load harness's config (ten targets, one of them paused) makes
//! four allocations, all freed before the next ping (the decoded caller
//! number, the answer's body, the two parts of its header map), and
//! nothing that stays with its record.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hyper::Request;
use rtbd::clock::ManualClock;
use rtbd::engine::Engine;
use rtbd::{config, http};

/// Counts the allocations of the thread that turned counting on (the test
/// harness runs other tests on other threads meanwhile).
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down has no locals any more.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    /// A reallocation is not counted: rtbd's allocator shrinks in place.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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
    let mut answers = Vec::with_capacity(10_000);
    COUNTING.with(|on| on.set(true));
    for parts in &requests[10_000..] {
        answers.push(http::respond(&engine, parts, &[]));
    }
    COUNTING.with(|on| on.set(false));
    let per_ping = COUNT.with(Cell::get) as f64 / 10_000.0;
    for answer in answers {
        assert!(matches!(answer, http::Handled::Response(r) if r.status() == 200));
    }
    // Amortized table growth is the rest.
    assert!(per_ping < 4.1, "a ping allocates {per_ping:.2} times");
}
