//! The in-process ping path: parse → route → reserve → encode, through the
//! same `http::respond` the server calls, without sockets.
//!
//! Every iteration pings a caller whose previous reservation has expired (a
//! ring of 32,768 callers, the clock moving 1 ms per ping, the expiry tick
//! run every 1,024 pings), so this is the steady state of a server taking
//! distinct callers, tick work included.
//!
//! Run: `cargo bench --bench ping`. Results are in the README (Benchmarks).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hyper::Request;
use hyper::http::request::Parts;
use rtbd::clock::ManualClock;
use rtbd::engine::Engine;
use rtbd::{config, http};

const KEY: &str = "1915260e-da0c-4443-a35b-8fb9d9843e42";
const RING: usize = 32_768;

fn config_with(targets: usize) -> String {
    let mut text = format!(
        r#"
[server]
admin_token = "a"
switch_token = "s"
max_records = 200000

[[campaigns]]
id = "bench"
tracking_numbers = ["+18444021146", "+18444021147"]

[[campaigns.rtb_keys]]
key = "{KEY}"

[[campaigns.conversion_criteria]]
publisher_id = "*"
payout = 12.5
duration_secs = 90
"#
    );
    for i in 0..targets {
        text.push_str(&format!(
            "\n[[campaigns.targets]]\nid = \"t{i}\"\nnumber = \"+1800555{i:04}\"\npriority = {}\nweight = {}\n",
            i % 3 + 1,
            i % 4 + 1
        ));
    }
    text
}

fn requests() -> Vec<Parts> {
    (0..RING)
        .map(|i| {
            let uri = format!(
                "/rtbs.json?key={KEY}&publisher_id=4321ABCD&caller_number=%2B1800{:07}&caller_zip=10001&caller_state=NY",
                1_000_000 + i
            );
            Request::post(uri).body(()).map(|r| r.into_parts().0).expect("request")
        })
        .collect()
}

/// The response of a request answered at once (static targets only).
fn ready(handled: http::Handled) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    match handled {
        http::Handled::Response(response) => response,
        http::Handled::Auction(_) => panic!("the bench config has no webhooks"),
    }
}

fn ping(c: &mut Criterion) {
    let requests = requests();
    let mut group = c.benchmark_group("ping");
    for targets in [1, 10, 100] {
        let routing = config::parse_with_env(&config_with(targets), "bench", |_| None).expect("config");
        let manual = ManualClock::new(1_700_000_000_000);
        let engine = Engine::new(routing, manual.clock());
        let mut i = 0usize;
        group.bench_function(format!("{targets} targets"), |b| {
            b.iter(|| {
                let parts = &requests[i % RING];
                i += 1;
                manual.advance(Duration::from_millis(1));
                if i % 1024 == 0 {
                    engine.tick();
                }
                black_box(ready(http::respond(&engine, parts, &[])))
            })
        });
    }
    group.finish();
}

fn echo(c: &mut Criterion) {
    // The Ping Shield's already-reserved path: the same caller again and
    // again while its reservation is live.
    let routing = config::parse_with_env(&config_with(10), "bench", |_| None).expect("config");
    let manual = ManualClock::new(1_700_000_000_000);
    let engine = Engine::new(routing, manual.clock());
    let parts = &requests()[0];
    assert_eq!(ready(http::respond(&engine, parts, &[])).status(), 200);
    c.bench_function("ping/echo of a live reservation", |b| {
        b.iter(|| black_box(http::respond(&engine, parts, &[])))
    });
}

criterion_group!(benches, ping, echo);
criterion_main!(benches);
