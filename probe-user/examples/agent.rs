//! A minimal monitoring agent on the `probe_user` library: it traces connects, prints each one,
//! keeps a count per destination port, and reports the counts and what was lost every 10 s and
//! at exit.
//!
//! ```text
//! cargo build --release --example agent
//! sudo ./target/release/examples/agent [--filter-port PORT]... [--events N] [--without-names]
//! ```
//!
//! With `--events N` it stops after N events (the integration tests use that);
//! `--without-names` leaves the callers' names and uids out (cheaper per connect).

use std::{collections::BTreeMap, time::Duration};

use probe_user::{Counters, Event, Tracer};
use tokio_stream::StreamExt as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let values_of = |flag: &'static str| {
        args.windows(2)
            .filter(move |w| w[0] == flag)
            .map(|w| w[1].as_str())
    };
    let ports: Vec<u16> = values_of("--filter-port")
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let limit: Option<u64> = values_of("--events").next().map(str::parse).transpose()?;

    // Filters run in the kernel; dropping `events` detaches everything.
    let builder = Tracer::builder()
        .filter_ports(ports)
        .caller_names(!args.iter().any(|a| a == "--without-names"));
    let mut events = builder.attach()?.into_stream()?;
    eprintln!("agent: tracing");

    let mut per_port: BTreeMap<u16, u64> = BTreeMap::new();
    let every = Duration::from_secs(10);
    let mut report = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut seen = 0;
    while limit != Some(seen) {
        tokio::select! {
            Some(event) = events.next() => {
                // Connects only: closes come with `TracerBuilder::lifetime`, not asked here.
                let Event::Connect(event) = event else { continue };
                // A task names itself (prctl): escaped, a name with a newline cannot forge lines.
                let comm = event.comm().escape_debug().to_string();
                println!("{} {comm} {} -> {} ret={}", event.pid, event.src, event.dst, event.ret);
                *per_port.entry(event.dst.port()).or_default() += 1;
                seen += 1;
            }
            _ = report.tick() => print_report(&per_port, events.counters()),
        }
    }
    print_report(&per_port, events.counters());
    Ok(())
}

fn print_report(per_port: &BTreeMap<u16, u64>, counters: Counters) {
    for (port, n) in per_port {
        eprintln!("agent: port {port}: {n} connects");
    }
    eprintln!(
        "agent: {} events, {} lost (dropped {}, missed {}, malformed {})",
        counters.events,
        counters.lost(),
        counters.dropped,
        counters.missed,
        counters.malformed
    );
}
