//! Who is connecting, beyond the pid: the caller's cgroup v2 and pid namespace, the socket's
//! network namespace (a record's `Identity`), and the `--cgroup`, `--container` and `--netns`
//! checks of the admission path.
//!
//! `task_struct`, `pid`, namespace and cgroup offsets come from the running kernel's BTF (the
//! `TASK_OFFSETS` global), as `struct sock`'s do; every read goes through
//! `bpf_probe_read_kernel`, so a bad pointer yields zeroes (an identity of zeroes, a container
//! that does not match) rather than a verifier rejection.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, generated};
use probe_common::{
    Identity,
    config::{CONTAINER_NAME_LEN, CONTAINER_NAME_PREFIXES, ContainerPrefix, TaskOffsets},
    limit,
};

use crate::{CGROUP_FILTER, CONTAINERS, IDENTITY, NETNS_FILTER, TASK_OFFSETS};

/// Hex digits in a container id.
const CONTAINER_ID_LEN: usize = 64;

/// One field of the `TASK_OFFSETS` global, read on its own and volatile (as `Global::load`
/// reads: userspace sets the global at load, and the compiler must not fold in its initial
/// value). Not `TASK_OFFSETS.load()`: a copy of the whole struct on the stack made the fexit
/// programs' combined stack exceed the verifier's 512 bytes.
macro_rules! task_offset {
    ($field:ident) => {
        // SAFETY: a field of the global, which `Global` holds transparently.
        u64::from(unsafe {
            core::ptr::read_volatile(
                &raw const (*(&raw const TASK_OFFSETS).cast::<TaskOffsets>()).$field,
            )
        })
    };
}

/// Reads a `T` at `base + offset`, or zeroes if the kernel refuses.
#[inline(always)]
fn read_at<T: Default>(base: u64, offset: u64) -> T {
    // SAFETY: bpf_probe_read_kernel copies with fault handling; it never dereferences directly.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }.unwrap_or_default()
}

/// The calling task (`struct task_struct *`).
#[inline(always)]
fn current_task() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { generated::bpf_get_current_task() }
}

/// The caller's cgroup v2 id.
#[inline(always)]
pub fn current_cgroup() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { generated::bpf_get_current_cgroup_id() }
}

/// Writes the identity of the current task's connect on socket `sk` (a `struct sock *`) to
/// `identity`: zeroes unless the `IDENTITY` global asks for it, so that the default
/// configuration reads nothing (the verifier drops the branch).
#[inline(always)]
pub fn identity(sk: *const u8, identity: *mut Identity) {
    if IDENTITY.load() == 0 {
        // Three volatile word stores: a plain `Identity::default()` write becomes a call to the
        // byte-by-byte `memset`, on every connect of the default configuration.
        let words = identity.cast::<u64>();
        for i in 0..core::mem::size_of::<Identity>() / 8 {
            // SAFETY: the caller's record field, writable and 8-byte aligned (its first field
            // is a u64).
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
        }
        return;
    }
    read_identity(sk as u64, identity);
}

/// The reads behind [`identity`], kept out of line: inlined, they made the hooks' record
/// closures too big for LLVM to inline in turn, a BPF-to-BPF call on every connect.
#[inline(never)]
fn read_identity(sk: u64, identity: *mut Identity) {
    let task = current_task();
    // The task's pid lives at `level` in a pid namespace hierarchy; `numbers[level]` is its
    // number in its own (innermost) namespace. Its process's number is the group leader's at
    // the same level (every thread of a process shares its pid namespace).
    let pid: u64 = read_at(task, task_offset!(thread_pid));
    let level: u32 = read_at(pid, task_offset!(pid_level));
    let upid = task_offset!(pid_numbers) + u64::from(level) * task_offset!(upid_size);
    let leader: u64 = read_at(task, task_offset!(group_leader));
    let leader_pid: u64 = read_at(leader, task_offset!(thread_pid));
    let pidns: u64 = read_at(pid + upid, task_offset!(upid_ns));
    let value = Identity {
        cgroup_id: current_cgroup(),
        netns: netns(sk),
        pidns: read_at(pidns, task_offset!(pidns_inum)),
        ns_pid: read_at(leader_pid + upid, task_offset!(upid_nr)),
        ns_tid: read_at(pid + upid, task_offset!(upid_nr)),
    };
    // SAFETY: the caller's record field, writable.
    unsafe { identity.write(value) };
}

/// Inode number of the network namespace of socket `sk`.
#[inline(always)]
pub fn netns(sk: u64) -> u32 {
    let net: u64 = read_at(sk, task_offset!(sk_net));
    read_at(net, task_offset!(net_inum))
}

/// `--netns`: whether socket `sk` lives in one of the namespaces of `NETNS_FILTER`.
#[inline(always)]
pub fn netns_admitted(sk: *const u8) -> bool {
    let inum = netns(sk as u64);
    unsafe { NETNS_FILTER.get(&inum) }.is_some()
}

