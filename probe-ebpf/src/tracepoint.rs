//! tracepoint backend: `sock:inet_sock_set_state(const struct sock *sk, int oldstate, int
//! newstate)`, attached raw (no tracefs needed). The CLOSE -> SYN_SENT transition happens
//! inside the connect call, in the caller's context, before the source port is chosen: it
//! remembers the caller in `CONNECTING`; the socket's next transition completes the record.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, generated},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use probe_common::{
    COMM_LEN,
    state::{Connecting, counter},
};

use crate::{
    CONNECTING, ENTRY_ONLY, SOCK_OFFSETS, emit,
    filter::{self, Admitted},
    sock::Sock,
};

/// TCP states (`include/net/tcp_states.h`) and `IPPROTO_TCP`.
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let (sk, old, new): (*const u8, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    if old == TCP_CLOSE && new == TCP_SYN_SENT {
        on_syn_sent(sk);
    } else if old == TCP_SYN_SENT {
        on_syn_sent_left(&ctx, sk, new);
    }
    0
}

/// CLOSE -> SYN_SENT, inside tcp_v4_connect / tcp_v6_connect in the caller's context: the
/// destination is set, the source port not yet. Remembers the caller until the next transition.
#[inline(always)]
fn on_syn_sent(sk_ptr: *const u8) {
    let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
    if sk.protocol() != IPPROTO_TCP {
        return;
    }
    let Some(Admitted {
        pid_tgid,
        destination: to,
    }) = filter::admitted(|_| Some(sk.connection()))
    else {
        return;
    };
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    if ENTRY_ONLY.load() != 0 {
        emit::timestamp(boot_ns, &to);
        return;
    }
    let mut caller = Connecting {
        boot_ns,
        pid_tgid,
        uid: bpf_get_current_uid_gid() as u32,
        comm: [0; COMM_LEN],
        _pad: 0,
    };
    // SAFETY: the buffer is COMM_LEN bytes long.
    unsafe { generated::bpf_get_current_comm(caller.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    let key = sk_ptr as u64;
    if CONNECTING.insert(&key, &caller, BPF_NOEXIST as u64).is_ok() {
        emit::count(counter::CONNECTING_ADDED);
        return;
    }
    // This socket's previous connect never left SYN_SENT as far as this program saw (a run
    // the kernel skipped while the program was busy on that CPU): it is lost, and counted by
    // whoever removes the entry (userspace may be reaping it at this moment).
    if CONNECTING.remove(&key).is_ok() {
        emit::count(counter::CONNECTING_REMOVED);
        emit::count(counter::MISSED_RETURN);
    }
    if CONNECTING.insert(&key, &caller, BPF_NOEXIST as u64).is_ok() {
        emit::count(counter::CONNECTING_ADDED);
    } else {
        emit::count(counter::PENDING_FULL);
    }
}

/// SYN_SENT -> `new`: the connect call is over (ESTABLISHED, or CLOSE when refused, timed
/// out or aborted), and the source the kernel chose is known.
#[inline(always)]
fn on_syn_sent_left<C: EbpfContext>(ctx: &C, sk_ptr: *const u8, new: i32) {
    let key = sk_ptr as u64;
    let Some(caller) = (unsafe { CONNECTING.get(&key) }).copied() else {
        return;
    };
    // Whoever removes the entry accounts for the connect: userspace may have reaped it since.
    if CONNECTING.remove(&key).is_err() {
        return;
    }
    emit::count(counter::CONNECTING_REMOVED);
    let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
    // Back to CLOSE with nothing ever sent: the call itself failed after SYN_SENT (no free
    // source port, a bound port whose 4-tuple is taken: EADDRNOTAVAIL, or the SYN could not be
    // built or sent). Not a connect; this backend does not report failed calls. (The socket is
    // unhashed before this tracepoint fires, so that cannot tell; a refused, timed-out or
    // closed connect sent its SYN.)
    if new == TCP_CLOSE && !sk.sent_anything() {
        return;
    }
    let to = sk.connection();
    let source = sk.bound_source(to.family);
    // No source port: the call failed inside after SYN_SENT (no free port).
    if source.1 == 0 {
        return;
    }
    emit::connect(ctx, &to, || {
        let mut record =
            emit::connect_record(caller.boot_ns, caller.pid_tgid, caller.uid, source, &to, 0);
        record.comm = caller.comm;
        record
    });
}
