//! Kernel side of probe: hooks on the TCP connect path, one record per connect call. Userspace
//! attaches one of three sets of programs (its `--attach` backends), each in its own module:
//!
//! - [`kprobe`]: an entry kprobe per connect function remembers what only the entry knows (the
//!   socket, the requested destination, the time); one kretprobe shared by both reads what the
//!   kernel assigned inside the call (the source) and emits the record, failed calls included.
//! - [`fentry`]: an fexit program per connect function sees the arguments and the return value
//!   at once, so it needs no map between entry and return.
//! - [`tracepoint`]: `sock:inet_sock_set_state` (attached raw, so tracefs is not needed). The
//!   CLOSE -> SYN_SENT transition happens inside the connect call, in the caller's context,
//!   before the source port is chosen: it remembers the caller; the socket's next transition
//!   completes the record. Calls that fail before sending a SYN are not seen.
//!
//! With `--outcome` ([`outcome`]) a connect is reported when its handshake ends: the kprobe and
//! fentry backends put a successful call's record in `CONNECTING` and a second program on
//! `sock:inet_sock_set_state` (`connect_outcome`) completes it, as the tracepoint backend's own
//! program does.
//!
//! With `--format minimal` the entry hooks alone emit a `TimestampRecord`; with
//! `--successes-only` a single hook on `tcp_connect` ([`tcp_connect`], kprobe or fentry)
//! replaces the kprobe and fentry sets. Every hook goes through the one admission path
//! ([`filter::admitted`]) and the one emit path ([`emit`]): with `--count` (and `--metrics`)
//! that counts each connect in `CONNECT_COUNTS` instead of emitting it.
//!
//! With `--lifetime` ([`life`]) a connect that came up is followed to its close, which both
//! `inet_sock_set_state` programs report with the socket's own counters; once detached,
//! userspace runs `life::live_figures` for each connection still open.
//!
//! With `--outcome`, [`cause`]'s hooks note what only the packet path sees of a failing
//! handshake (an ICMP error, a SYN dropped in this host) for the completion path.
//!
//! Who is connecting beyond the pid (cgroup, namespaces) is read by [`task`], for the records
//! only when asked (the `IDENTITY` global), and for the `--cgroup`, `--container` and `--netns`
//! filters.
//!
//! This file holds what the hooks share: the globals userspace sets before loading and the
//! maps, each with who writes and who reads it.
#![no_std]
#![no_main]
// Atomic adds on counters (see `emit::count`); the eBPF build runs with RUSTC_BOOTSTRAP already.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod accept;
mod cause;
mod connecting;
mod dns;
mod emit;
mod fentry;
mod filter;
mod kprobe;
mod life;
mod nat;
mod outcome;
mod sock;
mod task;
mod tcp_connect;
mod tracepoint;

use aya_ebpf::{
    Global,
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, CgroupArray, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use probe_common::{
    COMM_LEN, CloseFigures, ConnectRecord, CountBy, FilterFlags, OutcomeConfig, SockOffsets,
    config::{ContainerPrefix, DropConfig, DstKey, PORT_WORDS, SkbOffsets, TaskOffsets},
    limit,
    state::{
        ConnectingSlot, CountKey, CountValue, LiveConnection, PendingConnect, SynTrouble, counter,
    },
};

// ---- globals: written by userspace before load, constants to the verifier ----

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
    segs_out: 0,
    sk_err: 0,
    state: 0,
    segs_in: 0,
    total_retrans: 0,
    snd_una: 0,
    bytes_acked: 0,
    bytes_received: 0,
    srtt_us: 0,
    write_seq: 0,
    sk_flags: 0,
    sock_done: 0,
    _pad: 0,
});

/// Written by userspace before load (from BTF) with `--outcome` or `--names`; read by the hooks
/// that read packets (`cause`, `dns`).
#[unsafe(no_mangle)]
static SKB_OFFSETS: Global<SkbOffsets> = Global::new(SkbOffsets {
    sk: 0,
    head: 0,
    network_header: 0,
    transport_header: 0,
    data: 0,
    len: 0,
    data_len: 0,
    nfct: 0,
    ct_original: 0,
    ct_reply: 0,
});

/// Written by userspace before load (from BTF's `enum skb_drop_reason`) with `--outcome`; read
/// by the drop-reason hook (`cause::skb_dropped`).
#[unsafe(no_mangle)]
static DROPS: Global<DropConfig> = Global::new(DropConfig {
    not_specified: 0,
    _pad: 0,
});

/// Written by userspace before load; read by the admission path to skip disabled filters.
#[unsafe(no_mangle)]
static FILTERS: Global<FilterFlags> = Global::new(FilterFlags::NONE);

/// Written by userspace before load: non-zero for `--format minimal`, where the entry hooks emit
/// a `TimestampRecord` themselves and no return probe is attached.
#[unsafe(no_mangle)]
static ENTRY_ONLY: Global<u8> = Global::new(0);

