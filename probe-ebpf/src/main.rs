//! Kernel side of probe: hooks on the TCP connect path, one record per connect call. Userspace
//! attaches one of three sets of programs (its `--attach` backends):
//!
//! - kprobe: an entry kprobe per connect function remembers what only the entry knows (the
//!   socket, the requested destination, the time); one kretprobe shared by both reads what the
//!   kernel assigned inside the call (the source) and emits the record, failed calls included.
//! - fentry: an fexit program per connect function sees the arguments and the return value at
//!   once, so it needs no map between entry and return.
//! - tracepoint: `sock:inet_sock_set_state` (attached raw, so tracefs is not needed). The CLOSE ->
//!   SYN_SENT transition happens inside the connect call, in the caller's context, before the
//!   source port is chosen: it remembers the caller; the socket's next transition completes the
//!   record. Calls that fail before sending a SYN are not seen.
//!
//! With `--format minimal` the entry hooks alone emit a [`TimestampRecord`]; with
//! `--successes-only` a single hook on `tcp_connect` replaces the kprobe and fentry sets. With
//! `--count` (and `--metrics`) the hooks count each connect in `CONNECT_COUNTS` instead of
//! emitting it. Every hook applies the same filters (`caller_admitted`, `destination_admitted`).
#![no_std]
#![no_main]

mod sock;

use sock::Sock;

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{
        BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
    },
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, generated,
    },
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint},
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key},
    programs::{FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use aya_log_ebpf::debug;
use probe_common::{
    AF_INET, AF_INET6, COMM_LEN, ConnectRecord, Connecting, CountKey, DstKey, FAMILY_V4, FAMILY_V6,
    FilterFlags, MAX_COUNT_KEYS, MAX_PENDING, MAX_PIDS, PORT_WORDS, PendingConnect, RING_BYTES,
    RawAddr, SockOffsets, TimestampRecord, count_by, counter,
};

/// Written by userspace before load (from BTF); read by every hook that reads a socket.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: Global<SockOffsets> = Global::new(SockOffsets {
    daddr: 0,
    rcv_saddr: 0,
    num: 0,
    dport: 0,
    family: 0,
    v6_daddr: 0,
    v6_rcv_saddr: 0,
    protocol: 0,
    inet_sport: 0,
});

/// Written by userspace before load; read by every hook to skip disabled filters.
#[unsafe(no_mangle)]
static FILTERS: Global<FilterFlags> = Global::new(FilterFlags {
    ports: 0,
    pids: 0,
    families: FAMILY_V4 | FAMILY_V6,
    uids: 0,
    cgroups: 0,
    comms: 0,
    destinations: 0,
});

/// Written by userspace before load: non-zero for `--format minimal`, where the entry probes emit
/// a [`TimestampRecord`] themselves and no return probe is attached.
#[unsafe(no_mangle)]
static ENTRY_ONLY: Global<u8> = Global::new(0);

/// Written by userspace before load: ring-buffer fill (bytes) at which the kernel wakes the
/// reader. Below it records are submitted silently and userspace drains them on a short timer,
/// which saves a wake-up per event.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u64> = Global::new(0);

/// Written by userspace before load: what `--count` aggregates by (`count_by::NONE`: no
/// counting, every connect is an event).
#[unsafe(no_mangle)]
static COUNT_BY: Global<u8> = Global::new(count_by::NONE);

/// Written by userspace before load: bit `port` is set for each destination port to trace
/// (`--filter-port`). A bitmap in read-only data rather than a hash map, so the check is one
/// load instead of a helper call and a hash.
#[unsafe(no_mangle)]
static PORT_SET: Global<[u64; PORT_WORDS]> = Global::new([0; PORT_WORDS]);

/// Written by userspace at start (pids to trace); read by the hooks, in the caller's context.
#[map]
static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(MAX_PIDS, 0);

/// Written by userspace at start (uids to trace); read by the hooks, in the caller's context.
#[map]
static UID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(MAX_PIDS, 0);

/// Written by userspace at start (ids of the cgroup v2 directories to trace); read by the hooks,
/// in the caller's context.
#[map]
static CGROUP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(MAX_PIDS, 0);

/// Written by userspace at start (task names to trace, NUL-padded); read by the hooks, in the
/// caller's context.
#[map]
static COMM_FILTER: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(MAX_PIDS, 0);

