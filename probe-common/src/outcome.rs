//! How a connect ended (`--outcome`): decided by the kernel side when the socket leaves
//! SYN_SENT (or when the call itself fails), carried in [`crate::OutcomeRecord`]s and in count
//! keys, and configured by the `OUTCOME` global ([`OutcomeConfig`]).

use crate::Named;

/// The errnos the kernel gives a connect (`include/uapi/asm-generic/errno.h`, the same on
/// x86_64 and arm64).
pub mod errno {
    /// Network is unreachable.
    pub const ENETUNREACH: u32 = 101;
    /// Connection timed out.
    pub const ETIMEDOUT: u32 = 110;
    /// Connection refused.
    pub const ECONNREFUSED: u32 = 111;
    /// No route to host.
    pub const EHOSTUNREACH: u32 = 113;
    /// Permission denied: an ICMPv6 "administratively prohibited" (a firewall's reject).
    pub const EACCES: u32 = 13;
    /// Broken pipe: a reset received after the peer's FIN.
    pub const EPIPE: u32 = 32;
    /// Connection reset by peer.
    pub const ECONNRESET: u32 = 104;
}

/// How a connect ended. Stored as a plain `u32` in records and as a `u8` in count keys (zero
/// there: not tracing outcomes), turned back with `TryFrom`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The handshake completed (the socket left SYN_SENT for ESTABLISHED).
    Established = 1,
    /// The destination answered with a reset (`ECONNREFUSED`).
    Refused = 2,
    /// The kernel gave up retrying the SYN (`ETIMEDOUT`).
    Timeout = 3,
    /// An ICMP host or network unreachable (or administratively prohibited) ended the
    /// handshake, or the call found no route (`EHOSTUNREACH`, `ENETUNREACH`, `EACCES`).
    Unreachable = 4,
    /// Any other error ended the handshake (its errno is reported: an ICMP protocol
    /// unreachable or parameter problem, `ENOPROTOOPT`/`EPROTO`; a reset in SYN_SENT is
    /// [`Outcome::Refused`]).
    Reset = 5,
    /// The application (or the kernel) closed the socket before the handshake finished, with
    /// no error.
    Aborted = 6,
    /// The connect call itself failed (its `ret` is reported).
    Error = 7,
    /// Still in SYN_SENT when tracing ended.
    Pending = 8,
}

impl Outcome {
    /// The outcome of a handshake that left SYN_SENT, by whether it reached ESTABLISHED and
    /// the socket's `sk_err` at that moment (set by tcp_reset / tcp_write_err / tcp_v*_err
    /// before tcp_done moves the socket to CLOSE).
    #[inline(always)]
    pub const fn of_handshake(established: bool, sk_err: u32) -> Outcome {
        if established {
            return Outcome::Established;
        }
        match sk_err {
            0 => Outcome::Aborted,
            errno::ECONNREFUSED => Outcome::Refused,
            errno::ETIMEDOUT => Outcome::Timeout,
            errno::EHOSTUNREACH | errno::ENETUNREACH | errno::EACCES => Outcome::Unreachable,
            _ => Outcome::Reset,
        }
    }

    /// The outcome of a connect call that returned `ret` < 0.
    #[inline(always)]
    pub const fn of_failed_call(ret: i32) -> Outcome {
        match ret.unsigned_abs() {
            errno::EHOSTUNREACH | errno::ENETUNREACH => Outcome::Unreachable,
            _ => Outcome::Error,
        }
    }

