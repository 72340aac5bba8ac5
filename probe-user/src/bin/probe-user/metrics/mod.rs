//! Prometheus / OpenMetrics exposition of the kernel's connect counts and of what was lost
//! ([`render()`]), and a small HTTP server for it ([`serve`]; what a client can do to it is
//! described in `server.rs`), for `probe-user --metrics`, with TLS and basic authentication
//! from `--web-config-file` ([`web`]).

mod render;
mod server;
pub mod web;

pub use render::render;
pub use server::{Scrape, serve};

/// `--metrics-label`: the workload label of every connect series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadLabel {
    /// `cgroup`: the caller's cgroup v2 path.
    Cgroup,
    /// `container`: the caller's container id.
    Container,
}

impl WorkloadLabel {
    /// The label's name.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadLabel::Cgroup => "cgroup",
            WorkloadLabel::Container => "container",
        }
    }
}
