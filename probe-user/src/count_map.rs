//! The kernel's `CONNECT_COUNTS` map, from userspace: its overflow keys put in before the
//! programs attach, its entries read in batches, and the keys of cgroups gone for long enough
//! deleted ("retired"), so that a node whose pods come and go never fills it.

use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, IterableMap, MapData};
use probe_common::{
    Family, Named as _, Outcome,
    state::{CountKey, CountValue},
};

use crate::counts::Retired;

/// Entries asked of the kernel per batch (grown if one hash bucket holds more).
const BATCH: u32 = 4096;

/// `BPF_MAP_LOOKUP_BATCH` (Linux 5.6), which aya does not wrap.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The kernel's `ENOTSUPP` (524): what a map type without batch operations answers.
const ENOTSUPP: i32 = 524;

/// The keys the overflow of a map counting with (or without) outcomes can land in: one per
/// family, outcome and cause that outcome can have (`CountKey::overflow`, `Outcome::causes`).
pub(crate) fn overflow_keys(outcome: bool) -> Vec<CountKey> {
    let pairs: Vec<(u8, u8)> = if outcome {
        Outcome::ALL
            .iter()
            .flat_map(|&o| o.causes().iter().map(move |&c| (o as u8, c)))
            .collect()
    } else {
        vec![(0, 0)]
    };
    [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|f| pairs.iter().map(move |&p| CountKey::overflow(f.af(), p)))
        .collect()
}

/// What is known of whether a cgroup exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    /// The kernel said (by file handle).
    Known(bool),
    /// A walk of the cgroup tree found it (`found`), or not: then gone if the tree shows every
    /// cgroup, or it was visible to this view of the tree before (`visible`: the walk was of the
    /// whole hierarchy, or the cgroup was named from the tree), or an earlier walk found it.
    Walked { found: bool, visible: bool },
}

/// `CONNECT_COUNTS` and what userspace keeps about it.
pub(crate) struct CountMap {
    map: HashMap<MapData, CountKey, CountValue>,
    /// Whether the kernel takes `BPF_MAP_LOOKUP_BATCH` (false once it refused).
    batch: AtomicBool,
    /// Label sets at the last read (see [`CountMap::series`]).
    series: AtomicUsize,
    gone: GoneCgroups,
    retired: Retired,
}

/// Which cgroups with counts are gone, and since when: what retiring a cgroup's counts
/// decides on, whoever holds them (the kernel's map, or userspace's `Tally`).
#[derive(Debug, Default)]
pub(crate) struct GoneCgroups {
    /// Since when each cgroup with keys has been seen gone.
    since: StdHashMap<u64, Instant>,
    /// The cgroups with keys a walk has found (see [`Presence::Walked`]).
    walked: std::collections::HashSet<u64>,
}

impl GoneCgroups {
    /// Of the cgroups with keys (`with_keys`), those `presence` has said are gone, at this call
    /// and earlier ones, for at least `after`: their keys are to be retired now (and the
    /// cgroups are forgotten here). `presence` answers `None` when it cannot tell (then the
    /// cgroup is not retired).
    pub(crate) fn due(
        &mut self,
        with_keys: &std::collections::HashSet<u64>,
        after: Duration,
        mut presence: impl FnMut(u64) -> Option<Presence>,
    ) -> Vec<u64> {
        let now = Instant::now();
        // Cgroups without keys any more need no watching.
        self.since.retain(|id, _| with_keys.contains(id));
        self.walked.retain(|id| with_keys.contains(id));
        let mut due = Vec::new();
        for &id in with_keys {
            if !is_gone(&mut self.walked, id, presence(id)) {
                self.since.remove(&id);
                continue;
            }
            let since = *self.since.entry(id).or_insert(now);
            if now.duration_since(since) >= after {
                self.since.remove(&id);
                self.walked.remove(&id);
                due.push(id);
            }
        }
        due
    }
}

impl CountMap {
    pub(crate) fn new(map: HashMap<MapData, CountKey, CountValue>) -> Self {
        CountMap {
            map,
            batch: AtomicBool::new(true),
            series: AtomicUsize::new(0),
            gone: GoneCgroups::default(),
            retired: Retired::default(),
        }
    }

    /// Every entry now: in batches of [`BATCH`] (one system call each) where the kernel has
    /// batch lookups, else key by key. A batch walks the hash table bucket by bucket, so a key
    /// inserted meanwhile is read once or not yet, never twice.
    pub(crate) fn entries(&self) -> Vec<(CountKey, CountValue)> {
        let entries = self.read();
        let series = entries.iter().filter(|(k, _)| k.overflow == 0).count();
        self.series.store(series, Ordering::Relaxed);
        entries
    }

    fn read(&self) -> Vec<(CountKey, CountValue)> {
        if self.batch.load(Ordering::Relaxed) {
            match lookup_batch(self.fd()) {
                Ok(entries) => return entries,
                Err(e) => {
                    log::debug!("batch lookups of the counts refused ({e}); reading key by key");
                    self.batch.store(false, Ordering::Relaxed);
                }
            }
        }
        self.map.iter().filter_map(Result::ok).collect()
    }

    /// Label sets counted (keys besides the overflow keys) at the last [`CountMap::entries`].
    pub(crate) fn series(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// Bytes of kernel memory the map takes, as the kernel accounts it (`memlock` in the
    /// map's fdinfo), if it says.
    pub(crate) fn memory(&self) -> Option<u64> {
        let fd = self.fd();
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("memlock:"))?
            .trim()
            .parse()
            .ok()
    }