    /// The causes (as `u8`, 0 for none) a connect of this outcome can be given: where its
    /// count lands when `--count` keys reach their budget (`CountKey::overflow`).
    pub const fn causes(self) -> &'static [u8] {
        const NONE: u8 = 0;
        const RST: u8 = Cause::Rst as u8;
        const ICMP: u8 = Cause::Icmp as u8;
        const LOCAL: u8 = Cause::Local as u8;
        const DROP: u8 = Cause::Drop as u8;
        const TIMEOUT: u8 = Cause::Timeout as u8;
        const APP: u8 = Cause::App as u8;
        match self {
            Outcome::Established | Outcome::Pending => &[NONE],
            // A reset, or an ICMP port unreachable (or, rarely, this host's own error).
            Outcome::Refused => &[RST, ICMP, LOCAL],
            // Nothing came back; a SYN dropped here; an ICMP error noted while the socket was
            // busy (its soft error is then the one reported: not ETIMEDOUT, so rarely here).
            Outcome::Timeout => &[TIMEOUT, DROP, ICMP],
            // From the handshake (an ICMP error, or a retransmit that found no route), or from
            // the call (no route).
            Outcome::Unreachable => &[ICMP, LOCAL],
            Outcome::Reset => &[ICMP, LOCAL],
            Outcome::Aborted => &[APP],
            Outcome::Error => &[LOCAL],
        }
    }

    /// Whether the connect came up.
    #[inline(always)]
    pub const fn is_failure(self) -> bool {
        !matches!(self, Outcome::Established | Outcome::Pending)
    }
}

impl TryFrom<u32> for Outcome {
    type Error = u32;

    /// The outcome whose value is `value`, or `value` itself if there is none.
    fn try_from(value: u32) -> Result<Self, u32> {
        Outcome::ALL
            .iter()
            .copied()
            .find(|o| *o as u32 == value)
            .ok_or(value)
    }
}

impl Named for Outcome {
    const ALL: &'static [Self] = &[
        Outcome::Established,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::Unreachable,
        Outcome::Reset,
        Outcome::Aborted,
        Outcome::Error,
        Outcome::Pending,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::Reset => "reset",
            Outcome::Aborted => "aborted",
            Outcome::Error => "error",
            Outcome::Pending => "pending",
        }
    }
}

impl core::fmt::Display for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a connect failed, or where its answer came from (`--outcome`): decided by the kernel side
/// with the outcome, from the socket's own counters and what the cause hooks saw happen to it
/// (see [`crate::Trouble`]). Stored as a plain `u32` in records (0: none, for an established or
/// pending connect) and as a `u8` in count keys, turned back with `TryFrom`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// A TCP segment came back and the kernel reset the connect (`tcp_reset`): the peer, or a
    /// firewall on the way, answered the SYN with a reset.
    Rst = 1,
    /// An ICMP (or ICMPv6) error the kernel matched to the socket ended the handshake.
    Icmp = 2,
    /// The connect call itself failed inside this host (no route, no source port, ...).
    Local = 3,
    /// Nothing came back, and a SYN of the connect was dropped inside this host with a drop
    /// reason (kernels with `enum skb_drop_reason`, 5.17+).
    Drop = 4,
    /// Nothing came back: the kernel gave up retrying the SYN.
    Timeout = 5,
    /// The application closed (or disconnected) the socket before the handshake ended.
    App = 6,
}

impl Cause {
    /// Why a handshake that left SYN_SENT failed (`None`: it did not), from whether it reached
    /// ESTABLISHED, the socket's `sk_err` and `segs_in` (TCP segments received: a reset counts,
    /// an ICMP error does not) at that moment, and `trouble`'s [`crate::Trouble`] flags.
    ///
    /// An error with nothing received and no ICMP error noted is this host's own (`local`: a
    /// retransmit that found no route sets the socket's soft error, which the kernel reports
    /// when it gives up) where the ICMP hook is attached (`icmp_hook`); where it is not, it is
    /// taken for an ICMP error, the usual case, without its details.
    #[inline(always)]
    pub const fn of_handshake(
        established: bool,
        sk_err: u32,
        segs_in: u32,
        trouble: u8,
        icmp_hook: bool,
    ) -> Option<Cause> {
        if established {
            return None;
        }
        Some(if sk_err == 0 {
            Cause::App
        } else if segs_in != 0 && sk_err == errno::ECONNREFUSED {
            Cause::Rst
        } else if trouble & crate::Trouble::ICMP != 0 {
            Cause::Icmp
        } else if sk_err == errno::ETIMEDOUT {
            if trouble & crate::Trouble::DROP != 0 {
                Cause::Drop
            } else {
                Cause::Timeout
            }
        } else if icmp_hook {
            Cause::Local
        } else {
            Cause::Icmp
        })
    }
}

