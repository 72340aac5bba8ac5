//! The SystemTap styles, `stap` and `minimal`: a line built on the stack, then appended at once.

use std::{cell::Cell, io::Write as _, net::SocketAddr};

use crate::{Function, Outcome, names::Named};

thread_local! {
    /// The decimal digits of the last second this thread wrote (a second is the same whatever
    /// the formatter): events come many to a second, and writing ten digits anew cost more than
    /// the rest of a `minimal` line. Per thread, so that `Formatter` stays `Copy` and `Sync`.
    static LAST_SECOND: Cell<Second> = const { Cell::new(Second::ZERO) };
}

/// A second since the Unix epoch and its decimal digits, left-aligned in a fixed-size array so
/// that they are copied with one fixed-size move (what follows overwrites the rest).
#[derive(Clone, Copy, Debug)]
pub(super) struct Second {
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
    pub(super) fn cached(unix_s: u64) -> Self {
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

/// One `stap` or `minimal` line being built on the stack, then appended to the output at once.
/// Literal pieces are copied with their length known at compile time (a few moves, no call) and
/// numbers are written in place, so a line costs no `memcpy` call but the last.
pub(super) struct Line {
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
    /// and latency (under 200 bytes), then the retransmits and an ICMP cause from an IPv6
    /// sender (under 70 more) or a drop reason (a kernel enum name, under 64), fits.
    const CAPACITY: usize = 320;

    pub(super) fn new() -> Self {
        Line {
            bytes: [0; Line::CAPACITY],
            len: 0,
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends a literal.
    #[inline(always)]
    pub(super) fn put<const N: usize>(&mut self, piece: &[u8; N]) {
        self.bytes[self.len..self.len + N].copy_from_slice(piece);
        self.len += N;
    }

    /// Appends a second's digits.
    #[inline(always)]
    pub(super) fn second(&mut self, second: Second) {
        self.put(&second.digits);
        self.len -= second.digits.len() - usize::from(second.len);
    }

    /// Appends ` outcome=NAME latency=`.
    #[inline(always)]
    pub(super) fn outcome(&mut self, outcome: Outcome) {
        let piece = &OUTCOME_PIECES[outcome as usize];
        self.put(piece);
        self.len -= piece.len() - usize::from(piece[piece.len() - 1]);
    }

    /// Appends a connect function's name: the two that lines show, as literals.
    #[inline(always)]
    pub(super) fn function(&mut self, function: Function) {
        const V4: [u8; 14] = literal(Function::TcpV4Connect.name());
        const V6: [u8; 14] = literal(Function::TcpV6Connect.name());
        match function {
            Function::TcpV4Connect => self.put(&V4),
            Function::TcpV6Connect => self.put(&V6),
            other => self.name(other.name()),
        }
    }

    /// Appends a name.
    pub(super) fn name(&mut self, name: &str) {
        let end = self.len + name.len();
        self.bytes[self.len..end].copy_from_slice(name.as_bytes());
        self.len = end;
    }

    /// Appends `n` in decimal, its digits written in place from the last, two at a time.
    pub(super) fn decimal(&mut self, n: u64) {
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
    pub(super) fn millis(&mut self, ns: u64) {
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

    /// Appends ` retrans=N` and, for a failed connect, ` cause=NAME` and its details:
    /// ` icmp=TYPE/CODE from=ADDR` (ICMPv6: `icmp6=`), or ` reason=NAME` (a drop's).
    pub(super) fn why(&mut self, completion: &crate::Completion) {
        use crate::FailureCause;
        self.put(b" retrans=");
        self.decimal(u64::from(completion.syn_retransmits));
        let Some(cause) = completion.cause else {
            return;
        };
        self.put(b" cause=");
        self.name(cause.cause().name());
        match cause {
            FailureCause::Icmp(Some(icmp)) => {
                self.name(if icmp.v6 { " icmp6=" } else { " icmp=" });
                self.decimal(u64::from(icmp.icmp_type));
                self.put(b"/");
                self.decimal(u64::from(icmp.code));
                self.put(b" from=");
                let mut rest = &mut self.bytes[self.len..];
                let room = rest.len();
                // At most 39 bytes (see `CAPACITY`).
                let _ = write!(rest, "{}", icmp.from);
                self.len += room - rest.len();
            }
            FailureCause::Drop(reason) => {
                self.put(b" reason=");
                match reason.name {
                    // Kernel enum names are short; a longer one is cut to what fits.
                    Some(name) => self.name(&name[..name.len().min(64)]),
                    None => self.decimal(u64::from(reason.value)),
                }
            }
            _ => {}
        }
    }

    /// Appends `ip:port` for IPv4, `[ip]:port` for IPv6, without scope or flow information.
    pub(super) fn endpoint(&mut self, addr: SocketAddr) {
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
    pub(super) fn octet(&mut self, octet: u8) {
        let entry = &OCTETS[usize::from(octet)];
        self.bytes[self.len..self.len + 4].copy_from_slice(entry);
        self.len += usize::from(entry[3]);
    }
}

/// `ns` as milliseconds with three decimals (`0.183ms`), truncated to the microsecond.
pub(super) fn push_millis(out: &mut Vec<u8>, ns: u64) {
    let mut line = Line::new();
    line.millis(ns);
    out.extend_from_slice(line.as_bytes());
}

/// `ip:port` for IPv4, `[ip]:port` for IPv6, without scope or flow information.
pub(super) fn push_endpoint(out: &mut Vec<u8>, addr: SocketAddr) {
    let mut line = Line::new();
    line.endpoint(addr);
    out.extend_from_slice(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::tests::*;
    use crate::{
        ConnectEvent, Format, Formatter, WallClock, event::tests::record, names::Named as _,
    };

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
    fn stap_ipv4_covers_every_digit_count() {
        let mut r = record(AF_INET, &[0, 9, 10, 255], 0, &[100, 99, 1, 0], 65535);
        r.boot_ns = 0;
        let ev = ConnectEvent::from_record(&r).unwrap();
        let mut out = Vec::new();
        Formatter::new(Format::Stap, WallClock::with_offset(9_000_000_000))
            .write_connect(&mut out, &ev);
        assert_eq!(
            out,
            b"9: tcp_v4_connect src=0.9.10.255:0 dst=100.99.1.0:65535\n"
        );
    }

    #[test]
    fn every_outcome_is_written_by_its_name() {
        for &outcome in crate::Outcome::ALL {
            let mut event = v4();
            event.completion = Some(crate::Completion {
                outcome,
                latency_ns: 12_345_678,
                errno: 0,
                syn_retransmits: 0,
                cause: None,
            });
            let retrans = if outcome == crate::Outcome::Pending {
                ""
            } else {
                " retrans=0"
            };
            let expected =
                format!(" dst=127.0.0.1:8080 outcome={outcome} latency=12.345ms{retrans}\n");
            assert!(line(Format::Stap, &event).ends_with(&expected), "{outcome}");
        }
    }

    #[test]
    pub(super) fn outcome_lines() {
        let mut event = v4();
        event.completion = Some(crate::Completion {
            outcome: crate::Outcome::Refused,
            latency_ns: 183_999,
            errno: 111,
            syn_retransmits: 2,
            cause: Some(crate::FailureCause::Rst),
        });
        assert!(
            line(Format::Stap, &event)
                .ends_with(" outcome=refused latency=0.183ms retrans=2 cause=rst\n"),
            "{}",
            line(Format::Stap, &event)
        );
        let json: serde_json::Value = serde_json::from_str(&line(Format::Json, &event)).unwrap();
        assert_eq!(json["outcome"], "refused");
        assert_eq!(json["latency_ns"], 183_999);
        assert_eq!(json["errno"], 111);
        assert_eq!(json["syn_retransmits"], 2);
        assert_eq!(json["cause"], "rst");
        event.completion = Some(crate::Completion {
            outcome: crate::Outcome::Established,
            latency_ns: 12_345_678_901,
            errno: 0,
            syn_retransmits: 0,
            cause: None,
        });
        assert!(
            line(Format::Stap, &event)
                .ends_with(" outcome=established latency=12345.678ms retrans=0\n")
        );
        let json: serde_json::Value = serde_json::from_str(&line(Format::Json, &event)).unwrap();
        assert!(json.get("errno").is_none(), "{json}");
        assert!(json.get("cause").is_none(), "{json}");
        assert_eq!(json["syn_retransmits"], 0);
        assert_eq!(line(Format::Minimal, &event), line(Format::Minimal, &v4()));
    }

    #[test]
    fn failure_details_are_written_after_the_cause() {
        let mut event = v6();
        let icmp = crate::IcmpError {
            v6: true,
            icmp_type: 1,
            code: 1,
            from: "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap(),
        };
        event.completion = Some(crate::Completion {
            outcome: crate::Outcome::Unreachable,
            latency_ns: 12_345_678_901_234,
            errno: 13,
            syn_retransmits: 127,
            cause: Some(crate::FailureCause::Icmp(Some(icmp))),
        });
        let stap = line(Format::Stap, &event);
        assert!(
            stap.ends_with(
                " outcome=unreachable latency=12345678.901ms retrans=127 cause=icmp icmp6=1/1 \
                 from=2001:db8:ffff:ffff:ffff:ffff:ffff:fffe\n"
            ),
            "{stap}"
        );
        let json: serde_json::Value = serde_json::from_str(&line(Format::Json, &event)).unwrap();
        assert_eq!(
            (
                &json["cause"],
                &json["icmp_type"],
                &json["icmp_code"],
                &json["icmp_v6"]
            ),
            (&"icmp".into(), &1.into(), &1.into(), &true.into())
        );
        assert_eq!(json["icmp_from"], "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe");
        let drop = crate::DropReason {
            value: 77,
            name: Some("NETFILTER_DROP"),
        };
        event.completion = Some(crate::Completion {
            outcome: crate::Outcome::Timeout,
            latency_ns: 3_000_000_000,
            errno: 110,
            syn_retransmits: 1,
            cause: Some(crate::FailureCause::Drop(drop)),
        });
        assert!(line(Format::Stap, &event).ends_with(
            " outcome=timeout latency=3000.000ms retrans=1 cause=drop reason=NETFILTER_DROP\n"
        ));
        let json: serde_json::Value = serde_json::from_str(&line(Format::Json, &event)).unwrap();
        assert_eq!(
            (&json["cause"], &json["drop_reason"]),
            (&"drop".into(), &"NETFILTER_DROP".into())
        );
        assert!(json.get("icmp_type").is_none(), "{json}");
    }

    /// SystemTap lines of arbitrary events parse back to the event's function and addresses.
    mod properties {
        use proptest::prelude::*;

        use super::super::super::tests::strategies::{clock, event};
        use super::*;

        proptest! {
            #[test]
            fn stap_and_minimal_lines_parse_back(ev in event(), clock in clock()) {
                let time_s = clock.unix_ns(ev.boot_ns) / 1_000_000_000;
                let mut out = Vec::new();
                Formatter::new(Format::Stap, clock).write_connect(&mut out, &ev);
                let line = String::from_utf8(out).unwrap();
                let expected = format!("{time_s}: {} src=", ev.function().name());
                prop_assert!(line.starts_with(&expected), "{}", line);
                let rest = line[expected.len()..].strip_suffix('\n').unwrap();
                let (src, dst) = rest.split_once(" dst=").unwrap();
                prop_assert_eq!(src.parse::<SocketAddr>().unwrap(), ev.src);
                prop_assert_eq!(dst.parse::<SocketAddr>().unwrap(), ev.dst);

                let mut out = Vec::new();
                Formatter::new(Format::Minimal, clock).write_connect(&mut out, &ev);
                prop_assert_eq!(String::from_utf8(out).unwrap(), format!("{time_s}: {}\n", ev.function().name()));
            }
        }
    }
}