/// Written by userspace before load: ring-buffer fill (bytes) at which the emit path wakes the
/// reader. Below it records are submitted silently and userspace drains them on a short timer,
/// which saves a wake-up per event.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u64> = Global::new(0);

/// Written by userspace before load: what `--count` aggregates by (`CountBy as u8`, or
/// `CountBy::OFF`: no counting, every connect is an event); read by the emit path.
#[unsafe(no_mangle)]
static COUNT_BY: Global<u8> = Global::new(CountBy::OFF);

/// Written by userspace before load: bit `port` is set for each destination port to trace
/// (`--filter-port`); read by the admission path. A bitmap in read-only data rather than a hash
/// map, so the check is one load instead of a helper call and a hash.
#[unsafe(no_mangle)]
static PORT_SET: Global<[u64; PORT_WORDS]> = Global::new([0; PORT_WORDS]);

/// Written by userspace before load (`--outcome`, `--failed-only`, `--min-latency`); read by
/// the return hooks and the completion path (`outcome`) and by the emit path's filters.
#[unsafe(no_mangle)]
static OUTCOME: Global<OutcomeConfig> = Global::new(OutcomeConfig::OFF);

/// Written by userspace before load (from BTF); read by `task` for records' identity and
/// `--container`.
#[unsafe(no_mangle)]
static TASK_OFFSETS: Global<TaskOffsets> = Global::new(TaskOffsets {
    thread_pid: 0,
    group_leader: 0,
    cgroups: 0,
    pid_level: 0,
    pid_numbers: 0,
    upid_size: 0,
    upid_nr: 0,
    upid_ns: 0,
    pidns_inum: 0,
    sk_net: 0,
    net_inum: 0,
    dfl_cgrp: 0,
    cgroup_kn: 0,
    kn_name: 0,
    kn_parent: 0,
});

/// Written by userspace before load: non-zero when records carry the caller's `Identity`
/// (JSON output, the library's `identity()`, counting by cgroup); read by `task::identity`.
#[unsafe(no_mangle)]
static IDENTITY: Global<u8> = Global::new(0);

/// Written by userspace before load: non-zero when records carry the caller's uid and comm
/// (everything but the `stap` and `minimal` formats, which print neither); read by
/// `emit::task_record`.
#[unsafe(no_mangle)]
static CALLER_NAMES: Global<u8> = Global::new(1);

/// Written by userspace before load: the `--container` ids (the first `FILTERS.containers`
/// slots); read by the admission path (`task::container_admitted`).
#[unsafe(no_mangle)]
static CONTAINERS: Global<[ContainerPrefix; limit::MAX_CONTAINERS]> =
    Global::new([ContainerPrefix::EMPTY; limit::MAX_CONTAINERS]);

/// Written by userspace before load: non-zero with `--lifetime` (which implies `--outcome`);
/// read by the completion path, which then follows each connect that came up in `LIVE`, and
/// by the `inet_sock_set_state` programs, which report its close (`life`).
#[unsafe(no_mangle)]
static LIFETIME: Global<u8> = Global::new(0);

/// Written by userspace before load: non-zero when `--count` keys carry the caller's cgroup id
/// besides what `COUNT_BY` says (`--metrics-label`); read by the emit path.
#[unsafe(no_mangle)]
static COUNT_CGROUP: Global<u8> = Global::new(0);

// ---- maps ----

/// Written by userspace at start (pids to trace); read by the admission path, in the caller's
/// context.
#[map]
static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(limit::MAX_PIDS, 0);

/// Written by userspace at start (uids to trace); read by the admission path.
#[map]
static UID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(limit::MAX_UIDS, 0);

/// Written by userspace at start (the cgroup v2 directories to trace, as open descriptors);
/// read by the admission path, which admits a task in one of them or below.
#[map]
static CGROUP_FILTER: CgroupArray = CgroupArray::with_max_entries(limit::MAX_CGROUPS, 0);

/// Written by userspace at start (inode numbers of the network namespaces to trace); read by
/// the admission path.
#[map]
static NETNS_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(limit::MAX_NETNS, 0);

/// Written by userspace at start (task names to trace, NUL-padded); read by the admission path.
#[map]
static COMM_FILTER: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(limit::MAX_COMMS, 0);

/// Written by userspace at start (destination networks to trace, keyed by family word and
/// address: `DstKey`); read by the admission path once the destination is known.
#[map]
static DST_FILTER: LpmTrie<DstKey, u8> =
    LpmTrie::with_max_entries(limit::MAX_NETWORKS, BPF_F_NO_PREALLOC);

