//! Traced connections followed from ESTABLISHED to CLOSE (`--lifetime`, which implies
//! `--outcome`): the completion path puts each connect that came up and was reported in
//! `LIVE` ([`opened`]), the accept hook each accept reported (`--accept`); the
//! `inet_sock_set_state` programs of every backend report the connection when its socket moves
//! to CLOSE, with the kernel's own counters of it ([`closed_call`]), as bcc's tcplife does from
//! the same tracepoint. Those still open at the end are read once detached ([`live_figures`]).

use core::mem::MaybeUninit;

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use probe_common::{
    CloseFigures, ConnectRecord, End, Role,
    life::{payload_received, payload_sent},
    state::{LiveConnection, counter},
};

use crate::{
    LIFETIME, LIVE, OPEN_FIGURES, SOCK_OFFSETS, emit, outcome,
    sock::{self, TCP_CLOSE},
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

/// Stops following socket `sk_ptr`, an accepted one found closed once in `LIVE`: whether its
/// entry was there (its close then to be reported by the caller), counted as removed. Its
/// `closed` run, if any, ended before the state read CLOSE (the tracepoint fires before the
/// state is stored), so nothing else removes it meanwhile but an LRU eviction (then its close
/// is reported all the same).
#[inline(always)]
pub fn forget(sk_ptr: *const u8) -> bool {
    let key = sk_ptr as u64;
    // SAFETY: only whether there is an entry.
    if unsafe { LIVE.get(&key) }.is_none() {
        return false;
    }
    // Counted before the removal, as `closed` does: userspace never sees the entry in neither.
    emit::count(counter::LIVE_REMOVED);
    let _ = LIVE.remove(&key);
    true
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
    let mut copy = MaybeUninit::<LiveConnection>::uninit();
    let Some(live) = copied(key, &mut copy) else {
        return;
    };
    // An entry whose socket lost its ports is removed uncounted: lost (see `figures`).
    if let Some(figures) = figures(sk_ptr, ends(&live.connect), Some(old)) {
        emit::closed(&live.connect, live.established_ns, &figures);
        // Counted before the removal: userspace never sees the entry in neither (and one the
        // LRU evicts meanwhile was reported all the same).
        emit::count(counter::LIVE_REMOVED);
    }
    let _ = LIVE.remove(&key);
}

/// Never attached: once the programs are detached, userspace runs it (`BPF_PROG_TEST_RUN`,
/// the socket's address as its one argument) for each connection left in `LIVE`, to report
/// it open with its counters so far. Writes them to `OPEN_FIGURES` (`end` being
/// `End::Open`), or there an `end` of 0 if the socket is not followed, or no longer holds the
/// connection (it closed after the detach and was reused). (The return value of a raw
/// tracepoint program is not its function's: aya's macro returns 0.)
#[raw_tracepoint]
pub fn live_figures(ctx: RawTracePointContext) -> i32 {
    let Some(slot) = OPEN_FIGURES.get_ptr_mut(0) else {
        return 0;
    };
    let sk_ptr: *const u8 = ctx.arg(0);
    let mut copy = MaybeUninit::<LiveConnection>::uninit();
    let figures = copied(sk_ptr as u64, &mut copy)
        .and_then(|live| figures(sk_ptr, ends(&live.connect), None));
    // SAFETY: the map's one value, written whole, or its one field.
    unsafe {
        match figures {
            Some(figures) => *slot = figures,
            None => (*slot).end = 0,
        }
    }
    0
}

/// Copies `LIVE`'s entry for `key` into `copy`: under eviction pressure the LRU may hand the
/// entry's memory to another socket while this run reads it.
#[inline(always)]
fn copied(key: u64, copy: &mut MaybeUninit<LiveConnection>) -> Option<&LiveConnection> {
    // SAFETY: a value of the map, looked up in this run and copied at once.
    let entry = unsafe { LIVE.get(&key) }?;
    let dst = copy.as_mut_ptr();
    // SAFETY: whole records to whole records; the rest is one plain field. Both written.
    unsafe {
        emit::copy_record(core::ptr::addr_of_mut!((*dst).connect), &entry.connect);
        (*dst).established_ns = entry.established_ns;
        Some(copy.assume_init_ref())
    }
}

/// Whether connection `connect` reported is a server's (an accept), and its local and remote
/// ports: a client's record has the peer as destination, a server's as source.
#[inline(always)]
fn ends(connect: &ConnectRecord) -> (bool, (u16, u16)) {
    if connect.role == Role::Server as u16 {
        (true, (connect.dport, connect.sport))
    } else {
        (false, (connect.sport, connect.dport))
    }
}

/// The kernel's counters of socket `sk_ptr`, whose connection's side (`server`) and ports
/// (local, remote) are `ends`: at its close from state `old`, or with `old` `None` so far
/// (`End::Open`, in the state it is in now). `None` if the socket no longer has those ports
/// (one whose close was missed, a run the kernel skipped, leaves its entry to the next socket
/// at the same address), or so far if it has closed.
#[inline(always)]
pub fn figures(
    sk_ptr: *const u8,
    (server, ends): (bool, (u16, u16)),
    old: Option<i32>,
) -> Option<CloseFigures> {
    let offsets = SOCK_OFFSETS.load();
    if sock::ports(sk_ptr, offsets) != ends {
        return None;
    }
    let state = match old {
        Some(old) => old,
        // Open at the detach, closed since: its close was not seen, nor is it read as open.
        None => match sock::state(sk_ptr, offsets) {
            TCP_CLOSE => return None,
            state => state,
        },
    };
    let errno = sock::error(sk_ptr, offsets);
    let all_acked = sock::snd_una(sk_ptr, offsets) == sock::write_seq(sk_ptr, offsets);
    let fin_received = sock::fin_received(sk_ptr, offsets);
    let end = match old {
        Some(old) => End::of_close(old, errno, all_acked, fin_received),
        None => End::Open,
    };
    Some(CloseFigures {
        end: end as u32,
        errno,
        bytes_sent: payload_sent(
            sock::bytes_acked(sk_ptr, offsets),
            state,
            all_acked,
            !server,
        ),
        bytes_received: payload_received(sock::bytes_received(sk_ptr, offsets), fin_received),
        segs_out: sock::segs_out(sk_ptr, offsets),
        segs_in: sock::segs_in(sk_ptr, offsets),
        retransmits: sock::total_retrans(sk_ptr, offsets),
        srtt_us: sock::srtt_us(sk_ptr, offsets) >> 3,
    })
}
