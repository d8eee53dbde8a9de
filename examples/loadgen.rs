//! A constant-rate load generator with an HDR histogram (what wrk2 does,
//! which Debian does not package): pings at a fixed rate over keep-alive
//! connections and reports latency percentiles.
//!
//! Sender threads (`--threads`, default 8) share the rate; each keeps its
//! share of the connections open and sends its requests on them in turn,
//! waiting for each answer. Two latencies are reported: from sending a
//! request to its answer, and from when it was due (a server that falls
//! behind delays the next sends, and this shows it: no coordinated
//! omission). On a machine shared with the server, the second also holds
//! the sender threads' own scheduling delay.
//!
//! Run: `cargo run --release --example loadgen -- 127.0.0.1:18080 --rate 20000 --seconds 10`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

struct Args {
    addr: String,
    rate: f64,
    seconds: f64,
    connections: usize,
    threads: usize,
    key: String,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:18080".to_owned(),
        rate: 10_000.0,
        seconds: 10.0,
        connections: 64,
        threads: 8,
        key: "bench-key".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--rate" => args.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--connections" => {
                args.connections = value()?.parse().map_err(|e| format!("--connections: {e}"))?
            }
            "--key" => args.key = value()?,
            other if !other.starts_with("--") => args.addr = other.to_owned(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

/// Sends one request and reads its response; returns the status.
fn exchange(reader: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    reader.get_mut().write_all(request)?;
    let mut status = 0;
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        let trimmed = line.trim_end();
        if status == 0 {
            status = trimmed.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        } else if trimmed.is_empty() {
            break;
        } else if let Some(v) = trimmed.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(status)
}

type Histo = Histogram<u64>;

fn histogram() -> Result<Histo, String> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())
}

/// What one sender thread measured.
struct Measured {
    service: Histo,
    from_due: Histo,
    sent: u64,
    failed: u64,
}

fn main() -> Result<(), String> {
    let args = args()?;
    let threads = args.threads.clamp(1, args.connections.max(1));
    let per_thread = args.connections.max(1).div_ceil(threads);
    let interval = Duration::from_secs_f64(threads as f64 / args.rate);
    // Each run starts at its own place in each thread's range of callers,
    // set by the clock (a million numbers further for each second), so runs
    // started less than 40 s apart never ping the same caller.
    let from = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() % 40) * 1_000_000;
    let started = Instant::now() + Duration::from_millis(300);
    let end = started + Duration::from_secs_f64(args.seconds);
    let senders: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, key) = (args.addr.clone(), args.key.clone());
            let offset = interval.mul_f64(t as f64 / threads as f64);
            std::thread::spawn(move || -> Result<Measured, String> {
                let mut m = Measured { service: histogram()?, from_due: histogram()?, sent: 0, failed: 0 };
                let mut connections = (0..per_thread)
                    .map(|_| {
                        let stream = TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
                        stream.set_nodelay(true).map_err(|e| e.to_string())?;
                        Ok(BufReader::new(stream))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let mut due = started + offset;
                while due < end {
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let caller = 3_000_000_000u64 + (t as u64) * 50_000_000 + from + m.sent;
                    let request = format!(
                        "POST /rtbs.json?key={key}&publisher_id=pub1&caller_number=%2B1{caller}&caller_zip=10001&caller_state=NY HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\r\n"
                    );
                    let connection = &mut connections[(m.sent as usize) % per_thread];
                    let sending = Instant::now();
                    match exchange(connection, request.as_bytes()) {
                        Ok(200) => {}
                        Ok(_) => m.failed += 1,
                        Err(e) => return Err(format!("thread {t}: {e}")),
                    }
                    let answered = Instant::now();
                    let _ = m.service.record(answered.duration_since(sending).as_micros().max(1) as u64);
                    let _ = m.from_due.record(answered.saturating_duration_since(due).as_micros().max(1) as u64);
                    m.sent += 1;
                    due += interval;
                }
                Ok(m)
            })
        })
        .collect();
    let (mut service, mut from_due) = (histogram()?, histogram()?);
    let (mut sent, mut failed) = (0, 0);
    for s in senders {
        let m = s.join().map_err(|_| "a sender thread panicked".to_owned())??;
        service.add(m.service).map_err(|e| e.to_string())?;
        from_due.add(m.from_due).map_err(|e| e.to_string())?;
        sent += m.sent;
        failed += m.failed;
    }
    println!(
        "rate {:.0}/s asked, {:.0}/s done, {} requests, {} not 200",
        args.rate,
        sent as f64 / args.seconds,
        sent,
        failed
    );
    for (name, h) in [("sent → answered", &service), ("due  → answered", &from_due)] {
        println!(
            "  {name}: p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
    Ok(())
}
