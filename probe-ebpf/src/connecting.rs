//! Where the connect of a socket waits for the socket's next state: from the return of the call
//! (kprobe and fentry backends, with `--outcome`) or from CLOSE -> SYN_SENT (the tracepoint
//! backend) until the socket leaves SYN_SENT ([`crate::outcome::left_syn_sent`]).
//!
//! Two stores:
//! - [`slots`], built with the `atomics` feature (the object for kernels with BPF atomic
//!   compare-and-exchange: 5.12 on x86_64, 5.18 on arm64): the `CONNECTING_SLOTS` array. A
//!   socket hashes to a slot and may take the next few; a slot changes hands only by
//!   compare-and-exchange. An array lookup is inlined by the verifier, so a connect costs a few
//!   loads and two atomic instructions here, where the LRU hash map's insert, lookup and delete
//!   helpers cost about 950 guest instructions on Debian's 6.1 (function_graph under icount:
//!   ~450, ~130 and ~370).
//! - [`lru`]: the LRU hash `CONNECTING`, alone without atomics, and with them the overflow of a
//!   full neighbourhood of slots (so that the store still holds `MAX_CONNECTING` connects before
//!   it evicts any, however the sockets hash).
//!
//! Either way a connect is held the same way, and the oldest are evicted only when the LRU is
//! full, counted. A connect older than `CONNECTING_STALE_NS` (a completion the kernel skipped)
//! is stale in either store: never reported, counted as missed by whoever removes it (for the
//! LRU, userspace's reaper; for a slot, the next connect that needs it; for both, the
//! completion path or the end of tracing). See docs/reliability.md.

use core::mem::MaybeUninit;

use probe_common::{ConnectRecord, state::counter};

use crate::{
    CONNECTING,
    emit::{self, Fill},
};

/// Socket `sk_ptr`'s address as a plain number, the key of its connect, by way of `scratch`
/// (map memory of this run). In fentry and fexit programs the verifier types the socket
/// argument as a pointer and refuses arithmetic on it (the hash that picks its slot), while a
/// value loaded from map memory is a number. (Storing a pointer in map memory needs
/// CAP_PERFMON, which attaching needs anyway.)
#[inline(always)]
pub fn key(sk_ptr: *const u8, scratch: &mut MaybeUninit<ConnectRecord>) -> u64 {
    let word = scratch.as_mut_ptr().cast::<u64>();
    // SAFETY: the first word of a writable record (volatile: the round trip is the point).
    unsafe {
        core::ptr::write_volatile(word, sk_ptr as u64);
        core::ptr::read_volatile(word)
    }
}

/// Remembers the connect `fill` writes, of the socket whose [`key`] is `key`, until the socket
/// leaves SYN_SENT. `scratch` is this hook's record slot, where it is built for the LRU.
#[inline(always)]
pub fn track(key: u64, scratch: &mut MaybeUninit<ConnectRecord>, fill: impl Fill) {
    #[cfg(feature = "atomics")]
    {
        if let Some(slot) = slots::claim(key) {
            // SAFETY: claimed by this run for `key` just now.
            unsafe { slots::fill(slot, key, fill) };
            return;
        }
        slots::overflowed();
    }
    fill.fill(scratch);
    // SAFETY: `fill` wrote every field.
    lru::track(key, unsafe { scratch.assume_init_ref() });
}

/// Copies the connect of socket `key` to `copy` (the caller's stack) and removes it; returns
/// whether it did (not if none is tracked, or someone else removed it first, and accounts for
/// it). Written into the caller's buffer rather than returned: a returned record was copied
/// twice more (~40 instructions per connect). A copy on the stack: before 6.1 a raw
/// tracepoint's run can be nested in another on the same CPU (a softirq's completion inside
/// one in process context), so no per-CPU scratch memory would do, and reporting it in place
/// in its slot made LLVM spill registers the verifier rejects as uninitialised.
#[inline(always)]
pub fn take(key: u64, copy: &mut MaybeUninit<ConnectRecord>) -> bool {
    #[cfg(feature = "atomics")]
    {
        if let Some(slot) = slots::find(key) {
            // SAFETY: found holding `key`'s connect; the caller is that socket's transition.
            return unsafe { slots::take(slot, key, copy) };
        }
        if !slots::ever_overflowed() {
            return false;
        }
    }
    lru::take(key, copy)
}

