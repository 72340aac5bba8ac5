//! The one emit path: a connect that passed the filters becomes a record in the ring buffer, or
//! with `--count` a count in `CONNECT_COUNTS`; whatever cannot be delivered is counted.

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::MaybeUninit,
    ptr::addr_of_mut,
};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_uid_gid, generated},
    maps::ring_buf::RingBufEntry,
};
use aya_log_ebpf::debug;
use probe_common::{
    COMM_LEN, CloseFigures, CloseRecord, ConnectRecord, CountBy, DNS_PAYLOAD_MAX, DnsRecord,
    NatRecord, Outcome, OutcomeRecord, RawAddr, RecordKind, Role, TimestampRecord, Trouble,
    outcome::{LATENCY_BUCKETS, latency_bucket},
    state::{CountKey, CountValue, counter},
};

use crate::{
    CALLER_NAMES, CONNECT_COUNTS, COUNT_BY, COUNT_CGROUP, COUNT_ZERO, COUNTERS, EVENTS, OUTCOME,
    WAKEUP_BYTES, filter::Destination, task,
};

/// Reports one connect to `to` by a task of cgroup `cgroup` (asked only when counted by
/// cgroup): counts it (`--count`), or else emits the record `fill` writes (only called when the
/// record is needed, into the ring buffer itself: a record built on the stack and copied would
/// cost stack the return hooks need).
#[inline(always)]
pub fn connect<C: EbpfContext>(
    ctx: &C,
    to: &Destination,
    cgroup: impl FnOnce() -> u64,
    fill: impl Fill,
) {
    if counted(to, cgroup, 0, &Why::NONE, 0) {
        return;
    }
    let Some(mut entry) = reserve::<ConnectRecord>() else {
        return;
    };
    // `fill` writes every field (not zeroed first: a memset is a byte loop in BPF).
    fill.fill(&mut entry);
    // SAFETY: `fill` initialised the record.
    let record = unsafe { entry.assume_init_ref() };
    debug!(
        ctx,
        "connect ret={} sport={} dport={}", record.ret, record.sport, record.dport
    );
    submit(entry);
}

/// Reports a connection a local listener accepted (`--accept`): the record `fill` writes in
/// place (the peer as source, the local end as destination, the accepting task as caller),
/// made an accept's, then handed to `follow` (`--lifetime`: copied into `LIVE`) before it is
/// committed. Never counted: accepts are reported as events only.
#[inline(always)]
pub fn accepted(fill: impl Fill, follow: impl FnOnce(&ConnectRecord)) {
    let Some(mut entry) = reserve::<ConnectRecord>() else {
        return;
    };
    Server(fill).fill(&mut entry);
    let slot = entry.as_mut_ptr();
    // SAFETY: `fill` initialised the record; one plain field rewritten.
    let record = unsafe {
        (*slot).header = RecordKind::Accept.header();
        &*slot
    };
    follow(record);
    submit(entry);
}

/// Why a connect ended as it did (`--outcome`), besides its outcome and errno.
pub struct Why {
    /// A `Cause` value, 0 for none (established).
    pub cause: u32,
    /// The SYN's retransmits before the outcome.
    pub syn_retransmits: u32,
    /// What the cause hooks saw (`cause`).
    pub trouble: Trouble,
}

impl Why {
    /// Nothing to say: an established connect (or a count without outcomes).
    pub const NONE: Why = Why {
        cause: 0,
        syn_retransmits: 0,
        trouble: Trouble::NONE,
    };
}

