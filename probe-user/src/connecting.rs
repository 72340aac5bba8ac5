//! The kernel's connects waiting for their socket's next state (probe-ebpf's `connecting`): the
//! tracepoint backend's, and every backend's with outcomes. Userspace counts them, reaps stale
//! ones, accounts for evictions, and takes what is left at the end.

use std::sync::atomic::{AtomicU64, Ordering};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use probe_common::{
    ConnectRecord,
    names::map,
    state::{ConnectingSlot, counter},
};

use crate::{
    Error,
    maps::{reap_map, take_map},
};

/// The stores of the object loaded: the LRU hash `CONNECTING`, and with BPF atomics the
/// `CONNECTING_SLOTS` table in front of it.
pub(crate) struct Connecting {
    /// The LRU, which evicts silently: what it evicted is worked out from counters (see
    /// [`Connecting::evicted`]).
    lru: HashMap<MapData, u64, ConnectRecord>,
    /// Entries of the LRU deleted by userspace: reaped as stale, or taken at the end.
    deleted: u64,
    /// The highest count of the LRU's evictions seen so far.
    evicted: AtomicU64,
    /// The table, whose slots only the kernel side changes while the programs are attached:
    /// userspace reads and clears it once they are detached.
    slots: Option<Array<MapData, ConnectingSlot>>,
}

impl Connecting {
    /// Takes the stores out of the loaded object (the table if it is the `atomics` one).
    pub(crate) fn new(ebpf: &mut Ebpf, atomics: bool) -> Result<Self, Error> {
        Ok(Connecting {
            lru: take_map(ebpf, map::CONNECTING)?,
            deleted: 0,
            evicted: AtomicU64::new(0),
            slots: if atomics {
                Some(take_map(ebpf, map::CONNECTING_SLOTS)?)
            } else {
                None
            },
        })
    }

    /// How many connects are held.
    pub(crate) fn len(&self) -> usize {
        let slots = self.slots.as_ref().map_or(0, |slots| {
            slots
                .iter()
                .filter(|slot| matches!(slot, Ok(slot) if slot.sk != 0))
                .count()
        });
        self.lru.keys().filter(Result::is_ok).count() + slots
    }

    /// Deletes the connects started at or before `cutoff` (`CLOCK_BOOTTIME` ns); returns how
    /// many. Those in the table only once `detached`: while the programs run, a slot userspace
    /// cleared could have changed hands meanwhile. So a stale connect ages out by the same rule
    /// (`CONNECTING_STALE_NS`) in both stores, but is counted as missed at different times: in
    /// the LRU by this reaper (within a second of going stale), in the table by the kernel side
    /// when a connect claims its slot or a completion meets it, or at the end.
    pub(crate) fn reap(&mut self, cutoff: u64, detached: bool) -> usize {
        let reaped = reap_map(&mut self.lru, cutoff, |c| c.boot_ns);
        self.deleted += reaped as u64;
        let slots = match &mut self.slots {
            Some(slots) if detached => {
                take_slots(slots, true, |slot| slot.record.boot_ns <= cutoff).1
            }
            _ => 0,
        };
        reaped + slots
    }

    /// Once detached: removes and returns every connect held.
    pub(crate) fn take_all(&mut self) -> Vec<ConnectRecord> {
        let keys: Vec<u64> = self.lru.keys().filter_map(Result::ok).collect();
        let mut taken: Vec<ConnectRecord> = keys
            .into_iter()
            .filter_map(|key| {
                let record = self.lru.get(&key, 0).ok()?;
                self.lru.remove(&key).is_ok().then_some(record)
            })
            .collect();
        self.deleted += taken.len() as u64;
        if let Some(slots) = &mut self.slots {
            taken.extend(take_slots(slots, false, |_| true).0);
        }
        taken
    }

    /// Connects the LRU evicted to make room for newer ones (a user holding more sockets in
    /// SYN_SENT than the stores hold), from the counters' `total`s (the table never evicts: a
    /// full neighbourhood overflows into the LRU). Every entry the kernel side added to the
    /// LRU was removed by it, deleted by userspace, is still there, or was evicted. Counters
    /// and map are not read at one instant, so while tracing this is a lower bound (the number
    /// of entries added is read first, and what is removed meanwhile is subtracted twice),
    /// kept monotonic; once detached it is exact.
    pub(crate) fn evicted(&self, total: impl Fn(u32) -> u64) -> u64 {
        // In this order, each a lower bound of what it stands for when the next is read.
        let added = total(counter::CONNECTING_ADDED);
        let live = self.lru.keys().filter(Result::is_ok).count() as u64;
        let failed = total(counter::CONNECTING_REMOVE_FAILED);
        let removed = total(counter::CONNECTING_REMOVED).saturating_sub(failed);
        let now = added.saturating_sub(live + removed + self.deleted);
        self.evicted.fetch_max(now, Ordering::Relaxed).max(now)
    }
}

/// Clears the slots holding a complete connect that `take` accepts, and with `busy` those
/// whose writer never published them (a run still in progress past the end of `detach`, which
/// happens only when it could not wait for runs exactly: see `Tracer::exit_inexact`; a connect
/// missed); returns the complete connects and how many slots were cleared. Only once the
/// programs are detached.
fn take_slots(
    slots: &mut Array<MapData, ConnectingSlot>,
    busy: bool,
    take: impl Fn(&ConnectingSlot) -> bool,
) -> (Vec<ConnectRecord>, usize) {
    let (mut taken, mut cleared) = (Vec::new(), 0);
    for index in 0..slots.len() {
        let Ok(mut slot) = slots.get(&index, 0) else {
            continue;
        };
        let complete = slot.owner().is_some();
        if slot.sk == 0 || (complete && !take(&slot)) || (!complete && !busy) {
            continue;
        }
        slot.sk = 0;
        if slots.set(index, &slot, 0).is_ok() {
            cleared += 1;
            if complete {
                taken.push(slot.record);
            }
        }
    }
    (taken, cleared)
}
