//! The output styles: one line per event, appended to a reused byte buffer.
//!
//! `minimal` and `stap` reproduce SystemTap's tcp.connect examples 1 and 2/3 byte for byte;
//! `json` carries every field, one object per line.

use std::{cell::Cell, fmt, io::Write as _, net::SocketAddr, str::FromStr};

use serde::Serialize;

use crate::{
    ConnectCount, ConnectEvent, CountBy, Function, Outcome, WallClock,
    names::{self, Named, UnknownName},
};

/// An output style (`--format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `<unix seconds>: tcp_v4_connect` (SystemTap example 1).
    Minimal,
    /// `<unix seconds>: tcp_v4_connect src=<ip>:<port> dst=<ip>:<port>` (examples 2 and 3).
    #[default]
    Stap,
    /// One JSON object per line with every field.
    Json,
}

impl Named for Format {
    const ALL: &'static [Self] = &[Format::Minimal, Format::Stap, Format::Json];

    fn name(self) -> &'static str {
        match self {
            Format::Minimal => "minimal",
            Format::Stap => "stap",
            Format::Json => "json",
        }
    }
}

impl FromStr for Format {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        names::parse("format", s, &[])
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        names::write(*self, f)
    }
}

/// Writes events in one [`Format`], with timestamps converted by one [`WallClock`].
#[derive(Clone, Copy, Debug)]
pub struct Formatter {
    format: Format,
    clock: WallClock,
    count_by: Option<CountBy>,
}

thread_local! {
    /// The decimal digits of the last second this thread wrote (a second is the same whatever
    /// the formatter): events come many to a second, and writing ten digits anew cost more than
    /// the rest of a `minimal` line. Per thread, so that `Formatter` stays `Copy` and `Sync`.
    static LAST_SECOND: Cell<Second> = const { Cell::new(Second::ZERO) };
}

/// A second since the Unix epoch and its decimal digits, left-aligned in a fixed-size array so
/// that they are copied with one fixed-size move (what follows overwrites the rest).
#[derive(Clone, Copy, Debug)]
struct Second {
    unix_s: u64,
    digits: [u8; 20],
    len: u8,
}

impl Second {
    const ZERO: Second = Second {
        unix_s: 0,
        digits: [
            b'0', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        len: 1,
    };

    /// `unix_s` with its digits, from the thread's cache if it is the last second written.
    fn cached(unix_s: u64) -> Self {
        LAST_SECOND.with(|last| {
            let cached = last.get();
            if cached.unix_s == unix_s {
                return cached;
            }
            let second = Second::of(unix_s);
            last.set(second);
            second
        })
    }

    fn of(unix_s: u64) -> Self {
        let mut line = Line::new();
        line.decimal(unix_s);
        let mut digits = [0; 20];
        digits[..line.len].copy_from_slice(line.as_bytes());
        Second {
            unix_s,
            digits,
            len: line.len as u8,
        }
    }
}

/// The JSON line: every field of a [`ConnectEvent`], timestamps in ns and in s.
#[derive(Serialize)]
struct JsonLine<'a> {
    time_ns: u64,
    time_s: u64,
    pid: u32,
    tid: u32,
    uid: u32,
    comm: &'a str,
    family: &'static str,
    function: &'static str,
    saddr: std::net::IpAddr,
    sport: u16,
    daddr: std::net::IpAddr,
    dport: u16,
    ret: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<u32>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    workload: Option<JsonWorkload<'a>>,
}

/// The JSON fields of a [`crate::Workload`] (with identities): names that could not be resolved
/// are `null`, so every line of a run has the same fields.
#[derive(Serialize)]
struct JsonWorkload<'a> {
    cgroup_id: u64,
    cgroup: Option<&'a str>,
    container_id: Option<&'a str>,
    pod_uid: Option<&'a str>,
    ns_pid: u32,
    ns_tid: u32,
    pidns: u32,
    netns: u32,
}

