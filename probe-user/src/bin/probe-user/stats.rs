//! `--stats`: what the run cost (start-up, memory) and what the kernel's programs did.

use std::time::Duration;

use probe_common::limit::{MAX_CONNECTING, MAX_PENDING};
use probe_user::Tracer;

/// `--stats`: how long attaching took and the memory probe-user used (peak and now), for the
/// benchmark's start-up and memory table.
pub fn print_resources(startup: probe_user::Startup) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "probe-user: attached in {:.1} ms (BTF offsets {:.1} ms, load and verify {:.1} ms, attach {:.1} ms)",
        ms(startup.total()),
        ms(startup.btf),
        ms(startup.load),
        ms(startup.attach)
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    eprintln!(
        "probe-user: memory: peak RSS {} KiB, RSS at exit {} KiB",
        kib("VmHWM:"),
        kib("VmRSS:")
    );
}

/// Prints the start-up time and memory, the connect calls that were still in flight in the
/// kernel's maps at the end (`in_flight`, read before they are reaped as missed) and each
/// program's run count and average run time: what `--stats` prints at exit.
pub fn print(tracer: &Tracer, in_flight: usize) {
    print_resources(tracer.startup());
    if let Some(bytes) = tracer.counts_memory() {
        let (series, max_series) = tracer.series();
        eprintln!(
            "probe-user: counts: {series} of {max_series} label sets, kernel map memory {} KiB",
            bytes / 1024
        );
    } else if tracer.counts_in_userspace() {
        let (series, max_series) = tracer.series();
        eprintln!("probe-user: counts: {series} of {max_series} label sets, counted in userspace");
    }
    if let Some(dns) = tracer.dns_stats() {
        eprintln!(
            "probe-user: names: {} DNS answers learned, {} ignored (no address), {} cut, {} malformed, {} evicted, {} held",
            dns.answers, dns.ignored, dns.cut, dns.malformed, dns.evicted, dns.entries
        );
    }
    if let Some(forgotten) = tracer.nat_forgotten() {
        eprintln!("probe-user: nat: {forgotten} SYNs sent elsewhere forgotten unclaimed");
    }
    eprintln!(
        "probe-user: {in_flight} connect calls in flight (maps PENDING and CONNECTING, at most {MAX_PENDING} and {MAX_CONNECTING} entries, and with BPF atomics {MAX_CONNECTING} slots of CONNECTING_SLOTS)"
    );
    print_programs(tracer);
}

/// Prints each program's run count and average run time so far (and its skipped runs, if any):
/// with `--count`, also after every table.
pub fn print_programs(tracer: &Tracer) {
    for p in tracer.program_stats() {
        let per_run = p.run_time_ns.checked_div(p.runs).unwrap_or(0);
        eprintln!(
            "probe-user: program {} ran {} times, {per_run} ns per run",
            p.name, p.runs
        );
        if p.recursion_misses > 0 {
            eprintln!(
                "probe-user: program {} was skipped {} times (already running on its CPU)",
                p.name, p.recursion_misses
            );
        }
    }
}
