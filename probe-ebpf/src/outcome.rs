//! Sockets between SYN_SENT and their next state, and (`--outcome`) how their connect ended.
//!
//! The tracepoint backend starts tracking a socket at its CLOSE -> SYN_SENT transition (inside
//! the call, before the source port is chosen); with `--outcome` the kprobe and fentry
//! backends do so at the return of a call that succeeded (the record complete). Either way the
//! socket's next `inet_sock_set_state` transition ends the connect: ESTABLISHED, or CLOSE with
//! `sk_err` telling why (set by tcp_reset, tcp_write_err or tcp_v*_err before tcp_done). The
//! `connect_outcome` program sees those transitions for the kprobe and fentry backends; the
//! tracepoint backend's own program does for it.

use core::{mem::MaybeUninit, ptr::addr_of_mut};

use aya_ebpf::{EbpfContext, macros::raw_tracepoint, programs::RawTracePointContext};
use probe_common::{
    Cause, ConnectRecord, Family, Outcome, Trouble,
    state::{CONNECTING_STALE_NS, LiveConnection, counter},
};

use crate::{
    OUTCOME, RECORD_SCRATCH, SOCK_OFFSETS, cause, connecting,
    emit::{self, Why},
    filter::Destination,
    life,
    sock::{self, Sock, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_SENT},
    task,
};

/// sock:inet_sock_set_state for the kprobe and fentry backends with `--outcome`: only the
/// transitions out of SYN_SENT, which end the connects their return hooks put in `CONNECTING`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn connect_outcome(ctx: RawTracePointContext) -> i32 {
    let (sk, old, new): (*const u8, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    if old == TCP_SYN_SENT {
        returned(left_syn_sent_call(ctx.as_ptr(), sk, new));
    } else if new == TCP_CLOSE && life::enabled() {
        returned(life::closed_call(sk, old));
    }
    0
}

/// [`left_syn_sent`] as a function of its own (a BPF-to-BPF call), for both raw tracepoint
/// programs: their runs for every other change of state of every TCP socket (five of six per
/// connect in the benchmark's workload) then skip the prologue and epilogue that save the
/// registers and reserve the stack a completion needs. Nothing is branched on after the call
/// (see `call_returned` on the verifiers' precision across such calls). Returns 0, through
/// [`returned`].
#[inline(never)]
pub fn left_syn_sent_call(ctx: *mut core::ffi::c_void, sk_ptr: *const u8, new: i32) -> i32 {
    left_syn_sent(&RawTracePointContext::new(ctx), sk_ptr, new);
    returned(0)
}

/// `value`, returned by a BPF-to-BPF function and received by its caller through this, so that
/// the optimiser keeps it: the verifier rejects a function that ends with a stack address in
/// r0 ("cannot return stack pointer to the caller"), which LLVM leaves there when a function's
/// return value is unused or known (here always 0, and the program's own return value is
/// ignored by aya's wrapper).
#[inline(always)]
pub fn returned(value: i32) -> i32 {
    core::hint::black_box(value)
}

/// Whether connects are reported when their outcome is known (`--outcome`).
#[inline(always)]
pub fn enabled() -> bool {
    OUTCOME.load().enabled != 0
}

/// The hooks that build a record in `RECORD_SCRATCH`, each in a slot of its own
/// (`limit::SCRATCH_SLOTS` of them): each runs only in the connecting task's context, inside
/// the connect call, so one hook's run is never nested in another of itself on one CPU
/// (kprobes and trampolines skip such a run anyway; raw tracepoints only from 6.1), but it can
/// be preempted (fexit) or interrupted by another hook's.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Scratch {
    /// kretprobe on both connect functions.
    KretProbe = 0,
    /// fexit on tcp_v4_connect.
    FexitV4 = 1,
    /// fexit on tcp_v6_connect.
    FexitV6 = 2,
    /// The tracepoint's CLOSE -> SYN_SENT (only ever in the connecting task's context).
    SynSent = 3,
}

/// This CPU's `RECORD_SCRATCH` slot for hook `scratch`, where a record for `track` is built
/// (not on the stack, which the return hooks need for the rest).
///
/// # Safety
/// The caller is a run of hook `scratch` itself (see [`Scratch`]: no other run of that hook
/// uses this CPU's slot until it ends), and drops the reference before the run ends. Two
/// calls for one hook return the same memory, so a run calls this once.
#[inline(always)]
pub unsafe fn scratch(scratch: Scratch) -> Option<&'static mut MaybeUninit<ConnectRecord>> {
    // SAFETY: this CPU's slot of this hook, used only by this run (as the caller promises); a
    // MaybeUninit view of initialised map memory.
    RECORD_SCRATCH
        .get_ptr_mut(scratch as u32)
        .map(|slot| unsafe { &mut *slot.cast::<MaybeUninit<ConnectRecord>>() })
}