impl<'a> JsonWorkload<'a> {
    fn of(w: &'a crate::Workload) -> Self {
        JsonWorkload {
            cgroup_id: w.cgroup_id,
            cgroup: w.names.cgroup.as_deref(),
            container_id: w.names.container.as_deref(),
            pod_uid: w.names.pod.as_deref(),
            ns_pid: w.ns_pid,
            ns_tid: w.ns_tid,
            pidns: w.pidns,
            netns: w.netns,
        }
    }
}

impl Formatter {
    /// A formatter for `format` using `clock` for wall-clock time.
    pub fn new(format: Format, clock: WallClock) -> Self {
        Self {
            format,
            clock,
            count_by: None,
        }
    }

    /// What count tables are keyed by (see [`crate::Report::Counts`]), which names
    /// their last column: without it, the rows tell (an empty table then says DESTINATION).
    pub fn count_by(mut self, by: CountBy) -> Self {
        self.count_by = Some(by);
        self
    }

    /// Re-measures the wall clock, so that a step of the system clock (NTP, `date -s`) shows
    /// in the lines written after it, as SystemTap's `gettimeofday_s()` would. Cheap (three
    /// vDSO clock reads): call it once per batch of events.
    pub fn follow_clock(&mut self) {
        self.clock = WallClock::measure();
    }

    /// Appends one line (newline included) describing `event` to `out`.
    pub fn write(&self, out: &mut Vec<u8>, event: &ConnectEvent) {
        let time_ns = self.clock.unix_ns(event.boot_ns);
        let time_s = time_ns / 1_000_000_000;
        let function = event.function().name();
        if self.format == Format::Json {
            let line = JsonLine {
                time_ns,
                time_s,
                pid: event.pid,
                tid: event.tid,
                uid: event.uid,
                comm: &event.comm(),
                family: event.family.name(),
                function,
                saddr: event.src.ip(),
                sport: event.src.port(),
                daddr: event.dst.ip(),
                dport: event.dst.port(),
                ret: event.ret,
                outcome: event.completion.map(|c| c.outcome.name()),
                latency_ns: event.completion.map(|c| c.latency_ns),
                errno: event.completion.map(|c| c.errno).filter(|&e| e != 0),
                workload: event.workload.as_ref().map(JsonWorkload::of),
            };
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &line);
            out.push(b'\n');
            return;
        }
        // The two SystemTap styles are built in a stack buffer and appended at once: this runs
        // once per event, and per-piece `Vec` appends (a capacity check and a `memcpy` call
        // each) and `core::fmt` cost more than the kernel side does per event (see
        // docs/benchmarks.md). IPv6 endpoints still go through std's formatting (RFC 5952).
        // `minimal` is the first part of a `stap` line.
        let mut line = Line::new();
        line.second(Second::cached(time_s));
        line.put(b": ");
        line.function(event.function());
        if self.format == Format::Stap {
            line.put(b" src=");
            line.endpoint(event.src);
            line.put(b" dst=");
            line.endpoint(event.dst);
            if let Some(c) = &event.completion {
                line.outcome(c.outcome);
                line.millis(c.latency_ns);
            }
        }
        line.put(b"\n");
        out.extend_from_slice(line.as_bytes());
    }
}

/// One `stap` or `minimal` line being built on the stack, then appended to the output at once.
/// Literal pieces are copied with their length known at compile time (a few moves, no call) and
/// numbers are written in place, so a line costs no `memcpy` call but the last.
struct Line {
    bytes: [u8; Line::CAPACITY],
    len: usize,
}

/// `"0"` to `"255"`, each padded to 4 bytes, its length in the last: an IPv4 octet is one copy.
const OCTETS: [[u8; 4]; 256] = {
    let mut table = [[0u8; 4]; 256];
    let mut n = 0;
    while n < 256 {
        let (h, t, o) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
        table[n] = match n {
            0..=9 => [b'0' + o, 0, 0, 1],
            10..=99 => [b'0' + t, b'0' + o, 0, 2],
            _ => [b'0' + h, b'0' + t, b'0' + o, 3],
        };
        n += 1;
    }
    table
};

