//! [`SockOffsets`] from the running kernel's BTF.
//!
//! Rust eBPF cannot emit CO-RE relocations, so the kernel side reads `struct sock` at offsets
//! resolved here, at load time, from `/sys/kernel/btf/vmlinux`.

use std::path::Path;

use btf_rs::{Btf, Struct, Type};
use probe_common::{
    SockOffsets,
    config::{SOCK_HEAD_LEN, TaskOffsets},
};

use crate::error::{Error, Missing};

type Result<T> = std::result::Result<T, Error>;

/// A BTF error with `message`.
fn btf_error(message: impl Into<String>) -> Error {
    Error::Btf(message.into())
}

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Reads the BTF file at `path`.
fn parse(path: &Path) -> Result<Btf> {
    if !path.exists() {
        return Err(Missing::Btf(path.to_owned()).into());
    }
    Btf::from_file(path).map_err(|e| btf_error(format!("cannot parse {}: {e}", path.display())))
}

/// The offsets of both kinds from one read of the BTF file at `path`: those of `struct sock`,
/// which every configuration needs, and those of the task's identity, which only some do (so
/// that a kernel whose structs moved only fails the options that use them).
pub fn offsets(path: &Path) -> Result<(SockOffsets, Result<TaskOffsets>)> {
    let btf = parse(path)?;
    Ok((sock_offsets_in(&btf)?, task_offsets_in(&btf)))
}

fn sock_offsets_in(btf: &Btf) -> Result<SockOffsets> {
    let sock = named_struct(btf, "sock")?;
    // Every field lives in the `struct sock_common __sk_common` at the start of `struct sock`.
    let common = |field| field_offset(btf, &sock, &["__sk_common", field]);
    let offsets = SockOffsets {
        daddr: common("skc_daddr")?,
        rcv_saddr: common("skc_rcv_saddr")?,
        num: common("skc_num")?,
        dport: common("skc_dport")?,
        family: common("skc_family")?,
        v6_daddr: common("skc_v6_daddr")?,
        v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        protocol: field_offset(btf, &sock, &["sk_protocol"])?,
        inet_sport: field_offset(btf, &named_struct(btf, "inet_sock")?, &["inet_sport"])?,
        segs_out: field_offset(btf, &named_struct(btf, "tcp_sock")?, &["segs_out"])?,
        sk_err: field_offset(btf, &sock, &["sk_err"])?,
        state: common("skc_state")?,
    };
    // The kernel side reads the IPv4 fields from one copy of the head of struct sock.
    for (name, offset, size) in [
        ("skc_daddr", offsets.daddr, 4),
        ("skc_rcv_saddr", offsets.rcv_saddr, 4),
        ("skc_dport", offsets.dport, 2),
        ("skc_num", offsets.num, 2),
        ("skc_family", offsets.family, 2),
        ("skc_state", offsets.state, 1),
    ] {
        if offset as usize + size > SOCK_HEAD_LEN {
            return Err(btf_error(format!(
                "unsupported kernel: {name} is at byte {offset} of struct sock, past the first {SOCK_HEAD_LEN}"
            )));
        }
    }
    Ok(offsets)
}

/// The task, pid, namespace and cgroup field offsets (records' identity, `--container`).
fn task_offsets_in(btf: &Btf) -> Result<TaskOffsets> {
    let task = named_struct(btf, "task_struct")?;
    let pid = named_struct(btf, "pid")?;
    let upid = named_struct(btf, "upid")?;
    let field = |st: &Struct, path: &[&str]| field_offset(btf, st, path);
    Ok(TaskOffsets {
        thread_pid: field(&task, &["thread_pid"])?,
        group_leader: field(&task, &["group_leader"])?,
        cgroups: field(&task, &["cgroups"])?,
        pid_level: field(&pid, &["level"])?,
        pid_numbers: field(&pid, &["numbers"])?,
        upid_size: upid.size() as u32,
        upid_nr: field(&upid, &["nr"])?,
        upid_ns: field(&upid, &["ns"])?,
        pidns_inum: field(&named_struct(btf, "pid_namespace")?, &["ns", "inum"])?,
        sk_net: field(&named_struct(btf, "sock_common")?, &["skc_net"])?,
        net_inum: field(&named_struct(btf, "net")?, &["ns", "inum"])?,
        dfl_cgrp: field(&named_struct(btf, "css_set")?, &["dfl_cgrp"])?,
        cgroup_kn: field(&named_struct(btf, "cgroup")?, &["kn"])?,
        kn_name: field(&named_struct(btf, "kernfs_node")?, &["name"])?,
    })
}

