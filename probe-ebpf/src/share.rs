//! Per-uid shares of the maps that connects of any local user fill: `CONNECTING` (a socket in
//! SYN_SENT holds an entry for up to two minutes) and `CONNECT_COUNTS` (a new destination is a
//! new key for good). A non-root uid may hold at most a quarter of each, so one user making
//! cheap connects cannot blind the tracer to everyone else's; beyond its share its connects are
//! counted as dropped, like those that find a map full. Root is not limited (it can stop the
//! tracer anyway). The check and the increment are not one atomic step, so concurrent connects
//! of one uid may overshoot its share by a few entries.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::bindings::BPF_NOEXIST;
use probe_common::{limit, state::UidShare};

use crate::UID_SHARES;

/// Which share.
#[derive(Clone, Copy)]
pub enum Share {
    /// Entries of `CONNECTING`.
    Connecting,
    /// Keys of `CONNECT_COUNTS`.
    CountKeys,
}

/// Takes one slot of `share` for `uid` if it has room left; returns whether it did.
#[inline(always)]
pub fn take(uid: u32, share: Share) -> bool {
    if uid == 0 {
        return true;
    }
    let entry = match UID_SHARES.get_ptr_mut(&uid) {
        Some(entry) => entry,
        None => {
            // Another CPU may insert it meanwhile: then this insert fails and the lookup finds
            // theirs. Only a full map (MAX_SHARING_UIDS users at once) leaves none: no room.
            let _ = UID_SHARES.insert(&uid, &UidShare::default(), BPF_NOEXIST as u64);
            match UID_SHARES.get_ptr_mut(&uid) {
                Some(entry) => entry,
                None => return false,
            }
        }
    };
    let (slot, limit) = slot(entry, share);
    // SAFETY: a u64 inside a live map value; concurrent writers use atomic adds.
    if unsafe { core::ptr::read_volatile(slot) } >= limit {
        return false;
    }
    add(slot, 1);
    true
}

/// Gives back one slot of `share` that `uid` took.
#[inline(always)]
pub fn give_back(uid: u32, share: Share) {
    if uid == 0 {
        return;
    }
    if let Some(entry) = UID_SHARES.get_ptr_mut(&uid) {
        // Adding u64::MAX is subtracting one (wrapping): an atomic add with no fetch is what every kernel
        // this tool supports accepts (BPF_XADD).
        add(slot(entry, share).0, u64::MAX);
    }
}

#[inline(always)]
fn slot(entry: *mut UidShare, share: Share) -> (*mut u64, u64) {
    // SAFETY: entry points to a live map value; the fields are plain u64s.
    unsafe {
        match share {
            Share::Connecting => (
                &raw mut (*entry).connecting,
                u64::from(limit::CONNECTING_PER_UID),
            ),
            Share::CountKeys => (
                &raw mut (*entry).count_keys,
                u64::from(limit::COUNT_KEYS_PER_UID),
            ),
        }
    }
}

/// An atomic add whose result is unused: one `BPF_XADD` (`lock *(u64 *)(r + 0) += n`), which
/// every kernel accepts. (`AtomicU64::fetch_add` does not exist for the BPF target, whose
/// atomics lack compare-and-swap; the intrinsic is allowed by the build's RUSTC_BOOTSTRAP.)
#[inline(always)]
fn add(slot: *mut u64, n: u64) {
    // SAFETY: slot is a live, aligned u64 inside a map value.
    let _ = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, n) };
}
