//! Trace TCP connects (`tcp_v4_connect` / `tcp_v6_connect`) with eBPF, and print them the way
//! SystemTap's tcp.connect examples do.
//!
//! The kernel side filters (destination ports, pids) and copies raw facts into a ring buffer;
//! this crate loads it ([`TracerBuilder::attach`], with a kprobe, fentry or tracepoint
//! [`Backend`]), decodes the events ([`ConnectEvent`]) and formats them ([`Formatter`]).
//! Dropping the [`Tracer`] (or its [`EventStream`]) detaches everything.
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
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! As an async stream in a tokio runtime, as an agent would (see `examples/agent.rs`):
//!
//! ```no_run
//! use probe_user::Tracer;
//! use tokio_stream::StreamExt as _;
//!
//! # async fn agent() -> anyhow::Result<()> {
//! let mut events = Tracer::builder().filter_ports([443]).attach()?.into_stream()?;
//! while let Some(event) = events.next().await {
//!     println!("{} ({}) connected to {}", event.pid, event.comm(), event.dst);
//! }
//! let lost = events.counters().lost();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod backend;
pub mod btf;
mod clock;
mod event;
pub mod filter;
mod format;
pub mod kernel;
pub mod metrics;
pub mod output;
mod stream;
mod tracer;

pub use backend::Backend;
pub use clock::WallClock;
pub use event::{ConnectEvent, Family, Malformed};
pub use format::{Format, Formatter};
pub use stream::{DRAIN_INTERVAL, EventStream};
pub use tracer::{ConnectCount, CountBy, Counters, ProgramStats, Tracer, TracerBuilder};
