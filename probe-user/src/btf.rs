//! [`SockOffsets`] and [`TaskOffsets`] from the running kernel's BTF.
//!
//! Rust eBPF cannot emit CO-RE relocations, so the kernel side reads `struct sock` (and the
//! task's pid, namespace and cgroup structs) at offsets resolved here, at load time, from
//! `/sys/kernel/btf/vmlinux`.
//!
//! That file describes every type of the kernel (80k-130k types, 3.5-5.5 MB), of which we need
//! a few dozen member offsets, so [`KernelBtf`] reads it without keeping the types in memory:
//! the string section is read whole (2-3 MB; names are compared in place), one streaming pass
//! over the type section keeps 4 bytes per type (enough to follow a member's type to its
//! struct) and notes where the few structs looked for are, and the members of the structs on
//! the paths looked up are read on demand. The format is
//! described in the kernel's `Documentation/bpf/btf.rst` and `include/uapi/linux/btf.h`.
//!
//! The same streaming finds the type ids of the connect functions, which is all that loading
//! fentry and fexit programs needs of the kernel's BTF ([`function_btf`]).

use std::{
    collections::HashMap,
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use probe_common::{
    Function, SockOffsets,
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
];

/// The connect functions whose type ids [`offsets`] notes on the way, for fentry and fexit.
const FUNCTIONS: [&str; 3] = [
    Function::TcpV4Connect.name(),
    Function::TcpV6Connect.name(),
    Function::TcpConnect.name(),
];

/// What the tracer takes from a BTF file, from one read of it.
#[derive(Debug)]
pub(crate) struct KernelTypes {
    /// The offsets of `struct sock`, which every configuration needs.
    pub sock: SockOffsets,
    /// The offsets of the task's identity, which only some configurations need (so that a
    /// kernel whose structs moved only fails the options that use them).
    pub task: Result<TaskOffsets>,
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

/// An [`aya::Btf`] to load fentry and fexit programs for the kernel functions `functions`
/// with, from the BTF file at `path` (the running kernel's: [`VMLINUX_BTF`]).
///
/// `FEntry::load` and `FExit::load` want the kernel's BTF only to look up the type id of the
/// function to attach to (with `Btf::id_by_type_name_kind`, which scans the types in order,
/// the index in the scan being the id). aya's way to get that BTF, `Btf::from_sys_fs`, parses
/// every type of the kernel into memory: ~17 MB, three times what the tracer otherwise needs
/// at its peak. So this finds the ids while streaming the file, as [`offsets`] does, and
/// returns a `Btf` with each function found as a `FUNC` of its name at its kernel id, and
/// placeholders below: aya keeps the types in a plain vector indexed by id and offers no way
/// to skip ids. A placeholder is a `BtfType::Unknown`, aya's smallest type (the size of the
/// enum, 72 bytes, with nothing on the heap): 5-8 MiB for the 75k-115k ids below the connect
/// functions of the kernels tested, for as long as the programs take to load and attach. A
/// function the kernel lacks is left out, so that loading its program fails
/// (`UnknownBtfTypeName`) as it does against the whole BTF.
pub(crate) fn function_btf(
    path: &Path,
    functions: &[&'static str],
) -> std::result::Result<aya::Btf, aya::BtfError> {
    let ids = FunctionIds::read(path, functions).map_err(|error| aya::BtfError::FileError {
        path: path.to_owned(),
        error,
    })?;
    Ok(ids.btf(functions))
}

/// Type ids of kernel functions (`FUNC`s) in a BTF file: the first of each name.
#[derive(Clone, Debug, Default)]
pub(crate) struct FunctionIds(Vec<(&'static str, u32)>);

impl FunctionIds {
    /// The ids of `names` in the BTF file at `path` (those it has).
    fn read(path: &Path, names: &[&'static str]) -> io::Result<FunctionIds> {
        Ok(FunctionIds(
            KernelBtf::open(path, &[], names)?.types.functions,
        ))
    }

    /// The id of `name`, if the file has it.
    #[cfg(test)]
    fn get(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|&&(n, _)| n == name).map(|&(_, id)| id)
    }

    /// An [`aya::Btf`] with those of `functions` found, each a `FUNC` of its name at its id
    /// (see [`function_btf`]).
    pub(crate) fn btf(&self, functions: &[&str]) -> aya::Btf {
        use aya_obj::btf::{BtfType, Func, FuncLinkage};

        let mut found: Vec<(u32, &'static str)> = self
            .0
            .iter()
            .filter(|(name, _)| functions.contains(name))
            .map(|&(name, id)| (id, name))
            .collect();
        found.sort_unstable();
        // The placeholders grow one vector of several MB, which with transparent huge pages on
        // (Debian's kernels default to `always`) is faulted in 2 MiB at a time: up to 2 MiB
        // more resident than written, depending on where the vector lands (measured: 8.8 to
        // 10.7 MiB peak on Debian 6.1). Every page of it is written here, so only this loop
        // needs small pages (khugepaged, which could merge them later, scans far slower than
        // this BTF lives).
        let _small_pages = SmallPages::new();
        // Holds the `Unknown` of id 0 (void) already.
        let mut btf = aya::Btf::new();
        let mut next = 1;
        for (id, name) in found {
            for _ in next..id {
                btf.add_type(BtfType::Unknown);
            }
            let name_off = btf.add_string(name);
            // Neither the prototype nor the linkage matter to the lookup.
            let added = btf.add_type(BtfType::Func(Func::new(name_off, 0, FuncLinkage::Global)));
            debug_assert_eq!(added, id);
            next = id + 1;
        }
        btf
    }
}

/// Keeps transparent huge pages off for this process's new page faults while it lives
/// (`PR_SET_THP_DISABLE`), then restores the setting it found. Process-wide, but only while
/// [`function_btf`] writes its placeholders; without the `prctl` (before Linux 3.15) it does
/// nothing.
struct SmallPages {
    /// Whether it turned them off (they were on).
    set: bool,
}

impl SmallPages {
    fn new() -> SmallPages {
        // SAFETY: these prctl calls take integers only and change no memory of ours.
        let set = unsafe {
            libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 0
                && libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
        };
        SmallPages { set }
    }
}

impl Drop for SmallPages {
    fn drop(&mut self) {
        if self.set {
            // SAFETY: as in `new`.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
        }
    }
}

/// The BTF magic number, in the byte order of the machine that wrote the file.
const MAGIC: u16 = 0xeb9f;
/// `struct btf_header` up to `str_len`; `hdr_len` may announce a longer one.
const HEADER_LEN: usize = 24;
/// `struct btf_type`: `name_off`, `info`, then `size` or `type`.
const TYPE_LEN: usize = 12;
/// `struct btf_member`: `name_off`, `type`, `offset`.
const MEMBER_LEN: usize = 12;
/// How many typedefs and qualifiers a type may go through, or anonymous structs nest, before
/// we call the file broken (libbpf allows 32 too): a corrupt file must not loop forever.
const MAX_DEPTH: usize = 32;

/// The `BTF_KIND_*` values we treat specially (the others only need skipping, see
/// [`TypeRecord::trailing_len`]).
mod kind {
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
}

/// The parts of a BTF file the offsets need (see the module's documentation).
struct KernelBtf {
    /// Kept open to read the members of the structs looked up.
    file: File,
    /// For error messages.
    path: PathBuf,
    /// Where the type section starts in the file.
    types_at: u64,
    /// The string section, whole (2-3 MB, for as long as the offsets take to look up): names
    /// are compared where they are, so no pass over the ~100k strings is needed.
    strings: Strings,
    types: TypeIndex,
}

/// What [`index_types`] keeps of the type section.
struct TypeIndex {
    /// What following each type leads to, indexed by type id (0 is `void`).
    links: Vec<PackedLink>,
    /// The first struct (not union) with each of the names looked for: where its
    /// `struct btf_type` is in the type section.
    structs: HashMap<&'static str, u32>,
    /// The id of the first `FUNC` of each function name looked for.
    functions: Vec<(&'static str, u32)>,
}

/// What following a type leads to: the members of a struct or union, another type, or
/// nothing of interest.
enum Link {
    /// A struct or union, whose `struct btf_type` is `at` bytes into the type section.
    Struct { at: u32 },
    /// A typedef, `const`, `volatile` or `restrict` of type `of`.
    Alias { of: u32 },
    /// Any other kind (`void`, ints, pointers, arrays...).
    Other,
}

/// A struct or union: its size and its members.
#[derive(Clone)]
struct Struct {
    size: u32,
    members: Vec<Member>,
}

/// One `struct btf_member`, decoded.
#[derive(Clone)]
struct Member {
    /// Where its name starts in the string section; 0 (the empty string) for anonymous
    /// members: the kernel rejects any other offset of an empty member name.
    name_off: u32,
    type_id: u32,
    /// From the start of the struct (the bitfield size, if any, left out).
    bit_offset: u32,
}

impl KernelBtf {
    /// Reads the header of the BTF file at `path`, then its string section, then its type
    /// section, noting the first struct named as one of `structs` and the first `FUNC` named
    /// as one of `functions`.
    fn open(
        path: &Path,
        structs: &[&'static str],
        functions: &[&'static str],
    ) -> io::Result<KernelBtf> {
        let file = File::open(path)?;
        let header = Header::read(&file)?;
        let mut strings = vec![0; header.strings_len as usize];
        file.read_exact_at(&mut strings, header.strings_at)?;
        let strings = Strings(strings);
        let types = index_types(&file, &header, &strings, structs, functions)?;
        Ok(KernelBtf {
            file,
            path: path.to_owned(),
            types_at: header.types_at,
            strings,
            types,
        })
    }

    /// The struct called `name`.
    fn named_struct(&self, name: &str) -> Result<Struct> {
        debug_assert!(STRUCTS.contains(&name), "{name} is missing from STRUCTS");
        match self.types.structs.get(name) {
            Some(&at) => self.read_struct(at),
            None => Err(btf_error(format!("struct {name} not in kernel BTF"))),
        }
    }

    /// Byte offset of the member reached by following `path` from `outer`.
    fn field_offset(&self, outer: &Struct, path: &[&str]) -> Result<u32> {
        let mut current = outer.clone();
        let mut bits = 0;
        for (depth, name) in path.iter().enumerate() {
            let (offset, member_type) = self.find_member(&current, name, 0)?.ok_or_else(|| {
                btf_error(format!("field {} not found in kernel BTF", path.join(".")))
            })?;
            bits = add_bits(bits, offset)?;
            if depth + 1 < path.len() {
                current = self
                    .as_struct(member_type)?
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

    /// Finds `name` among the members of `st`, looking inside anonymous structs and unions
    /// (where the kernel keeps most `sock_common` fields), `depth` of them deep already.
    /// Returns its bit offset and type id.
    fn find_member(&self, st: &Struct, name: &str, depth: usize) -> Result<Option<(u32, u32)>> {
        if depth > MAX_DEPTH {
            return Err(btf_error(format!(
                "kernel BTF: anonymous members nested more than {MAX_DEPTH} deep"
            )));
        }
        for member in &st.members {
            if member.name_off != 0 && self.strings.at(member.name_off) == Some(name.as_bytes()) {
                return Ok(Some((member.bit_offset, member.type_id)));
            }
            if member.name_off == 0
                && let Some(inner) = self.as_struct(member.type_id)?
                && let Some((offset, ty)) = self.find_member(&inner, name, depth + 1)?
            {
                return Ok(Some((add_bits(member.bit_offset, offset)?, ty)));
            }
        }
        Ok(None)
    }

    /// The struct or union type `id` is, or names through typedefs and qualifiers.
    fn as_struct(&self, start: u32) -> Result<Option<Struct>> {
        let mut id = start;
        for _ in 0..=MAX_DEPTH {
            match self.link(id)? {
                Link::Struct { at } => return self.read_struct(at).map(Some),
                Link::Alias { of } => id = of,
                Link::Other => return Ok(None),
            }
        }
        Err(btf_error(format!(
            "kernel BTF: type {start} goes through more than {MAX_DEPTH} typedefs and qualifiers"
        )))
    }

    fn link(&self, id: u32) -> Result<Link> {
        self.types
            .links
            .get(id as usize)
            .map(|link| link.decode())
            .ok_or_else(|| btf_error(format!("kernel BTF: no type {id}")))
    }

    /// Reads the struct or union whose `struct btf_type` is `at` bytes into the type section.
    fn read_struct(&self, at: u32) -> Result<Struct> {
        let read = |buf: &mut [u8], offset: u64| {
            self.file
                .read_exact_at(buf, self.types_at + offset)
                .map_err(|e| btf_error(format!("cannot parse {}: {e}", self.path.display())))
        };
        let mut head = [0; TYPE_LEN];
        read(&mut head, at.into())?;
        let record = TypeRecord::decode(&head);
        let mut raw = vec![0; record.vlen() as usize * MEMBER_LEN];
        read(&mut raw, u64::from(at) + TYPE_LEN as u64)?;
        let members = raw
            .as_chunks::<MEMBER_LEN>()
            .0
            .iter()
            .map(|m| {
                let offset = u32_at(m, 8);
                Member {
                    name_off: u32_at(m, 0),
                    type_id: u32_at(m, 4),
                    // With kind_flag set, the top 8 bits are the bitfield's size.
                    bit_offset: if record.kind_flag() {
                        offset & 0xff_ffff
                    } else {
                        offset
                    },
                }
            })
            .collect();
        Ok(Struct {
            size: record.size_or_type,
            members,
        })
    }
}

/// Where the sections are, from `struct btf_header`.
struct Header {
    /// File offset of the type section.
    types_at: u64,
    types_len: u32,
    /// File offset of the string section.
    strings_at: u64,
    strings_len: u32,
}

impl Header {
    /// Reads and checks the header at the start of `file`.
    fn read(file: &File) -> io::Result<Header> {
        let mut raw = [0; HEADER_LEN];
        file.read_exact_at(&mut raw, 0)
            .map_err(|e| invalid(format!("no BTF header: {e}")))?;
        // The file is in the byte order of the kernel that wrote it, ours for vmlinux.
        let magic = u16::from_ne_bytes([raw[0], raw[1]]);
        if magic == MAGIC.swap_bytes() {
            return Err(invalid("BTF of the other byte order"));
        }
        if magic != MAGIC {
            return Err(invalid(format!("not BTF (magic {magic:#06x})")));
        }
        let (version, flags) = (raw[2], raw[3]);
        if version != 1 || flags != 0 {
            return Err(invalid(format!(
                "unsupported BTF version {version} (flags {flags:#x})"
            )));
        }
        // Section offsets count from the end of the header, which newer kernels may extend.
        let header_len = u64::from(u32_at(&raw, 4));
        if header_len < HEADER_LEN as u64 {
            return Err(invalid(format!("BTF header of {header_len} bytes")));
        }
        let header = Header {
            types_at: header_len + u64::from(u32_at(&raw, 8)),
            types_len: u32_at(&raw, 12),
            strings_at: header_len + u64::from(u32_at(&raw, 16)),
            strings_len: u32_at(&raw, 20),
        };
        let file_len = file.metadata()?.len();
        if header.types_at + u64::from(header.types_len) > file_len
            || header.strings_at + u64::from(header.strings_len) > file_len
        {
            return Err(invalid("BTF sections past the end of the file"));
        }
        // [`PackedLink`] keeps offsets into the type section in 31 bits.
        if header.types_len >= PackedLink::STRUCT {
            return Err(invalid("BTF type section over 2 GiB"));
        }
        Ok(header)
    }
}

/// `a + b` bits of offset: an error, not an overflow, for a crafted file (`--btf`).
fn add_bits(a: u32, b: u32) -> Result<u32> {
    a.checked_add(b)
        .ok_or_else(|| btf_error("kernel BTF: a member offset past 4 Gbit"))
}

/// A BTF string section.
struct Strings(Vec<u8>);

impl Strings {
    /// The NUL-terminated string at `offset` (without its NUL); `None` past the end or
    /// unterminated.
    fn at(&self, offset: u32) -> Option<&[u8]> {
        let rest = self.0.get(offset as usize..)?;
        rest.iter().position(|&b| b == 0).map(|end| &rest[..end])
    }
}

/// Streams the type section of `file` once, and returns what each type leads to, where the
/// first struct named as one of `structs` is, and the id of the first `FUNC` named as one of
/// `functions`.
fn index_types(
    file: &File,
    header: &Header,
    strings: &Strings,
    structs: &[&'static str],
    functions: &[&'static str],
) -> io::Result<TypeIndex> {
    // Most structs and functions have a name of a length none looked for has: checking the
    // length first spares comparing them.
    let mut lengths = [false; 64];
    for name in structs.iter().chain(functions) {
        lengths[name.len().min(63)] = true;
    }
    let named = |name_off: u32, among: &[&'static str]| -> Option<&'static str> {
        let name = strings.at(name_off)?;
        if !lengths[name.len().min(63)] {
            return None;
        }
        among
            .iter()
            .copied()
            .find(|wanted| wanted.as_bytes() == name)
    };
    // Id 0 is void.
    let mut links = vec![PackedLink::OTHER];
    let mut found_structs = HashMap::new();
    let mut found_functions: Vec<(&'static str, u32)> = Vec::new();
    for_each_type(file, header, |id, at, record| {
        links.push(match record.kind() {
            kind::STRUCT | kind::UNION => PackedLink::structure(at),
            kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT => {
                PackedLink::alias(record.size_or_type)
            }
            _ => PackedLink::OTHER,
        });
        match record.kind() {
            kind::STRUCT => {
                if let Some(name) = named(record.name_off, structs) {
                    found_structs.entry(name).or_insert(at);
                }
            }
            kind::FUNC => {
                if let Some(name) = named(record.name_off, functions)
                    && !found_functions.iter().any(|&(seen, _)| seen == name)
                {
                    found_functions.push((name, id));
                }
            }
            _ => {}
        }
    })?;
    Ok(TypeIndex {
        links,
        structs: found_structs,
        functions: found_functions,
    })
}

/// Streams the type section of `file` once, calling `visit` with each type's id, where its
/// record starts in the section, and the record (what follows it is skipped).
fn for_each_type(
    file: &File,
    header: &Header,
    mut visit: impl FnMut(u32, u32, &TypeRecord),
) -> io::Result<()> {
    // The section is read in chunks and each record decoded where it lies: a read per record,
    // even from a buffer, costs more than the decoding (it is most of the read in a guest).
    let mut chunk = vec![0; 64 * 1024];
    // Where in the section `chunk` starts, and how much of it is filled.
    let (mut chunk_at, mut filled) = (0u32, 0usize);
    // Type ids count from 1 in the order of the section; id 0 is void.
    let mut id = 1u32;
    let mut at = 0u32;
    while at < header.types_len {
        if (at - chunk_at) as usize + TYPE_LEN > filled {
            // Refill from this record on (a record longer than the chunk is skipped, not read).
            chunk_at = at;
            filled = (header.types_len - at).min(chunk.len() as u32) as usize;
            file.read_exact_at(&mut chunk[..filled], header.types_at + u64::from(at))?;
            if filled < TYPE_LEN {
                return Err(invalid(format!("type {id} runs past the type section")));
            }
        }
        let start = (at - chunk_at) as usize;
        let raw: &[u8; TYPE_LEN] = chunk[start..start + TYPE_LEN]
            .try_into()
            .expect("TYPE_LEN bytes");
        let record = TypeRecord::decode(raw);
        let trailing = record
            .trailing_len()
            .ok_or_else(|| invalid(format!("type {id} is of unknown kind {}", record.kind())))?;
        let end = u64::from(at) + (TYPE_LEN + trailing) as u64;
        if end > header.types_len.into() {
            return Err(invalid(format!("type {id} runs past the type section")));
        }
        visit(id, at, &record);
        at = end as u32;
        id += 1;
    }
    Ok(())
}

/// One `struct btf_type`, before the kind-specific data that follows it.
struct TypeRecord {
    name_off: u32,
    /// `vlen` in bits 0-15, the kind in bits 24-28, `kind_flag` in bit 31.
    info: u32,
    /// The size of structs, unions, ints...; the type referred to by typedefs, qualifiers,
    /// pointers...
    size_or_type: u32,
}

impl TypeRecord {
    fn decode(raw: &[u8; TYPE_LEN]) -> TypeRecord {
        TypeRecord {
            name_off: u32_at(raw, 0),
            info: u32_at(raw, 4),
            size_or_type: u32_at(raw, 8),
        }
    }

    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    /// The number of members, parameters, enumerators... that follow.
    fn vlen(&self) -> u32 {
        self.info & 0xffff
    }

    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }

    /// Bytes of kind-specific data after the record, or `None` for a kind we do not know
    /// (which we then cannot skip).
    fn trailing_len(&self) -> Option<usize> {
        let vlen = self.vlen() as usize;
        Some(match self.kind() {
            // INT: encoding, offset and bits in one u32.
            1 => 4,
            // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
            2 | 7..=12 | 16 | 18 => 0,
            // ARRAY: struct btf_array { type, index_type, nelems }.
            3 => 12,
            // STRUCT, UNION: struct btf_member.
            4 | 5 => vlen * MEMBER_LEN,
            // ENUM: struct btf_enum { name_off, val }.
            6 => vlen * 8,
            // FUNC_PROTO: struct btf_param { name_off, type }.
            13 => vlen * 8,
            // VAR: struct btf_var { linkage }.
            14 => 4,
            // DATASEC: struct btf_var_secinfo { type, offset, size }.
            15 => vlen * 12,
            // DECL_TAG: struct btf_decl_tag { component_idx }.
            17 => 4,
            // ENUM64: struct btf_enum64 { name_off, val_lo32, val_hi32 }.
            19 => vlen * 12,
            _ => return None,
        })
    }
}

/// A [`Link`] in 4 bytes, as the kernel has up to ~130k types, all indexed: a struct or union
/// (`STRUCT` set, with the offset of its record in the type section), the id of the type a
/// typedef or qualifier names, or anything else (0: `void`, which a typedef of void leads to
/// as well).
#[derive(Clone, Copy)]
struct PackedLink(u32);

impl PackedLink {
    const OTHER: PackedLink = PackedLink(0);
    const STRUCT: u32 = 1 << 31;

    /// `at` is under 2^31: [`Header::read`] rejects larger type sections.
    fn structure(at: u32) -> PackedLink {
        PackedLink(PackedLink::STRUCT | at)
    }

    fn alias(of: u32) -> PackedLink {
        // No type id reaches 2^31 (each type takes 12 bytes or more of a section under
        // 2 GiB): a corrupt reference that does leads nowhere.
        if of & PackedLink::STRUCT == 0 {
            PackedLink(of)
        } else {
            PackedLink::OTHER
        }
    }

    fn decode(self) -> Link {
        match self.0 {
            0 => Link::Other,
            bits if bits & PackedLink::STRUCT != 0 => Link::Struct {
                at: bits & !PackedLink::STRUCT,
            },
            of => Link::Alias { of },
        }
    }
}

/// The native-endian u32 at byte `at` of `bytes`.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// A malformed-file error with `message`.
fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF, or `None` (and a note) where it has none.
    fn running_kernel_btf() -> Option<&'static Path> {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} missing");
            return None;
        }
        Some(path)
    }

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

    /// Writes BTF files type by type, the way the kernel lays them out.
    struct BtfWriter {
        types: Vec<u8>,
        strings: Vec<u8>,
        /// The id of the last type added.
        last_id: u32,
    }

    /// A member: name ("" for anonymous), type id, `offset` as in `struct btf_member`.
    type M<'a> = (&'a str, u32, u32);

    impl BtfWriter {
        fn new() -> Self {
            BtfWriter {
                types: Vec::new(),
                strings: vec![0],
                last_id: 0,
            }
        }

        fn string(&mut self, s: &str) -> u32 {
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
        fn add(
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

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.add(1, name, 0, false, size, &[size * 8])
        }

        fn ptr(&mut self, to: u32) -> u32 {
            self.add(2, "", 0, false, to, &[])
        }

        fn array(&mut self, of: u32, index: u32, n: u32) -> u32 {
            self.add(3, "", 0, false, 0, &[of, index, n])
        }

        /// A typedef (with `name`) or qualifier (`kind`) of `of`.
        fn alias(&mut self, kind: u32, name: &str, of: u32) -> u32 {
            self.add(kind, name, 0, false, of, &[])
        }

        /// A struct or union; `bitfields` sets `kind_flag` (member offsets then hold the
        /// bitfield size in their top 8 bits).
        fn aggregate(
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

        fn structure(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
            self.aggregate(kind::STRUCT, name, size, false, members)
        }

        fn union(&mut self, size: u32, members: &[M]) -> u32 {
            self.aggregate(kind::UNION, "", size, false, members)
        }

        /// One type of each kind that the lookups only skip.
        fn skipped_kinds(&mut self) {
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

        fn bytes(&self) -> Vec<u8> {
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
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(test: &str, bytes: &[u8]) -> TempFile {
            let path =
                std::env::temp_dir().join(format!("probe-btf-{}-{test}", std::process::id()));
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
    fn fake_kernel(state: u32, with_pid: bool) -> BtfWriter {
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
            &[("inet_conn", inet_sock, 0), ("segs_out", u32_, 1536 * 8)],
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

    /// Opens `w`'s file and returns the error of looking up `path` in struct `outer`.
    fn lookup_error(test: &str, w: &BtfWriter, outer: &str, path: &[&str]) -> String {
        let file = TempFile::new(test, &w.bytes());
        let btf = KernelBtf::open(&file.0, STRUCTS, &FUNCTIONS).unwrap();
        let result = btf
            .named_struct(outer)
            .and_then(|st| btf.field_offset(&st, path));
        result.unwrap_err().to_string()
    }

    #[test]
    fn bitfields_missing_fields_and_structs_are_errors() {
        let mut w = BtfWriter::new();
        let int = w.int("int", 4);
        w.aggregate(
            kind::STRUCT,
            "sock",
            8,
            true,
            &[("sk_err", int, (3 << 24) | 3), ("ns", int, 32)],
        );
        assert_eq!(
            lookup_error("bitfield", &w, "sock", &["sk_err"]),
            "field sk_err is a bitfield in kernel BTF"
        );
        assert_eq!(
            lookup_error("no-field", &w, "sock", &["level"]),
            "field level not found in kernel BTF"
        );
        assert_eq!(
            lookup_error("not-struct", &w, "sock", &["ns", "inum"]),
            "ns is not a struct in kernel BTF"
        );
        assert_eq!(
            lookup_error("no-struct", &w, "net", &["ns"]),
            "struct net not in kernel BTF"
        );
    }

    #[test]
    fn the_first_struct_of_a_name_counts() {
        let mut w = BtfWriter::new();
        let int = w.int("int", 4);
        w.structure("net", 8, &[("ns", int, 32)]);
        w.structure("net", 8, &[("ns", int, 0)]);
        let file = TempFile::new("first", &w.bytes());
        let btf = KernelBtf::open(&file.0, STRUCTS, &FUNCTIONS).unwrap();
        let net = btf.named_struct("net").unwrap();
        assert_eq!(btf.field_offset(&net, &["ns"]).unwrap(), 4);
    }

    #[test]
    fn a_typedef_loop_is_an_error() {
        let mut w = BtfWriter::new();
        // Type 1 names type 2, which names type 1.
        w.alias(kind::TYPEDEF, "a", 2);
        w.alias(kind::CONST, "", 1);
        w.structure("net", 8, &[("", 1, 0)]);
        assert_eq!(
            lookup_error("loop", &w, "net", &["ns"]),
            "kernel BTF: type 1 goes through more than 32 typedefs and qualifiers"
        );
    }

    #[test]
    fn function_btf_places_functions_at_their_ids() {
        use aya_obj::btf::BtfKind;
        let mut w = BtfWriter::new();
        w.skipped_kinds();
        let int = w.int("int", 4);
        let proto = w.add(13, "", 0, false, int, &[]);
        // Not a FUNC: does not count.
        w.structure("tcp_connect", 4, &[]);
        let v6 = w.add(kind::FUNC, "tcp_v6_connect", 0, false, proto, &[]);
        w.int("long", 8);
        let v4 = w.add(kind::FUNC, "tcp_v4_connect", 0, false, proto, &[]);
        // Only the first FUNC of a name counts, as with aya's lookup.
        w.add(kind::FUNC, "tcp_v4_connect", 0, false, proto, &[]);
        let file = TempFile::new("functions", &w.bytes());
        let names = [
            "tcp_v4_connect",
            "tcp_connect",
            "tcp_v6_connect",
            "tcp_v4_connect",
        ];
        let ids = FunctionIds::read(&file.0, &names).unwrap();
        let found = names.map(|name| ids.get(name));
        assert_eq!(found, [Some(v4), None, Some(v6), Some(v4)]);
        // The offsets' read finds the same ids.
        let types = KernelBtf::open(&file.0, &[], &FUNCTIONS).unwrap().types;
        let same = FunctionIds(types.functions);
        assert_eq!(names.map(|name| same.get(name)), found);
        let btf = function_btf(&file.0, &names).unwrap();
        let id = |name| btf.id_by_type_name_kind(name, BtfKind::Func);
        assert_eq!(id("tcp_v4_connect").unwrap(), v4);
        assert_eq!(id("tcp_v6_connect").unwrap(), v6);
        // Loading a program for it fails as against the whole BTF.
        assert!(matches!(
            id("tcp_connect"),
            Err(aya::BtfError::UnknownBtfTypeName { .. })
        ));
    }

    #[test]
    fn function_btf_of_a_missing_file_is_a_file_error() {
        let err = function_btf(Path::new("/nonexistent/vmlinux"), &["tcp_connect"]).unwrap_err();
        assert!(
            matches!(&err, aya::BtfError::FileError { path, .. } if path == Path::new("/nonexistent/vmlinux")),
            "{err:?}"
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
