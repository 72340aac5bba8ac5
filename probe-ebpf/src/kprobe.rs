//! kprobe backend: an entry kprobe on each connect function stashes what only the entry knows
//! (the socket, the requested destination, the time) in `PENDING`; one kretprobe on both reads
//! what the kernel assigned inside the call (the source) and reports the call, failed ones
//! included. What SystemTap's examples 2 and 3 do with `tcp_v4_connect` and its `.return`.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use probe_common::{Family, state::PendingConnect, state::counter};

use crate::{
    ENTRY_ONLY, PENDING, SOCK_OFFSETS, emit,
    filter::{self, Admitted, Destination},
    outcome::{self, Scratch},
    sock::{self, Args, Sock},
};

#[kprobe]
pub fn tcp_v4_connect(ctx: ProbeContext) -> u32 {
    kprobe_entry(&ctx, Family::V4);
    0
}

#[kprobe]
pub fn tcp_v6_connect(ctx: ProbeContext) -> u32 {
    kprobe_entry(&ctx, Family::V6);
    0
}

/// Attached to the return of both tcp_v4_connect and tcp_v6_connect.
#[kretprobe]
pub fn tcp_connect_return(ctx: RetProbeContext) -> u32 {
    on_connect_return(&ctx);
    0
}

#[inline(always)]
fn kprobe_entry(ctx: &ProbeContext, family: Family) {
    if let (Some(sk), Some(uaddr), Some(addr_len)) = (
        ctx.arg::<u64>(0),
        ctx.arg::<*const u8>(1),
        ctx.arg::<u64>(2),
    ) {
        on_connect_entry(sk, uaddr, addr_len as i32, family, Args::Untyped);
    }
}

/// Entry of tcp_v4_connect / tcp_v6_connect (kprobe, or fentry for `--format minimal`):
/// `tcp_v*_connect(struct sock *sk, struct sockaddr *uaddr, int addr_len)`.
#[inline(always)]
pub fn on_connect_entry(sk: u64, uaddr: *const u8, addr_len: i32, family: Family, args: Args) {
    let Some(Admitted {
        pid_tgid,
        destination: to,
    }) = filter::admitted(sk as *const u8, |_| {
        Some(sock::sockaddr_destination(uaddr, addr_len, family, args))
    })
    else {
        return;
    };
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    if ENTRY_ONLY.load() != 0 {
        // With no return probe to see what the kernel makes of a wildcard destination, `--dst`
        // judges where the kernel will send it.
        let mut to = to;
        if to.addr.is_unspecified() {
            let resolved = Sock::read(sk as *const u8, SOCK_OFFSETS.load()).resolve_wildcard(to);
            if !filter::reported_admitted(&to, &resolved) {
                return;
            }
            to = resolved;
        }
        // An IPv4-mapped tcp_v6_connect enters tcp_v4_connect next: count the connect there.
        if family == Family::V6 && to.addr.is_v4_mapped() {
            return;
        }
        emit::timestamp(boot_ns, &to);
        return;
    }
    let pending = PendingConnect {
        sk,
        boot_ns,
        daddr: to.addr,
        dport: to.port,
        family: family.af(),
        _pad: 0,
    };
    if PENDING
        .insert(&pid_tgid, &pending, BPF_NOEXIST as u64)
        .is_ok()
    {
        return;
    }
    match unsafe { PENDING.get(&pid_tgid) } {
        // An IPv4-mapped tcp_v6_connect calls tcp_v4_connect on the same thread and socket: the
        // inner call replaces the outer one, so that connect is reported once, as tcp_v4_connect.
        Some(outer)
            if outer.sk == sk && outer.family == Family::V6.af() && family == Family::V4 => {}
        // This thread's previous connect never reached its return probe: it is lost.
        Some(_) => emit::count(counter::MISSED_RETURN),
        None => {
            emit::count(counter::PENDING_FULL);
            return;
        }
    }
    if PENDING.insert(&pid_tgid, &pending, 0).is_err() {
        emit::count(counter::PENDING_FULL);
    }
}

/// Return of tcp_v4_connect / tcp_v6_connect (kretprobe): completes the call its entry stashed.
#[inline(always)]
fn on_connect_return(ctx: &RetProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = (unsafe { PENDING.get(&pid_tgid) }).copied() else {
        // The outer half of an IPv4-mapped connect (the inner tcp_v4_connect reported it).
        return;
    };
    let _ = PENDING.remove(&pid_tgid);
    let Some(family) = Family::from_af(pending.family) else {
        return;
    };
    let ret: i32 = ctx.ret();
    let sk = Sock::read(pending.sk as *const u8, SOCK_OFFSETS.load());
    let requested = Destination {
        family,
        addr: pending.daddr,
        port: pending.dport,
    };
    let to = sk.reported_destination(requested, ret);
    if !filter::reported_admitted(&requested, &to) {
        return;
    }
    let sk_ptr = pending.sk as *const u8;
    let state = sk.state();
    let fill = emit::TaskRecord {
        boot_ns: pending.boot_ns,
        pid_tgid,
        sk: sk_ptr,
        source: sk.reported_source(family, ret),
        to: &to,
        ret,
    };
    // SAFETY: this is the kretprobe's run.
    unsafe { outcome::call_returned(ctx, Scratch::KretProbe, sk_ptr, state, &to, ret, fill) };
}