/// What an entry probe saw, keyed by pid_tgid: written by the kprobe entry, consumed (and
/// deleted) by the kretprobe; userspace deletes entries whose return never came. A plain hash
/// rather than an LRU, which would evict a connect in flight silently: an entry left by a missed
/// return is counted and overwritten by that thread's next connect (or reaped by userspace if
/// the thread makes none), and if the map ever fills, the connect is counted as dropped.
#[map]
static PENDING: HashMap<u64, PendingConnect> = HashMap::with_max_entries(limit::MAX_PENDING, 0);

/// The connect of each socket in SYN_SENT, keyed by socket address: written by the tracepoint
/// at CLOSE -> SYN_SENT (its source still zero), or with `--outcome` by the kprobe and fentry
/// return hooks after a successful call; consumed (and deleted) by the completion path
/// (`outcome::left_syn_sent`) at the socket's next transition, which every connecting socket
/// makes (to ESTABLISHED, or to CLOSE however the attempt ends). Userspace counts its entries
/// (`--stats`), reaps stale ones, and at the end reports what is left (`--outcome`: as
/// pending).
///
/// An LRU, unlike `PENDING`: an entry lives as long as its handshake, which any local user can
/// stretch to minutes (a destination that drops SYNs), so a user holding more sockets in
/// SYN_SENT than the map holds would otherwise lock every later connect out. Full, the map
/// evicts the entry least recently used, so the oldest handshakes (the hog's own) are lost,
/// not the new ones. The kernel evicts silently: `COUNTERS[CONNECTING_ADDED]` and
/// `[CONNECTING_REMOVED]` let userspace count the evictions as dropped.
#[map]
static CONNECTING: LruHashMap<u64, ConnectRecord> =
    LruHashMap::with_max_entries(limit::MAX_CONNECTING, 0);

/// The same connects in an array of `ConnectingSlot`s, in the object built with the `atomics`
/// feature (kernels with BPF atomics), where `CONNECTING` only takes the overflow: each hook
/// claims, fills and frees a slot with atomic instructions (see `connecting::slots`); written
/// and read by the same hooks as `CONNECTING`. Userspace reads it once the programs are
/// detached (`--outcome`: what is left is pending). One entry when unused.
#[map]
static CONNECTING_SLOTS: Array<ConnectingSlot> = Array::with_max_entries(limit::MAX_CONNECTING, 0);

/// Set (to 1, never back) by a tracking hook that found a neighbourhood of `CONNECTING_SLOTS`
/// full and put its connect in `CONNECTING`; read by the completion path, which looks in
/// `CONNECTING` only once it is set. Userspace never reads it.
#[map]
static CONNECTING_OVERFLOWED: Array<u32> = Array::with_max_entries(1, 0);

/// One record per CPU and hook (`outcome::Scratch`), built by `outcome::call_returned` (kprobe
/// and fentry return hooks, with `--outcome`) and the tracepoint's CLOSE -> SYN_SENT before
/// `connecting::track` copies it into the LRU `CONNECTING` (its first word also turns a socket's
/// address into a plain number: `connecting::key`): written and read within one run of its
/// hook, never by the completion path. Not on the stack, which those hooks need for the rest.
/// Userspace never reads it.
#[map]
static RECORD_SCRATCH: PerCpuArray<ConnectRecord> =
    PerCpuArray::with_max_entries(limit::SCRATCH_SLOTS, 0);

/// With `--outcome`: what the cause hooks (`cause`) saw happen to a socket in SYN_SENT (an ICMP
/// error, a dropped SYN), keyed by socket address; written by them, read and deleted by the
/// completion path when the handshake failed. An LRU: a note of a connect that came up is never
/// read, and is evicted in time (or overwritten; a later connect at the same address ignores
/// it: its initial sequence number differs). Userspace never reads it.
#[map]
static SYN_TROUBLE: LruHashMap<u64, SynTrouble> =
    LruHashMap::with_max_entries(limit::MAX_SYN_TROUBLE, 0);

/// Written by userspace once it attached the ICMP hook (`cause::icmp_error`, with
/// `--outcome`): 1, else 0; read by the completion path of a failed handshake only, where an
/// error without an ICMP error noted is then this host's own.
#[map]
static CAUSE_HOOKS: Array<u32> = Array::with_max_entries(1, 0);

/// `--lifetime`: each traced connection between ESTABLISHED and CLOSE, keyed by socket
/// address; written by the completion path when a connect comes up, and by the accept hook for
/// an accepted one (`life::opened`); removed at CLOSE by the `inet_sock_set_state` programs
/// (`life::closed_call`), which report the close. Userspace reads what is left once
/// the programs are detached (connections still open). An LRU, as `CONNECTING` is: a local user
/// holding more connections open than it holds loses the closes of the oldest, not every new
/// one's; `COUNTERS[LIVE_ADDED]` and `[LIVE_REMOVED]` let userspace count the evictions as
/// dropped.
#[map]
static LIVE: LruHashMap<u64, LiveConnection> = LruHashMap::with_max_entries(limit::MAX_LIVE, 0);

