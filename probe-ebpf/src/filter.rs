//! The one admission path every hook takes: the filters on the caller (`--pid`, `--uid`,
//! `--cgroup`, `--container`, `--comm`, `--netns`), then those on the destination (`-4`/`-6`, `--filter-port`, `--dst`),
//! each only if given (a clear flag in the `FILTERS` global is a constant to the verifier, which
//! then drops the check altogether).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated},
    maps::lpm_trie::Key,
};
use probe_common::{COMM_LEN, Family, FilterFlags, RawAddr, config::DstKey};

use crate::{COMM_FILTER, DST_FILTER, FILTERS, PID_FILTER, PORT_SET, UID_FILTER, task};

/// Where a connect goes: the family it is reported as, the destination address and port (host
/// order).
#[derive(Clone, Copy)]
pub struct Destination {
    pub family: Family,
    pub addr: RawAddr,
    pub port: u16,
}

/// A connect the filters let through, by the calling task.
pub struct Admitted {
    /// The caller's `bpf_get_current_pid_tgid()`.
    pub pid_tgid: u64,
    pub destination: Destination,
}

/// Whether the filters let the current task's connect on socket `sk` through. The caller
/// filters come first: they need nothing read from the connect. Only then does `destination`
/// read where it goes (from the sockaddr or the socket), or return `None` to skip the connect
/// for a reason of its own hook.
#[inline(always)]
pub fn admitted(
    sk: *const u8,
    destination: impl FnOnce(u64) -> Option<Destination>,
) -> Option<Admitted> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let filters = FILTERS.load();
    if !caller_admitted(&filters, pid_tgid, sk) {
        return None;
    }
    let destination = destination(pid_tgid)?;
    if !destination_admitted(&filters, &destination) {
        return None;
    }
    Some(Admitted {
        pid_tgid,
        destination,
    })
}

/// Whether the filters on the caller let the calling task, connecting socket `sk`, through.
#[inline(always)]
fn caller_admitted(filters: &FilterFlags, pid_tgid: u64, sk: *const u8) -> bool {
    if filters.pids != 0 && unsafe { PID_FILTER.get(&((pid_tgid >> 32) as u32)) }.is_none() {
        return false;
    }
    if filters.uids != 0 && unsafe { UID_FILTER.get(&(bpf_get_current_uid_gid() as u32)) }.is_none()
    {
        return false;
    }
    if filters.cgroups != 0 && !task::cgroup_admitted(filters.cgroups) {
        return false;
    }
    if filters.containers != 0 && !task::container_admitted(filters.containers) {
        return false;
    }
    if filters.netns != 0 && !task::netns_admitted(sk) {
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

/// Whether the filters on the destination let a connect to `to` through. An IPv4-mapped IPv6
/// destination is an IPv4 one for `-4`/`-6` and `--dst` (the kernel connects it through
/// tcp_v4_connect, and every backend reports it so), whichever hook sees it. A wildcard
/// address (`0.0.0.0`, `::`) passes `--dst` here: the kernel resolves it inside the call, and
/// the hook that completes the call checks what it resolved to ([`reported_admitted`]). (The
/// per-function hooks are attached only for the chosen families anyway; the tcp_connect and
/// tracepoint hooks see both.)
#[inline(always)]
fn destination_admitted(filters: &FilterFlags, to: &Destination) -> bool {
    let family = ipv4_if_mapped(to).0;
    if filters.families & family.bit() == 0 || !port_admitted(filters, to.port) {
        return false;
    }
    filters.destinations == 0 || to.addr.is_unspecified() || network_admitted(to)
}

/// For the hooks that complete a call whose entry was admitted: whether `--dst` lets through
/// the destination the call is `reported` with, when it `requested` the wildcard address (a
/// successful call reports what the kernel resolved it to).
#[inline(always)]
pub fn reported_admitted(requested: &Destination, reported: &Destination) -> bool {
    if !requested.addr.is_unspecified() {
        return true;
    }
    // `::` on an IPv6 socket bound to an IPv4-mapped source goes to IPv4 loopback.
    let filters = FILTERS.load();
    filters.families & ipv4_if_mapped(reported).0.bit() != 0
        && (filters.destinations == 0 || network_admitted(reported))
}

/// Whether `to` lies in one of the `--dst` networks.
#[inline(always)]
fn network_admitted(to: &Destination) -> bool {
    let (family, addr) = ipv4_if_mapped(to);
    let key = Key::new(DstKey::FULL_BITS, DstKey::new(family, addr));
    DST_FILTER.get(&key).is_some()
}

/// The family and address `to` is reported with: an IPv4-mapped IPv6 address is IPv4.
#[inline(always)]
fn ipv4_if_mapped(to: &Destination) -> (Family, RawAddr) {
    if to.family == Family::V6 && to.addr.is_v4_mapped() {
        (Family::V4, to.addr.unmapped())
    } else {
        (to.family, to.addr)
    }
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
