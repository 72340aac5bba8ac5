//! The one emit path: a connect that passed the filters becomes a record in the ring buffer, or
//! with `--count` a count in `CONNECT_COUNTS`; whatever cannot be delivered is counted.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_uid_gid, generated},
};
use aya_log_ebpf::debug;
use probe_common::{
    COMM_LEN, ConnectRecord, CountBy, RawAddr, RecordKind, TimestampRecord,
    state::{CountKey, counter},
};

use crate::{CONNECT_COUNTS, COUNT_BY, COUNTERS, EVENTS, WAKEUP_BYTES, filter::Destination};

/// Reports one connect to `to`: counts it (`--count`), or else emits the record `record` builds
/// (only called when the record is needed).
#[inline(always)]
pub fn connect<C: EbpfContext>(ctx: &C, to: &Destination, record: impl FnOnce() -> ConnectRecord) {
    if counted(to) {
        return;
    }
    let record = record();
    debug!(
        ctx,
        "connect ret={} sport={} dport={}", record.ret, record.sport, record.dport
    );
    emit(record);
}

/// Reports only the time of a connect (`--format minimal`).
#[inline(always)]
pub fn timestamp(boot_ns: u64, to: &Destination) {
    emit(TimestampRecord {
        header: RecordKind::Timestamp.header(),
        boot_ns,
        family: to.family.af(),
        _pad: [0; 3],
    });
}

/// The record of a connect by task `pid_tgid` with user id `uid`, from `source` to `to`; `comm`
/// is left zero for the caller to fill.
#[inline(always)]
pub fn connect_record(
    boot_ns: u64,
    pid_tgid: u64,
    uid: u32,
    (saddr, sport): (RawAddr, u16),
    to: &Destination,
    ret: i32,
) -> ConnectRecord {
    ConnectRecord {
        header: RecordKind::Connect.header(),
        boot_ns,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid,
        ret,
        saddr,
        daddr: to.addr,
        sport,
        dport: to.port,
        family: to.family.af(),
        _pad: 0,
        comm: [0; COMM_LEN],
    }
}

/// The record of a connect by the current task (its uid and comm read now).
#[inline(always)]
pub fn current_task_record(
    boot_ns: u64,
    pid_tgid: u64,
    source: (RawAddr, u16),
    to: &Destination,
    ret: i32,
) -> ConnectRecord {
    let uid = bpf_get_current_uid_gid() as u32;
    let mut record = connect_record(boot_ns, pid_tgid, uid, source, to, ret);
    // The raw helper writes comm in place; aya's wrapper returns a copy, moved byte by byte.
    // SAFETY: the buffer is COMM_LEN bytes long.
    unsafe { generated::bpf_get_current_comm(record.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    record
}

/// With `--count`, counts a connect under its key instead of emitting it; returns whether it did.
#[inline(always)]
fn counted(to: &Destination) -> bool {
    let by = COUNT_BY.load();
    if by == CountBy::OFF {
        return false;
    }
    let key = CountKey {
        daddr: if by == CountBy::Port as u8 {
            RawAddr([0; 4])
        } else {
            to.addr
        },
        dport: to.port,
        family: to.family.af(),
        _pad: 0,
    };
    if let Some(n) = CONNECT_COUNTS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a per-CPU value (see `count` on nesting).
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

/// Adds one to this CPU's slot of counter `index` (see `probe_common::state::counter`).
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // An atomic add, though the slot is this CPU's: the tracepoint also fires in softirq
        // context, which may interrupt a run of it in process context on older kernels, and a
        // plain read-modify-write could then lose one of the two increments (the bookkeeping
        // counters of `CONNECTING` must be exact).
        // One `BPF_XADD` (`lock *(u64 *)(r + 0) += 1`), which every kernel accepts: the
        // result is unused (`AtomicU64::fetch_add` does not exist for the BPF target, whose
        // atomics lack compare-and-swap; the intrinsic is allowed by the build's
        // RUSTC_BOOTSTRAP).
        // SAFETY: a live, aligned u64 of this CPU's slot.
        let _ = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
    }
}