/// Written by userspace at start (destination networks to trace, IPv4 ones IPv4-mapped); read
/// by the hooks once the destination is known.
#[map]
static DST_FILTER: LpmTrie<DstKey, u8> = LpmTrie::with_max_entries(MAX_PIDS, BPF_F_NO_PREALLOC);

/// What an entry probe saw, keyed by pid_tgid: written by the entry probes, consumed (and
/// deleted) by the return probe; userspace deletes entries whose return never came. A plain hash
/// rather than an LRU, which would evict a connect in flight silently: an entry left by a missed
/// return is counted and overwritten by that thread's next connect (or reaped by userspace if
/// the thread makes none), and if the map ever fills, the connect is counted as dropped.
#[map]
static PENDING: HashMap<u64, PendingConnect> = HashMap::with_max_entries(MAX_PENDING, 0);

/// Who is connecting each socket, keyed by socket address: written by the tracepoint at
/// CLOSE -> SYN_SENT, consumed (and deleted) at the socket's next transition, which every
/// connecting socket makes (to ESTABLISHED, or to CLOSE however the attempt ends).
#[map]
static CONNECTING: HashMap<u64, Connecting> = HashMap::with_max_entries(MAX_PENDING, 0);

/// fexit backend: the socket an IPv4-mapped connect's inner tcp_v4_connect just reported, keyed
/// by pid_tgid; written by that call's exit, consumed by the outer tcp_v6_connect's exit, which
/// then stays silent. An LRU: with `-4` nobody consumes the entries.
#[map]
static MAPPED_INNER: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_PIDS, 0);

/// `--count`: connects per key, counted here instead of emitted as events; written by the hooks,
/// read (summed over CPUs) by userspace at every interval. Per-CPU, so no atomics are needed.
#[map]
static CONNECT_COUNTS: PerCpuHashMap<CountKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_COUNT_KEYS, 0);

/// Written by the kernel side (one record per connect call); read by userspace.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Written by the kernel side (see `probe_common::counter`); summed over CPUs by userspace.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

// ---- kprobe backend ----

#[kprobe]
pub fn tcp_v4_connect(ctx: ProbeContext) -> u32 {
    kprobe_entry(&ctx, AF_INET);
    0
}

#[kprobe]
pub fn tcp_v6_connect(ctx: ProbeContext) -> u32 {
    kprobe_entry(&ctx, AF_INET6);
    0
}

#[inline(always)]
fn kprobe_entry(ctx: &ProbeContext, family: u16) {
    if let (Some(sk), Some(uaddr)) = (ctx.arg::<u64>(0), ctx.arg::<*const u8>(1)) {
        on_connect_entry(sk, uaddr, family);
    }
}

/// Attached to the return of both tcp_v4_connect and tcp_v6_connect.
#[kretprobe]
pub fn tcp_connect_return(ctx: RetProbeContext) -> u32 {
    on_connect_return(&ctx);
    0
}

/// Kprobe on tcp_connect, for `--successes-only`.
#[kprobe]
pub fn tcp_connect(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        on_tcp_connect(sk);
    }
    0
}

// ---- fentry backend ----

/// For `--format minimal` only (the fexit programs report everything else).
#[fentry(function = "tcp_v4_connect")]
pub fn fentry_tcp_v4_connect(ctx: FEntryContext) -> u32 {
    on_connect_entry(ctx.arg(0), ctx.arg(1), AF_INET);
    0
}

/// For `--format minimal` only (the fexit programs report everything else).
#[fentry(function = "tcp_v6_connect")]
pub fn fentry_tcp_v6_connect(ctx: FEntryContext) -> u32 {
    on_connect_entry(ctx.arg(0), ctx.arg(1), AF_INET6);
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
        ctx.arg::<i64>(3) as i32,
        AF_INET,
    );
    0
}

#[fexit(function = "tcp_v6_connect")]
pub fn fexit_tcp_v6_connect(ctx: FExitContext) -> u32 {
    on_connect_exit(
        &ctx,
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg::<i64>(3) as i32,
        AF_INET6,
    );
    0
}