/// ` outcome=NAME latency=` for each outcome (by its value), padded to 32 bytes, its length in
/// the last: one copy of a size known at compile time, where a name of its own length is a
/// `memcpy` call (a sixth of what `--outcome` adds to formatting a line).
static OUTCOME_PIECES: std::sync::LazyLock<[[u8; 32]; 9]> = std::sync::LazyLock::new(|| {
    let mut pieces = [[0u8; 32]; 9];
    for &outcome in Outcome::ALL {
        let text = format!(" outcome={} latency=", outcome.name());
        let piece = &mut pieces[outcome as usize];
        piece[..text.len()].copy_from_slice(text.as_bytes());
        piece[31] = text.len() as u8;
    }
    pieces
});

/// `text` as an array of its length (a compile-time error otherwise).
const fn literal<const N: usize>(text: &str) -> [u8; N] {
    assert!(text.len() == N);
    let mut bytes = [0u8; N];
    let mut i = 0;
    while i < N {
        bytes[i] = text.as_bytes()[i];
        i += 1;
    }
    bytes
}

/// `"00"` to `"99"`: decimals are written two digits per division.
const PAIRS: [[u8; 2]; 100] = {
    let mut table = [[0u8; 2]; 100];
    let mut n = 0;
    while n < 100 {
        table[n] = [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    table
};

impl Line {
    /// The longest line, two bracketed IPv6 endpoints (47 bytes each) with the longest outcome
    /// and latency, is under 200 bytes.
    const CAPACITY: usize = 224;

    fn new() -> Self {
        Line {
            bytes: [0; Line::CAPACITY],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends a literal.
    #[inline(always)]
    fn put<const N: usize>(&mut self, piece: &[u8; N]) {
        self.bytes[self.len..self.len + N].copy_from_slice(piece);
        self.len += N;
    }

    /// Appends a second's digits.
    #[inline(always)]
    fn second(&mut self, second: Second) {
        self.put(&second.digits);
        self.len -= second.digits.len() - usize::from(second.len);
    }

    /// Appends ` outcome=NAME latency=`.
    #[inline(always)]
    fn outcome(&mut self, outcome: Outcome) {
        let piece = &OUTCOME_PIECES[outcome as usize];
        self.put(piece);
        self.len -= piece.len() - usize::from(piece[piece.len() - 1]);
    }

    /// Appends a connect function's name: the two that lines show, as literals.
    #[inline(always)]
    fn function(&mut self, function: Function) {
        const V4: [u8; 14] = literal(Function::TcpV4Connect.name());
        const V6: [u8; 14] = literal(Function::TcpV6Connect.name());
        match function {
            Function::TcpV4Connect => self.put(&V4),
            Function::TcpV6Connect => self.put(&V6),
            other => self.name(other.name()),
        }
    }

    /// Appends a name.
    fn name(&mut self, name: &str) {
        let end = self.len + name.len();
        self.bytes[self.len..end].copy_from_slice(name.as_bytes());
        self.len = end;
    }

    /// Appends `n` in decimal, its digits written in place from the last, two at a time.
    fn decimal(&mut self, n: u64) {
        let digits = n.checked_ilog10().unwrap_or(0) as usize + 1;
        let end = self.len + digits;
        let (mut rest, mut at) = (n, end);
        while rest >= 100 {
            let pair = PAIRS[(rest % 100) as usize];
            rest /= 100;
            at -= 2;
            self.bytes[at..at + 2].copy_from_slice(&pair);
        }
        if rest >= 10 {
            self.bytes[at - 2..at].copy_from_slice(&PAIRS[rest as usize]);
        } else {
            self.bytes[at - 1] = b'0' + rest as u8;
        }
        self.len = end;
    }

    /// Appends `ns` as milliseconds with three decimals (`0.183ms`), truncated to the
    /// microsecond.
    fn millis(&mut self, ns: u64) {
        let us = ns / 1000;
        self.decimal(us / 1000);
        let frac = us % 1000;
        let digit = |n: u64| b'0' + (n % 10) as u8;
        self.put(&[
            b'.',
            digit(frac / 100),
            digit(frac / 10),
            digit(frac),
            b'm',
            b's',
        ]);
    }

    /// Appends `ip:port` for IPv4, `[ip]:port` for IPv6, without scope or flow information.
    fn endpoint(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(a) => {
                let [a, b, c, d] = a.ip().octets();
                self.octet(a);
                for octet in [b, c, d] {
                    self.put(b".");
                    self.octet(octet);
                }
            }
            SocketAddr::V6(a) => {
                // IPv6 text form (RFC 5952 zero compression) is subtle: leave it to std.
                let mut rest = &mut self.bytes[self.len..];
                let room = rest.len();
                // At most 41 bytes, which fit (see `CAPACITY`).
                let _ = write!(rest, "[{}]", a.ip());
                self.len += room - rest.len();
            }
        }
        self.put(b":");
        self.decimal(u64::from(addr.port()));
    }

    /// Appends an IPv4 octet: its 4-byte table entry, then keeps its length (the entry's
    /// padding is overwritten by what follows, and within `CAPACITY`).
    #[inline(always)]
    fn octet(&mut self, octet: u8) {
        let entry = &OCTETS[usize::from(octet)];
        self.bytes[self.len..self.len + 4].copy_from_slice(entry);
        self.len += usize::from(entry[3]);
    }
}

/// One row of the JSON count table.
#[derive(Serialize)]
struct JsonCount<'a> {
    function: &'static str,
    family: &'static str,
    daddr: Option<std::net::IpAddr>,
    dport: u16,
    connects: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ns_sum: Option<u64>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    workload: Option<JsonCountWorkload<'a>>,
}

/// The JSON fields of a count row's workload (counting by cgroup or container).
#[derive(Serialize)]
struct JsonCountWorkload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_id: Option<u64>,
    /// Absent for a row of a whole container; `null` if unresolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<Option<&'a str>>,
    container_id: Option<&'a str>,
    pod_uid: Option<&'a str>,
}

impl Formatter {
    /// Appends the `--count` table of `counts` as of `unix_s`: a text table in `stap` format,
    /// one JSON object (`{"time_s":..,"counts":[..]}`) and a newline in `json`. (`minimal`
    /// shows no destination; the command refuses it with counting, and here it writes the text
    /// table.)
    pub fn write_counts(&self, out: &mut Vec<u8>, unix_s: u64, counts: &[ConnectCount]) {
        if self.format == Format::Json {
            let rows: Vec<JsonCount> = counts
                .iter()
                .map(|c| JsonCount {
                    function: c.family.connect_function().name(),
                    family: c.family.name(),
                    daddr: c.daddr,
                    dport: c.dport,
                    connects: c.connects,
                    outcome: c.outcome.map(|o| o.name()),
                    latency_ns_sum: c.outcome.map(|_| c.latency_ns),
                    workload: c.workload.as_ref().map(|w| JsonCountWorkload {
                        // A row of a whole container has no one cgroup.
                        cgroup_id: c.cgroup_id,
                        cgroup: c.cgroup_id.map(|_| w.cgroup.as_deref()),
                        container_id: w.container.as_deref(),
                        pod_uid: w.pod.as_deref(),
                    }),
                })
                .collect();
            let table = serde_json::json!({ "time_s": unix_s, "counts": rows });
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &table);
            out.push(b'\n');
            return;
        }
        let _ = writeln!(out, "{unix_s}: connects since start");
        // With outcomes, a row per destination and outcome, with the average latency.
        let outcomes = counts.iter().any(|c| c.outcome.is_some());
        let _ = write!(out, "{:>10}  ", "CONNECTS");
        if outcomes {
            let _ = write!(out, "{:<11}  {:>12}  ", "OUTCOME", "AVG LATENCY");
        }
        // By cgroup or container the row names who connected instead of where to (the
        // formatter is told, or else the rows tell: an empty table then says DESTINATION).
        let inferred_workload = counts
            .iter()
            .any(|c| c.workload.is_some() && c.daddr.is_none() && c.dport == 0);
        let inferred_container = inferred_workload
            && counts
                .iter()
                .all(|c| c.workload.is_some() && c.cgroup_id.is_none());
        let (by_workload, by_container) = match self.count_by {
            Some(CountBy::Cgroup) => (true, false),
            Some(CountBy::Container) => (true, true),
            Some(CountBy::Destination | CountBy::Port) => (false, false),
            None => (inferred_workload, inferred_container),
        };
        let last = match (by_workload, by_container) {
            (false, _) => "DESTINATION",
            (true, false) => "CGROUP",
            (true, true) => "CONTAINER",
        };
        let _ = writeln!(out, "{:<14}  {last}", "FUNCTION");
        for c in counts {
            let function = c.family.connect_function().name();
            let _ = write!(out, "{:>10}  ", c.connects);
            if let Some(outcome) = c.outcome {
                let mut avg = Vec::new();
                push_millis(&mut avg, c.latency_ns / c.connects.max(1));
                let avg = String::from_utf8_lossy(&avg);
                let _ = write!(out, "{:<11}  {avg:>12}  ", outcome.name());
            }
            let _ = write!(out, "{:<14}  ", function);
            match (&c.workload, c.daddr) {
                (Some(w), _) if by_workload => push_workload(out, w, c.cgroup_id, by_container),
                (_, Some(ip)) => push_endpoint(out, SocketAddr::new(ip, c.dport)),
                (_, None) => {
                    let _ = write!(out, "*:{}", c.dport);
                }
            }
            out.push(b'\n');
        }
    }
}

