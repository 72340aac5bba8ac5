//! What the tracer takes from the running kernel's BTF (`/sys/kernel/btf/vmlinux`, or the
//! file given with `--btf`): the struct offsets the kernel side reads at, and the type ids of
//! the connect functions that fentry and fexit programs load with.
//!
//! - `reader.rs`: the streaming reader, one pass over the file keeping 4 bytes per type
//!   ([`VMLINUX_BTF`] is where the kernel's is);
//! - `lookup.rs`: a member's offset along a path of names, through anonymous members,
//!   typedefs and qualifiers;
//! - `functions.rs`: [`FunctionIds`] and [`function_btf`], the `aya::Btf` that fentry and
//!   fexit load with: only the connect functions, at their kernel ids, placeholders below
//!   (how and why in its documentation);
//! - `offsets.rs`: [`offsets()`], the one read of a file at load time: `SockOffsets`,
//!   `TaskOffsets`, the packet offsets and drop reasons of the cause hooks ([`Packets`]), and
//!   the connect functions' ids.
//!
//! Each uses only those listed above it.

mod functions;
mod lookup;
mod offsets;
mod reader;
#[cfg(test)]
mod testing;

pub(crate) use functions::{FunctionIds, function_btf};
pub(crate) use offsets::{Packets, offsets};
pub use reader::VMLINUX_BTF;