    fn fd(&self) -> i32 {
        IterableMap::<CountKey, CountValue>::map(&self.map)
            .fd()
            .as_fd()
            .as_raw_fd()
    }

    /// What was retired so far.
    pub(crate) fn retired(&self) -> Retired {
        self.retired
    }

    /// Retires the keys of every cgroup that `presence` has said is gone, at this call and
    /// earlier ones, for at least `after`: deletes them from the map, adding their counts to
    /// [`CountMap::retired`], and returns them (each value read again just before its delete,
    /// so a connect added since the first read is in it). `presence` answers `None` when it
    /// cannot tell (then nothing is retired for that cgroup). Overflow keys and keys without a
    /// cgroup are never retired.
    pub(crate) fn retire(
        &mut self,
        after: Duration,
        presence: impl FnMut(u64) -> Option<Presence>,
    ) -> Vec<(CountKey, CountValue)> {
        let entries = self.entries();
        let mut by_cgroup: StdHashMap<u64, Vec<CountKey>> = StdHashMap::new();
        for (key, _) in entries {
            if key.overflow == 0 && key.cgroup_id != 0 {
                by_cgroup.entry(key.cgroup_id).or_default().push(key);
            }
        }
        let with_keys = by_cgroup.keys().copied().collect();
        let mut retired = Vec::new();
        for id in self.gone.due(&with_keys, after, presence) {
            for key in by_cgroup.remove(&id).unwrap_or_default() {
                // A late connect of the cgroup (a handshake that ends after its tasks left)
                // may still add to the key between this read and the delete (not in `retired`,
                // a window of two system calls), or recreate it later, counted as new.
                let Ok(value) = self.map.get(&key, 0) else {
                    continue;
                };
                if self.map.remove(&key).is_ok() {
                    self.retired.series += 1;
                    self.retired.connects += value.connects;
                    retired.push((key, value));
                }
            }
        }
        retired
    }
}

/// Whether cgroup `id` is gone by what is known of it (`presence`), given the cgroups earlier
/// walks found (`walked`, updated): a walk that does not find a cgroup says it is gone only if
/// it was visible (see [`Presence::Walked`]), or an earlier walk found it (else it may be
/// outside what the mount shows).
fn is_gone(
    walked: &mut std::collections::HashSet<u64>,
    id: u64,
    presence: Option<Presence>,
) -> bool {
    match presence {
        Some(Presence::Known(exists)) => !exists,
        Some(Presence::Walked { found: true, .. }) => {
            walked.insert(id);
            false
        }
        Some(Presence::Walked {
            found: false,
            visible,
        }) => visible || walked.contains(&id),
        None => false,
    }
}

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of the hash map `fd`, by `BPF_MAP_LOOKUP_BATCH`.
fn lookup_batch(fd: i32) -> std::io::Result<Vec<(CountKey, CountValue)>> {
    let mut entries = Vec::new();
    let mut size = BATCH;
    // The hash table's batch token: a bucket index (u32), here in a u64.
    let (mut token, mut next) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut keys = vec![CountKey::default(); size as usize];
        let mut values = vec![CountValue::ZERO; size as usize];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw mut token as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: size,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points to buffers of `count` keys and values and to the tokens, all
        // alive for the call; the kernel writes at most that much.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let error = (ret < 0).then(std::io::Error::last_os_error);
        let n = attr.count as usize;
        match error.as_ref().and_then(std::io::Error::raw_os_error) {
            // A bucket holds more than `size` entries: ask again with room for it.
            Some(libc::ENOSPC) if n == 0 => {
                size *= 2;
                continue;
            }
            Some(libc::ENOENT) | None => {}
            Some(libc::EINVAL | libc::ENOSYS | ENOTSUPP | libc::EOPNOTSUPP) if first => {
                return Err(error.expect("an error"));
            }
            Some(_) => return Err(error.expect("an error")),
        }
        keys.truncate(n);
        values.truncate(n);
        entries.extend(keys.into_iter().zip(values));
        if error.is_some() {
            // ENOENT: no more buckets.
            return Ok(entries);
        }
        token = next;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_is_gone_when_the_kernel_says_or_a_walk_no_longer_finds_it() {
        let mut walked = std::collections::HashSet::new();
        assert!(is_gone(&mut walked, 1, Some(Presence::Known(false))));
        assert!(!is_gone(&mut walked, 1, Some(Presence::Known(true))));
        assert!(!is_gone(&mut walked, 1, None));
        let walk = |found, visible| Some(Presence::Walked { found, visible });
        // Never found by a walk, not visible: perhaps outside the mount's view, so not gone.
        assert!(!is_gone(&mut walked, 2, walk(false, false)));
        assert!(!is_gone(&mut walked, 2, walk(true, false)));
        assert!(!is_gone(&mut walked, 2, walk(true, false)));
        assert!(is_gone(&mut walked, 2, walk(false, false)));
        // Visible (named, or the walk was of the whole hierarchy), then not found.
        assert!(is_gone(&mut walked, 3, walk(false, true)));
    }

    #[test]
    fn overflow_keys_cover_each_family_and_outcome() {
        let keys = overflow_keys(true);
        assert_eq!(keys.len(), probe_common::limit::OVERFLOW_KEYS as usize);
        assert!(keys.iter().all(|k| k.overflow == 1 && k.outcome != 0));
        let keys = overflow_keys(false);
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| k.outcome == 0 && k.dport == 0));
    }
}
