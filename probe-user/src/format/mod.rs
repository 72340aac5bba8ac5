//! The output styles: one line per event, appended to a reused byte buffer.
//!
//! `minimal` and `stap` reproduce SystemTap's tcp.connect examples 1 and 2/3 byte for byte;
//! `json` carries every field, one object per line.

mod json;
mod line;
mod table;

use std::{fmt, str::FromStr};

use crate::{
    CloseEvent, ConnectEvent, CountBy, Event, WallClock,
    names::{self, Named, UnknownName},
};
use json::{JsonCause, JsonClose, JsonLine, JsonWorkload};
use line::{Line, Second};

/// An output style (`--format`).
///
/// ```
/// use probe_user::Format;
///
/// let format: Format = "json".parse().unwrap();
/// assert_eq!(format, Format::Json);
/// assert_eq!(Format::default().to_string(), "stap");
/// assert!("yaml".parse::<Format>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `<unix seconds>: tcp_v4_connect` (SystemTap example 1).
    Minimal,
    /// `<unix seconds>: tcp_v4_connect src=<ip>:<port> dst=<ip>:<port>` (examples 2 and 3).
    #[default]
    Stap,
    /// One JSON object per line with every field (a close's has `"event":"close"`).
    Json,
    /// One line per closed connection, like bcc's tcplife (connects are not printed; see
    /// [`Formatter::LIFE_HEADER`] for the columns).
    Life,
}

impl Named for Format {
    const ALL: &'static [Self] = &[Format::Minimal, Format::Stap, Format::Json, Format::Life];

