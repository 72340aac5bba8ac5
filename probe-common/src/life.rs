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
    /// This side aborted it and sent a reset: closed with unread data, `SO_LINGER` 0,
    /// `tcp_disconnect`, data arriving after the application closed, or closed after its FIN
    /// without the peer's (an orphan's FIN_WAIT2 timeout).
    RstSent = 3,
    /// The peer reset it (`ECONNRESET`, or `EPIPE` after its FIN).
    RstReceived = 4,
    /// The kernel gave up retransmitting, or keepalive probes went unanswered (`ETIMEDOUT`, or
    /// the unreachable error an ICMP message left: its errno is reported).
    Timeout = 5,
    /// Another error ended it (its errno is reported: `ECONNABORTED` when killed through
    /// sock_diag, `ss -K`).
    Error = 6,
    /// Still open when tracing ended.
    Open = 7,
}

impl End {
    /// How a connection whose socket moved from state `old` to CLOSE ended, from its `sk_err`
    /// at that moment (set by tcp_reset / tcp_write_err before tcp_done), whether everything
    /// it sent was acknowledged (`snd_una == write_seq`: its FIN too, once sent) and whether
    /// the peer's FIN arrived (`SOCK_DONE`).
    ///
    /// Without an error, the state left tells: a close with FINs reaches CLOSE from FIN_WAIT2
    /// (this side's FIN first: TIME_WAIT after the peer's FIN), CLOSING (both at once) or
    /// LAST_ACK (the peer's first) with its FIN acknowledged; from any state before that, or
    /// without the peer's FIN or the acknowledgement, the kernel aborted the connection and
    /// sent a reset (`tcp_close` with unread data, `SO_LINGER` 0, `tcp_disconnect`, data
    /// arriving after the application closed, an orphan's FIN_WAIT2 timeout).
    #[inline(always)]
    pub const fn of_close(old: i32, sk_err: u32, all_acked: bool, fin_received: bool) -> End {
        use tcp_state::*;
        match sk_err {
            0 => {}
            errno::ECONNRESET | errno::EPIPE => return End::RstReceived,
            // Retransmissions or keepalive probes unanswered: `tcp_write_err` reports the soft
            // error an ICMP error left (unreachable) if any, else ETIMEDOUT.
            errno::ETIMEDOUT | errno::EHOSTUNREACH | errno::ENETUNREACH | errno::EACCES => {
                return End::Timeout;
            }
            _ => return End::Error,
        }
        match old {
            FIN_WAIT2 if fin_received => End::FinLocal,
            CLOSING if all_acked => End::FinLocal,
            LAST_ACK if all_acked => End::FinPeer,
            _ => End::RstSent,
        }
    }
}

/// The payload bytes a connection sent that the peer acknowledged, from the socket's
/// `bytes_acked` at its close, which counts sequence numbers: a client's SYN (acknowledged for
/// any connection that came up; a server's SYN-ACK is not counted, its socket being created
/// with the SYN-ACK already acknowledged: `syn`, false for an accepted connection) and, once
/// acknowledged, the FIN's. `fin_acked`: this side sent a FIN (it left ESTABLISHED or
/// CLOSE_WAIT by closing, `old` one of FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK) and everything
/// it sent was acknowledged (`all_acked`: `snd_una` reached `write_seq`).
#[inline(always)]
pub const fn payload_sent(bytes_acked: u64, old: i32, all_acked: bool, syn: bool) -> u64 {
    use tcp_state::*;
    let fin_sent = matches!(old, FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK);
    let fin_acked = fin_sent && all_acked;
    bytes_acked.saturating_sub(syn as u64 + fin_acked as u64)
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
        // Closes with FINs.
        assert_eq!(End::of_close(FIN_WAIT2, 0, true, true), End::FinLocal);
        assert_eq!(End::of_close(CLOSING, 0, true, true), End::FinLocal);
        assert_eq!(End::of_close(LAST_ACK, 0, true, true), End::FinPeer);
        // Aborts: before any FIN, after this side's FIN without the peer's (linger 0 after
        // shutdown, data after close, an orphan's FIN_WAIT2 timeout), FIN unacknowledged.
        assert_eq!(End::of_close(ESTABLISHED, 0, true, false), End::RstSent);
        assert_eq!(End::of_close(CLOSE_WAIT, 0, true, true), End::RstSent);
        assert_eq!(End::of_close(FIN_WAIT1, 0, false, false), End::RstSent);
        assert_eq!(End::of_close(FIN_WAIT2, 0, true, false), End::RstSent);
        assert_eq!(End::of_close(LAST_ACK, 0, false, true), End::RstSent);
        // Errors.
        assert_eq!(
            End::of_close(ESTABLISHED, 104, true, false),
            End::RstReceived
        );
        assert_eq!(End::of_close(CLOSE_WAIT, 32, true, true), End::RstReceived);
        assert_eq!(End::of_close(ESTABLISHED, 110, false, false), End::Timeout);
        assert_eq!(End::of_close(ESTABLISHED, 113, false, false), End::Timeout);
        assert_eq!(End::of_close(ESTABLISHED, 103, true, false), End::Error);
    }

    #[test]
    fn payload_leaves_out_the_syn_and_fins() {
        // 1000 bytes, the FIN acknowledged (snd_una == write_seq) after the peer's.
        assert_eq!(payload_sent(1002, LAST_ACK, true, true), 1000);
        assert_eq!(payload_sent(1002, FIN_WAIT2, true, true), 1000);
        // The FIN sent but never acknowledged (a reset, a timeout).
        assert_eq!(payload_sent(1001, FIN_WAIT1, false, true), 1000);
        // No FIN sent: a reset by this side.
        assert_eq!(payload_sent(1, ESTABLISHED, true, true), 0);
        assert_eq!(payload_sent(0, ESTABLISHED, true, true), 0);
        // A server's: no SYN among them.
        assert_eq!(payload_sent(1001, LAST_ACK, true, false), 1000);
        assert_eq!(payload_sent(1000, ESTABLISHED, true, false), 1000);
        assert_eq!(payload_received(2501, true), 2500);
        assert_eq!(payload_received(2500, false), 2500);
        assert_eq!(payload_received(0, true), 0);
    }
}
