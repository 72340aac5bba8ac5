//! Member offsets in a [`KernelBtf`]: a path of member names followed from a struct, through
//! anonymous structs and unions (where the kernel keeps most `sock_common` fields), typedefs
//! and qualifiers, reading each struct's members from the file when it is reached.

use std::os::unix::fs::FileExt;

use super::reader::{KernelBtf, Link, MEMBER_LEN, TYPE_LEN, TypeRecord, u32_at};
use crate::error::Error;

pub(super) type Result<T> = std::result::Result<T, Error>;

/// A BTF error with `message`.
pub(super) fn btf_error(message: impl Into<String>) -> Error {
    Error::Btf(message.into())
}

/// How many typedefs and qualifiers a type may go through, or anonymous structs nest, before
/// we call the file broken (libbpf allows 32 too): a corrupt file must not loop forever.
const MAX_DEPTH: usize = 32;

/// A struct or union: its size and its members.
#[derive(Clone)]
pub(super) struct Struct {
    pub(super) size: u32,
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
    /// The struct called `name`.
    pub(super) fn named_struct(&self, name: &str) -> Result<Struct> {
        debug_assert!(
            self.structs_indexed.contains(&name),
            "{name} is missing from the structs indexed"
        );
        match self.types.structs.get(name) {
            Some(&at) => self.read_struct(at),
            None => Err(btf_error(format!("struct {name} not in kernel BTF"))),
        }
    }

    /// Byte offset of the member reached by following `path` from `outer`.
    pub(super) fn field_offset(&self, outer: &Struct, path: &[&str]) -> Result<u32> {
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

    /// The enumerators of the enum called `name` (value, name), or `None` if the file has no
    /// such enum. Values are read as 32 bits (an `ENUM64`'s low half).
    pub(super) fn enumerators(&self, name: &str) -> Result<Option<Vec<(u32, String)>>> {
        debug_assert!(self.structs_indexed.contains(&name));
        let Some(&at) = self.types.enums.get(name) else {
            return Ok(None);
        };
        let read = |buf: &mut [u8], offset| self.read_types(buf, offset);
        let mut head = [0; TYPE_LEN];
        read(&mut head, at.into())?;
        let record = TypeRecord::decode(&head);
        // `struct btf_enum { name_off, val }` or `struct btf_enum64 { name_off, lo32, hi32 }`.
        let len = if record.is_enum64() { 12 } else { 8 };
        let mut raw = vec![0; record.vlen() as usize * len];
        read(&mut raw, u64::from(at) + TYPE_LEN as u64)?;
        let values = raw
            .chunks_exact(len)
            .filter_map(|e| {
                let name = self.strings.at(u32_at(e, 0))?;
                Some((u32_at(e, 4), String::from_utf8_lossy(name).into_owned()))
            })
            .collect();
        Ok(Some(values))
    }

    /// Fills `buf` from `offset` bytes into the type section.
    fn read_types(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, self.types_at + offset)
            .map_err(|e| btf_error(format!("cannot parse {}: {e}", self.path.display())))
    }

    /// Reads the struct or union whose `struct btf_type` is `at` bytes into the type section.
    fn read_struct(&self, at: u32) -> Result<Struct> {
        let read = |buf: &mut [u8], offset| self.read_types(buf, offset);
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

/// `a + b` bits of offset: an error, not an overflow, for a crafted file (`--btf`).
fn add_bits(a: u32, b: u32) -> Result<u32> {
    a.checked_add(b)
        .ok_or_else(|| btf_error("kernel BTF: a member offset past 4 Gbit"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::{
        reader::kind,
        testing::{BtfWriter, TempFile},
    };

    /// The structs the tests look up.
    const STRUCTS: &[&str] = &["sock", "net"];

    /// Opens `w`'s file and returns the error of looking up `path` in struct `outer`.
    fn lookup_error(test: &str, w: &BtfWriter, outer: &str, path: &[&str]) -> String {
        let file = TempFile::new(test, &w.bytes());
        let btf = KernelBtf::open(&file.0, STRUCTS, &[]).unwrap();
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
        let btf = KernelBtf::open(&file.0, STRUCTS, &[]).unwrap();
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
}
