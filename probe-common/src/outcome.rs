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
}