/// For `--successes-only`.
#[fentry(function = "tcp_connect")]
pub fn fentry_tcp_connect(ctx: FEntryContext) -> u32 {
    on_tcp_connect(ctx.arg(0));
    0
}

// ---- tracepoint backend ----

/// `sock:inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    on_sock_set_state(&ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

// ---- what the hooks share ----

/// Entry of tcp_v4_connect / tcp_v6_connect (kprobe, or fentry for `--format minimal`).
#[inline(always)]
fn on_connect_entry(sk: u64, uaddr: *const u8, family: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let filters = FILTERS.load();
    if !caller_admitted(&filters, pid_tgid) {
        return;
    }
    let (daddr, dport) = sock::sockaddr_destination(uaddr, family);
    if !destination_admitted(&filters, family, daddr, dport) {
        return;
    }
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    if ENTRY_ONLY.load() != 0 {
        // An IPv4-mapped tcp_v6_connect enters tcp_v4_connect next: count the connect there.
        if family == AF_INET6 && daddr.is_v4_mapped() {
            return;
        }
        emit(TimestampRecord {
            boot_ns,
            family,
            _pad: [0; 3],
        });
        return;
    }
    let pending = PendingConnect {
        sk,
        boot_ns,
        daddr,
        dport,
        family,
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
        Some(outer) if outer.sk == sk && outer.family == AF_INET6 && family == AF_INET => {}
        // This thread's previous connect never reached its return probe: it is lost.
        Some(_) => count(counter::MISSED_RETURN),
        None => {
            count(counter::PENDING_FULL);
            return;
        }
    }
    if PENDING.insert(&pid_tgid, &pending, 0).is_err() {
        count(counter::PENDING_FULL);
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
    let ret: i32 = ctx.ret();

    let sk = Sock::read(pending.sk as *const u8, SOCK_OFFSETS.load());
    let daddr = sk.reported_destination(pending.family, pending.daddr, ret);
    let sport = emit_connect(
        pid_tgid,
        pending.boot_ns,
        &sk,
        pending.family,
        daddr,
        pending.dport,
        ret,
    );
    debug!(
        ctx,
        "connect ret={} sport={} dport={}", ret, sport, pending.dport
    );
}

/// Exit of tcp_v4_connect / tcp_v6_connect (fexit): arguments and return value at once. The time
/// is taken at the exit, microseconds after the entry.
#[inline(always)]
fn on_connect_exit<C: EbpfContext>(
    ctx: &C,
    sk: *const u8,
    uaddr: *const u8,
    ret: i32,
    family: u16,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let filters = FILTERS.load();
    if !caller_admitted(&filters, pid_tgid) {
        return;
    }
    let (daddr, dport) = sock::sockaddr_destination(uaddr, family);
    // An IPv6 socket connecting to an IPv4-mapped address goes through tcp_v4_connect, whose
    // exit reports it and tells the outer tcp_v6_connect's exit to stay silent. (If the outer
    // call fails first, e.g. on an IPv6-only socket, it reports its own failure.)
    if family == AF_INET6 && daddr.is_v4_mapped() {
        if unsafe { MAPPED_INNER.get(&pid_tgid) } == Some(&(sk as u64)) {
            let _ = MAPPED_INNER.remove(&pid_tgid);
            return;
        }
    }
    if !destination_admitted(&filters, family, daddr, dport) {
        return;
    }
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    let sk_ptr = sk;
    let sk = Sock::read(sk, SOCK_OFFSETS.load());
    if family == AF_INET && sk.family() == AF_INET6 && filters.families & FAMILY_V6 != 0 {
        let _ = MAPPED_INNER.insert(&pid_tgid, &(sk_ptr as u64), 0);
    }
    let daddr = sk.reported_destination(family, daddr, ret);
    let sport = emit_connect(pid_tgid, boot_ns, &sk, family, daddr, dport, ret);
    debug!(ctx, "connect ret={} sport={} dport={}", ret, sport, dport);
}

/// tcp_connect, for `--successes-only`: called inside tcp_v4_connect/tcp_v6_connect once the
/// source is assigned and the SYN is about to go out, so one hook sees the whole 4-tuple. Calls
/// that fail before that point are not seen.
#[inline(always)]
fn on_tcp_connect(sk: *const u8) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let filters = FILTERS.load();
    if !caller_admitted(&filters, pid_tgid) {
        return;
    }
    let sk = Sock::read(sk, SOCK_OFFSETS.load());
    let (family, daddr, dport) = sk.connection();
    if !destination_admitted(&filters, family, daddr, dport) {
        return;
    }
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    emit_connect(pid_tgid, boot_ns, &sk, family, daddr, dport, 0);
}

