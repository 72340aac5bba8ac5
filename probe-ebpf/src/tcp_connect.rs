//! `--successes-only`: one hook on `tcp_connect` (a kprobe, or an fentry program), which
//! tcp_v4_connect / tcp_v6_connect call once the source is assigned and the SYN is about to go
//! out, so one hook sees the whole 4-tuple. Calls that fail before that point are not seen.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_ktime_get_boot_ns,
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};

use crate::{
    SOCK_OFFSETS, emit,
    filter::{self, Admitted},
    sock::Sock,
    task,
};

/// kprobe on `int tcp_connect(struct sock *sk)`.
#[kprobe]
pub fn tcp_connect(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        on_tcp_connect(&ctx, sk);
    }
    0
}

/// fentry on `int tcp_connect(struct sock *sk)`.
#[fentry(function = "tcp_connect")]
pub fn fentry_tcp_connect(ctx: FEntryContext) -> u32 {
    on_tcp_connect(&ctx, ctx.arg(0));
    0
}

#[inline(always)]
fn on_tcp_connect<C: EbpfContext>(ctx: &C, sk_ptr: *const u8) {
    let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
    let Some(Admitted {
        pid_tgid,
        destination: to,
    }) = filter::admitted(sk_ptr, |_| Some(sk.connection()))
    else {
        return;
    };
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    let fill = emit::TaskRecord {
        boot_ns,
        pid_tgid,
        sk: sk_ptr,
        source: sk.source(to.family),
        to: &to,
        ret: 0,
    };
    emit::connect(ctx, &to, task::current_cgroup, fill);
}
