//! Prometheus / OpenMetrics exposition of the kernel's connect counts and of what was lost
//! ([`Exposition`], written as text by [`text`]), and a small HTTP server for it ([`serve`];
//! what a client can do to it is described in `server.rs`), for `probe-user --metrics`, with
//! TLS and basic authentication from `--web-config-file` ([`web`]); the same exposition pushed
//! over OTLP ([`otlp`]) for `--otlp-endpoint`.

pub mod body;
mod exposition;
pub mod otlp;
mod server;
pub mod text;
pub mod web;

pub use exposition::{Bookkeeping, Exposition, Options, Pins};
pub use server::{Scrape, serve};

/// `--metrics-label`: the workload label of every connect series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadLabel {
    /// `cgroup`: the caller's cgroup v2 id (`cgroup_id`), its names in `tcpconn_cgroup_info`.
    Cgroup,
    /// `container`: the caller's container id (`container_id`).
    Container,
}
