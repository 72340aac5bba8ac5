//! Traced connections followed from ESTABLISHED to CLOSE (`--lifetime`, which implies
//! `--outcome`): the completion path puts each connect that came up and was reported in
//! `LIVE` ([`opened`]), the accept hook each accept reported (`--accept`); the `inet_sock_set_state` programs of every backend report the
//! connection when its socket moves to CLOSE, with the kernel's own counters of it
//! ([`closed_call`]), as bcc's tcplife does from the same tracepoint.

use core::mem::MaybeUninit;

use probe_common::{
    CloseFigures, End, Family, Role,
    life::{payload_received, payload_sent},
    state::{LiveConnection, counter},
};

use crate::{
    LIFETIME, LIVE, SOCK_OFFSETS, emit, outcome,
    sock::{self, Sock},
};

/// Whether connections are followed to their close (`--lifetime`).
#[inline(always)]
pub fn enabled() -> bool {
    LIFETIME.load() != 0
}

/// The connect `live.connect` of socket `sk_ptr` came up and was reported: followed until its
/// socket closes. An entry left by an earlier connection of the same socket address, whose
/// close was missed, is replaced (and counts as lost: added, never removed).
#[inline(always)]
pub fn opened(sk_ptr: *const u8, live: &LiveConnection) {
    if LIVE.insert(&(sk_ptr as u64), live, 0).is_ok() {
        emit::count(counter::LIVE_ADDED);
    }
}

/// Socket `sk_ptr` moved from `old` to CLOSE. A function of its own (a BPF-to-BPF call), as
/// `outcome::left_syn_sent_call` is, so the program's other runs skip its prologue. Returns 0,
/// through `outcome::returned`.
#[inline(never)]
pub fn closed_call(sk_ptr: *const u8, old: i32) -> i32 {
    closed(sk_ptr, old);
    outcome::returned(0)
}

#[inline(always)]
fn closed(sk_ptr: *const u8, old: i32) {
    let key = sk_ptr as u64;
    // Copied out first: under eviction pressure the LRU may hand the entry's memory to another
    // socket while this run reads it.
    let mut copy = MaybeUninit::<LiveConnection>::uninit();
    {
        // SAFETY: a value of the map, looked up in this run and copied at once.
        let Some(entry) = (unsafe { LIVE.get(&key) }) else {
            return;
        };
        let dst = copy.as_mut_ptr();
        // SAFETY: whole records to whole records; the rest is one plain field.
        unsafe {
            emit::copy_record(core::ptr::addr_of_mut!((*dst).connect), &entry.connect);
            (*dst).established_ns = entry.established_ns;
        }
    }
    // SAFETY: both fields written.
    let live = unsafe { copy.assume_init_ref() };
    let offsets = SOCK_OFFSETS.load();
    // The entry is this socket's connection only if the socket still has its ports: one whose
    // close was missed (a run the kernel skipped) leaves its entry to the next socket at the
    // same address. Such an entry is removed uncounted: lost.
    let sk = Sock::read(sk_ptr, offsets);
    let family = Family::from_af(live.connect.family).unwrap_or(Family::V4);
    // A client's record has the peer as destination, a server's (an accept) as source.
    let server = live.connect.role == Role::Server as u16;
    let (local_port, peer_port) = if server {
        (live.connect.dport, live.connect.sport)
    } else {
        (live.connect.sport, live.connect.dport)
    };
    if sk.connection().port != peer_port || sk.bound_source(family).1 != local_port {
        let _ = LIVE.remove(&key);
        return;
    }
    let errno = sock::error(sk_ptr, offsets);
    let all_acked = sock::snd_una(sk_ptr, offsets) == sock::write_seq(sk_ptr, offsets);
    let fin_received = sock::fin_received(sk_ptr, offsets);
    let figures = CloseFigures {
        end: End::of_close(old, errno, all_acked, fin_received) as u32,
        errno,
        bytes_sent: payload_sent(sock::bytes_acked(sk_ptr, offsets), old, all_acked, !server),
        bytes_received: payload_received(sock::bytes_received(sk_ptr, offsets), fin_received),
        segs_out: sock::segs_out(sk_ptr, offsets),
        segs_in: sock::segs_in(sk_ptr, offsets),
        retransmits: sock::total_retrans(sk_ptr, offsets),
        srtt_us: sock::srtt_us(sk_ptr, offsets) >> 3,
    };
    emit::closed(live, &figures);
    // Counted before the removal: userspace never sees the entry in neither (and one the LRU
    // evicts meanwhile was reported all the same).
    emit::count(counter::LIVE_REMOVED);
    let _ = LIVE.remove(&key);
}