/// Reports a connect with how it ended (`--outcome`; see `outcome`) and why: counts it
/// (`--count`), or else emits it, unless `--failed-only` or `--min-latency` leaves it out.
/// Returns whether it emitted it (`--lifetime` follows only a connect reported).
#[inline(always)]
pub fn completed(
    to: &Destination,
    record: &ConnectRecord,
    outcome: Outcome,
    errno: u32,
    why: &Why,
    latency_ns: u64,
) -> bool {
    let config = OUTCOME.load();
    if (config.failed_only != 0 && !outcome.is_failure()) || latency_ns < config.min_latency_ns {
        return false;
    }
    if counted(
        to,
        || record.identity.cgroup_id,
        outcome as u8,
        why,
        latency_ns,
    ) {
        return false;
    }
    // Written in place in the ring buffer: a record built on the stack first, and copied,
    // would not fit the BPF stack next to the connect record it contains.
    let Some(mut entry) = reserve::<OutcomeRecord>() else {
        return false;
    };
    let slot = entry.as_mut_ptr();
    // SAFETY: the reservation is an OutcomeRecord's size and alignment; every field is
    // written (plain data, nothing to drop).
    unsafe {
        copy_record(addr_of_mut!((*slot).connect), record);
        (*slot).connect.header = RecordKind::Outcome.header();
        (*slot).latency_ns = latency_ns;
        (*slot).outcome = outcome as u32;
        (*slot).errno = errno;
        (*slot).syn_retransmits = why.syn_retransmits;
        (*slot).cause = why.cause;
        let trouble = addr_of_mut!((*slot).trouble);
        (*trouble).drop_reason = why.trouble.drop_reason;
        (*trouble).icmp_type = why.trouble.icmp_type;
        (*trouble).icmp_code = why.trouble.icmp_code;
        (*trouble).flags = why.trouble.flags;
        (*trouble)._pad = 0;
        put_addr(addr_of_mut!((*trouble).icmp_from), why.trouble.icmp_from);
    }
    submit(entry);
    true
}

/// Reports a traced connection closed now (`--lifetime`), established at `established_ns`, with
/// its `figures`: the connect's record `fill` writes (in place), made a close's.
#[inline(always)]
pub fn closed(fill: impl Fill, established_ns: u64, figures: &CloseFigures) {
    let Some(mut entry) = reserve::<CloseRecord>() else {
        return;
    };
    let slot = entry.as_mut_ptr();
    // SAFETY: the reservation is a CloseRecord's size and alignment; `fill` writes every field
    // of the connect's record, the rest are written here.
    unsafe {
        fill.fill(&mut *addr_of_mut!((*slot).connect).cast::<MaybeUninit<ConnectRecord>>());
        (*slot).connect.header = RecordKind::Close.header();
        (*slot).established_ns = established_ns;
        (*slot).closed_ns = aya_ebpf::helpers::bpf_ktime_get_boot_ns();
        (*slot).figures = *figures;
    }
    submit(entry);
}

/// Reports a DNS message delivered to a socket of network namespace `netns` (`--names`), `len`
/// bytes long: `copy` writes what it can of it into the record's payload, in place in the ring
/// buffer, and returns how many bytes.
#[inline(always)]
pub fn dns(netns: u32, len: u16, copy: impl FnOnce(&mut [u8; DNS_PAYLOAD_MAX]) -> u16) {
    let Some(mut entry) = reserve::<DnsRecord>() else {
        return;
    };
    let slot = entry.as_mut_ptr();
    // SAFETY: the reservation is a DnsRecord's size and alignment; every field but the payload
    // past `captured` is written, and userspace reads only the first `captured` bytes.
    unsafe {
        (*slot).header = RecordKind::Dns.header();
        (*slot).boot_ns = aya_ebpf::helpers::bpf_ktime_get_boot_ns();
        (*slot).netns = netns;
        (*slot).len = len;
        (*slot).captured = copy(&mut *addr_of_mut!((*slot).payload));
    }
    submit(entry);
}

/// Reports a connect's SYN sent to `nat` instead of its socket's destination `to` (`--nat`),
/// from `source`, in network namespace `netns`.
#[inline(always)]
pub fn nat(netns: u32, to: &Destination, source: (RawAddr, u16), nat: (RawAddr, u16)) {
    emit(NatRecord {
        header: RecordKind::Nat.header(),
        boot_ns: unsafe { aya_ebpf::helpers::bpf_ktime_get_boot_ns() },
        netns,
        family: to.family.af(),
        sport: source.1,
        saddr: source.0,
        daddr: to.addr,
        dport: to.port,
        nat_dport: nat.1,
        _pad: 0,
        nat_daddr: nat.0,
    });
}

