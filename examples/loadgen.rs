//! A constant-rate load generator with an HDR histogram (what wrk2 does,
//! which Debian does not package): pings at a fixed rate over keep-alive
//! connections and reports latency percentiles.
//!
//! Each connection has its own thread and its own schedule; a request's
//! latency counts from when it was due, not from when it could be sent, so
//! a server that falls behind shows it (no coordinated omission).
//!
//! Run: `cargo run --release --example loadgen -- 127.0.0.1:18080 --rate 20000 --seconds 10`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

struct Args {
    addr: String,
    rate: f64,
    seconds: f64,
    connections: usize,
    key: String,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:18080".to_owned(),
        rate: 10_000.0,
        seconds: 10.0,
        connections: 64,
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

fn main() -> Result<(), String> {
    let args = args()?;
    let per_connection = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let started = Instant::now() + Duration::from_millis(200);
    let end = started + Duration::from_secs_f64(args.seconds);
    let threads: Vec<_> = (0..args.connections)
        .map(|c| {
            let (addr, key) = (args.addr.clone(), args.key.clone());
            let offset = per_connection.mul_f64(c as f64 / args.connections as f64);
            std::thread::spawn(move || -> Result<(Histogram<u64>, u64, u64), String> {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
                let stream = TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut reader = BufReader::new(stream);
                let (mut sent, mut failed) = (0u64, 0u64);
                let mut due = started + offset;
                while due < end {
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let caller = 3_000_000_000u64 + (c as u64) * 10_000_000 + sent;
                    let request = format!(
                        "POST /rtbs.json?key={key}&publisher_id=pub1&caller_number=%2B1{caller}&caller_zip=10001&caller_state=NY HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\r\n"
                    );
                    match exchange(&mut reader, request.as_bytes()) {
                        Ok(200) => {}
                        Ok(_) => failed += 1,
                        Err(e) => return Err(format!("connection {c}: {e}")),
                    }
                    let latency = Instant::now().saturating_duration_since(due);
                    let _ = histogram.record(latency.as_micros().max(1) as u64);
                    sent += 1;
                    due += per_connection;
                }
                Ok((histogram, sent, failed))
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut sent, mut failed) = (0, 0);
    for t in threads {
        let (h, s, f) = t.join().map_err(|_| "a connection thread panicked".to_owned())??;
        total.add(h).map_err(|e| e.to_string())?;
        sent += s;
        failed += f;
    }
    let us = |q: f64| total.value_at_quantile(q);
    println!(
        "rate {:.0}/s asked, {:.0}/s done, {} requests, {} not 200; latency p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        args.rate,
        sent as f64 / args.seconds,
        sent,
        failed,
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        total.max()
    );
    Ok(())
}