/// Nanoseconds since `boot_ns` (`CLOCK_BOOTTIME`): a connect's age, or its latency once it ends.
#[inline(always)]
pub fn age(boot_ns: u64) -> u64 {
    unsafe { aya_ebpf::helpers::bpf_ktime_get_boot_ns() }.saturating_sub(boot_ns)
}

/// `CONNECTING_SLOTS`: an open-addressed table of [`ConnectingSlot`]s.
///
/// Who writes a slot: the tracking hooks, in the connecting task's context with its socket
/// locked, claim a free slot (or their own socket's stale one) by compare-and-exchange to
/// `key | BUSY`, write the record, then publish `key` by compare-and-exchange from `key | BUSY`
/// (ordered after the record's stores). Only that socket's own hooks touch the slot then, one
/// at a time (its lock): the completion path copies the record and frees the slot by
/// compare-and-exchange (ordered after its reads). Nothing evicts a slot, and userspace reads the table only once
/// the programs are detached.
///
/// A socket's slot is the first free-or-its-own one from its home, so a stale entry of the
/// same socket (a completion the kernel skipped) is never found before the live one.
#[cfg(feature = "atomics")]
mod slots {
    use core::{
        intrinsics::{AtomicOrdering, atomic_cxchg},
        ptr::{addr_of, addr_of_mut, read_volatile},
    };

    use probe_common::{
        limit,
        state::{CONNECTING_STALE_NS, ConnectingSlot},
    };

    use super::*;
    use crate::{CONNECTING_OVERFLOWED, CONNECTING_SLOTS};

    /// Index bits of a slot (`MAX_CONNECTING` is a power of two).
    const SHIFT: u32 = 64 - limit::MAX_CONNECTING.trailing_zeros();