impl TryFrom<u32> for Cause {
    type Error = u32;

    /// The cause whose value is `value`, or `value` itself if there is none.
    fn try_from(value: u32) -> Result<Self, u32> {
        Cause::ALL
            .iter()
            .copied()
            .find(|c| *c as u32 == value)
            .ok_or(value)
    }
}

impl Named for Cause {
    const ALL: &'static [Self] = &[
        Cause::Rst,
        Cause::Icmp,
        Cause::Local,
        Cause::Drop,
        Cause::Timeout,
        Cause::App,
    ];

    fn name(self) -> &'static str {
        match self {
            Cause::Rst => "rst",
            Cause::Icmp => "icmp",
            Cause::Local => "local",
            Cause::Drop => "drop",
            Cause::Timeout => "timeout",
            Cause::App => "app",
        }
    }
}

impl core::fmt::Display for Cause {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Finite latency buckets counted in the kernel: bucket `b` holds latencies of at most `2^b`
/// microseconds (1 us to 2^27 us, about 134 s); bucket [`LATENCY_BUCKETS`] holds the rest.
pub const LATENCY_BUCKETS: u8 = 28;

/// The latency bucket of `ns` nanoseconds (see [`LATENCY_BUCKETS`]): the smallest `b` with
/// `ns <= 2^b us`.
#[inline(always)]
pub const fn latency_bucket(ns: u64) -> u8 {
    let us = ns.div_ceil(1000);
    if us <= 1 {
        return 0;
    }
    let bits = (64 - (us - 1).leading_zeros()) as u8;
    if bits > LATENCY_BUCKETS {
        LATENCY_BUCKETS
    } else {
        bits
    }
}

/// The upper bound, in nanoseconds, of latency bucket `b` (`u64::MAX` for the last one).
pub const fn latency_bucket_bound_ns(b: u8) -> u64 {
    if b >= LATENCY_BUCKETS {
        u64::MAX
    } else {
        1000 << b
    }
}

/// `--outcome` and its filters, set by userspace as the `OUTCOME` global before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeConfig {
    /// Non-zero: a connect is reported when its outcome is known, with that outcome.
    pub enabled: u8,
    /// Non-zero: connects that were established are not reported (`--failed-only`).
    pub failed_only: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 6],
    /// Connects faster than this are not reported (`--min-latency`); 0: every connect.
    pub min_latency_ns: u64,
}

