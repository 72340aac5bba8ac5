//! Trace TCP connects (`tcp_v4_connect` / `tcp_v6_connect`) with eBPF kprobes, and print them the
//! way SystemTap's tcp.connect examples do.
//!
//! The kernel side filters (destination ports, pids) and copies raw facts into a ring buffer;
//! this crate loads it, decodes the events and formats them.
//!
//! ```no_run
//! use probe_user::{Format, Formatter, Tracer, WallClock};
//!
//! let mut tracer = Tracer::builder().filter_ports([8080]).attach()?;
//! let formatter = Formatter::new(Format::Stap, WallClock::measure());
//! let mut out = Vec::new();
//! tracer.drain(|event| formatter.write(&mut out, event));
//! # Ok::<(), anyhow::Error>(())
//! ```

mod backend;
pub mod btf;
mod clock;
mod event;
mod format;
pub mod kernel;
pub mod output;
mod tracer;

pub use backend::Backend;
pub use clock::WallClock;
pub use event::{ConnectEvent, Family, Malformed};
pub use format::{Format, Formatter};
pub use tracer::{Counters, ProgramStats, Tracer, TracerBuilder};
