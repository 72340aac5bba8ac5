//! How a traced connection ended (`--lifetime`): decided by the kernel side when the socket
//! moves to CLOSE, from the state it left and its `sk_err`, carried in
//! [`crate::CloseRecord`]s.

use crate::{Named, outcome::errno};

/// TCP states as `inet_sock_set_state` reports them (`include/net/tcp_states.h`).
pub mod tcp_state {
    /// ESTABLISHED.
    pub const ESTABLISHED: i32 = 1;
    /// SYN_SENT.
    pub const SYN_SENT: i32 = 2;
    /// SYN_RECV.
    pub const SYN_RECV: i32 = 3;
    /// FIN_WAIT1: this side sent its FIN first.
    pub const FIN_WAIT1: i32 = 4;
    /// FIN_WAIT2.
    pub const FIN_WAIT2: i32 = 5;
    /// TIME_WAIT.
    pub const TIME_WAIT: i32 = 6;
    /// CLOSE.
    pub const CLOSE: i32 = 7;
    /// CLOSE_WAIT: the peer sent its FIN first.
    pub const CLOSE_WAIT: i32 = 8;
    /// LAST_ACK.
    pub const LAST_ACK: i32 = 9;
    /// CLOSING.
    pub const CLOSING: i32 = 11;
}

/// How a connection ended. Stored as a plain `u32` in records, turned back with `TryFrom`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    /// Closed with FINs, this side's first (the application closed or shut down first).
    FinLocal = 1,
    /// Closed with FINs, the peer's first.
    FinPeer = 2,
    /// This side reset it: closed with unread data, `SO_LINGER` 0, or aborted (`tcp_disconnect`).
    RstSent = 3,
    /// The peer reset it (`ECONNRESET`, or `EPIPE` after its FIN).
    RstReceived = 4,
    /// The kernel gave up retransmitting, or keepalive probes went unanswered (`ETIMEDOUT`).
    Timeout = 5,
    /// Another error ended it (its errno is reported: an ICMP error on an established
    /// connection, ...).
    Error = 6,
    /// Still open when tracing ended.
    Open = 7,
}

impl End {
    /// How a connection whose socket moved from state `old` to CLOSE ended, its `sk_err` at
    /// that moment (set by tcp_reset / tcp_write_err before tcp_done) and `first_fin` (the
    /// state it left ESTABLISHED for, FIN_WAIT1 or CLOSE_WAIT, or 0 if that was not seen).
    #[inline(always)]
    pub const fn of_close(old: i32, sk_err: u32, first_fin: i32) -> End {
        use tcp_state::*;
        match sk_err {
            0 => {}
            errno::ECONNRESET | errno::EPIPE => return End::RstReceived,
            errno::ETIMEDOUT => return End::Timeout,
            _ => return End::Error,
        }
        match old {
            // Straight from a state before any FIN of ours, with no error: this side aborted.
            ESTABLISHED | CLOSE_WAIT | SYN_RECV => End::RstSent,
            _ => match first_fin {
                FIN_WAIT1 => End::FinLocal,
                CLOSE_WAIT => End::FinPeer,
                // Not seen: the state left tells (LAST_ACK follows the peer's FIN).
                _ if old == LAST_ACK => End::FinPeer,
                _ => End::FinLocal,
            },
        }
    }
}

/// The payload bytes a connection sent that the peer acknowledged, from the socket's
/// `bytes_acked` at its close, which counts sequence numbers: the SYN's (acknowledged for any
/// connection that came up) and, once acknowledged, the FIN's. `fin_acked`: this side sent a
/// FIN (it left ESTABLISHED or CLOSE_WAIT by closing, `old` one of FIN_WAIT1, FIN_WAIT2,
/// CLOSING, LAST_ACK) and `snd_una` reached `write_seq`.
#[inline(always)]
pub const fn payload_sent(bytes_acked: u64, old: i32, snd_una: u32, write_seq: u32) -> u64 {
    use tcp_state::*;
    let fin_sent = matches!(old, FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK);
    let fin_acked = fin_sent && snd_una == write_seq;
    bytes_acked.saturating_sub(1 + fin_acked as u64)
}

