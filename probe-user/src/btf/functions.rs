//! The connect functions' type ids, and the [`aya::Btf`] that fentry and fexit programs load
//! with: a placeholder `Btf` holding only those functions, at their kernel ids.
//!
//! `FEntry::load` and `FExit::load` want the kernel's BTF only to look up the type id of the
//! function to attach to (with `Btf::id_by_type_name_kind`, which scans the types in order,
//! the index in the scan being the id). aya's way to get that BTF, `Btf::from_sys_fs`, parses
//! every type of the kernel into memory: ~17 MB, three times what the tracer otherwise needs
//! at its peak. So the ids are found while streaming the file (by the read of the offsets, or
//! by [`function_btf`]'s own), and [`FunctionIds::btf`] builds a `Btf` with each function
//! found as a `FUNC` of its name at its kernel id, and placeholders below: aya keeps the types
//! in a plain vector indexed by id and offers no way to skip ids. A placeholder is a
//! `BtfType::Unknown`, aya's smallest type (the size of the enum, 72 bytes, with nothing on
//! the heap): 5-8 MiB for the 75k-115k ids below the connect functions of the kernels tested,
//! for as long as the programs take to load and attach. A function the kernel lacks is left
//! out, so that loading its program fails (`UnknownBtfTypeName`) as it does against the whole
//! BTF.

use std::{io, path::Path};

use probe_common::Function;

use super::reader::KernelBtf;

/// The functions whose type ids [`offsets`](super::offsets()) notes on the way, for fentry
/// and fexit: the connect functions, and `inet_csk_accept` (`--accept`).
pub(super) const FUNCTIONS: [&str; 4] = [
    Function::TcpV4Connect.name(),
    Function::TcpV6Connect.name(),
    Function::TcpConnect.name(),
    Function::InetCskAccept.name(),
];

/// An [`aya::Btf`] to load fentry and fexit programs for the kernel functions `functions`
/// with, from the BTF file at `path` (the running kernel's:
/// [`VMLINUX_BTF`](super::VMLINUX_BTF)): those functions at their ids, placeholders below (see
/// the module's documentation).
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
pub(crate) struct FunctionIds(pub(super) Vec<(&'static str, u32)>);

impl FunctionIds {
    /// The ids of `names` in the BTF file at `path` (those it has).
    fn read(path: &Path, names: &[&'static str]) -> io::Result<FunctionIds> {
        Ok(FunctionIds(
            KernelBtf::open(path, &[], names)?.types.functions,
        ))
    }

    /// The id of `name`, if the file has it.
    #[cfg(test)]
    pub(super) fn get(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|&&(n, _)| n == name).map(|&(_, id)| id)
    }

    /// An [`aya::Btf`] with those of `functions` found, each a `FUNC` of its name at its id
    /// (see the module's documentation).
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
/// [`FunctionIds::btf`] writes its placeholders; without the `prctl` (before Linux 3.15) it does
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::{
        reader::kind,
        testing::{BtfWriter, TempFile},
    };

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
}
