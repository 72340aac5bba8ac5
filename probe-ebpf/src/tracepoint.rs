//! tracepoint backend: `sock:inet_sock_set_state(const struct sock *sk, int oldstate, int
//! newstate)`, attached raw (no tracefs needed). The CLOSE -> SYN_SENT transition happens
//! inside the connect call, in the caller's context, before the source port is chosen: it
//! starts tracking the socket with the caller (see `outcome`); the socket's next transition
//! completes the record.

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_ktime_get_boot_ns, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use probe_common::RawAddr;

use crate::{
    ENTRY_ONLY, SOCK_OFFSETS, connecting, emit,
    filter::{self, Admitted},
    life,
    outcome::{self, Scratch},
    sock::{IPPROTO_TCP, Sock, TCP_CLOSE, TCP_SYN_SENT},
};

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let (sk, old, new): (*const u8, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    if old == TCP_CLOSE && new == TCP_SYN_SENT {
        outcome::returned(on_syn_sent(sk));
    } else if old == TCP_SYN_SENT {
        outcome::returned(outcome::left_syn_sent_call(ctx.as_ptr(), sk, new));
    } else if new == TCP_CLOSE && life::enabled() {
        outcome::returned(life::closed_call(sk, old));
    }
    0
}

/// CLOSE -> SYN_SENT, inside tcp_v4_connect / tcp_v6_connect in the caller's context: the
/// destination is set, the source port not yet. Remembers the caller until the next transition.
/// A function of its own, as `outcome::left_syn_sent_call` is: the program's runs for other
/// transitions then skip what this one needs.
#[inline(never)]
fn on_syn_sent(sk_ptr: *const u8) -> i32 {
    remember_caller(sk_ptr);
    outcome::returned(0)
}

#[inline(always)]
fn remember_caller(sk_ptr: *const u8) {
    let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
    if sk.protocol() != IPPROTO_TCP {
        return;
    }
    let Some(Admitted {
        pid_tgid,
        destination: to,
    }) = filter::admitted(sk_ptr, |_| Some(sk.connection()))
    else {
        return;
    };
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    if ENTRY_ONLY.load() != 0 {
        emit::timestamp(boot_ns, &to);
        return;
    }
    // The source is left zero: chosen later in the call, it is read at the next transition.
    // SAFETY: this is the tracepoint program's CLOSE -> SYN_SENT run, in the connecting task's
    // context (never nested in itself), and this its one call.
    let Some(slot) = (unsafe { outcome::scratch(Scratch::SynSent) }) else {
        return;
    };
    let fill = emit::TaskRecord {
        boot_ns,
        pid_tgid,
        sk: sk_ptr,
        source: (RawAddr::default(), 0),
        to: &to,
        ret: 0,
    };
    connecting::track(connecting::key(sk_ptr, slot), slot, fill);
}