/// A count row's workload: its container id (`-` for none), or its cgroup path (its id if the
/// path could not be resolved), with the pod after it if any.
fn push_workload(
    out: &mut Vec<u8>,
    w: &crate::WorkloadNames,
    cgroup_id: Option<u64>,
    by_container: bool,
) {
    if by_container {
        out.extend_from_slice(w.container.as_deref().unwrap_or("-").as_bytes());
    } else {
        match &w.cgroup {
            Some(path) => out.extend_from_slice(path.as_bytes()),
            None => {
                let _ = write!(out, "cgroup id {}", cgroup_id.unwrap_or(0));
            }
        }
    }
    if let Some(pod) = &w.pod {
        let _ = write!(out, " (pod {pod})");
    }
}

/// `ns` as milliseconds with three decimals (`0.183ms`), truncated to the microsecond.
fn push_millis(out: &mut Vec<u8>, ns: u64) {
    let mut line = Line::new();
    line.millis(ns);
    out.extend_from_slice(line.as_bytes());
}

/// `ip:port` for IPv4, `[ip]:port` for IPv6, without scope or flow information.
fn push_endpoint(out: &mut Vec<u8>, addr: SocketAddr) {
    let mut line = Line::new();
    line.endpoint(addr);
    out.extend_from_slice(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::record;
    use probe_common::{AF_INET, AF_INET6};

    /// boot_ns 5_000_000_123 in the test record lands on 1795778063.000000123.
    const CLOCK: WallClock = WallClock::with_offset(1_795_778_058_000_000_000);

    fn line(format: Format, event: &ConnectEvent) -> String {
        let mut out = Vec::new();
        Formatter::new(format, CLOCK).write(&mut out, event);
        String::from_utf8(out).unwrap()
    }

    fn v4() -> ConnectEvent {
        ConnectEvent::from_record(&record(
            AF_INET,
            &[127, 0, 0, 1],
            59538,
            &[127, 0, 0, 1],
            8080,
        ))
        .unwrap()
    }

    fn v6() -> ConnectEvent {
        let src = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let dst = "::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        ConnectEvent::from_record(&record(AF_INET6, &src, 40000, &dst, 443)).unwrap()
    }

    #[test]
    fn minimal_is_systemtap_example_1() {
        assert_eq!(line(Format::Minimal, &v4()), "1795778063: tcp_v4_connect\n");
        assert_eq!(line(Format::Minimal, &v6()), "1795778063: tcp_v6_connect\n");
    }

    #[test]
    fn stap_is_systemtap_example_2() {
        assert_eq!(
            line(Format::Stap, &v4()),
            "1795778063: tcp_v4_connect src=127.0.0.1:59538 dst=127.0.0.1:8080\n"
        );
        assert_eq!(
            line(Format::Stap, &v6()),
            "1795778063: tcp_v6_connect src=[fd00::1]:40000 dst=[::1]:443\n"
        );
    }

    #[test]
    fn json_carries_every_field() {
        assert_eq!(
            line(Format::Json, &v4()),
            concat!(
                r#"{"time_ns":1795778063000000123,"time_s":1795778063,"pid":42,"tid":43,"uid":1000,"#,
                r#""comm":"curl","family":"ipv4","function":"tcp_v4_connect","saddr":"127.0.0.1","#,
                r#""sport":59538,"daddr":"127.0.0.1","dport":8080,"ret":0}"#,
                "\n"
            )
        );
        let mut failed = v6();
        failed.ret = -111;
        assert_eq!(
            line(Format::Json, &failed),
            concat!(
                r#"{"time_ns":1795778063000000123,"time_s":1795778063,"pid":42,"tid":43,"uid":1000,"#,
                r#""comm":"curl","family":"ipv6","function":"tcp_v6_connect","saddr":"fd00::1","#,
                r#""sport":40000,"daddr":"::1","dport":443,"ret":-111}"#,
                "\n"
            )
        );
    }

    #[test]
    fn stap_ipv4_covers_every_digit_count() {
        let mut r = record(AF_INET, &[0, 9, 10, 255], 0, &[100, 99, 1, 0], 65535);
        r.boot_ns = 0;
        let ev = ConnectEvent::from_record(&r).unwrap();
        let mut out = Vec::new();
        Formatter::new(Format::Stap, WallClock::with_offset(9_000_000_000)).write(&mut out, &ev);
        assert_eq!(
            out,
            b"9: tcp_v4_connect src=0.9.10.255:0 dst=100.99.1.0:65535\n"
        );
    }

    #[test]
    fn appends_to_existing_output() {
        let mut out = b"x\n".to_vec();
        let f = Formatter::new(Format::Minimal, CLOCK);
        f.write(&mut out, &v4());
        f.write(&mut out, &v6());
        assert_eq!(
            out,
            b"x\n1795778063: tcp_v4_connect\n1795778063: tcp_v6_connect\n"
        );
    }

    #[test]
    fn format_names_round_trip() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>().unwrap(), *format);
            assert_eq!(format.to_string(), format.name());
        }
        assert_eq!(
            "xml".parse::<Format>().unwrap_err().to_string(),
            "unknown format 'xml' (expected one of: minimal, stap, json)"
        );
    }

    #[test]
    fn count_tables() {
        let counts = [
            ConnectCount {
                family: crate::Family::V4,
                daddr: Some("127.0.0.1".parse().unwrap()),
                dport: 8080,
                connects: 12,
                ..COUNT
            },
            ConnectCount {
                family: crate::Family::V6,
                daddr: None,
                dport: 443,
                connects: 3,
                ..COUNT
            },
        ];
        let table = |format| table(format, &counts);
        assert_eq!(
            table(Format::Stap),
            concat!(
                "1795778063: connects since start\n",
                "  CONNECTS  FUNCTION        DESTINATION\n",
                "        12  tcp_v4_connect  127.0.0.1:8080\n",
                "         3  tcp_v6_connect  *:443\n",
            )
        );
        assert_eq!(
            table(Format::Json),
            concat!(
                r#"{"counts":[{"connects":12,"daddr":"127.0.0.1","dport":8080,"family":"ipv4","function":"tcp_v4_connect"},"#,
                r#"{"connects":3,"daddr":null,"dport":443,"family":"ipv6","function":"tcp_v6_connect"}],"time_s":1795778063}"#,
                "\n"
            )
        );
    }

    /// `counts` as a table in `format`.
    fn table(format: Format, counts: &[ConnectCount]) -> String {
        let mut out = Vec::new();
        Formatter::new(format, CLOCK).write_counts(&mut out, 1795778063, counts);
        String::from_utf8(out).unwrap()
    }

    const COUNT: ConnectCount = ConnectCount {
        family: crate::Family::V4,
        daddr: None,
        dport: 0,
        cgroup_id: None,
        workload: None,
        outcome: None,
        connects: 0,
        latency_ns: 0,
        latency_buckets: [0; ConnectCount::LATENCY_BUCKETS],
    };

    #[test]
    fn count_tables_with_outcomes() {
        let counts = [
            ConnectCount {
                daddr: Some("127.0.0.1".parse().unwrap()),
                dport: 8080,
                outcome: Some(crate::Outcome::Established),
                connects: 4,
                latency_ns: 1_000_000,
                ..COUNT
            },
            ConnectCount {
                daddr: Some("127.0.0.1".parse().unwrap()),
                dport: 8081,
                outcome: Some(crate::Outcome::Refused),
                connects: 1,
                latency_ns: 183_400,
                ..COUNT
            },
        ];
        let table = |format| table(format, &counts);
        assert_eq!(
            table(Format::Stap),
            concat!(
                "1795778063: connects since start\n",
                "  CONNECTS  OUTCOME       AVG LATENCY  FUNCTION        DESTINATION\n",
                "         4  established       0.250ms  tcp_v4_connect  127.0.0.1:8080\n",
                "         1  refused           0.183ms  tcp_v4_connect  127.0.0.1:8081\n",
            )
        );
        assert!(table(Format::Json).contains(
            r#"{"connects":1,"daddr":"127.0.0.1","dport":8081,"family":"ipv4","function":"tcp_v4_connect","latency_ns_sum":183400,"outcome":"refused"}"#
        ));
    }

    #[test]
    fn every_outcome_is_written_by_its_name() {
        for &outcome in crate::Outcome::ALL {
            let mut event = v4();
            event.completion = Some(crate::Completion {
                outcome,
                latency_ns: 12_345_678,
                errno: 0,
            });
            let expected = format!(" dst=127.0.0.1:8080 outcome={outcome} latency=12.345ms\n");
            assert!(line(Format::Stap, &event).ends_with(&expected), "{outcome}");
        }
    }

    #[test]
    fn outcome_lines() {
        let mut event = v4();
        event.completion = Some(crate::Completion {
            outcome: crate::Outcome::Refused,
            latency_ns: 183_999,
            errno: 111,
        });
        assert!(
            line(Format::Stap, &event).ends_with(" outcome=refused latency=0.183ms\n"),
            "{}",
            line(Format::Stap, &event)
        );
        let json: serde_json::Value = serde_json::from_str(&line(Format::Json, &event)).unwrap();
        assert_eq!(json["outcome"], "refused");
        assert_eq!(json["latency_ns"], 183_999);
        assert_eq!(json["errno"], 111);
        event.completion = Some(crate::Completion {
            outcome: crate::Outcome::Established,
            latency_ns: 12_345_678_901,
            errno: 0,
        });
        assert!(line(Format::Stap, &event).ends_with(" outcome=established latency=12345.678ms\n"));
        let json: serde_json::Value = serde_json::from_str(&line(Format::Json, &event)).unwrap();
        assert!(json.get("errno").is_none(), "{json}");
        assert_eq!(line(Format::Minimal, &event), line(Format::Minimal, &v4()));
    }

    /// Every formatter on arbitrary events: SystemTap lines parse back to the event's function
    /// and addresses, and JSON round-trips every field.
    mod properties {
        use probe_common::{ConnectRecord, RecordKind};
        use proptest::prelude::*;

        use super::*;

        const FAMILY_AT: usize = std::mem::offset_of!(ConnectRecord, family);

        fn event() -> impl Strategy<Value = ConnectEvent> {
            (
                proptest::collection::vec(any::<u8>(), ConnectRecord::SIZE),
                any::<bool>(),
            )
                .prop_map(|(mut bytes, v6)| {
                    let family = if v6 { AF_INET6 } else { AF_INET };
                    bytes[..4].copy_from_slice(&(RecordKind::Connect as u32).to_ne_bytes());
                    bytes[FAMILY_AT..FAMILY_AT + 2].copy_from_slice(&family.to_ne_bytes());
                    ConnectEvent::decode(&bytes).unwrap()
                })
        }

        fn clock() -> impl Strategy<Value = WallClock> {
            (-(1i128 << 64)..(1i128 << 64)).prop_map(WallClock::with_offset)
        }

        proptest! {
            #[test]
            fn stap_and_minimal_lines_parse_back(ev in event(), clock in clock()) {
                let time_s = clock.unix_ns(ev.boot_ns) / 1_000_000_000;
                let mut out = Vec::new();
                Formatter::new(Format::Stap, clock).write(&mut out, &ev);
                let line = String::from_utf8(out).unwrap();
                let expected = format!("{time_s}: {} src=", ev.function().name());
                prop_assert!(line.starts_with(&expected), "{}", line);
                let rest = line[expected.len()..].strip_suffix('\n').unwrap();
                let (src, dst) = rest.split_once(" dst=").unwrap();
                prop_assert_eq!(src.parse::<SocketAddr>().unwrap(), ev.src);
                prop_assert_eq!(dst.parse::<SocketAddr>().unwrap(), ev.dst);

                let mut out = Vec::new();
                Formatter::new(Format::Minimal, clock).write(&mut out, &ev);
                prop_assert_eq!(String::from_utf8(out).unwrap(), format!("{time_s}: {}\n", ev.function().name()));
            }

            #[test]
            fn json_round_trips(ev in event(), clock in clock()) {
                let mut out = Vec::new();
                Formatter::new(Format::Json, clock).write(&mut out, &ev);
                prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                let time_ns = clock.unix_ns(ev.boot_ns);
                prop_assert_eq!(v["time_ns"].as_u64(), Some(time_ns));
                prop_assert_eq!(v["time_s"].as_u64(), Some(time_ns / 1_000_000_000));
                prop_assert_eq!(v["pid"].as_u64(), Some(u64::from(ev.pid)));
                prop_assert_eq!(v["tid"].as_u64(), Some(u64::from(ev.tid)));
                prop_assert_eq!(v["uid"].as_u64(), Some(u64::from(ev.uid)));
                prop_assert_eq!(v["ret"].as_i64(), Some(i64::from(ev.ret)));
                prop_assert_eq!(v["comm"].as_str(), Some(&*ev.comm()));
                prop_assert_eq!(v["family"].as_str(), Some(ev.family.name()));
                prop_assert_eq!(v["function"].as_str(), Some(ev.function().name()));
                let endpoint = |addr: &str, port: &str| {
                    SocketAddr::new(v[addr].as_str().unwrap().parse().unwrap(), v[port].as_u64().unwrap() as u16)
                };
                prop_assert_eq!(endpoint("saddr", "sport"), ev.src);
                prop_assert_eq!(endpoint("daddr", "dport"), ev.dst);
            }
        }
    }
}
