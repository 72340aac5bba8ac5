//! Kernel side of probe: one kprobe per connect function, one kretprobe shared by both.
//!
//! The entry probe applies the filters and remembers what only the entry knows (the socket, the
//! requested destination, the time); the return probe reads what the kernel assigned inside the
//! call (the source address and port) and emits one [`ConnectRecord`] per call, failed ones too.
//! With `--format minimal` the entry probe alone emits a [`TimestampRecord`]; with
//! `--successes-only` a single kprobe on `tcp_connect` replaces all of them.
#![no_std]
#![no_main]

mod sock;

use sock::Sock;

use aya_ebpf::{
    Global,
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, generated,
    },
    macros::{kprobe, kretprobe, map},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RetProbeContext},
};
use aya_log_ebpf::debug;
use probe_common::{
    AF_INET, AF_INET6, COMM_LEN, ConnectRecord, FAMILY_V4, FAMILY_V6, FilterFlags, MAX_PENDING,
    MAX_PIDS, MAX_PORTS, PendingConnect, RING_BYTES, RawAddr, SockOffsets, TimestampRecord,
    counter,
};

/// Written by userspace before load (from BTF); read by the return probe.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: Global<SockOffsets> = Global::new(SockOffsets {
    daddr: 0,
    rcv_saddr: 0,
    num: 0,
    dport: 0,
    family: 0,
    v6_daddr: 0,
    v6_rcv_saddr: 0,
});

/// Written by userspace before load; read by the entry probes to skip disabled filters.
#[unsafe(no_mangle)]
static FILTERS: Global<FilterFlags> = Global::new(FilterFlags {
    ports: 0,
    pids: 0,
    families: FAMILY_V4 | FAMILY_V6,
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

/// Written by userspace at start (destination ports to trace); read by the entry probes.
#[map]
static PORT_FILTER: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

/// Written by userspace at start (pids to trace); read by the entry probes.
#[map]
static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(MAX_PIDS, 0);

/// What an entry probe saw, keyed by pid_tgid: written by the entry probes, consumed (and
/// deleted) by the return probe; userspace deletes entries whose return never came. A plain hash
/// rather than an LRU, which would evict a connect in flight silently: an entry left by a missed
/// return is counted and overwritten by that thread's next connect (or reaped by userspace if
/// the thread makes none), and if the map ever fills, the connect is counted as dropped.
#[map]
static PENDING: HashMap<u64, PendingConnect> = HashMap::with_max_entries(MAX_PENDING, 0);

/// Written by the kernel side (one record per connect call); read by userspace.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Written by the kernel side (see `probe_common::counter`); summed over CPUs by userspace.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[kprobe]
pub fn tcp_v4_connect(ctx: ProbeContext) -> u32 {
    on_connect_entry(&ctx, AF_INET);
    0
}

#[kprobe]
pub fn tcp_v6_connect(ctx: ProbeContext) -> u32 {
    on_connect_entry(&ctx, AF_INET6);
    0
}

/// Attached to the return of both tcp_v4_connect and tcp_v6_connect.
#[kretprobe]
pub fn tcp_connect_return(ctx: RetProbeContext) -> u32 {
    on_connect_return(&ctx);
    0
}

#[inline(always)]
fn on_connect_entry(ctx: &ProbeContext, family: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let filters = FILTERS.load();
    if !pid_admitted(&filters, pid_tgid) {
        return;
    }
    let (Some(sk), Some(uaddr)) = (ctx.arg::<u64>(0), ctx.arg::<*const u8>(1)) else {
        return;
    };
    let (daddr, dport) = sock::sockaddr_destination(uaddr, family);
    if !port_admitted(&filters, dport) {
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
    // On failure the kernel may have cleared the socket's destination: keep the requested one.
    let daddr = if ret == 0 {
        sk.destination(pending.family)
    } else {
        pending.daddr
    };
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

/// Kprobe on tcp_connect, for `--successes-only`: called inside tcp_v4_connect/tcp_v6_connect
/// once the source is assigned and the SYN is about to go out, so one probe sees the whole
/// 4-tuple. Calls that fail before that point are not seen.
#[kprobe]
pub fn tcp_connect(ctx: ProbeContext) -> u32 {
    on_tcp_connect(&ctx);
    0
}

#[inline(always)]
fn on_tcp_connect(ctx: &ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let filters = FILTERS.load();
    if !pid_admitted(&filters, pid_tgid) {
        return;
    }
    let Some(sk) = ctx.arg::<*const u8>(0) else {
        return;
    };
    let sk = Sock::read(sk, SOCK_OFFSETS.load());
    let (family, daddr, dport) = sk.connection();
    if filters.families & family_bit(family) == 0 {
        return;
    }
    if !port_admitted(&filters, dport) {
        return;
    }
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    emit_connect(pid_tgid, boot_ns, &sk, family, daddr, dport, 0);
}

/// Whether the `--pid` filter (if any) lets the calling process through.
#[inline(always)]
fn pid_admitted(filters: &FilterFlags, pid_tgid: u64) -> bool {
    filters.pids == 0 || unsafe { PID_FILTER.get(&((pid_tgid >> 32) as u32)) }.is_some()
}

/// Whether the `--filter-port` filter (if any) lets destination port `dport` through.
#[inline(always)]
fn port_admitted(filters: &FilterFlags, dport: u16) -> bool {
    filters.ports == 0 || unsafe { PORT_FILTER.get(&dport) }.is_some()
}

/// Emits the [`ConnectRecord`] of a call on `sk`, reading the source the kernel assigned and the
/// caller's identity. Returns the source port (for logging).
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
    let (saddr, sport) = sk.source(family);
    let mut record = ConnectRecord {
        boot_ns,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        ret,
        saddr,
        daddr,
        sport,
        dport,
        family,
        _pad: 0,
        comm: [0; COMM_LEN],
    };
    // The raw helper writes comm in place; aya's wrapper returns a copy, moved byte by byte.
    // SAFETY: the buffer is COMM_LEN bytes long.
    unsafe { generated::bpf_get_current_comm(record.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    emit(record);
    sport
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
