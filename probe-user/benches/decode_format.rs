//! `cargo bench -p probe-user --bench decode_format`: how many events one core decodes from
//! ring-buffer records and formats into lines per second, per output format, with no kernel
//! involved (what the reader costs per event, against what the kernel can deliver: see
//! docs/benchmarks.md). A plain timing loop over a batch of realistic records (IPv4 and IPv6,
//! varied addresses and ports), the way `Tracer::drain` and the binary's writer use them:
//! decode, format into one growing buffer, clear it per batch. Arguments name the formats to
//! measure (all by default).

use std::{hint::black_box, time::Instant};

use probe_common::{AF_INET, AF_INET6, ConnectRecord, Identity, RawAddr, RecordKind};
use probe_user::{ConnectEvent, Format, Formatter, WallClock};

/// Records per batch (about what one 50 ms drain holds at 20,000 connects/s).
const BATCH: usize = 1000;
/// Batches per measurement.
const BATCHES: usize = 2000;

fn record(i: usize, ipv6: bool) -> Vec<u8> {
    let v6 = ipv6 && i % 4 == 3;
    let addr = |last: u8| {
        let mut bytes = [0u8; 16];
        if v6 {
            bytes[0] = 0xfd;
            bytes[15] = last;
        } else {
            bytes[..4].copy_from_slice(&[10, (i % 200) as u8, 0, last]);
        }
        RawAddr::from_octets(bytes)
    };
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"curl");
    let r = ConnectRecord {
        header: RecordKind::Connect.header(),
        boot_ns: 5_000_000_000 + i as u64 * 50_000,
        pid: 1000 + i as u32 % 50,
        tid: 1000 + i as u32 % 50,
        uid: 1000,
        ret: 0,
        saddr: addr(1),
        daddr: addr(2),
        sport: 32768 + (i % 28000) as u16,
        dport: [80, 443, 8080, 5432][i % 4],
        family: if v6 { AF_INET6 } else { AF_INET },
        role: 0,
        comm,
        identity: Identity::default(),
    };
    // SAFETY: a plain-old-data record, viewed as its bytes (as the kernel writes it).
    unsafe {
        std::slice::from_raw_parts(
            (&r as *const ConnectRecord).cast::<u8>(),
            ConnectRecord::SIZE,
        )
    }
    .to_vec()
}

fn main() {
    // `cargo bench ... -- stap ipv4` measures only the formats named (e.g. under callgrind),
    // and with `ipv4` IPv4 records only (as in `cargo xtask bench overhead`), not one in four
    // IPv6.
    let mut only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let ipv6 = !only.iter().any(|a| a == "ipv4");
    only.retain(|a| a != "ipv4");
    let records: Vec<Vec<u8>> = (0..BATCH).map(|i| record(i, ipv6)).collect();
    println!("decode + format, one core, {BATCH}-event batches:");
    for format in [Format::Stap, Format::Json, Format::Minimal] {
        if !only.is_empty() && !only.contains(&format.to_string()) {
            continue;
        }
        let formatter = Formatter::new(format, WallClock::measure());
        let mut out = Vec::with_capacity(256 * BATCH);
        let mut bytes = 0;
        let started = Instant::now();
        for _ in 0..BATCHES {
            out.clear();
            for record in &records {
                let event = ConnectEvent::decode(black_box(record)).expect("a valid record");
                formatter.write_connect(&mut out, &event);
            }
            bytes += black_box(&out).len();
        }
        let elapsed = started.elapsed();
        let events = (BATCH * BATCHES) as f64;
        println!(
            "  {:<8} {:>6.2} M events/s  ({:>4.0} ns per event, {:.0} bytes per line)",
            format.to_string(),
            events / elapsed.as_secs_f64() / 1e6,
            elapsed.as_nanos() as f64 / events,
            bytes as f64 / events
        );
    }
}