fn named_struct(btf: &Btf, name: &str) -> Result<Struct> {
    btf.resolve_types_by_name(name)
        .ok()
        .into_iter()
        .flatten()
        .find_map(|ty| match ty {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| btf_error(format!("struct {name} not in kernel BTF")))
}

/// Byte offset of the member reached by following `path` from `outer`.
fn field_offset(btf: &Btf, outer: &Struct, path: &[&str]) -> Result<u32> {
    let mut current = outer.clone();
    let mut bits = 0;
    for (depth, name) in path.iter().enumerate() {
        let (offset, member_type) = find_member(btf, &current, name)?.ok_or_else(|| {
            btf_error(format!("field {} not found in kernel BTF", path.join(".")))
        })?;
        bits += offset;
        if depth + 1 < path.len() {
            current = as_struct(btf, member_type)?
                .ok_or_else(|| btf_error(format!("{name} is not a struct in kernel BTF")))?;
        }
    }
    if bits % 8 != 0 {
        return Err(btf_error(format!(
            "field {} is a bitfield in kernel BTF",
            path.join(".")
        )));
    }
    Ok(bits / 8)
}

/// Finds `name` among the members of `st`, looking inside anonymous structs and unions (where
/// the kernel keeps most `sock_common` fields). Returns its bit offset and type.
fn find_member(btf: &Btf, st: &Struct, name: &str) -> Result<Option<(u32, Type)>> {
    for member in &st.members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let member_type = resolve(btf, member)?;
        if member_name == name {
            return Ok(Some((member.bit_offset(), member_type)));
        }
        if member_name.is_empty()
            && let Some(inner) = as_struct(btf, member_type)?
            && let Some((offset, ty)) = find_member(btf, &inner, name)?
        {
            return Ok(Some((member.bit_offset() + offset, ty)));
        }
    }
    Ok(None)
}

/// The type `of` refers to.
fn resolve(btf: &Btf, of: &dyn btf_rs::BtfType) -> Result<Type> {
    btf.resolve_chained_type(of)
        .map_err(|e| btf_error(format!("kernel BTF: {e}")))
}

/// The struct or union behind `ty`, looking through typedefs and qualifiers.
fn as_struct(btf: &Btf, mut ty: Type) -> Result<Option<Struct>> {
    loop {
        ty = match ty {
            Type::Struct(s) | Type::Union(s) => return Ok(Some(s)),
            Type::Typedef(t) => resolve(btf, &t)?,
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => resolve(btf, &t)?,
            _ => return Ok(None),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the resolver against the kernel this test runs on; every Linux kernel since 2.6
    /// keeps the IPv4 fields at the very start of sock_common.
    #[test]
    fn resolves_sock_common_fields_of_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} missing");
            return;
        }
        let offsets = offsets(path).unwrap().0;
        assert_eq!(offsets.daddr, 0);
        assert_eq!(offsets.rcv_saddr, 4);
        assert_eq!(offsets.dport, 12);
        assert_eq!(offsets.num, 14);
        assert_eq!(offsets.family, 16);
        assert!(offsets.v6_daddr >= 16 && offsets.v6_rcv_saddr > offsets.v6_daddr);
    }

    /// The identity offsets of the running kernel: the pid, cgroup and namespace structs as the
    /// kernels of the test matrix lay them out.
    #[test]
    fn resolves_task_fields_of_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} missing");
            return;
        }
        let o = offsets(path).unwrap().1.unwrap();
        // struct upid { int nr; struct pid_namespace *ns; } on 64-bit.
        assert_eq!((o.upid_size, o.upid_nr, o.upid_ns), (16, 0, 8));
        assert!(o.thread_pid > 0 && o.group_leader > 0 && o.cgroups > 0);
        assert!(o.pid_numbers > o.pid_level);
    }

    #[test]
    fn missing_btf_is_one_clear_error() {
        let err = offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this kernel has no BTF (/nonexistent/vmlinux is missing; it needs CONFIG_DEBUG_INFO_BTF=y)"
        );
    }
}
