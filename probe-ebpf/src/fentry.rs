//! fentry backend: an fexit program on each connect function sees the arguments and the return
//! value at once, so it needs no map between entry and return; the fentry programs serve
//! `--format minimal` only (the entry alone). Needs BPF trampolines.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_ktime_get_boot_ns,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use probe_common::Family;

use crate::{
    FILTERS, MAPPED_INNER, SOCK_OFFSETS, emit,
    filter::{self, Admitted},
    kprobe::on_connect_entry,
    outcome::{self, Scratch},
    sock::{self, Args, Sock},
};

/// For `--format minimal` only (the fexit programs report everything else).
#[fentry(function = "tcp_v4_connect")]
pub fn fentry_tcp_v4_connect(ctx: FEntryContext) -> u32 {
    on_connect_entry(
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg::<i64>(2) as i32,
        Family::V4,
        Args::Typed,
    );
    0
}

/// For `--format minimal` only (the fexit programs report everything else).
#[fentry(function = "tcp_v6_connect")]
pub fn fentry_tcp_v6_connect(ctx: FEntryContext) -> u32 {
    on_connect_entry(
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg::<i64>(2) as i32,
        Family::V6,
        Args::Typed,
    );
    0
}

// An fexit program's context holds the function's arguments followed by its return value:
// tcp_v*_connect(struct sock *sk, struct sockaddr *uaddr, int addr_len) returns at index 3.
// (bpf_get_func_ret would need Linux 5.17.)

#[fexit(function = "tcp_v4_connect")]
pub fn fexit_tcp_v4_connect(ctx: FExitContext) -> u32 {
    on_connect_exit(
        &ctx,
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg::<i64>(2) as i32,
        ctx.arg::<i64>(3) as i32,
        Family::V4,
    );
    0
}

#[fexit(function = "tcp_v6_connect")]
pub fn fexit_tcp_v6_connect(ctx: FExitContext) -> u32 {
    on_connect_exit(
        &ctx,
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg::<i64>(2) as i32,
        ctx.arg::<i64>(3) as i32,
        Family::V6,
    );
    0
}

/// Exit of tcp_v4_connect / tcp_v6_connect (fexit): arguments and return value at once. The time
/// is taken at the exit, microseconds after the entry.
#[inline(always)]
fn on_connect_exit<C: EbpfContext>(
    ctx: &C,
    sk_ptr: *const u8,
    uaddr: *const u8,
    addr_len: i32,
    ret: i32,
    family: Family,
) {
    let Some(Admitted {
        pid_tgid,
        destination: requested,
    }) = filter::admitted(sk_ptr, |pid_tgid| {
        let to = sock::sockaddr_destination(uaddr, addr_len, family, Args::Typed);
        // An IPv6 socket connecting to an IPv4-mapped address goes through tcp_v4_connect,
        // whose exit reports it and tells the outer tcp_v6_connect's exit to stay silent. (If
        // the outer call fails first, e.g. on an IPv6-only socket, it reports its own failure.)
        if family == Family::V6
            && to.addr.is_v4_mapped()
            && unsafe { MAPPED_INNER.get(&pid_tgid) } == Some(&(sk_ptr as u64))
        {
            let _ = MAPPED_INNER.remove(&pid_tgid);
            return None;
        }
        Some(to)
    })
    else {
        return;
    };
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
    if family == Family::V4
        && sk.family() == Family::V6.af()
        && FILTERS.load().families & Family::V6.bit() != 0
    {
        let _ = MAPPED_INNER.insert(&pid_tgid, &(sk_ptr as u64), 0);
    }
    let to = sk.reported_destination(requested, ret);
    if !filter::reported_admitted(&requested, &to) {
        return;
    }
    let hook = match family {
        Family::V4 => Scratch::FexitV4,
        Family::V6 => Scratch::FexitV6,
    };
    let fill = emit::TaskRecord {
        boot_ns,
        pid_tgid,
        sk: sk_ptr,
        source: sk.reported_source(family, ret),
        to: &to,
        ret,
    };
    // SAFETY: this is the run of the fexit program of `family`'s function, whose slot `hook` is.
    unsafe { outcome::call_returned(ctx, hook, sk_ptr, sk.state(), &to, ret, fill) };
}