/// Reports only the time of a connect (`--format minimal`).
#[inline(always)]
pub fn timestamp(boot_ns: u64, to: &Destination) {
    emit(TimestampRecord {
        header: RecordKind::Timestamp.header(),
        boot_ns,
        family: to.family.af(),
        _pad16: 0,
        _pad32: 0,
    });
}

/// What writes a connect's record, where the emit path decides (in the ring buffer, or in a
/// scratch slot with `--outcome`). A trait with `#[inline(always)]` methods rather than a
/// closure: a closure called from two places is outlined by LLVM (its `FnOnce` shim ignores
/// inline hints), and the kernel's verifier before 6.12 then mis-pruned the return hooks'
/// branch on the socket's state after that BPF-to-BPF call (a repair-mode connect, established
/// inside the call, came out `pending`).
pub trait Fill {
    /// Writes every field of `record`.
    fn fill(self, record: &mut MaybeUninit<ConnectRecord>);
}

/// A connect by the current task (see [`task_record`]).
pub struct TaskRecord<'a> {
    pub boot_ns: u64,
    pub pid_tgid: u64,
    /// The `struct sock *`.
    pub sk: *const u8,
    pub source: (RawAddr, u16),
    pub to: &'a Destination,
    pub ret: i32,
}

impl Fill for TaskRecord<'_> {
    #[inline(always)]
    fn fill(self, record: &mut MaybeUninit<ConnectRecord>) {
        task_record(
            record,
            self.boot_ns,
            self.pid_tgid,
            self.sk,
            self.source,
            self.to,
            self.ret,
        );
    }
}

/// The record another `Fill` writes, made the server's side of its connection (an accept's,
/// or its close's).
pub struct Server<F>(pub F);

impl<F: Fill> Fill for Server<F> {
    #[inline(always)]
    fn fill(self, record: &mut MaybeUninit<ConnectRecord>) {
        self.0.fill(record);
        // SAFETY: initialised by the inner `fill`; one plain field rewritten.
        unsafe { (*record.as_mut_ptr()).role = Role::Server as u16 };
    }
}

/// A record already complete (the tracepoint's, from `CONNECTING`).
impl Fill for &ConnectRecord {
    #[inline(always)]
    fn fill(self, record: &mut MaybeUninit<ConnectRecord>) {
        // SAFETY: a whole, writable record.
        unsafe { copy_record(record.as_mut_ptr(), self) };
    }
}

/// Writes into `record` the connect by the current task (its uid, comm and identity read now),
/// `pid_tgid`, of socket `sk` from `source` to `to`, entered at `boot_ns`, that returned `ret`:
/// every field, in place (the record may be ring-buffer memory).
#[inline(always)]
pub fn task_record(
    record: &mut MaybeUninit<ConnectRecord>,
    boot_ns: u64,
    pid_tgid: u64,
    sk: *const u8,
    (saddr, sport): (RawAddr, u16),
    to: &Destination,
    ret: i32,
) {
    let r = record.as_mut_ptr();
    // SAFETY: `r` points to a ConnectRecord's worth of writable memory; each field is plain
    // data written through the pointer (nothing read, nothing dropped).
    unsafe {
        (*r).header = RecordKind::Connect.header();
        (*r).boot_ns = boot_ns;
        (*r).pid = (pid_tgid >> 32) as u32;
        (*r).tid = pid_tgid as u32;
        (*r).ret = ret;
        put_addr(addr_of_mut!((*r).saddr), saddr);
        put_addr(addr_of_mut!((*r).daddr), to.addr);
        (*r).sport = sport;
        (*r).dport = to.port;
        (*r).family = to.family.af();
        (*r).role = Role::Client as u16;
        if CALLER_NAMES.load() != 0 {
            (*r).uid = bpf_get_current_uid_gid() as u32;
            // The raw helper writes comm in place; aya's wrapper returns a copy, moved byte
            // by byte. The buffer is COMM_LEN bytes long.
            generated::bpf_get_current_comm(addr_of_mut!((*r).comm).cast(), COMM_LEN as u32);
        } else {
            // Two helper calls saved per connect where nothing prints them. Volatile word
            // stores: zeroing `comm` otherwise becomes a call to the byte-by-byte `memset`.
            (*r).uid = 0;
            let words = addr_of_mut!((*r).comm).cast::<u64>();
            for i in 0..COMM_LEN / 8 {
                core::ptr::write_volatile(words.add(i), 0);
            }
        }
        task::identity(sk, addr_of_mut!((*r).identity));
    }
}

