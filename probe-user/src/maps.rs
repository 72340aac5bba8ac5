//! Userspace's hands on the kernel side's maps: taking them out of the loaded object, reaping
//! stale entries of the in-flight tables, and waiting for program runs still in progress after
//! the programs are detached. Used by `tracer.rs` and `connecting.rs`; imports neither.

use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use aya_obj::generated::{bpf_cmd, bpf_map_type};

use crate::Error;

/// Takes map `name` out of the object, as the type userspace reads it with.
pub(crate) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let missing = || Error::Object(format!("map {name}"));
    let map = ebpf.take_map(name).ok_or_else(missing)?;
    T::try_from(map).map_err(|source| Error::Map {
        map: name,
        source: Box::new(source),
    })
}

/// Deletes the entries of `map` stamped at or before `cutoff` (by `stamp`); returns how many.
pub(crate) fn reap_map<V: aya::Pod>(
    map: &mut HashMap<MapData, u64, V>,
    cutoff: u64,
    stamp: impl Fn(&V) -> u64,
) -> usize {
    let stale: Vec<u64> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, value)| stamp(value) <= cutoff)
        .map(|(key, _)| key)
        .collect();
    // The kernel may have replaced a stale entry with a new one since (a thread's next call, a
    // socket address reused): deleting by key could then lose that one, so an entry is deleted
    // only if it is still the stale one.
    stale
        .into_iter()
        .filter(|key| {
            let still_stale = matches!(map.get(key, 0), Ok(value) if stamp(&value) <= cutoff);
            still_stale && map.remove(key).is_ok()
        })
        .count()
}

/// Waits for the program runs in progress: once [`RunBarrier::wait`] returns, every run of a
/// program that had started before it has ended, and with the programs detached none starts
/// again, so what they wrote is all in the maps.
///
/// The kernel runs every program of this tracer (kprobes, fentry/fexit, raw tracepoints; none
/// is sleepable) inside an RCU read-side critical section, and offers userspace one documented
/// way to wait for such runs: an update of a map-of-maps returns only after `synchronize_rcu()`
/// ("so that userspace, when we return to it, knows that all non-sleepable programs that could
/// be running use the new map value": `maybe_wait_bpf_programs` in kernel/bpf/syscall.c, since
/// Linux 4.20; the kernel's own selftests use it to wait for programs). So the barrier is an
/// array of maps of one entry, set again at each wait, and costs nothing per connect. (A
/// counter of runs in progress, bumped by each program, could not see a run that had started
/// but not yet reached its first instruction, and would cost every run two atomic adds.)
///
/// What no wait can cover: a thread inside a connect function at detach returns through the
/// old fexit trampoline, which the kernel patches to skip the fexit programs (Linux 5.12+, and
/// the stable kernels it was backported to), so that connect is not seen at all; a kretprobe
/// instance in flight is disarmed the same way, its entry reaped as missed. And one window: a
/// thread that passed the patched instruction just before the patch and was preempted before
/// the trampoline's RCU section; `Tracer::detach` gives the fentry backend a grace for it and
/// waits again.
pub(crate) struct RunBarrier {
    outer: OwnedFd,
    inner: MapData,
}

/// `union bpf_attr` for `BPF_MAP_CREATE`, as far as a map-of-maps needs.
#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapUpdate {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The `bpf(2)` system call with `attr`.
fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for `cmd`, alive for the call; the
    // pointers it holds (if any) point to live values of the sizes the map was created with.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}

impl RunBarrier {
    /// An array of maps of one entry, and the map it holds (an array of one u32). aya creates
    /// no map-of-maps outside an object, so the outer one is made with `bpf(2)` directly.
    pub(crate) fn new() -> Result<Self, Error> {
        let map_error = |map: &'static str, io_error: std::io::Error| Error::Map {
            map,
            source: Box::new(aya::maps::MapError::CreateError {
                name: map.into(),
                io_error,
            }),
        };
        let inner = MapData::create(
            aya_obj::Map::new_from_params(bpf_map_type::BPF_MAP_TYPE_ARRAY as u32, 4, 4, 1, 0),
            "probe_runs",
            None,
        )
        .map_err(|source| Error::Map {
            map: "probe_runs",
            source: Box::new(source),
        })?;
        let mut attr = MapCreate {
            map_type: bpf_map_type::BPF_MAP_TYPE_ARRAY_OF_MAPS as u32,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
            inner_map_fd: inner.fd().as_fd().as_raw_fd() as u32,
        };
        let fd = bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr)
            .map_err(|e| map_error("probe_run_barrier", e))?;
        // SAFETY: a new descriptor, owned by nobody else.
        let outer = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(RunBarrier { outer, inner })
    }

    /// Returns once every program run that started before the call has ended (see
    /// [`RunBarrier`]).
    pub(crate) fn wait(&self) -> std::io::Result<()> {
        let key = 0u32;
        let value = self.inner.fd().as_fd().as_raw_fd() as u32;
        let mut attr = MapUpdate {
            map_fd: self.outer.as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value: (&raw const value) as u64,
            flags: 0,
        };
        bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }
}