    /// The first slot socket `key` may take: the top bits of a Fibonacci hash of its address
    /// (slab addresses share their low bits).
    #[inline(always)]
    fn home(key: u64) -> u32 {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> SHIFT) as u32
    }

    /// Slot `i` of socket `key`'s neighbourhood.
    #[inline(always)]
    fn slot(key: u64, i: u32) -> Option<*mut ConnectingSlot> {
        CONNECTING_SLOTS.get_ptr_mut(home(key).wrapping_add(i) & (limit::MAX_CONNECTING - 1))
    }

    /// Sets `*owner` to `new` if it is `old`; returns whether it did. Compares the value read
    /// rather than branching on the success flag: rustc turns that flag into an `i8` branch
    /// that the LLVM bitcode reader rejects (rustc 1.98 for the BPF target).
    ///
    /// # Safety
    /// `owner` is the live, aligned `sk` of a slot of `CONNECTING_SLOTS`.
    #[inline(always)]
    unsafe fn exchange(owner: *mut u64, old: u64, new: u64) -> bool {
        // SAFETY: as the caller promises.
        let (seen, _) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                owner, old, new,
            )
        };
        seen == old
    }

    /// Claims a slot for socket `key`, marked busy: `None` if its neighbourhood is full. The
    /// probes are written out: LLVM keeps a loop this size, and verifiers before 6.3 reject a
    /// loop around a helper call (an array lookup is one until the verifier inlines it).
    #[inline(always)]
    pub fn claim(key: u64) -> Option<*mut ConnectingSlot> {
        const _: () = assert!(limit::CONNECTING_PROBES == 4);
        claim_at(key, 0)
            .or_else(|| claim_at(key, 1))
            .or_else(|| claim_at(key, 2))
            .or_else(|| claim_at(key, 3))
    }

    /// Probe `i` of [`claim`]: the slot if it is free, this socket's own, or stale, and this
    /// run claimed it.
    #[inline(always)]
    fn claim_at(key: u64, i: u32) -> Option<*mut ConnectingSlot> {
        let slot = slot(key, i)?;
        // SAFETY: a live slot of the array, its owner read once (another CPU may change it).
        let owner_ptr = unsafe { addr_of_mut!((*slot).sk) };
        let owner = unsafe { read_volatile(owner_ptr) };
        // Another socket's: taken, unless its connect is stale (read only then: a slot taken
        // by another live connect is the rare case).
        if owner != 0 && owner != key && !stale(slot, owner) {
            return None;
        }
        // Taken by another CPU meanwhile: on to the next.
        if !unsafe { exchange(owner_ptr, owner, key | ConnectingSlot::BUSY) } {
            return None;
        }
        if owner != 0 {
            // This socket's previous connect, or a stale one, never left SYN_SENT as far as
            // the completion path saw (a run the kernel skipped): lost.
            emit::count(counter::MISSED_RETURN);
        }
        Some(slot)
    }

    /// Whether `slot`, published by socket `owner`, holds a connect older than
    /// `CONNECTING_STALE_NS` (the rule userspace reaps the LRU by): its socket left SYN_SENT
    /// long ago without the completion path seeing it. Not a slot being written (busy).
    #[inline(always)]
    fn stale(slot: *mut ConnectingSlot, owner: u64) -> bool {
        // SAFETY: a live slot of the array; a plain read of a word another CPU may be
        // rewriting (then the exchange that follows fails, or the slot is its own again).
        let boot_ns = unsafe { read_volatile(addr_of!((*slot).record.boot_ns)) };
        owner & ConnectingSlot::BUSY == 0 && age(boot_ns) > CONNECTING_STALE_NS
    }

    /// Writes the connect `fill` writes into `slot`, claimed by this run, and publishes it as
    /// socket `key`'s.
    ///
    /// # Safety
    /// `slot` is a slot of `CONNECTING_SLOTS` that this run claimed for `key` ([`claim`]) and
    /// has not published yet: nobody else writes or reads its record meanwhile.
    #[inline(always)]
    pub unsafe fn fill(slot: *mut ConnectingSlot, key: u64, fill: impl Fill) {
        // SAFETY: this run owns the slot (busy, as the caller promises); the record is plain
        // data, written in place.
        unsafe {
            fill.fill(&mut *addr_of_mut!((*slot).record).cast::<MaybeUninit<ConnectRecord>>());
            // A compare-and-exchange, which orders the record's stores before it on every
            // architecture (a plain store would not on arm64), and which leaves a slot alone
            // that userspace cleared meanwhile (a run still in progress after detaching, where
            // userspace could not wait for runs, whose connect it counted as missed).
            exchange(addr_of_mut!((*slot).sk), key | ConnectingSlot::BUSY, key);
        }
    }

    /// The slot holding socket `key`'s connect, if the table holds it.
    #[inline(always)]
    pub fn find(key: u64) -> Option<*mut ConnectingSlot> {
        // Written out as `claim`'s probes are.
        owned(key, 0)
            .or_else(|| owned(key, 1))
            .or_else(|| owned(key, 2))
            .or_else(|| owned(key, 3))
    }

    /// Copies the connect in `slot`, socket `key`'s, to `copy` and frees the slot; returns
    /// whether this run did (the exchange fails only if the slot changed hands meanwhile,
    /// which nothing does while it is taken: a check, not a case).
    ///
    /// # Safety
    /// `slot` is a slot of `CONNECTING_SLOTS` that [`find`] found holding `key`'s connect, in a
    /// run holding that socket's lock (its transition out of SYN_SENT): only this run may free
    /// it.
    #[inline(always)]
    pub unsafe fn take(
        slot: *mut ConnectingSlot,
        key: u64,
        copy: &mut MaybeUninit<ConnectRecord>,
    ) -> bool {
        // SAFETY: a live slot of the array (as the caller promises), to a whole record. Copied
        // before the slot is freed, after which another CPU may take it at once.
        unsafe {
            emit::copy_record(copy.as_mut_ptr(), addr_of!((*slot).record));
            exchange(addr_of_mut!((*slot).sk), key, 0)
        }
    }

    /// Slot `i` of socket `key`'s neighbourhood if it holds that socket's connect.
    #[inline(always)]
    fn owned(key: u64, i: u32) -> Option<*mut ConnectingSlot> {
        let slot = slot(key, i)?;
        // SAFETY: a live slot of the array.
        (unsafe { read_volatile(addr_of!((*slot).sk)) } == key).then_some(slot)
    }

    /// Notes that a connect went to the LRU (a neighbourhood of slots was full).
    #[inline(always)]
    pub fn overflowed() {
        if let Some(flag) = CONNECTING_OVERFLOWED.get_ptr_mut(0) {
            // SAFETY: a live u32 of the array; only ever set.
            unsafe { core::ptr::write_volatile(flag, 1) };
        }
    }

    /// Whether any connect went to the LRU: until one does, a socket the table does not hold
    /// is not looked up there (a lookup that misses costs ~130 instructions on every
    /// untracked socket's exit from SYN_SENT).
    #[inline(always)]
    pub fn ever_overflowed() -> bool {
        CONNECTING_OVERFLOWED
            .get(0)
            .is_some_and(|flag| unsafe { read_volatile(flag) } != 0)
    }
}

