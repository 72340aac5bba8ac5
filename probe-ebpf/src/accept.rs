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
    helpers::bpf_ktime_get_boot_ns,
    macros::{fexit, kretprobe},
    programs::{FExitContext, RetProbeContext},
};
use probe_common::state::LiveConnection;

use crate::{
    SOCK_OFFSETS, emit,
    filter::{self, Admitted, Destination},
    life,
    sock::{IPPROTO_TCP, Sock, TCP_CLOSE},
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
    let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
    // MPTCP accepts through here too, with its own protocol number.
    if sk.protocol() != IPPROTO_TCP {
        return;
    }
    // The peer, as a connect's destination is read (an IPv4 peer of an IPv6 listener, kept as
    // an IPv4-mapped address, is IPv4), and the local end the listener was bound to.
    let peer = sk.connection();
    // `inet_sport`, not `skc_num`: a connection reset while it waited to be accepted has
    // released its port already.
    let (addr, port) = sk.bound_source(peer.family);
    let local = Destination {
        family: peer.family,
        addr,
        port,
    };
    let Some(Admitted { pid_tgid, .. }) = filter::admitted(sk_ptr, |_| Some(local)) else {
        return;
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
    emit::accepted(fill, |record| {
        // Not followed if it was reset while it waited to be accepted: it reached CLOSE
        // before, and will not change state again.
        if !life::enabled() || sk.state_now() == TCP_CLOSE {
            return;
        }
        // Followed from now: the handshake completed before the accept, at a time the
        // accepting task never saw.
        let mut live = MaybeUninit::<LiveConnection>::uninit();
        let slot = live.as_mut_ptr();
        // SAFETY: both fields written; the record is whole records to whole records.
        unsafe {
            emit::copy_record(addr_of_mut!((*slot).connect), record);
            (*slot).established_ns = boot_ns;
            life::opened(sk_ptr, &*slot);
        }
    });
}
