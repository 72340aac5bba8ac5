//! [`SockOffsets`] and [`TaskOffsets`] from a kernel's BTF, and the connect functions' type
//! ids, from one read of it ([`offsets`]).
//!
//! Rust eBPF cannot emit CO-RE relocations, so the kernel side reads `struct sock` (and the
//! task's pid, namespace and cgroup structs) at offsets resolved here, at load time, from
//! `/sys/kernel/btf/vmlinux`.

use std::path::Path;

use probe_common::{
    SockOffsets,
    config::{DropConfig, SOCK_HEAD_LEN, SkbOffsets, TaskOffsets},
};

use super::{
    functions::{FUNCTIONS, FunctionIds},
    lookup::{Result, Struct, btf_error},
    reader::{KernelBtf, VMLINUX_BTF},
};
use crate::error::Missing;

/// Every struct that [`sock_offsets_in`] and [`task_offsets_in`] look up: the type pass
/// notes where the first struct of each of these names is.
const STRUCTS: &[&str] = &[
    "sock",
    "sock_common",
    "inet_sock",
    "tcp_sock",
    "task_struct",
    "pid",
    "upid",
    "pid_namespace",
    "net",
    "css_set",
    "cgroup",
    "kernfs_node",
    "sk_buff",
    "nf_conn",
    "nf_conntrack_tuple_hash",
    // Enums, looked up like the structs.
    "skb_drop_reason",
    "sock_flags",
];

/// The prefix of every `enum skb_drop_reason` name, left out of the names reported.
const DROP_REASON_PREFIX: &str = "SKB_DROP_REASON_";

/// What the tracer takes from a BTF file, from one read of it.
#[derive(Debug)]
pub(crate) struct KernelTypes {
    /// The offsets of `struct sock`, which every configuration needs.
    pub sock: SockOffsets,
    /// The offsets of the task's identity, which only some configurations need (so that a
    /// kernel whose structs moved only fails the options that use them).
    pub task: Result<TaskOffsets>,
    /// The offsets of `struct sk_buff` and the kernel's drop reasons, which only the cause
    /// hooks need (`--outcome`).
    pub packets: Result<Packets>,
    /// The type ids of the connect functions ([`FUNCTIONS`]) in the file: the kernel's own
    /// if the file is [`VMLINUX_BTF`], so fentry needs no second read of it.
    pub functions: FunctionIds,
}

/// Reads the offsets and function ids of the BTF file at `path`.
pub(crate) fn offsets(path: &Path) -> Result<KernelTypes> {
    if !path.exists() {
        return Err(if path == Path::new(VMLINUX_BTF) {
            Missing::Btf(path.to_owned())
        } else {
            Missing::BtfFile(path.to_owned())
        }
        .into());
    }
    let btf = KernelBtf::open(path, STRUCTS, &FUNCTIONS)
        .map_err(|e| btf_error(format!("cannot parse {}: {e}", path.display())))?;
    Ok(KernelTypes {
        sock: sock_offsets_in(&btf)?,
        task: task_offsets_in(&btf),
        packets: packets_in(&btf),
        functions: FunctionIds(btf.types.functions.clone()),
    })
}