    fn name(self) -> &'static str {
        match self {
            Format::Minimal => "minimal",
            Format::Stap => "stap",
            Format::Json => "json",
            Format::Life => "life",
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
///
/// ```no_run
/// use std::io::Write as _;
/// use probe_user::{Format, Formatter, Tracer, WallClock};
///
/// let mut tracer = Tracer::builder().attach()?;
/// let mut formatter = Formatter::new(Format::Json, WallClock::measure());
/// let mut out = Vec::new();
/// loop {
///     // The wall clock may have been stepped since the last batch (NTP, `date -s`).
///     formatter.follow_clock();
///     tracer.drain(|event| formatter.write(&mut out, event));
///     std::io::stdout().write_all(&out)?;
///     out.clear();
///     std::thread::sleep(probe_user::DRAIN_INTERVAL);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Formatter {
    format: Format,
    clock: WallClock,
    count_by: Option<CountBy>,
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

    /// The columns of [`Format::Life`]'s lines: the close's time (Unix seconds), the process
    /// that connected, the local and remote address and port, payload bytes sent (acknowledged)
    /// and received, milliseconds from established to closed, how it ended ([`crate::End`]'s
    /// names), and the task's name, last as it may hold spaces (escaped as in count tables).
    pub const LIFE_HEADER: &'static str = "TIME       PID     LADDR           LPORT RADDR           RPORT   TX_BYTES   RX_BYTES         MS END          COMM\n";

    /// Appends what `event` shows in this format (a line, newline included, or nothing: a
    /// close or an accept in the SystemTap formats, a connect or an accept in
    /// [`Format::Life`]) to `out`.
    pub fn write(&self, out: &mut Vec<u8>, event: &Event) {
        match event {
            Event::Connect(connect) if self.format != Format::Life => {
                self.write_connect(out, connect)
            }
            Event::Accept(accept) if self.format == Format::Json => self.write_connect(out, accept),
            Event::Close(close) => self.write_close(out, close),
            Event::Connect(_) | Event::Accept(_) => {}
        }
    }

    /// Appends the line of a connection's close (JSON or [`Format::Life`]; nothing in the
    /// SystemTap formats).
    pub fn write_close(&self, out: &mut Vec<u8>, close: &CloseEvent) {
        let time_ns = self.clock.unix_ns(close.closed_ns);
        let c = &close.connect;
        match self.format {
            Format::Json => {
                let figures = close.figures;
                let line = JsonClose {
                    event: "close",
                    time_ns,
                    time_s: time_ns / 1_000_000_000,
                    pid: c.pid,
                    tid: c.tid,
                    uid: c.uid,
                    comm: &c.comm(),
                    family: c.family.name(),
                    function: c.function().name(),
                    role: c.role.name(),
                    saddr: c.src.ip(),
                    sport: c.src.port(),
                    daddr: c.dst.ip(),
                    dport: c.dst.port(),
                    established_time_ns: self.clock.unix_ns(close.established_ns),
                    duration_ns: close.duration_ns(),
                    end: close.end.name(),
                    errno: (close.errno != 0).then_some(close.errno),
                    bytes_sent: figures.map(|f| f.bytes_sent),
                    bytes_received: figures.map(|f| f.bytes_received),
                    segs_out: figures.map(|f| f.segs_out),
                    segs_in: figures.map(|f| f.segs_in),
                    retransmits: figures.map(|f| f.retransmits),
                    srtt_us: figures.map(|f| f.srtt_us),
                    naming: json::JsonNaming::of(c.dns_name.as_deref(), c.nat_dst),
                    workload: c.workload.as_ref().map(JsonWorkload::of),
                };
                // Writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, &line);
                out.push(b'\n');
            }
            Format::Life => {
                use std::io::Write as _;
                // A server's connection runs from the peer (`src`) to the local end (`dst`).
                let (local, remote) = match c.role {
                    crate::Role::Client => (c.src, c.dst),
                    crate::Role::Server => (c.dst, c.src),
                };
                let (sent, received) = close.figures.map_or(("-".into(), "-".into()), |f| {
                    (f.bytes_sent.to_string(), f.bytes_received.to_string())
                });
                let ms = close.duration_ns() as f64 / 1e6;
                // Writing into a Vec cannot fail.
                let _ = writeln!(
                    out,
                    "{:<10} {:<7} {:<15} {:<5} {:<15} {:<5} {:>10} {:>10} {:>10.3} {:<12} {}",
                    time_ns / 1_000_000_000,
                    c.pid,
                    local.ip(),
                    local.port(),
                    remote.ip(),
                    remote.port(),
                    sent,
                    received,
                    ms,
                    close.end.name(),
                    crate::escape::escape(&c.comm()),
                );
            }
            Format::Minimal | Format::Stap => {}
        }
    }

    /// Appends one line (newline included) describing connect `event` to `out`.
    pub fn write_connect(&self, out: &mut Vec<u8>, event: &ConnectEvent) {
        let time_ns = self.clock.unix_ns(event.boot_ns);
        let time_s = time_ns / 1_000_000_000;
        let function = event.function().name();
        if self.format == Format::Json {
            let server = event.role == crate::Role::Server;
            let line = JsonLine {
                event: server.then_some("accept"),
                time_ns,
                time_s,
                pid: event.pid,
                tid: event.tid,
                uid: event.uid,
                comm: &event.comm(),
                family: event.family.name(),
                function,
                role: server.then_some("server"),
                saddr: event.src.ip(),
                sport: event.src.port(),
                daddr: event.dst.ip(),
                dport: event.dst.port(),
                ret: event.ret,
                outcome: event.completion.map(|c| c.outcome.name()),
                latency_ns: event.completion.map(|c| c.latency_ns),
                errno: event.completion.map(|c| c.errno).filter(|&e| e != 0),
                syn_retransmits: event
                    .completion
                    .filter(|c| c.outcome != crate::Outcome::Pending)
                    .map(|c| c.syn_retransmits),
                cause: event.completion.and_then(|c| c.cause).map(JsonCause::of),
                naming: json::JsonNaming::of(event.dns_name.as_deref(), event.nat_dst),
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
                // A pending connect's socket is not read at the end: nothing to say.
                if c.outcome != crate::Outcome::Pending {
                    line.why(c);
                }
            }
        }
        line.put(b"\n");
        out.extend_from_slice(line.as_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::tests::record;
    pub(crate) use probe_common::{AF_INET, AF_INET6};

    /// boot_ns 5_000_000_123 in the test record lands on 1795778063.000000123.
    pub(crate) const CLOCK: WallClock = WallClock::with_offset(1_795_778_058_000_000_000);

    pub(crate) fn line(format: Format, event: &ConnectEvent) -> String {
        let mut out = Vec::new();
        Formatter::new(format, CLOCK).write_connect(&mut out, event);
        String::from_utf8(out).unwrap()
    }

    pub(crate) fn v4() -> ConnectEvent {
        ConnectEvent::from_record(&record(
            AF_INET,
            &[127, 0, 0, 1],
            59538,
            &[127, 0, 0, 1],
            8080,
        ))
        .unwrap()
    }

    pub(crate) fn v6() -> ConnectEvent {
        let src = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let dst = "::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        ConnectEvent::from_record(&record(AF_INET6, &src, 40000, &dst, 443)).unwrap()
    }

    /// Arbitrary events and clocks, for the formatters' properties.
    pub(crate) mod strategies {
        use probe_common::{ConnectRecord, RecordKind};
        use proptest::prelude::*;

        use super::*;

        const FAMILY_AT: usize = std::mem::offset_of!(ConnectRecord, family);
        const ROLE_AT: usize = std::mem::offset_of!(ConnectRecord, role);

        pub(crate) fn event() -> impl Strategy<Value = ConnectEvent> {
            (
                proptest::collection::vec(any::<u8>(), ConnectRecord::SIZE),
                any::<bool>(),
            )
                .prop_map(|(mut bytes, v6)| {
                    let family = if v6 { AF_INET6 } else { AF_INET };
                    bytes[..4].copy_from_slice(&(RecordKind::Connect as u32).to_ne_bytes());
                    bytes[FAMILY_AT..FAMILY_AT + 2].copy_from_slice(&family.to_ne_bytes());
                    bytes[ROLE_AT..ROLE_AT + 2].copy_from_slice(&0u16.to_ne_bytes());
                    ConnectEvent::decode(&bytes).unwrap()
                })
        }

        pub(crate) fn clock() -> impl Strategy<Value = WallClock> {
            (-(1i128 << 64)..(1i128 << 64)).prop_map(WallClock::with_offset)
        }
    }

    #[test]
    fn appends_to_existing_output() {
        let mut out = b"x\n".to_vec();
        let f = Formatter::new(Format::Minimal, CLOCK);
        f.write_connect(&mut out, &v4());
        f.write_connect(&mut out, &v6());
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
            "unknown format 'xml' (expected one of: minimal, stap, json, life)"
        );
    }

    /// A close of the test connect: established 1 ms after it, closed 1.5 s later.
    fn closed(end: crate::End, figures: bool) -> CloseEvent {
        let mut record = probe_common::CloseRecord {
            connect: record(AF_INET, &[10, 0, 0, 1], 40000, &[10, 0, 0, 2], 443),
            established_ns: 5_001_000_123,
            closed_ns: 6_501_000_123,
            figures: probe_common::CloseFigures {
                bytes_sent: 1000,
                bytes_received: 2500,
                segs_out: 7,
                segs_in: 6,
                retransmits: 1,
                srtt_us: 250,
                end: end as u32,
                errno: 0,
            },
        };
        record.connect.header = probe_common::RecordKind::Close.header();
        let mut close = CloseEvent::from_record(&record).unwrap();
        if !figures {
            close.figures = None;
        }
        close
    }

    #[test]
    fn closes_print_in_json_and_life_and_not_in_stap() {
        let close = Event::Close(closed(crate::End::FinPeer, true));
        let write = |format| {
            let mut out = Vec::new();
            Formatter::new(format, CLOCK).write(&mut out, &close);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            write(Format::Json),
            concat!(
                r#"{"event":"close","time_ns":1795778064501000123,"time_s":1795778064,"#,
                r#""pid":42,"tid":43,"uid":1000,"comm":"curl","family":"ipv4","#,
                r#""function":"tcp_v4_connect","role":"client","#,
                r#""saddr":"10.0.0.1","sport":40000,"daddr":"10.0.0.2","dport":443,"#,
                r#""established_time_ns":1795778063001000123,"duration_ns":1500000000,"#,
                r#""end":"fin_peer","bytes_sent":1000,"bytes_received":2500,"segs_out":7,"#,
                r#""segs_in":6,"retransmits":1,"srtt_us":250}"#,
                "\n"
            )
        );
        assert_eq!(
            write(Format::Life),
            "1795778064 42      10.0.0.1        40000 10.0.0.2        443         1000       2500   1500.000 fin_peer     curl\n"
        );
        assert_eq!(write(Format::Stap), "");
        assert_eq!(write(Format::Minimal), "");
        // A connect prints in every format but life.
        let connect = Event::Connect(v4());
        let mut out = Vec::new();
        Formatter::new(Format::Life, CLOCK).write(&mut out, &connect);
        assert!(out.is_empty());
    }

    #[test]
    fn accepts_print_in_json_and_their_closes_from_the_local_end_in_life() {
        // A connection from 10.0.0.1:40000 accepted on 10.0.0.2:443.
        let mut record = record(AF_INET, &[10, 0, 0, 1], 40000, &[10, 0, 0, 2], 443);
        record.header = probe_common::RecordKind::Accept.header();
        record.role = crate::Role::Server as u16;
        let accept = ConnectEvent::from_record(&record).unwrap();
        let write = |format, event: &Event| {
            let mut out = Vec::new();
            Formatter::new(format, CLOCK).write(&mut out, event);
            String::from_utf8(out).unwrap()
        };
        let line: serde_json::Value =
            serde_json::from_str(&write(Format::Json, &Event::Accept(accept.clone()))).unwrap();
        assert_eq!(
            (&line["event"], &line["role"], &line["function"]),
            (
                &"accept".into(),
                &"server".into(),
                &"inet_csk_accept".into()
            )
        );
        assert_eq!(
            (&line["saddr"], &line["sport"]),
            (&"10.0.0.1".into(), &40000.into())
        );
        assert_eq!(
            (&line["daddr"], &line["dport"]),
            (&"10.0.0.2".into(), &443.into())
        );
        for format in [Format::Stap, Format::Minimal, Format::Life] {
            assert_eq!(write(format, &Event::Accept(accept.clone())), "");
        }
        // A connect's line has neither field.
        let connect = write(Format::Json, &Event::Connect(v4()));
        assert!(!connect.contains("\"event\"") && !connect.contains("\"role\""));
        let mut close = closed(crate::End::FinLocal, true);
        close.connect = accept;
        let close = Event::Close(close);
        assert_eq!(
            write(Format::Life, &close),
            "1795778064 42      10.0.0.2        443   10.0.0.1        40000       1000       2500   1500.000 fin_local    curl\n"
        );
        let line: serde_json::Value = serde_json::from_str(&write(Format::Json, &close)).unwrap();
        assert_eq!(
            (&line["role"], &line["dport"]),
            (&"server".into(), &443.into())
        );
    }

    #[test]
    fn an_open_connection_has_no_figures() {
        let close = Event::Close(closed(crate::End::Open, false));
        let mut out = Vec::new();
        Formatter::new(Format::Life, CLOCK).write(&mut out, &close);
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains(" - ") && line.contains(" open "), "{line}");
        let mut out = Vec::new();
        Formatter::new(Format::Json, CLOCK).write(&mut out, &close);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["end"], "open");
        assert!(line.get("bytes_sent").is_none() && line.get("srtt_us").is_none());
    }
}
