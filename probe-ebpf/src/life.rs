//! Traced connections followed from ESTABLISHED to CLOSE (`--lifetime`, which implies
//! `--outcome`): the completion path puts each connect that came up in `LIVE`
//! ([`opened`]); the `inet_sock_set_state` programs of every backend note which side sent the
//! first FIN and, when the socket moves to CLOSE, report the connection with the kernel's own
//! counters of it ([`changed_call`]), as bcc's tcplife does from the same tracepoint.

use probe_common::{
    End,
    life::{
        payload_received, payload_sent,
        tcp_state::{CLOSE_WAIT, ESTABLISHED, FIN_WAIT1},
    },
    state::{LiveConnection, counter},
};

use crate::{
    LIFETIME, LIVE, SOCK_OFFSETS,
    emit::{self, Figures},
    outcome,
    sock::{self, TCP_CLOSE},
};

/// Whether connections are followed to their close (`--lifetime`).
#[inline(always)]
pub fn enabled() -> bool {
    LIFETIME.load() != 0
}

/// Whether the change of state from `old` to `new` is one [`changed_call`] looks at.
#[inline(always)]
pub fn watched(old: i32, new: i32) -> bool {
    new == TCP_CLOSE || old == ESTABLISHED
}

/// The connect `live.connect` of socket `sk_ptr` came up: followed until its socket closes.
/// An entry left by an earlier connect of the same socket address, whose close was missed, is
/// replaced (and counted lost: added, never removed).
#[inline(always)]
pub fn opened(sk_ptr: *const u8, live: &LiveConnection) {
    if LIVE.insert(&(sk_ptr as u64), live, 0).is_ok() {
        emit::count(counter::LIVE_ADDED);
    }
}

/// Socket `sk_ptr` moved from `old` to `new` (a [`watched`] change). A function of its own (a
/// BPF-to-BPF call), as `outcome::left_syn_sent_call` is, so the program's other runs skip its
/// prologue. Returns 0, through `outcome::returned`.
#[inline(never)]
pub fn changed_call(sk_ptr: *const u8, old: i32, new: i32) -> i32 {
    changed(sk_ptr, old, new);
    outcome::returned(0)
}

#[inline(always)]
fn changed(sk_ptr: *const u8, old: i32, new: i32) {
    let key = sk_ptr as u64;
    if new != TCP_CLOSE {
        // ESTABLISHED -> FIN_WAIT1 (this side's FIN first) or CLOSE_WAIT (the peer's).
        if (new == FIN_WAIT1 || new == CLOSE_WAIT)
            && let Some(live) = LIVE.get_ptr_mut(&key)
        {
            // SAFETY: a value of the map, looked up in this run; transitions of one socket
            // are serialised by its lock, so nothing else writes it now.
            unsafe { (*live).first_fin = new };
        }
        return;
    }
    // SAFETY: a value of the map, looked up in this run, read before it is removed.
    let Some(live) = (unsafe { LIVE.get(&key) }) else {
        return;
    };
    let offsets = SOCK_OFFSETS.load();
    let errno = sock::error(sk_ptr, offsets);
    let figures = Figures {
        end: End::of_close(old, errno, live.first_fin),
        errno,
        bytes_sent: payload_sent(
            sock::bytes_acked(sk_ptr, offsets),
            old,
            sock::snd_una(sk_ptr, offsets),
            sock::write_seq(sk_ptr, offsets),
        ),
        bytes_received: payload_received(
            sock::bytes_received(sk_ptr, offsets),
            sock::fin_received(sk_ptr, offsets),
        ),
        segs_out: sock::segs_out(sk_ptr, offsets),
        segs_in: sock::segs_in(sk_ptr, offsets),
        retransmits: sock::total_retrans(sk_ptr, offsets),
        srtt_us: sock::srtt_us(sk_ptr, offsets) >> 3,
    };
    emit::closed(live, &figures);
    if LIVE.remove(&key).is_ok() {
        emit::count(counter::LIVE_REMOVED);
    }
}