fn sock_offsets_in(btf: &KernelBtf) -> Result<SockOffsets> {
    let sock = btf.named_struct("sock")?;
    // Every field lives in the `struct sock_common __sk_common` at the start of `struct sock`.
    let common = |field| btf.field_offset(&sock, &["__sk_common", field]);
    let offsets = SockOffsets {
        daddr: common("skc_daddr")?,
        rcv_saddr: common("skc_rcv_saddr")?,
        num: common("skc_num")?,
        dport: common("skc_dport")?,
        family: common("skc_family")?,
        v6_daddr: common("skc_v6_daddr")?,
        v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        protocol: btf.field_offset(&sock, &["sk_protocol"])?,
        inet_sport: btf.field_offset(&btf.named_struct("inet_sock")?, &["inet_sport"])?,
        segs_out: btf.field_offset(&btf.named_struct("tcp_sock")?, &["segs_out"])?,
        sk_err: btf.field_offset(&sock, &["sk_err"])?,
        state: common("skc_state")?,
        segs_in: btf.field_offset(&btf.named_struct("tcp_sock")?, &["segs_in"])?,
        total_retrans: btf.field_offset(&btf.named_struct("tcp_sock")?, &["total_retrans"])?,
        snd_una: btf.field_offset(&btf.named_struct("tcp_sock")?, &["snd_una"])?,
        bytes_acked: btf.field_offset(&btf.named_struct("tcp_sock")?, &["bytes_acked"])?,
        bytes_received: btf.field_offset(&btf.named_struct("tcp_sock")?, &["bytes_received"])?,
        srtt_us: btf.field_offset(&btf.named_struct("tcp_sock")?, &["srtt_us"])?,
        write_seq: btf.field_offset(&btf.named_struct("tcp_sock")?, &["write_seq"])?,
        // `sk_flags` is `#define`d to this.
        sk_flags: common("skc_flags")?,
        // SOCK_DONE has been 1 (after SOCK_DEAD) since Linux 2.6; the kernel's own value when
        // its BTF has the enum.
        sock_done: btf
            .enumerators("sock_flags")?
            .and_then(|all| all.into_iter().find(|(_, name)| name == "SOCK_DONE"))
            .map_or(1, |(value, _)| value),
        _pad: 0,
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

/// What the cause hooks need of the kernel's packets.
#[derive(Debug)]
pub(crate) struct Packets {
    /// `struct sk_buff`'s fields.
    pub skb: SkbOffsets,
    /// The drop-reason hook's settings and the kernel's drop reasons (value, name without
    /// prefix): `None` before 5.17, which has no `enum skb_drop_reason`.
    pub drops: Option<(DropConfig, Vec<(u32, String)>)>,
}

fn packets_in(btf: &KernelBtf) -> Result<Packets> {
    let skb = btf.named_struct("sk_buff")?;
    let field = |name| btf.field_offset(&skb, &[name]);
    let skb = SkbOffsets {
        sk: field("sk")?,
        head: field("head")?,
        network_header: field("network_header")?,
        transport_header: field("transport_header")?,
        data: field("data")?,
        len: field("len")?,
        data_len: field("data_len")?,
        ..conntrack_in(btf, &skb)
    };
    let drops = btf.enumerators("skb_drop_reason")?.map(|all| {
        let names: Vec<(u32, String)> = all
            .into_iter()
            .filter_map(|(value, name)| {
                let short = name.strip_prefix(DROP_REASON_PREFIX)?;
                Some((value, short.to_owned()))
            })
            .collect();
        // Absent (it is not in 5.17's first list's later renames), nothing is left out.
        let not_specified = names
            .iter()
            .find(|(_, name)| name == "NOT_SPECIFIED")
            .map_or(u32::MAX, |&(value, _)| value);
        let config = DropConfig {
            not_specified,
            _pad: 0,
        };
        (config, names)
    });
    Ok(Packets { skb, drops })
}

/// Where a packet's conntrack entry and its tuples are (`--nat`'s forwarded SYNs), or zeroes
/// when the kernel's BTF has no conntrack (built without it, or as a module whose types the
/// kernel's own BTF lacks): then forwarded SYNs are not looked at.
fn conntrack_in(btf: &KernelBtf, skb: &Struct) -> SkbOffsets {
    let found = || -> Result<SkbOffsets> {
        let conn = btf.named_struct("nf_conn")?;
        let hash = btf.named_struct("nf_conntrack_tuple_hash")?;
        let original =
            btf.field_offset(&conn, &["tuplehash"])? + btf.field_offset(&hash, &["tuple"])?;
        Ok(SkbOffsets {
            nfct: btf.field_offset(skb, &["_nfct"])?,
            ct_original: original,
            ct_reply: original + hash.size,
            ..SkbOffsets::default()
        })
    };
    found()
        .inspect_err(|e| {
            log::debug!("no conntrack in the kernel's BTF ({e}): forwarded SYNs are not looked at")
        })
        .unwrap_or_default()
}

/// The task, pid, namespace and cgroup field offsets (records' identity, `--container`).
fn task_offsets_in(btf: &KernelBtf) -> Result<TaskOffsets> {
    let task = btf.named_struct("task_struct")?;
    let pid = btf.named_struct("pid")?;
    let upid = btf.named_struct("upid")?;
    let kernfs_node = btf.named_struct("kernfs_node")?;
    let field = |st: &Struct, path: &[&str]| btf.field_offset(st, path);
    Ok(TaskOffsets {
        thread_pid: field(&task, &["thread_pid"])?,
        group_leader: field(&task, &["group_leader"])?,
        cgroups: field(&task, &["cgroups"])?,
        pid_level: field(&pid, &["level"])?,
        pid_numbers: field(&pid, &["numbers"])?,
        upid_size: upid.size,
        upid_nr: field(&upid, &["nr"])?,
        upid_ns: field(&upid, &["ns"])?,
        pidns_inum: field(&btf.named_struct("pid_namespace")?, &["ns", "inum"])?,
        sk_net: field(&btf.named_struct("sock_common")?, &["skc_net"])?,
        net_inum: field(&btf.named_struct("net")?, &["ns", "inum"])?,
        dfl_cgrp: field(&btf.named_struct("css_set")?, &["dfl_cgrp"])?,
        cgroup_kn: field(&btf.named_struct("cgroup")?, &["kn"])?,
        kn_name: field(&kernfs_node, &["name"])?,
        // Renamed `__parent` in Linux 6.15 (now RCU-protected; the probe reads it as before).
        kn_parent: field(&kernfs_node, &["parent"])
            .or_else(|_| field(&kernfs_node, &["__parent"]))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::{
        functions::function_btf,
        reader::kind,
        testing::{BtfWriter, TempFile, fake_kernel, running_kernel_btf},
    };

    /// Checks the resolver against the kernel this test runs on; every Linux kernel since 2.6
    /// keeps the IPv4 fields at the very start of sock_common.
    #[test]
    fn resolves_sock_common_fields_of_running_kernel() {
        let Some(path) = running_kernel_btf() else {
            return;
        };
        let offsets = offsets(path).unwrap().sock;
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
        let Some(path) = running_kernel_btf() else {
            return;
        };
        let o = offsets(path).unwrap().task.unwrap();
        // struct upid { int nr; struct pid_namespace *ns; } on 64-bit.
        assert_eq!((o.upid_size, o.upid_nr, o.upid_ns), (16, 0, 8));
        assert!(o.thread_pid > 0 && o.group_leader > 0 && o.cgroups > 0);
        assert!(o.pid_numbers > o.pid_level);
    }

    /// The ids found by streaming are those aya finds in the whole BTF of the running kernel.
    #[test]
    fn function_ids_of_running_kernel_match_aya() {
        use aya_obj::btf::BtfKind;
        let Some(path) = running_kernel_btf() else {
            return;
        };
        let names = ["tcp_connect", "tcp_v4_connect", "tcp_v6_connect"];
        let ours = function_btf(path, &names).unwrap();
        let full = aya::Btf::from_sys_fs().unwrap();
        let from_offsets = offsets(path).unwrap().functions;
        for name in names {
            assert_eq!(
                from_offsets.get(name),
                Some(full.id_by_type_name_kind(name, BtfKind::Func).unwrap()),
                "{name}"
            );
            assert_eq!(
                ours.id_by_type_name_kind(name, BtfKind::Func).unwrap(),
                full.id_by_type_name_kind(name, BtfKind::Func).unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn missing_btf_is_one_clear_error() {
        let err = offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert_eq!(err.to_string(), "no BTF file at /nonexistent/vmlinux");
    }

    #[test]
    fn resolves_every_offset_of_a_kernel_like_file() {
        let file = TempFile::new("kernel", &fake_kernel(18, true).bytes());
        let KernelTypes { sock, task, .. } = offsets(&file.0).unwrap();
        assert_eq!(
            sock,
            SockOffsets {
                daddr: 0,
                rcv_saddr: 4,
                num: 14,
                dport: 12,
                family: 16,
                v6_daddr: 56,
                v6_rcv_saddr: 72,
                protocol: 532,
                inet_sport: 814,
                segs_out: 1536,
                sk_err: 284,
                state: 18,
                segs_in: 1532,
                total_retrans: 1700,
                snd_una: 1400,
                bytes_acked: 1408,
                bytes_received: 1416,
                srtt_us: 1424,
                write_seq: 1428,
                sk_flags: 88,
                sock_done: 1,
                _pad: 0,
            }
        );
        assert_eq!(
            task.unwrap(),
            TaskOffsets {
                thread_pid: 1368,
                group_leader: 1328,
                cgroups: 2376,
                pid_level: 4,
                pid_numbers: 144,
                upid_size: 16,
                upid_nr: 0,
                upid_ns: 8,
                pidns_inum: 136,
                sk_net: 48,
                net_inum: 176,
                dfl_cgrp: 112,
                cgroup_kn: 256,
                kn_name: 16,
                kn_parent: 8,
            }
        );
    }

    #[test]
    fn packets_and_drop_reasons_of_a_kernel_like_file() {
        let file = TempFile::new("packets", &fake_kernel(18, true).bytes());
        let packets = offsets(&file.0).unwrap().packets.unwrap();
        assert_eq!(
            packets.skb,
            SkbOffsets {
                sk: 24,
                head: 200,
                network_header: 182,
                transport_header: 180,
                data: 208,
                len: 112,
                data_len: 116,
                // tuplehash at 16, its tuple 16 further; the reply hash 56 after the first.
                nfct: 104,
                ct_original: 32,
                ct_reply: 88,
            }
        );
        let (config, names) = packets.drops.unwrap();
        assert_eq!(config.not_specified, 2);
        // Only the drop reasons, without their prefix.
        assert_eq!(
            names,
            [
                (2, "NOT_SPECIFIED".to_string()),
                (8, "NETFILTER_DROP".to_string())
            ]
        );
    }

    #[test]
    fn task_structs_missing_fail_only_the_task_offsets() {
        let file = TempFile::new("no-pid", &fake_kernel(18, false).bytes());
        let KernelTypes { sock, task, .. } = offsets(&file.0).unwrap();
        assert_eq!(sock.state, 18);
        assert_eq!(
            task.unwrap_err().to_string(),
            "struct pid not in kernel BTF"
        );
    }

    #[test]
    fn ipv4_fields_past_the_head_of_sock_are_refused() {
        let file = TempFile::new("far-state", &fake_kernel(24, true).bytes());
        assert_eq!(
            offsets(&file.0).unwrap_err().to_string(),
            format!(
                "unsupported kernel: skc_state is at byte 24 of struct sock, past the first {SOCK_HEAD_LEN}"
            )
        );
    }

    /// `cannot parse` error of a file of `bytes`.
    fn parse_error(test: &str, bytes: &[u8]) -> String {
        let file = TempFile::new(test, bytes);
        let message = offsets(&file.0).unwrap_err().to_string();
        let prefix = format!("cannot parse {}: ", file.0.display());
        message
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{message}"))
            .to_owned()
    }

    #[test]
    fn malformed_files_are_errors() {
        let good = fake_kernel(18, true).bytes();
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        assert_eq!(
            parse_error("swapped", &swapped),
            "BTF of the other byte order"
        );
        let mut elf = good.clone();
        elf[..4].copy_from_slice(b"\x7fELF");
        assert!(parse_error("elf", &elf).starts_with("not BTF (magic 0x"));
        assert!(parse_error("short", &good[..10]).starts_with("no BTF header: "));
        assert_eq!(
            parse_error("truncated", &good[..good.len() - 1]),
            "BTF sections past the end of the file"
        );
        let mut version = good.clone();
        version[2] = 2;
        assert_eq!(
            parse_error("version", &version),
            "unsupported BTF version 2 (flags 0x0)"
        );

        let mut w = BtfWriter::new();
        w.int("int", 4);
        w.add(31, "", 0, false, 0, &[]);
        assert_eq!(
            parse_error("kind", &w.bytes()),
            "type 2 is of unknown kind 31"
        );
        let mut w = BtfWriter::new();
        w.add(kind::STRUCT, "sock", 2, false, 8, &[0, 0, 0]);
        assert_eq!(
            parse_error("overrun", &w.bytes()),
            "type 1 runs past the type section"
        );
    }
}