/// Copies record `*src` to `*dst` eight bytes at a time. The compiler copies a record field by
/// field, each in moves no wider than its alignment allows it to assume (the padding and
/// `comm` as nine 2-byte moves), which is about twice the instructions, and a record is copied
/// once or twice per connect with outcomes.
///
/// # Safety
/// `dst` is a writable record, 8-byte aligned, as `src` is (records are: they hold a u64).
#[inline(always)]
pub unsafe fn copy_record(dst: *mut ConnectRecord, src: *const ConnectRecord) {
    const WORDS: usize = ConnectRecord::SIZE / 8;
    const _: () = assert!(ConnectRecord::SIZE.is_multiple_of(8));
    let (dst, src) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..WORDS {
        // SAFETY: i < WORDS, within both records, as the caller promises. Volatile, so that
        // LLVM does not merge the words back into a `memcpy` of the record's alignment.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
}

/// Writes `addr` to `*dst` one word at a time, with volatile stores: a known-zero address (the
/// tracepoint's source at SYN_SENT) next to other zero fields would otherwise become a call to
/// the byte-by-byte `memset`.
///
/// # Safety
/// `dst` is writable and 4-byte aligned.
#[inline(always)]
unsafe fn put_addr(dst: *mut RawAddr, addr: RawAddr) {
    let words = dst.cast::<u32>();
    for (i, word) in addr.0.into_iter().enumerate() {
        // SAFETY: i < 4, within `*dst`, as the caller promises.
        unsafe { core::ptr::write_volatile(words.add(i), word) };
    }
}

/// With `--count`, counts a connect under its key instead of emitting it; returns whether it did.
/// Counting by cgroup or container, or with `--metrics-label`, the key holds the caller's
/// `cgroup` (asked only then). With `--outcome` the key holds the connect's `outcome` (as u8)
/// and cause, and the value's sum and histogram its `latency_ns`, its SYN retransmits their
/// sum; without, `outcome` is 0.
#[inline(always)]
fn counted(
    to: &Destination,
    cgroup: impl FnOnce() -> u64,
    outcome: u8,
    why: &Why,
    latency_ns: u64,
) -> bool {
    let by = COUNT_BY.load();
    if by == CountBy::OFF {
        return false;
    }
    let cgroup_id = if COUNT_CGROUP.load() != 0 || by >= CountBy::Cgroup as u8 {
        cgroup()
    } else {
        0
    };
    let mut key = CountKey::new(
        by,
        cgroup_id,
        (to.addr, to.port),
        to.family.af(),
        (outcome, why.cause as u8),
    );
    let value = match CONNECT_COUNTS.get_ptr_mut(&key) {
        Some(value) => value,
        None => match first_count(&mut key) {
            Some(value) => value,
            None => {
                count(counter::COUNTS_FULL);
                return true;
            }
        },
    };
    // SAFETY: a value of the map, looked up in this run.
    unsafe { add(value, outcome, why.syn_retransmits, latency_ns) };
    true
}

/// The value to count a connect of a new `key` in: the key's own, inserted with no connects
/// (or by another CPU meanwhile), or if the map holds its budget of keys, the overflow key of
/// its family, outcome and cause (which userspace inserted before attaching; `key` becomes it).
#[inline(always)]
fn first_count(key: &mut CountKey) -> Option<*mut CountValue> {
    // Fails if another CPU inserted the key first, or if the map is full (E2BIG): the lookup
    // tells which.
    let _ = CONNECT_COUNTS.insert(&*key, &COUNT_ZERO, BPF_NOEXIST as u64);
    if let Some(value) = CONNECT_COUNTS.get_ptr_mut(&*key) {
        return Some(value);
    }
    // `CountKey::overflow(family, (outcome, cause))`, written field by field into the same stack slot
    // (a new zeroed key would be a `memset` call).
    key.cgroup_id = 0;
    // SAFETY: the key's own, aligned address.
    unsafe { put_addr(addr_of_mut!(key.daddr), RawAddr([0; 4])) };
    key.dport = 0;
    key.overflow = 1;
    let value = CONNECT_COUNTS.get_ptr_mut(&*key)?;
    count(counter::SERIES_OVERFLOW);
    Some(value)
}

/// Adds one connect to a `CONNECT_COUNTS` value: with an `outcome`, its `latency_ns` to the sum
/// and its bucket, its `syn_retransmits` to theirs.
///
/// # Safety
/// `value` is a live, aligned `CountValue` in map memory (a lookup's result in this run).
#[inline(always)]
unsafe fn add(value: *mut CountValue, outcome: u8, syn_retransmits: u32, latency_ns: u64) {
    // Atomic adds (see `xadd`): the value is every CPU's, and on one CPU a run may be
    // interrupted by one in softirq (the tracepoint, on older kernels), or an fexit run
    // preempted by another on a preemptible kernel.
    // SAFETY: live, aligned u64s of the value (as the caller promises); the bucket's index is
    // at most LATENCY_BUCKETS, within `buckets`.
    unsafe {
        xadd(addr_of_mut!((*value).connects), 1);
        if outcome == 0 {
            return;
        }
        // Not for a constant 0: LLVM turns an atomic add of 0 into an atomic OR, which kernels
        // before 5.12 reject ("BPF_STX uses reserved fields").
        if latency_ns != 0 {
            xadd(addr_of_mut!((*value).latency_ns), latency_ns);
        }
        if syn_retransmits != 0 {
            xadd(
                addr_of_mut!((*value).syn_retransmits),
                u64::from(syn_retransmits),
            );
        }
        let bucket = latency_bucket(latency_ns).min(LATENCY_BUCKETS) as usize;
        let buckets = addr_of_mut!((*value).buckets).cast::<u64>();
        xadd(buckets.add(bucket), 1);
    }
}

/// Adds `n` to `*slot` atomically: one `BPF_XADD` (`lock *(u64 *)(r + 0) += n`), which every
/// kernel accepts, as the result is unused (`AtomicU64::fetch_add` does not exist for the BPF
/// target, whose atomics lack compare-and-swap; the intrinsic is allowed by the build's
/// RUSTC_BOOTSTRAP).
///
/// # Safety
/// `slot` is a live, aligned u64 in map memory.
#[inline(always)]
unsafe fn xadd(slot: *mut u64, n: u64) {
    // SAFETY: as the caller promises.
    let _ = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, n) };
}

/// Writes one record to the ring buffer, waking the reader only when enough is waiting, and
/// counts it if the ring is full.
#[inline(always)]
fn emit<T: 'static>(record: T) {
    if let Some(mut entry) = reserve::<T>() {
        entry.write(record);
        submit(entry);
    }
}

/// Room for one `T` in the ring buffer, or `None` (counted) if it is full.
#[inline(always)]
fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(counter::RING_FULL);
    }
    entry
}

/// Commits a written record, waking the reader only when enough is waiting.
#[inline(always)]
fn submit<T: 'static>(entry: RingBufEntry<T>) {
    let wakeup = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wakeup as u64);
}

/// Adds one to this CPU's slot of counter `index` (see `probe_common::state::counter`).
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Atomic, though the slot is this CPU's (see `add`): the bookkeeping counters of
        // `CONNECTING` must be exact.
        // SAFETY: a live, aligned u64 of this CPU's slot.
        unsafe { xadd(slot, 1) };
    }
}