/// `--cgroup`: whether the caller is in one of the first `slots` cgroups of `CGROUP_FILTER`, or
/// below one (`bpf_current_task_under_cgroup`, there since Linux 4.9, tests ancestry in the
/// cgroup v2 hierarchy; `bpf_get_current_ancestor_cgroup_id` would need 5.19 in these programs).
#[inline(always)]
pub fn cgroup_admitted(slots: u8) -> bool {
    for index in 0..limit::MAX_CGROUPS {
        if index >= u32::from(slots) {
            break;
        }
        if CGROUP_FILTER.current_task_under_cgroup(index) == Ok(true) {
            return true;
        }
    }
    false
}

/// `--container`: whether the name of the caller's cgroup v2 directory, or of its parent, names
/// one of the first `slots` container ids of `CONTAINERS` (see `ContainerPrefix`). The runtimes
/// put every task of a container in that directory or one below it, created when the container
/// starts, so containers started after probe-user are matched too (tasks deeper below, in
/// cgroups a container makes for itself, are not).
#[inline(always)]
pub fn container_admitted(slots: u8) -> bool {
    let css_set: u64 = read_at(current_task(), task_offset!(cgroups));
    let cgroup: u64 = read_at(css_set, task_offset!(dfl_cgrp));
    let mut kn: u64 = read_at(cgroup, task_offset!(cgroup_kn));
    // The caller's directory, then its parent: runtimes that put a container's tasks in a
    // sub-cgroup of its own (crun with the systemd driver: `libpod-<id>.scope/container`) name
    // the container one level up.
    for _ in 0..2 {
        if name_matches(kn, slots) {
            return true;
        }
        kn = read_at(kn, task_offset!(kn_parent));
    }
    false
}

/// Whether the name of the cgroup directory `kn` (a `struct kernfs_node *`) names one of the
/// first `slots` container ids of `CONTAINERS`.
#[inline(always)]
fn name_matches(kn: u64, slots: u8) -> bool {
    let name_ptr: u64 = read_at(kn, task_offset!(kn_name));
    let mut name = [0u8; CONTAINER_NAME_LEN];
    // SAFETY: copies at most CONTAINER_NAME_LEN bytes, with fault handling.
    if unsafe { bpf_probe_read_kernel_str_bytes(name_ptr as *const u8, &mut name) }.is_err() {
        return false;
    }
    let start = id_start(&name);
    // One slot at a time, by pointer: `CONTAINERS.load()` would copy all of them to the stack.
    let containers = (&raw const CONTAINERS).cast::<ContainerPrefix>();
    for index in 0..limit::MAX_CONTAINERS {
        if index >= usize::from(slots) {
            break;
        }
        // SAFETY: index < MAX_CONTAINERS, the global's length (`Global` is transparent).
        if id_matches(&name, start, unsafe { containers.add(index) }) {
            return true;
        }
    }
    false
}

/// Where the container id starts in a cgroup directory's `name`: after the runtime's prefix
/// (`CONTAINER_NAME_PREFIXES`), or at 0.
#[inline(always)]
fn id_start(name: &[u8; CONTAINER_NAME_LEN]) -> usize {
    for prefix in CONTAINER_NAME_PREFIXES {
        // Byte by byte: `starts_with` would call `memcmp`, a loop the verifier walks anew.
        let prefix = prefix.as_bytes();
        let mut i = 0;
        while i < prefix.len() && name[i] == prefix[i] {
            i += 1;
        }
        if i == prefix.len() {
            return i;
        }
    }
    0
}

/// Whether `name`, from byte `start`, is a whole container id (64 hex digits, then the end of
/// the name or `.scope`) that begins with the digits of the `ContainerPrefix` at `prefix`, as
/// userspace's `identity::container_of` reads ids. Every read of the prefix is volatile, as
/// `Global::load` is: the compiler must not fold in the initial value of the global, which
/// userspace replaces at load.
#[inline(always)]
fn id_matches(
    name: &[u8; CONTAINER_NAME_LEN],
    start: usize,
    prefix: *const ContainerPrefix,
) -> bool {
    // SAFETY: `prefix` points into the CONTAINERS global (see the caller).
    let len = unsafe { core::ptr::read_volatile(&raw const (*prefix).len) } as usize;
    if len == 0 {
        return false;
    }
    let id = unsafe { &raw const (*prefix).id }.cast::<u8>();
    for i in 0..CONTAINER_ID_LEN {
        let Some(&byte) = name.get(start + i) else {
            return false;
        };
        let matches = if i < len {
            // SAFETY: i < 64, the id's length.
            byte == unsafe { core::ptr::read_volatile(id.add(i)) }
        } else {
            byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)
        };
        if !matches {
            return false;
        }
    }
    matches!(name.get(start + CONTAINER_ID_LEN), Some(0 | b'.'))
}