impl OutcomeConfig {
    /// Outcomes not traced: every connect is reported at its return.
    pub const OFF: OutcomeConfig = OutcomeConfig {
        enabled: 0,
        failed_only: 0,
        _pad: [0; 6],
        min_latency_ns: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_powers_of_two_microseconds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1000), 0);
        assert_eq!(latency_bucket(1001), 1);
        assert_eq!(latency_bucket(2000), 1);
        assert_eq!(latency_bucket(2001), 2);
        assert_eq!(latency_bucket(183_000), 8);
        for b in 0..LATENCY_BUCKETS {
            let bound = latency_bucket_bound_ns(b);
            assert_eq!(latency_bucket(bound), b);
            assert_eq!(latency_bucket(bound + 1000), b + 1);
        }
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS);
    }

    #[test]
    fn outcomes_round_trip_and_classify() {
        for &o in Outcome::ALL {
            assert_eq!(Outcome::try_from(o as u32), Ok(o));
            assert_eq!(Outcome::from_name(o.name()), Some(o));
        }
        assert_eq!(Outcome::try_from(0), Err(0));
        assert_eq!(Outcome::of_handshake(true, 111), Outcome::Established);
        assert_eq!(Outcome::of_handshake(false, 111), Outcome::Refused);
        assert_eq!(Outcome::of_handshake(false, 110), Outcome::Timeout);
        assert_eq!(Outcome::of_handshake(false, 113), Outcome::Unreachable);
        assert_eq!(Outcome::of_handshake(false, 104), Outcome::Reset);
        assert_eq!(Outcome::of_handshake(false, 0), Outcome::Aborted);
        assert_eq!(Outcome::of_failed_call(-101), Outcome::Unreachable);
        assert_eq!(Outcome::of_failed_call(-99), Outcome::Error);
    }

    #[test]
    fn causes_round_trip_and_follow_the_socket() {
        use crate::Trouble;
        for &c in Cause::ALL {
            assert_eq!(Cause::try_from(c as u32), Ok(c));
        }
        assert_eq!(Cause::try_from(0), Err(0));
        let of = |established, sk_err, segs_in, trouble| {
            Cause::of_handshake(established, sk_err, segs_in, trouble, false)
        };
        assert_eq!(of(true, 0, 1, 0), None);
        assert_eq!(of(false, 0, 0, 0), Some(Cause::App));
        assert_eq!(of(false, 111, 1, 0), Some(Cause::Rst));
        // A reset wins over an ICMP error noted while the socket was busy.
        assert_eq!(of(false, 111, 1, Trouble::ICMP), Some(Cause::Rst));
        // ICMP port unreachable: ECONNREFUSED with nothing received.
        assert_eq!(of(false, 111, 0, 0), Some(Cause::Icmp));
        assert_eq!(of(false, 113, 0, Trouble::ICMP), Some(Cause::Icmp));
        assert_eq!(of(false, 110, 0, 0), Some(Cause::Timeout));
        assert_eq!(of(false, 110, 0, Trouble::DROP), Some(Cause::Drop));
        assert_eq!(
            of(false, 110, 0, Trouble::ICMP | Trouble::DROP),
            Some(Cause::Icmp)
        );
        // Without an ICMP hook, an ICMP errno is still an ICMP error; with it, an error without
        // an ICMP error noted is this host's own.
        assert_eq!(of(false, 13, 0, 0), Some(Cause::Icmp));
        assert_eq!(
            Cause::of_handshake(false, 101, 0, 0, true),
            Some(Cause::Local)
        );
        assert_eq!(
            Cause::of_handshake(false, 113, 0, Trouble::ICMP, true),
            Some(Cause::Icmp)
        );
    }

    #[test]
    fn every_outcome_and_cause_has_an_overflow_key() {
        use crate::Trouble;
        // Every pair the kernel side can produce is among `Outcome::causes`, so a connect past
        // the budget always finds its overflow key.
        for established in [false, true] {
            for sk_err in [0, 13, 71, 92, 101, 104, 110, 111, 112, 113] {
                for segs_in in [0, 1] {
                    for (trouble, hook) in (0..8).flat_map(|t| [(t, false), (t, true)]) {
                        let outcome = Outcome::of_handshake(established, sk_err);
                        let cause =
                            Cause::of_handshake(established, sk_err, segs_in, trouble, hook)
                                .map_or(0, |c| c as u8);
                        assert!(
                            outcome.causes().contains(&cause),
                            "{outcome} {cause} ({sk_err} {segs_in} {trouble} {hook})"
                        );
                    }
                }
            }
        }
        for ret in [-99, -101, -113, -13, -22] {
            let outcome = Outcome::of_failed_call(ret);
            assert!(
                outcome.causes().contains(&(Cause::Local as u8)),
                "{outcome}"
            );
        }
        let total: usize = Outcome::ALL.iter().map(|o| o.causes().len()).sum();
        assert_eq!(2 * total as u32, crate::limit::OVERFLOW_KEYS);
        let _ = Trouble::NONE;
    }
}
