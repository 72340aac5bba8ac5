//! Trace TCP connects (`tcp_v4_connect` / `tcp_v6_connect`) with eBPF, and print them the way
//! SystemTap's tcp.connect examples do.
//!
//! The kernel side filters (destination ports and networks, pids, uids, cgroups, task names) and
//! copies raw facts into a ring buffer; this crate loads it ([`TracerBuilder::attach`], with a
//! kprobe, fentry or tracepoint [`Backend`]), decodes the records ([`ConnectEvent`]) and formats
//! them ([`Formatter`]). Dropping the [`Tracer`] (or its [`EventStream`]) detaches everything.
//! Setting up returns a typed [`Error`]: a missing capability, a kernel feature, BTF, the
//! verifier, a backend that cannot attach, or a bad filter.
//!
//! Synchronously, in batches, as the `probe-user` command does:
//!
//! ```no_run
//! use probe_user::{Format, Formatter, Tracer, WallClock};
//!
//! let mut tracer = Tracer::builder().filter_ports([8080]).attach()?;
//! let formatter = Formatter::new(Format::Stap, WallClock::measure());
//! let mut out = Vec::new();
//! tracer.drain(|event| formatter.write(&mut out, event));
//! # Ok::<(), probe_user::Error>(())
//! ```
//!
//! As an async stream in a tokio runtime, as an agent would (see `examples/agent.rs`), telling
//! apart what the operator can fix:
//!
//! ```no_run
//! use probe_user::{Error, Event, Tracer};
//! use tokio_stream::StreamExt as _;
//!
//! # async fn agent() -> Result<(), Box<dyn std::error::Error>> {
//! let tracer = match Tracer::builder().filter_ports([443]).attach() {
//!     Err(Error::Permission { missing }) => {
//!         eprintln!("grant {} to the agent", missing.join(" and "));
//!         return Ok(());
//!     }
//!     other => other?,
//! };
//! let mut events = tracer.into_stream()?;
//! while let Some(event) = events.next().await {
//!     // Closes come too with `TracerBuilder::lifetime`.
//!     if let Event::Connect(c) = event {
//!         println!("{} ({}) connected to {}", c.pid, c.comm(), c.dst);
//!     }
//! }
//! let lost = events.counters().lost();
//! # Ok(())
//! # }
//! ```
//!
//! The data path, from hook to output, is mapped in `docs/architecture.md`.

#![warn(missing_docs)]
#![warn(rustdoc::all)]

mod attach;
mod backend;
mod btf;
mod builder;
mod clock;
mod connecting;
mod count_map;
mod counts;
mod diagnose;
mod dns;
mod error;
pub mod escape;
mod event;
pub mod failure;
mod filter;
mod format;
pub mod identity;
mod kernel;
mod live;
mod loader;
mod maps;
pub mod names;
mod nat;
mod program_info;
mod report;
mod stats;
mod stream;
mod tally;
mod tracer;

pub use backend::FailureHooks;
pub(crate) use backend::Mode;
pub use builder::TracerBuilder;
pub use clock::WallClock;
pub use counts::{
    ConnectCount, ConnectionCounts, DURATION_BUCKET_BOUNDS_NS, LATENCY_BUCKET_BOUNDS_NS, Retired,
};
pub use dns::{DnsStats, NamesConfig};
pub use error::{
    AttachError, BackendError, BackendErrors, Cause, Error, FilterError, Missing, VerifierLog,
};
pub use event::{CloseEvent, Completion, ConnectEvent, Event, Figures, Malformed, Workload};
pub use failure::{DropReason, FailureCause, IcmpError};
pub use format::{Format, Formatter};
pub use identity::WorkloadNames;
pub use probe_common::{Backend, CountBy, End, Family, Function, Outcome, Role};
pub use report::{Conflict, OutcomeFilter, Outcomes, Report};
pub use stats::{Counters, ProgramStats, Startup};
pub use stream::{DRAIN_INTERVAL, EventStream};
pub use tracer::Tracer;