/// `CONNECTING`: an LRU hash keyed by socket address. The kernel evicts silently;
/// `COUNTERS[CONNECTING_ADDED]` and `[CONNECTING_REMOVED]` let userspace count the evictions
/// as dropped.
mod lru {
    use aya_ebpf::bindings::BPF_NOEXIST;

    use super::*;

    #[inline(always)]
    pub fn track(key: u64, record: &ConnectRecord) {
        if CONNECTING.insert(&key, record, BPF_NOEXIST as u64).is_ok() {
            emit::count(counter::CONNECTING_ADDED);
            return;
        }
        // This socket's previous connect never left SYN_SENT as far as the completion path
        // saw (a run the kernel skipped while the program was busy on that CPU): it is lost,
        // and counted by whoever removes the entry (userspace may be reaping it at this moment).
        if remove(key) {
            emit::count(counter::MISSED_RETURN);
        }
        if CONNECTING.insert(&key, record, BPF_NOEXIST as u64).is_ok() {
            emit::count(counter::CONNECTING_ADDED);
        } else {
            emit::count(counter::PENDING_FULL);
        }
    }

    /// Copies socket `key`'s entry to `copy` and removes it; returns whether this call did.
    #[inline(always)]
    pub fn take(key: u64, copy: &mut MaybeUninit<ConnectRecord>) -> bool {
        let Some(entry) = (unsafe { CONNECTING.get(&key) }) else {
            return false;
        };
        // SAFETY: a whole record to a whole record (the entry may be reused once removed).
        unsafe { emit::copy_record(copy.as_mut_ptr(), entry) };
        // Whoever removes the entry accounts for the connect: userspace may have reaped it.
        remove(key)
    }

    /// Removes socket `key`'s entry; returns whether this call removed it. Counted before the
    /// removal (see `counter::CONNECTING_REMOVED`).
    #[inline(always)]
    fn remove(key: u64) -> bool {
        emit::count(counter::CONNECTING_REMOVED);
        let removed = CONNECTING.remove(&key).is_ok();
        if !removed {
            emit::count(counter::CONNECTING_REMOVE_FAILED);
        }
        removed
    }
}