/// The return of a connect call by the kprobe or fentry backend, its socket in TCP state
/// `state`, the record written by `fill` (only called when needed): reported now, or with
/// `--outcome` tracked until its handshake ends (a call that failed ends now, as `error` or
/// `unreachable`; a socket in repair mode, which the call moved to ESTABLISHED without a
/// handshake, as `established`).
///
/// # Safety
/// The caller is a run of hook `hook` (its record is built in that hook's scratch slot: see
/// [`scratch`]).
#[inline(always)]
pub unsafe fn call_returned<C: EbpfContext>(
    ctx: &C,
    hook: Scratch,
    sk_ptr: *const u8,
    state: i32,
    to: &Destination,
    ret: i32,
    fill: impl emit::Fill,
) {
    if !enabled() {
        emit::connect(ctx, to, task::current_cgroup, fill);
        return;
    }
    // SAFETY: this run is hook `hook`'s (as the caller promises), and this is its one call.
    let Some(slot) = (unsafe { scratch(hook) }) else {
        return;
    };
    // Decided before `fill` runs: with identities, it makes a BPF-to-BPF call
    // (`task::read_identity`), and the 5.10 and 6.1 verifiers lose the precision of a value
    // branched on after such a call, then prune one way of this branch as equivalent to the
    // other (a repair-mode connect, established inside the call, came out `pending`).
    if ret == 0 && state != TCP_ESTABLISHED {
        connecting::track(connecting::key(sk_ptr, slot), slot, fill);
        return;
    }
    fill.fill(slot);
    // SAFETY: `fill` wrote every field.
    let record = unsafe { slot.assume_init_ref() };
    let latency_ns = connecting::age(record.boot_ns);
    let (outcome, why) = if ret == 0 {
        (Outcome::Established, Why::NONE)
    } else {
        // Failed inside this host, before any SYN was retransmitted.
        let why = Why {
            cause: Cause::Local as u32,
            ..Why::NONE
        };
        (Outcome::of_failed_call(ret), why)
    };
    emit::completed(to, record, outcome, ret.unsigned_abs(), &why, latency_ns);
}

/// Socket `sk_ptr` left SYN_SENT for `new`: the connect it was tracked for (if any) is over.
#[inline(always)]
pub fn left_syn_sent<C: EbpfContext>(ctx: &C, sk_ptr: *const u8, new: i32) {
    // A raw tracepoint's arguments are plain numbers: the socket's address is its key as is.
    // The record is taken into a `LiveConnection`, which `--lifetime` follows if it came up.
    let mut live = MaybeUninit::<LiveConnection>::uninit();
    // SAFETY: the record field of the connection, a record's worth of writable stack.
    let copy = unsafe {
        &mut *addr_of_mut!((*live.as_mut_ptr()).connect).cast::<MaybeUninit<ConnectRecord>>()
    };
    if !connecting::take(sk_ptr as u64, copy) {
        return;
    }
    // SAFETY: `take` wrote the whole record.
    let record = unsafe { copy.assume_init_mut() };
    let age = connecting::age(record.boot_ns);
    if age > CONNECTING_STALE_NS {
        // Older than any socket stays in SYN_SENT: a stale connect, whose own completion was
        // missed, met by a later socket at the same address. Lost, not this socket's.
        emit::count(counter::MISSED_RETURN);
        return;
    }
    if record.sport == 0 {
        let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
        // Tracked by the tracepoint backend from SYN_SENT, inside the call. Back to CLOSE with
        // nothing ever sent: the call itself failed after SYN_SENT (no free source port, a
        // bound port whose 4-tuple is taken: EADDRNOTAVAIL, or the SYN could not be built or
        // sent). Not a connect; this backend does not report failed calls. (The socket is
        // unhashed before this tracepoint fires, so that cannot tell; a refused, timed-out or
        // closed connect sent its SYN.)
        if new == TCP_CLOSE && !sk.sent_anything() {
            return;
        }
        let to = sk.connection();
        let (saddr, sport) = sk.bound_source(to.family);
        // No source port: the call failed inside after SYN_SENT (no free port).
        if sport == 0 {
            return;
        }
        (record.saddr, record.sport) = (saddr, sport);
        (record.daddr, record.dport, record.family) = (to.addr, to.port, to.family.af());
    }
    let Some(family) = Family::from_af(record.family) else {
        return;
    };
    let to = Destination {
        family,
        addr: record.daddr,
        port: record.dport,
    };
    if !enabled() {
        emit::connect(ctx, &to, || record.identity.cgroup_id, &*record);
        return;
    }
    let latency_ns = age;
    let offsets = SOCK_OFFSETS.load();
    // Any state but CLOSE (ESTABLISHED; SYN_RECV in a simultaneous open) means the peer
    // answered the SYN.
    let established = new != TCP_CLOSE;
    let mut why = Why {
        syn_retransmits: sock::total_retrans(sk_ptr, offsets),
        ..Why::NONE
    };
    let errno = if established {
        0
    } else {
        let errno = sock::error(sk_ptr, offsets);
        // What the cause hooks saw, and whether anything TCP came back: read only for a
        // handshake that failed.
        let isn = sock::snd_una(sk_ptr, offsets);
        why.trouble = cause::take(sk_ptr as u64, isn).unwrap_or(Trouble::NONE);
        let segs_in = sock::segs_in(sk_ptr, offsets);
        let hooked = cause::icmp_hooked();
        why.cause = Cause::of_handshake(false, errno, segs_in, why.trouble.flags, hooked)
            .map_or(0, |c| c as u32);
        errno
    };
    let outcome = Outcome::of_handshake(established, errno);
    let reported = emit::completed(&to, record, outcome, errno, &why, latency_ns);
    // Followed to its close if it came up and its connect was reported.
    if established && reported && life::enabled() {
        let established_ns = record.boot_ns + latency_ns;
        let live = live.as_mut_ptr();
        // SAFETY: the record is written; the rest of the connection now is.
        unsafe {
            (*live).established_ns = established_ns;
            life::opened(sk_ptr, &*live);
        }
    }
}