/// The payload bytes a connection received, from the socket's `bytes_received` at its close,
/// which counts the peer's FIN once it arrived (`fin_received`).
#[inline(always)]
pub const fn payload_received(bytes_received: u64, fin_received: bool) -> u64 {
    bytes_received.saturating_sub(fin_received as u64)
}

impl TryFrom<u32> for End {
    type Error = u32;

    /// The end whose value is `value`, or `value` itself if there is none.
    fn try_from(value: u32) -> Result<Self, u32> {
        End::ALL
            .iter()
            .copied()
            .find(|e| *e as u32 == value)
            .ok_or(value)
    }
}

impl Named for End {
    const ALL: &'static [Self] = &[
        End::FinLocal,
        End::FinPeer,
        End::RstSent,
        End::RstReceived,
        End::Timeout,
        End::Error,
        End::Open,
    ];

    fn name(self) -> &'static str {
        match self {
            End::FinLocal => "fin_local",
            End::FinPeer => "fin_peer",
            End::RstSent => "rst_sent",
            End::RstReceived => "rst_received",
            End::Timeout => "timeout",
            End::Error => "error",
            End::Open => "open",
        }
    }
}

impl core::fmt::Display for End {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::{tcp_state::*, *};

    #[test]
    fn ends_round_trip_and_follow_the_states() {
        for &e in End::ALL {
            assert_eq!(End::try_from(e as u32), Ok(e));
            assert_eq!(End::from_name(e.name()), Some(e));
        }
        assert_eq!(End::try_from(0), Err(0));
        assert_eq!(End::of_close(FIN_WAIT2, 0, FIN_WAIT1), End::FinLocal);
        assert_eq!(End::of_close(CLOSING, 0, FIN_WAIT1), End::FinLocal);
        assert_eq!(End::of_close(LAST_ACK, 0, CLOSE_WAIT), End::FinPeer);
        assert_eq!(End::of_close(LAST_ACK, 0, 0), End::FinPeer);
        assert_eq!(End::of_close(FIN_WAIT1, 0, 0), End::FinLocal);
        assert_eq!(End::of_close(ESTABLISHED, 0, 0), End::RstSent);
        assert_eq!(End::of_close(CLOSE_WAIT, 0, CLOSE_WAIT), End::RstSent);
        assert_eq!(End::of_close(ESTABLISHED, 104, 0), End::RstReceived);
        assert_eq!(End::of_close(CLOSE_WAIT, 32, CLOSE_WAIT), End::RstReceived);
        assert_eq!(End::of_close(ESTABLISHED, 110, 0), End::Timeout);
        assert_eq!(End::of_close(ESTABLISHED, 113, 0), End::Error);
    }

    #[test]
    fn payload_leaves_out_the_syn_and_fins() {
        // 1000 bytes, the FIN acknowledged (snd_una == write_seq) after the peer's.
        assert_eq!(payload_sent(1002, LAST_ACK, 7, 7), 1000);
        assert_eq!(payload_sent(1002, FIN_WAIT2, 7, 7), 1000);
        // The FIN sent but never acknowledged (a reset, a timeout).
        assert_eq!(payload_sent(1001, FIN_WAIT1, 6, 7), 1000);
        // No FIN sent: a reset by this side.
        assert_eq!(payload_sent(1, ESTABLISHED, 7, 7), 0);
        assert_eq!(payload_sent(0, ESTABLISHED, 7, 7), 0);
        assert_eq!(payload_received(2501, true), 2500);
        assert_eq!(payload_received(2500, false), 2500);
        assert_eq!(payload_received(0, true), 0);
    }
}