/// TCP states (`include/net/tcp_states.h`) and `IPPROTO_TCP`.
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;

/// A socket state change (tracepoint backend).
#[inline(always)]
fn on_sock_set_state<C: EbpfContext>(ctx: &C, sk_ptr: *const u8, old: i32, new: i32) {
    if old == TCP_CLOSE && new == TCP_SYN_SENT {
        on_syn_sent(sk_ptr);
    } else if old == TCP_SYN_SENT {
        on_syn_sent_left(ctx, sk_ptr);
    }
}

/// CLOSE -> SYN_SENT, inside tcp_v4_connect / tcp_v6_connect in the caller's context: the
/// destination is set, the source port not yet. Remembers the caller until the next transition.
#[inline(always)]
fn on_syn_sent(sk_ptr: *const u8) {
    let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
    if sk.protocol() != IPPROTO_TCP {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let filters = FILTERS.load();
    if !caller_admitted(&filters, pid_tgid) {
        return;
    }
    let (family, daddr, dport) = sk.connection();
    if !destination_admitted(&filters, family, daddr, dport) {
        return;
    }
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    if ENTRY_ONLY.load() != 0 {
        emit(TimestampRecord {
            boot_ns,
            family,
            _pad: [0; 3],
        });
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
    if CONNECTING.insert(&(sk_ptr as u64), &caller, 0).is_err() {
        count(counter::PENDING_FULL);
    }
}

/// SYN_SENT -> anything: the connect call is over (ESTABLISHED, or CLOSE when refused, timed
/// out or aborted), and the source the kernel chose is known.
#[inline(always)]
fn on_syn_sent_left<C: EbpfContext>(ctx: &C, sk_ptr: *const u8) {
    let key = sk_ptr as u64;
    let Some(caller) = (unsafe { CONNECTING.get(&key) }).copied() else {
        return;
    };
    let _ = CONNECTING.remove(&key);
    let sk = Sock::read(sk_ptr, SOCK_OFFSETS.load());
    let (family, daddr, dport) = sk.connection();
    let (saddr, sport) = sk.bound_source(family);
    // No source port: the call failed inside after SYN_SENT (no free port), which only a
    // return probe could report with its error.
    if sport == 0 || counted(family, daddr, dport) {
        return;
    }
    let mut record = connect_record(
        caller.boot_ns,
        caller.pid_tgid,
        caller.uid,
        family,
        (saddr, sport),
        (daddr, dport),
        0,
    );
    record.comm = caller.comm;
    emit(record);
    debug!(ctx, "connect ret={} sport={} dport={}", 0, sport, dport);
}

/// Whether the filters on the caller (`--pid`, `--uid`, `--cgroup`, `--comm`; each only if
/// given) let the calling task through.
#[inline(always)]
fn caller_admitted(filters: &FilterFlags, pid_tgid: u64) -> bool {
    if filters.pids != 0 && unsafe { PID_FILTER.get(&((pid_tgid >> 32) as u32)) }.is_none() {
        return false;
    }
    if filters.uids != 0 && unsafe { UID_FILTER.get(&(bpf_get_current_uid_gid() as u32)) }.is_none()
    {
        return false;
    }
    if filters.cgroups != 0
        && unsafe { CGROUP_FILTER.get(&generated::bpf_get_current_cgroup_id()) }.is_none()
    {
        return false;
    }
    if filters.comms != 0 {
        let mut comm = [0u8; COMM_LEN];
        // SAFETY: the buffer is COMM_LEN bytes long.
        unsafe { generated::bpf_get_current_comm(comm.as_mut_ptr().cast(), COMM_LEN as u32) };
        if unsafe { COMM_FILTER.get(&comm) }.is_none() {
            return false;
        }
    }
    true
}

/// Whether the filters on the destination (`-4`/`-6`, `--filter-port`, `--dst`) let a connect
/// to `daddr`:`dport` of `family` through. (The per-function hooks are attached only for the
/// chosen families anyway; the tcp_connect and tracepoint hooks see both.)
#[inline(always)]
fn destination_admitted(filters: &FilterFlags, family: u16, daddr: RawAddr, dport: u16) -> bool {
    if filters.families & family_bit(family) == 0 || !port_admitted(filters, dport) {
        return false;
    }
    if filters.destinations != 0 {
        let addr = if family == AF_INET {
            daddr.v4_mapped()
        } else {
            daddr
        };
        if DST_FILTER.get(&Key::new(128, addr)).is_none() {
            return false;
        }
    }
    true
}

/// Whether the `--filter-port` filter (if any) lets destination port `dport` through.
#[inline(always)]
fn port_admitted(filters: &FilterFlags, dport: u16) -> bool {
    if filters.ports == 0 {
        return true;
    }
    // One word, not `PORT_SET.load()`, which would copy all 8 KiB. `Global` is transparent over
    // the array, and `dport >> 6` < PORT_WORDS keeps the verifier's bounds check happy.
    let words = (&raw const PORT_SET).cast::<u64>();
    let word = unsafe { core::ptr::read_volatile(words.add((dport >> 6) as usize)) };
    (word >> (dport & 63)) & 1 != 0
}

/// Emits the [`ConnectRecord`] of a call on `sk` by the current task, reading the source the
/// kernel assigned. Returns the source port (for logging).
#[inline(always)]
fn emit_connect(
    pid_tgid: u64,
    boot_ns: u64,
    sk: &Sock,
    family: u16,
    daddr: RawAddr,
    dport: u16,
    ret: i32,
) -> u16 {
    let source = sk.source(family);
    if counted(family, daddr, dport) {
        return source.1;
    }
    let uid = bpf_get_current_uid_gid() as u32;
    let mut record = connect_record(boot_ns, pid_tgid, uid, family, source, (daddr, dport), ret);
    // The raw helper writes comm in place; aya's wrapper returns a copy, moved byte by byte.
    // SAFETY: the buffer is COMM_LEN bytes long.
    unsafe { generated::bpf_get_current_comm(record.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    emit(record);
    source.1
}

/// With `--count`, counts a connect under its key instead of emitting it; returns whether it did.
#[inline(always)]
fn counted(family: u16, daddr: RawAddr, dport: u16) -> bool {
    let by = COUNT_BY.load();
    if by == count_by::NONE {
        return false;
    }
    let key = CountKey {
        daddr: if by == count_by::PORT {
            RawAddr([0; 4])
        } else {
            daddr
        },
        dport,
        family,
        _pad: 0,
    };
    if let Some(n) = CONNECT_COUNTS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a per-CPU value; hooks do not nest on one CPU.
        unsafe { *n += 1 };
    } else if CONNECT_COUNTS.insert(&key, &1, BPF_NOEXIST as u64).is_err() {
        // Created by another CPU meanwhile (then this CPU's slot exists, zeroed), or full.
        match CONNECT_COUNTS.get_ptr_mut(&key) {
            // SAFETY: as above.
            Some(n) => unsafe { *n += 1 },
            None => count(counter::COUNTS_FULL),
        }
    }
    true
}

/// A record with every field but `comm` (left zero for the caller to fill).
#[inline(always)]
fn connect_record(
    boot_ns: u64,
    pid_tgid: u64,
    uid: u32,
    family: u16,
    (saddr, sport): (RawAddr, u16),
    (daddr, dport): (RawAddr, u16),
    ret: i32,
) -> ConnectRecord {
    ConnectRecord {
        boot_ns,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid,
        ret,
        saddr,
        daddr,
        sport,
        dport,
        family,
        _pad: 0,
        comm: [0; COMM_LEN],
    }
}

/// The bit of `family` in [`FilterFlags::families`].
#[inline(always)]
fn family_bit(family: u16) -> u8 {
    if family == AF_INET {
        FAMILY_V4
    } else {
        FAMILY_V6
    }
}

/// Writes one record to the ring buffer, waking the reader only when enough is waiting, and
/// counts it if the ring is full.
#[inline(always)]
fn emit<T: 'static>(record: T) {
    let wakeup = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(wakeup as u64);
        }
        None => count(counter::RING_FULL),
    }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and kprobes do not nest on one CPU.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
