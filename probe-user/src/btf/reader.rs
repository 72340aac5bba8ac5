//! The streaming BTF reader: one pass over a BTF file that keeps 4 bytes per type.
//!
//! A kernel's BTF describes every type of the kernel (80k-130k types, 3.5-5.5 MB), of which
//! the tracer needs a few dozen member offsets and three function ids, so [`KernelBtf`] reads
//! it without keeping the types in memory: the string section is read whole (2-3 MB; names
//! are compared in place), one streaming pass over the type section keeps 4 bytes per type
//! (enough to follow a member's type to its struct) and notes where the few structs looked
//! for are and the ids of the functions looked for. The members of a struct are read on
//! demand (`lookup.rs`). The format is described in the kernel's `Documentation/bpf/btf.rst`
//! and `include/uapi/linux/btf.h`.

use std::{
    collections::HashMap,
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The BTF magic number, in the byte order of the machine that wrote the file.
pub(super) const MAGIC: u16 = 0xeb9f;
/// `struct btf_header` up to `str_len`; `hdr_len` may announce a longer one.
const HEADER_LEN: usize = 24;
/// `struct btf_type`: `name_off`, `info`, then `size` or `type`.
pub(super) const TYPE_LEN: usize = 12;
/// `struct btf_member`: `name_off`, `type`, `offset`.
pub(super) const MEMBER_LEN: usize = 12;

/// The `BTF_KIND_*` values we treat specially (the others only need skipping, see
/// [`TypeRecord::trailing_len`]).
pub(super) mod kind {
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const ENUM: u32 = 6;
    pub const ENUM64: u32 = 19;
}

/// The parts of a BTF file the offsets need (see the module's documentation).
pub(super) struct KernelBtf {
    /// Kept open to read the members of the structs looked up.
    pub(super) file: File,
    /// For error messages.
    pub(super) path: PathBuf,
    /// Where the type section starts in the file.
    pub(super) types_at: u64,
    /// The string section, whole (2-3 MB, for as long as the offsets take to look up): names
    /// are compared where they are, so no pass over the ~100k strings is needed.
    pub(super) strings: Strings,
    pub(super) types: TypeIndex,
    /// The struct names the type pass looked for (a lookup of any other name is a mistake).
    pub(super) structs_indexed: &'static [&'static str],
}

/// What [`index_types`] keeps of the type section.
pub(super) struct TypeIndex {
    /// What following each type leads to, indexed by type id (0 is `void`).
    pub(super) links: Vec<PackedLink>,
    /// The first struct (not union) with each of the names looked for: where its
    /// `struct btf_type` is in the type section.
    pub(super) structs: HashMap<&'static str, u32>,
    /// The id of the first `FUNC` of each function name looked for.
    pub(super) functions: Vec<(&'static str, u32)>,
    /// The first enum with each of the struct names looked for (an enum is looked up like a
    /// struct): where its `struct btf_type` is in the type section.
    pub(super) enums: HashMap<&'static str, u32>,
}

/// What following a type leads to: the members of a struct or union, another type, or
/// nothing of interest.
pub(super) enum Link {
    /// A struct or union, whose `struct btf_type` is `at` bytes into the type section.
    Struct { at: u32 },
    /// A typedef, `const`, `volatile` or `restrict` of type `of`.
    Alias { of: u32 },
    /// Any other kind (`void`, ints, pointers, arrays...).
    Other,
}

impl KernelBtf {
    /// Reads the header of the BTF file at `path`, then its string section, then its type
    /// section, noting the first struct named as one of `structs` and the first `FUNC` named
    /// as one of `functions`.
    pub(super) fn open(
        path: &Path,
        structs: &'static [&'static str],
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
            structs_indexed: structs,
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

/// A BTF string section.
pub(super) struct Strings(Vec<u8>);

impl Strings {
    /// The NUL-terminated string at `offset` (without its NUL); `None` past the end or
    /// unterminated.
    pub(super) fn at(&self, offset: u32) -> Option<&[u8]> {
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
    let mut found_enums = HashMap::new();
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
            kind::ENUM | kind::ENUM64 => {
                if let Some(name) = named(record.name_off, structs) {
                    found_enums.entry(name).or_insert(at);
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
        enums: found_enums,
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
pub(super) struct TypeRecord {
    name_off: u32,
    /// `vlen` in bits 0-15, the kind in bits 24-28, `kind_flag` in bit 31.
    info: u32,
    /// The size of structs, unions, ints...; the type referred to by typedefs, qualifiers,
    /// pointers...
    pub(super) size_or_type: u32,
}

impl TypeRecord {
    pub(super) fn decode(raw: &[u8; TYPE_LEN]) -> TypeRecord {
        TypeRecord {
            name_off: u32_at(raw, 0),
            info: u32_at(raw, 4),
            size_or_type: u32_at(raw, 8),
        }
    }

    /// Whether this is an `ENUM64` (its enumerators are 12 bytes, not 8).
    pub(super) fn is_enum64(&self) -> bool {
        self.kind() == kind::ENUM64
    }

    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    /// The number of members, parameters, enumerators... that follow.
    pub(super) fn vlen(&self) -> u32 {
        self.info & 0xffff
    }

    pub(super) fn kind_flag(&self) -> bool {
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
pub(super) struct PackedLink(u32);

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

    pub(super) fn decode(self) -> Link {
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
pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// A malformed-file error with `message`.
fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}
