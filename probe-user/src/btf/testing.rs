//! Test helpers: BTF files written type by type, and a kernel-like one.

use std::path::{Path, PathBuf};

use super::reader::{MAGIC, VMLINUX_BTF, kind};

/// The running kernel's BTF, or `None` (and a note) where it has none.
pub(super) fn running_kernel_btf() -> Option<&'static Path> {
    let path = Path::new(VMLINUX_BTF);
    if !path.exists() {
        eprintln!("skipped: {VMLINUX_BTF} missing");
        return None;
    }
    Some(path)
}

/// Writes BTF files type by type, the way the kernel lays them out.
pub(super) struct BtfWriter {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// The id of the last type added.
    last_id: u32,
}

/// A member: name ("" for anonymous), type id, `offset` as in `struct btf_member`.
pub(super) type M<'a> = (&'a str, u32, u32);

impl BtfWriter {
    pub(super) fn new() -> Self {
        BtfWriter {
            types: Vec::new(),
            strings: vec![0],
            last_id: 0,
        }
    }

    pub(super) fn string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let at = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        at
    }

    fn words(&mut self, words: &[u32]) {
        for word in words {
            self.types.extend_from_slice(&word.to_ne_bytes());
        }
    }

    /// Adds a type of `kind` with `vlen` and `kind_flag`, followed by `trailing`.
    pub(super) fn add(
        &mut self,
        kind: u32,
        name: &str,
        vlen: u32,
        flag: bool,
        size: u32,
        trailing: &[u32],
    ) -> u32 {
        let name_off = self.string(name);
        let info = (u32::from(flag) << 31) | (kind << 24) | vlen;
        self.words(&[name_off, info, size]);
        self.words(trailing);
        self.last_id += 1;
        self.last_id
    }

    pub(super) fn int(&mut self, name: &str, size: u32) -> u32 {
        self.add(1, name, 0, false, size, &[size * 8])
    }

    pub(super) fn ptr(&mut self, to: u32) -> u32 {
        self.add(2, "", 0, false, to, &[])
    }

    pub(super) fn array(&mut self, of: u32, index: u32, n: u32) -> u32 {
        self.add(3, "", 0, false, 0, &[of, index, n])
    }

    /// A typedef (with `name`) or qualifier (`kind`) of `of`.
    pub(super) fn alias(&mut self, kind: u32, name: &str, of: u32) -> u32 {
        self.add(kind, name, 0, false, of, &[])
    }

    /// A struct or union; `bitfields` sets `kind_flag` (member offsets then hold the
    /// bitfield size in their top 8 bits).
    pub(super) fn aggregate(
        &mut self,
        kind: u32,
        name: &str,
        size: u32,
        bitfields: bool,
        members: &[M],
    ) -> u32 {
        let mut trailing = Vec::new();
        for &(member, type_id, offset) in members {
            trailing.extend([self.string(member), type_id, offset]);
        }
        self.add(kind, name, members.len() as u32, bitfields, size, &trailing)
    }

    pub(super) fn structure(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
        self.aggregate(kind::STRUCT, name, size, false, members)
    }

    pub(super) fn union(&mut self, size: u32, members: &[M]) -> u32 {
        self.aggregate(kind::UNION, "", size, false, members)
    }

    /// One type of each kind that the lookups only skip.
    pub(super) fn skipped_kinds(&mut self) {
        let int = self.int("int", 4);
        self.add(6, "e", 2, false, 4, &[self.strings.len() as u32, 0, 0, 1]); // ENUM
        self.add(7, "fwd", 0, false, 0, &[]); // FWD
        let proto = self.add(13, "", 2, false, int, &[0, int, 0, int]); // FUNC_PROTO
        self.add(12, "f", 0, false, proto, &[]); // FUNC
        let var = self.add(14, "v", 0, false, int, &[1]); // VAR
        self.add(15, ".data", 1, false, 4, &[var, 0, 4]); // DATASEC
        self.add(16, "float", 0, false, 4, &[]); // FLOAT
        self.add(17, "tag", 0, false, var, &[u32::MAX]); // DECL_TAG
        self.add(18, "user", 0, false, int, &[]); // TYPE_TAG
        self.add(19, "e64", 1, false, 8, &[0, 1, 2]); // ENUM64
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_ne_bytes());
        out.extend([1, 0]);
        let types_len = self.types.len() as u32;
        for word in [24, 0, types_len, types_len, self.strings.len() as u32] {
            out.extend_from_slice(&word.to_ne_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// A file of the test's own, removed at the end.
pub(super) struct TempFile(pub(super) PathBuf);

impl TempFile {
    pub(super) fn new(test: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("probe-btf-{}-{test}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kernel-like BTF with every struct the offsets need, laid out as in Linux 6.18 (x86_64),
/// with `skc_state` at byte `state`, and without `struct pid` unless `with_pid`.
pub(super) fn fake_kernel(state: u32, with_pid: bool) -> BtfWriter {
    let mut w = BtfWriter::new();
    w.skipped_kinds();
    let u8_ = w.int("unsigned char", 1);
    let u16_ = w.int("short unsigned int", 2);
    let u32_ = w.int("unsigned int", 4);
    let u64_ = w.int("long long unsigned int", 8);
    let int = w.int("int", 4);
    let be32 = w.alias(kind::TYPEDEF, "__be32", u32_);
    let be16 = w.alias(kind::TYPEDEF, "__be16", u16_);
    let char_ = w.int("char", 1);
    let const_char = w.alias(kind::CONST, "", char_);
    let in6 = w.structure("in6_addr", 16, &[("in6_u", u32_, 0)]);
    // struct sock_common, with its fields in anonymous unions and structs.
    let addrs = w.structure(
        "",
        8,
        &[("skc_daddr", be32, 0), ("skc_rcv_saddr", be32, 32)],
    );
    let addrpair = w.union(8, &[("skc_addrpair", u64_, 0), ("", addrs, 0)]);
    let ports = w.structure("", 4, &[("skc_dport", be16, 0), ("skc_num", u16_, 16)]);
    // The kernel's `typedef union { ... }` style, behind a volatile qualifier.
    let portpair = w.union(4, &[("skc_portpair", u32_, 0), ("", ports, 0)]);
    let portpair = w.alias(kind::TYPEDEF, "", portpair);
    let portpair = w.alias(kind::VOLATILE, "", portpair);
    let state_type = w.alias(kind::VOLATILE, "", u8_);
    let net_fwd = w.add(7, "net", 0, false, 0, &[]);
    let net_ptr = w.ptr(net_fwd);
    let possible_net = w.structure("", 8, &[("net", net_ptr, 0)]);
    let possible_net = w.alias(kind::TYPEDEF, "possible_net_t", possible_net);
    // `skc_flags` in a union with the listener and timewait pointers, as since 4.x.
    let flags_union = w.union(8, &[("skc_flags", u64_, 0), ("skc_listener", u64_, 0)]);
    let sock_common = w.structure(
        "sock_common",
        136,
        &[
            ("", addrpair, 0),
            ("", portpair, 96),
            ("skc_family", u16_, 128),
            ("skc_state", state_type, state * 8),
            ("skc_net", possible_net, 48 * 8),
            ("skc_v6_daddr", in6, 56 * 8),
            ("", flags_union, 88 * 8),
            ("skc_v6_rcv_saddr", in6, 72 * 8),
        ],
    );
    // A union of the same name comes first: only structs count.
    w.aggregate(kind::UNION, "sock", 4, false, &[("sk_err", int, 0)]);
    let sock = w.aggregate(
        kind::STRUCT,
        "sock",
        776,
        true,
        &[
            ("__sk_common", sock_common, 0),
            // A bitfield (4 bits) before it, as `kind_flag` encodes it.
            ("sk_userlocks", u8_, (4 << 24) | (530 * 8)),
            ("sk_protocol", u16_, (16 << 24) | (532 * 8)),
            ("sk_err", int, 284 * 8),
        ],
    );
    let inet_sock = w.structure(
        "inet_sock",
        1000,
        &[("sk", sock, 0), ("inet_sport", be16, 814 * 8)],
    );
    w.structure(
        "tcp_sock",
        2000,
        &[
            ("inet_conn", inet_sock, 0),
            ("segs_in", u32_, 1532 * 8),
            ("segs_out", u32_, 1536 * 8),
            ("total_retrans", u32_, 1700 * 8),
            ("snd_una", u32_, 1400 * 8),
            ("bytes_acked", u64_, 1408 * 8),
            ("bytes_received", u64_, 1416 * 8),
            ("srtt_us", u32_, 1424 * 8),
            ("write_seq", u32_, 1428 * 8),
        ],
    );
    // struct sk_buff, `sk` in an anonymous union as since 5.x.
    let sock_ptr = w.ptr(sock);
    let sk_union = w.union(8, &[("sk", sock_ptr, 0), ("ip_defrag_offset", int, 0)]);
    let head_ptr = w.ptr(u8_);
    w.structure(
        "sk_buff",
        232,
        &[
            ("", sk_union, 24 * 8),
            ("transport_header", u16_, 180 * 8),
            ("network_header", u16_, 182 * 8),
            ("head", head_ptr, 200 * 8),
            ("data", head_ptr, 208 * 8),
            ("len", u32_, 112 * 8),
            ("data_len", u32_, 116 * 8),
            ("_nfct", u64_, 104 * 8),
        ],
    );
    // struct nf_conn as 6.1 lays it out, after a forward declaration of it (as 5.10's BTF has
    // both): the struct is what is found.
    w.add(7, "nf_conn", 0, false, 0, &[]);
    let tuple = w.structure("nf_conntrack_tuple", 40, &[("src", u32_, 0)]);
    let hash = w.structure(
        "nf_conntrack_tuple_hash",
        56,
        &[("hnnode", u64_, 0), ("tuple", tuple, 16 * 8)],
    );
    w.structure(
        "nf_conn",
        248,
        &[("lock", u32_, 4 * 8), ("tuplehash", hash, 16 * 8)],
    );
    // enum skb_drop_reason, as 6.x has it (SKB_NOT_DROPPED_YET first).
    let reasons = [
        ("SKB_NOT_DROPPED_YET", 0),
        ("SKB_CONSUMED", 1),
        ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
        ("SKB_DROP_REASON_NETFILTER_DROP", 8),
    ];
    let trailing: Vec<u32> = reasons
        .iter()
        .flat_map(|&(name, value)| [w.string(name), value])
        .collect();
    w.add(
        kind::ENUM,
        "skb_drop_reason",
        reasons.len() as u32,
        false,
        4,
        &trailing,
    );
    let ns_common = w.structure(
        "ns_common",
        24,
        &[("stashed", u64_, 0), ("inum", u32_, 16 * 8)],
    );
    let pid_namespace = w.structure("pid_namespace", 200, &[("ns", ns_common, 120 * 8)]);
    let pidns_ptr = w.ptr(pid_namespace);
    let upid = w.structure("upid", 16, &[("nr", int, 0), ("ns", pidns_ptr, 64)]);
    let upids = w.array(upid, int, 1);
    let pid = if with_pid {
        w.structure(
            "pid",
            160,
            &[("level", u32_, 4 * 8), ("numbers", upids, 144 * 8)],
        )
    } else {
        w.structure("pid_", 160, &[])
    };
    let pid_ptr = w.ptr(pid);
    let kn_name = w.ptr(const_char);
    let kernfs_node = w.structure(
        "kernfs_node",
        128,
        // 6.15's name for the parent, to check the fallback from `parent`.
        &[("__parent", u64_, 8 * 8), ("name", kn_name, 16 * 8)],
    );
    let kn_ptr = w.ptr(kernfs_node);
    let cgroup = w.structure("cgroup", 1024, &[("kn", kn_ptr, 256 * 8)]);
    let cgroup_ptr = w.ptr(cgroup);
    let css_set = w.structure("css_set", 512, &[("dfl_cgrp", cgroup_ptr, 112 * 8)]);
    let css_set_ptr = w.ptr(css_set);
    w.structure("net", 4096, &[("ns", ns_common, 160 * 8)]);
    let task_ptr = w.ptr(0);
    w.structure(
        "task_struct",
        4096,
        &[
            ("group_leader", task_ptr, 1328 * 8),
            ("thread_pid", pid_ptr, 1368 * 8),
            ("cgroups", css_set_ptr, 2376 * 8),
        ],
    );
    w
}
