//! Accepted connections (`--accept`): the return of `inet_csk_accept`, which hands over the
//! connection a listener accepted in the accepting task's context, as bcc's tcpaccept and
//! Inspektor Gadget's trace_tcp see it. Every backend uses an fexit program where the kernel
//! has BPF trampolines, else a kretprobe: a kretprobe holds one of a few instances (as few as
//! one per CPU) for as long as an `accept()` blocks, and beyond them the kernel skips returns,
//! where a trampoline has no such limit. The
//! connection is reported like a connect from the peer to the local address and port, with the
//! accepting task as its caller, through the same admission path (the destination filters then
//! apply to the local end: `--filter-port 80` is the connects to port 80 and the accepts on it).

use core::{mem::MaybeUninit, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{fexit, kretprobe},
    programs::{FExitContext, RetProbeContext},
};

use probe_common::state::LiveConnection;

use crate::{
    SOCK_OFFSETS, emit,
    filter::{self, Admitted, Destination},
    life, outcome,
    sock::{self, IPPROTO_TCP, Sock, TCP_CLOSE, TCP_ESTABLISHED},
};

/// Return of `struct sock *inet_csk_accept(struct sock *sk, ...)`: the accepted socket, or
/// NULL when the call failed (no connection waiting on a non-blocking socket, a signal).
#[kretprobe]
pub fn inet_csk_accept(ctx: RetProbeContext) -> u32 {
    on_accept_return(ctx.ret());
    0
}

// An fexit program's context holds the function's arguments, then its return value: one
// program per signature, each reading the return at a constant offset (the verifier refuses a
// context read at an offset computed at run time, and refuses to load a program reading past
// the function's arguments, so the wrong one cannot load).

/// The same, as an fexit program: `inet_csk_accept(sk, flags, err, kern)`, before Linux 6.10.
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept(ctx: FExitContext) -> u32 {
    on_accept_return(ctx.arg(4));
    0
}

/// The same for `inet_csk_accept(sk, arg)`, Linux 6.10 and later.
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept2(ctx: FExitContext) -> u32 {
    on_accept_return(ctx.arg(2));
    0
}

/// `sk`: what `inet_csk_accept` returned, NULL when the call failed.
#[inline(always)]
fn on_accept_return(sk: u64) {
    if sk == 0 {
        return;
    }
    let sk_ptr = sk as *const u8;
    // Two calls, each with its own frame: the report's is most of the stack already.
    let closed_at = report_call(sk_ptr);
    if closed_at != 0 {
        close_call(sk_ptr, closed_at);
    }
}

/// The accepted connection's two ends, as a connect's record has them: the peer, read as a
/// connect's destination is (an IPv4 peer of an IPv6 listener, kept as an IPv4-mapped address,
/// is IPv4), and the local end the listener was bound to (`inet_sport`, not `skc_num`: a
/// connection reset while it waited to be accepted has released its port already). `None`
/// for a socket other than TCP's (MPTCP accepts through here too).
#[inline(always)]
fn ends(sk_ptr: *const u8) -> Option<(Destination, Destination)> {
    let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
    if sk.protocol() != IPPROTO_TCP {
        return None;
    }
    let peer = sk.connection();
    let (addr, port) = sk.bound_source(peer.family);
    let local = Destination {
        family: peer.family,
        addr,
        port,
    };
    Some((peer, local))
}

/// Reports the accept of socket `sk_ptr` if admitted; with `--lifetime`, follows its
/// connection from now (the handshake completed before, at a time the accepting task never
/// saw). Returns the accept's time if the connection had closed already (reset or aborted
/// while it waited to be accepted: it went from ESTABLISHED to CLOSE unseen, having no entry
/// in `LIVE` then, and will not change state again), for [`close_call`]; else 0.
#[inline(never)]
fn report_call(sk_ptr: *const u8) -> u64 {
    let Some((peer, local)) = ends(sk_ptr) else {
        return 0;
    };
    let Some(Admitted { pid_tgid, .. }) = filter::admitted(sk_ptr, |_| Some(local)) else {
        return 0;
    };
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    let fill = emit::TaskRecord {
        boot_ns,
        pid_tgid,
        sk: sk_ptr,
        source: (peer.addr, peer.port),
        to: &local,
        ret: 0,
    };
    let mut closed_at = 0;
    emit::accepted(fill, |record| {
        if !life::enabled() {
            return;
        }
        // Closed already (reset while it waited to be accepted): not put in `LIVE`, where it
        // could take the place of a connection still open.
        if sock::state(sk_ptr, SOCK_OFFSETS.load()) == TCP_CLOSE {
            closed_at = boot_ns;
            return;
        }
        let mut live = MaybeUninit::<LiveConnection>::uninit();
        let slot = live.as_mut_ptr();
        // SAFETY: both fields written; the record is whole records to whole records.
        unsafe {
            emit::copy_record(addr_of_mut!((*slot).connect), record);
            (*slot).established_ns = boot_ns;
            life::opened(sk_ptr, &*slot);
        }
        // Its state read again once it is in `LIVE`: a close on another CPU from then on
        // finds the entry and reports it; one that ran before it was there has stored CLOSE
        // by now (but in the few instructions between its run and the store), and this run
        // reports it.
        if sock::state(sk_ptr, SOCK_OFFSETS.load()) == TCP_CLOSE && life::forget(sk_ptr) {
            closed_at = boot_ns;
        }
    });
    closed_at
}

/// Reports the close of accepted socket `sk_ptr`, reported at `accepted_ns` already closed (see
/// [`report_call`]): a record written as the accept's was, by the same task, with the
/// socket's counters. Returns 0, through `outcome::returned`.
#[inline(never)]
fn close_call(sk_ptr: *const u8, accepted_ns: u64) -> i32 {
    if let Some((peer, local)) = ends(sk_ptr) {
        let fill = emit::TaskRecord {
            boot_ns: accepted_ns,
            pid_tgid: bpf_get_current_pid_tgid(),
            sk: sk_ptr,
            source: (peer.addr, peer.port),
            to: &local,
            ret: 0,
        };
        let ends = (local.port, peer.port);
        if let Some(figures) = life::figures(sk_ptr, (true, ends), Some(TCP_ESTABLISHED)) {
            emit::closed(emit::Server(fill), accepted_ns, &figures);
        }
    }
    outcome::returned(0)
}