/// `--lifetime`, once detached: an open connection's counters so far, written by
/// `life::live_figures` when userspace runs it for a connection left in `LIVE`, read by
/// userspace right after.
#[map]
static OPEN_FIGURES: Array<CloseFigures> = Array::with_max_entries(1, 0);

/// fexit backend: the socket an IPv4-mapped connect's inner tcp_v4_connect just reported, keyed
/// by pid_tgid; written by that call's exit, consumed by the outer tcp_v6_connect's exit, which
/// then stays silent. An LRU: with `-4` nobody consumes the entries.
#[map]
static MAPPED_INNER: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(limit::MAX_MAPPED_CALLS, 0);

/// `--count`: connects (and with `--outcome` their latencies' sum and histogram) per label set,
/// counted here by the emit path instead of emitted as events, with atomic adds; read by
/// userspace at every interval or scrape. Userspace sizes it at load (`--max-series` keys and
/// `limit::OVERFLOW_KEYS`) and inserts the overflow keys (`CountKey::overflow`) before
/// attaching; it deletes the keys of cgroups gone for `--retire-after`, never an overflow key.
/// Shared rather than per-CPU: a value holds a histogram, and per CPU the map would cost 64
/// times as much on a 64-CPU host. Preallocated (the default): tracing programs may not
/// allocate on 5.10 without a kernel warning.
#[map]
static CONNECT_COUNTS: HashMap<CountKey, CountValue> =
    HashMap::with_max_entries(limit::MAX_COUNT_KEYS + limit::OVERFLOW_KEYS, 0);

/// Read-only: the value a new `CONNECT_COUNTS` key is inserted with (no connects), read by the
/// emit path from here rather than built on the stack (248 bytes).
static COUNT_ZERO: CountValue = CountValue::ZERO;

/// Written by the emit path (one record per connect call); read by userspace.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(limit::RING_BYTES, 0);

/// Written by the hooks and the emit path (see `probe_common::state::counter`); summed over CPUs
/// by userspace.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Ties each map, global and program of this object to its name in `probe_common::names`, the
/// one userspace looks it up by: an item renamed on one side only fails to compile here.
macro_rules! check_names {
    (maps: $($map:ident),*; globals: $($global:ident),*; programs: $($module:ident::$program:ident),* $(;)?) => {
        #[allow(dead_code)]
        fn names_are_shared() {
            use probe_common::names;
            $(let _ = (&$map, names::map::$map);)*
            $(let _ = (&$global, names::global::$global);)*
            $(let _ = ($module::$program, names::program::$program);)*
        }
    };
}

check_names! {
    maps: EVENTS, COUNTERS, PENDING, CONNECTING, CONNECTING_SLOTS, CONNECTING_OVERFLOWED,
        RECORD_SCRATCH, MAPPED_INNER, CONNECT_COUNTS, PID_FILTER,
        UID_FILTER, CGROUP_FILTER, NETNS_FILTER, COMM_FILTER, DST_FILTER, SYN_TROUBLE,
        CAUSE_HOOKS, LIVE, OPEN_FIGURES;
    globals: SOCK_OFFSETS, FILTERS, ENTRY_ONLY, WAKEUP_BYTES, COUNT_BY, PORT_SET, OUTCOME,
        TASK_OFFSETS, IDENTITY, CALLER_NAMES, CONTAINERS, COUNT_CGROUP, SKB_OFFSETS, DROPS, LIFETIME;
    programs: kprobe::tcp_v4_connect, kprobe::tcp_v6_connect, kprobe::tcp_connect_return,
        tcp_connect::tcp_connect, tcp_connect::fentry_tcp_connect, fentry::fentry_tcp_v4_connect,
        fentry::fentry_tcp_v6_connect, fentry::fexit_tcp_v4_connect, fentry::fexit_tcp_v6_connect,
        tracepoint::inet_sock_set_state, outcome::connect_outcome, cause::icmp_error,
        cause::skb_dropped, dns::udp_delivered, nat::packet_queued, accept::inet_csk_accept,
        accept::fexit_inet_csk_accept, accept::fexit_inet_csk_accept2, life::live_figures;
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The licence the kernel is told (the object's "license" section); it matches this crate's
// `license = "MIT OR GPL-2.0-only"` in Cargo.toml. The kernel lets a program call GPL-only
// helpers (bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_get_current_task...) only when
// license_is_gpl_compatible() (include/linux/license.h, checked by bpf_prog_load in
// kernel/bpf/syscall.c) accepts this string, and "Dual MIT/GPL" is on its list next to "GPL".
// So the kernel side is MIT or GPL-2.0 at the user's choice rather than GPL only; userspace
// stays MIT OR Apache-2.0.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
