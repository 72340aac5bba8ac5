//! The kernel's traced connections between ESTABLISHED and CLOSE (probe-ebpf's `life`, with
//! [`crate::TracerBuilder::lifetime`]): userspace accounts for the LRU's evictions and takes
//! what is left at the end, as connections still open, each with its counters so far (read by
//! the kernel side's `live_figures`, run once for each through `BPF_PROG_TEST_RUN`).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
    programs::{ProgramError, RawTracePoint, RawTracePointRunOptions, TestRun},
};
use probe_common::{
    CloseFigures, End,
    names::{map, program},
    state::{LiveConnection, counter},
};

use crate::{Error, maps::take_map};

/// The LRU hash `LIVE`.
pub(crate) struct Live {
    lru: HashMap<MapData, u64, LiveConnection>,
    /// Where `live_figures` leaves a connection's counters.
    figures: Array<MapData, CloseFigures>,
    /// Entries deleted by userspace (taken at the end).
    deleted: u64,
    /// The highest count of the LRU's evictions seen so far.
    evicted: AtomicU64,
    /// What named each connection's connect (`--names`, `--nat`), by its endpoints, for its
    /// close: a NAT destination is claimed once, and a DNS answer may be forgotten by then.
    /// Bounded like `LIVE` itself; a close whose connect found it full is left unnamed.
    naming: Namings,
}

/// A connect's DNS name and NAT destination.
type Naming = (Option<Arc<str>>, Option<SocketAddr>);

impl Live {
    /// Takes the map out of the loaded object.
    pub(crate) fn new(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Ok(Live {
            lru: take_map(ebpf, map::LIVE)?,
            figures: take_map(ebpf, map::OPEN_FIGURES)?,
            deleted: 0,
            evicted: AtomicU64::new(0),
            naming: Namings::default(),
        })
    }

    /// Keeps what named an established connect for its close.
    pub(crate) fn remember(&mut self, connect: &crate::ConnectEvent) {
        self.naming.remember(connect);
    }

    /// Gives a close's connect what named it when it was reported.
    pub(crate) fn recall(&mut self, connect: &mut crate::ConnectEvent) {
        self.naming.recall(connect);
    }

    /// How many connections are followed now.
    pub(crate) fn len(&self) -> usize {
        self.lru.keys().filter(Result::is_ok).count()
    }

    /// Once detached: removes and returns every connection held, each with its counters now
    /// if `ebpf`'s `live_figures` could read them (loaded, and the socket still holding the
    /// connection: not one that closed since the programs were detached).
    pub(crate) fn take_all(&mut self, ebpf: &Ebpf) -> Vec<(LiveConnection, Option<CloseFigures>)> {
        // Not loaded (said at attach): the connections go without counters.
        let mut reader: Option<&RawTracePoint> = ebpf
            .program(program::live_figures)
            .filter(|p| p.fd().is_ok())
            .and_then(|p| p.try_into().ok());
        let keys: Vec<u64> = self.lru.keys().filter_map(Result::ok).collect();
        let mut taken = Vec::with_capacity(keys.len());
        for key in keys {
            let Ok(live) = self.lru.get(&key, 0) else {
                continue;
            };
            let figures = match reader.map(|reader| self.read(reader, key)) {
                Some(Ok(figures)) => figures,
                // The kernel cannot run it (raw tracepoint programs run by BPF_PROG_TEST_RUN:
                // Linux 5.10 and later): said once, and the rest go without too.
                Some(Err(e)) => {
                    log::warn!(
                        "connections open at the end are reported without counters: running {}: {e}",
                        program::live_figures
                    );
                    reader = None;
                    None
                }
                None => None,
            };
            if self.lru.remove(&key).is_ok() {
                taken.push((live, figures));
            }
        }
        self.deleted += taken.len() as u64;
        taken
    }

    /// Socket `key`'s counters now, by running `reader` with it: `None` if it no longer holds
    /// its connection.
    fn read(&self, reader: &RawTracePoint, key: u64) -> Result<Option<CloseFigures>, ProgramError> {
        let mut args = [0; 12];
        args[0] = key;
        let run = RawTracePointRunOptions { args, cpu: None };
        reader.test_run(run)?;
        let figures = self.figures.get(&0, 0).ok();
        Ok(figures.filter(|f| f.end == End::Open as u32))
    }

    /// Closes that cannot be reported: connections the LRU evicted to make room for newer ones
    /// (a user holding more connections open than it holds), or replaced by a later connect of
    /// the same socket address whose close was missed. Every entry the kernel side added was
    /// removed by it, taken by userspace, is still there, or is lost. A lower bound while
    /// tracing (counters and map are not read at one instant), kept monotonic; exact once
    /// detached.
    pub(crate) fn lost(&self, total: impl Fn(u32) -> u64) -> u64 {
        let added = total(counter::LIVE_ADDED);
        let held = self.len() as u64;
        let removed = total(counter::LIVE_REMOVED);
        let now = added.saturating_sub(held + removed + self.deleted);
        self.evicted.fetch_max(now, Ordering::Relaxed).max(now)
    }
}

/// What named each followed connection's connect, by its endpoints, up to `limit` of them.
#[derive(Debug)]
struct Namings {
    by_endpoints: std::collections::HashMap<(SocketAddr, SocketAddr), Naming>,
    limit: usize,
}

impl Default for Namings {
    fn default() -> Self {
        Namings {
            by_endpoints: std::collections::HashMap::new(),
            limit: probe_common::limit::MAX_LIVE as usize,
        }
    }
}

impl Namings {
    fn remember(&mut self, connect: &crate::ConnectEvent) {
        let named = connect.dns_name.is_some() || connect.nat_dst.is_some();
        let established = connect
            .completion
            .is_some_and(|c| c.outcome == crate::Outcome::Established);
        if named && established && self.by_endpoints.len() < self.limit {
            let naming = (connect.dns_name.clone(), connect.nat_dst);
            self.by_endpoints.insert((connect.src, connect.dst), naming);
        }
    }

    fn recall(&mut self, connect: &mut crate::ConnectEvent) {
        // A server's connection has the same endpoints as its client's (a local one): only
        // the connect was named.
        if connect.role != crate::Role::Client {
            return;
        }
        if let Some((dns_name, nat_dst)) = self.by_endpoints.remove(&(connect.src, connect.dst)) {
            (connect.dns_name, connect.nat_dst) = (dns_name, nat_dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Completion, ConnectEvent, Outcome, event::tests::record};
    use probe_common::AF_INET;

    fn connect(sport: u16, outcome: Outcome) -> ConnectEvent {
        let mut event =
            ConnectEvent::from_record(&record(AF_INET, &[10, 0, 0, 1], sport, &[10, 0, 0, 2], 443))
                .unwrap();
        event.completion = Some(Completion {
            outcome,
            latency_ns: 1,
            errno: 0,
            syn_retransmits: 0,
            cause: None,
        });
        event
    }

    #[test]
    fn a_close_gets_its_connects_naming_once_and_the_store_is_bounded() {
        let mut namings = Namings {
            limit: 2,
            ..Namings::default()
        };
        let nat: SocketAddr = "10.1.0.7:8443".parse().unwrap();
        let mut named = connect(40000, Outcome::Established);
        (named.dns_name, named.nat_dst) = (Some("api.example".into()), Some(nat));
        namings.remember(&named);
        // Not established, or not named: nothing kept.
        let mut refused = connect(40001, Outcome::Refused);
        refused.dns_name = Some("down.example".into());
        namings.remember(&refused);
        namings.remember(&connect(40002, Outcome::Established));
        assert_eq!(namings.by_endpoints.len(), 1);
        // The close, decoded without names, gets them; a second close of the same endpoints not.
        let mut close = connect(40000, Outcome::Established);
        namings.recall(&mut close);
        assert_eq!(close.dns_name.as_deref(), Some("api.example"));
        assert_eq!(close.nat_dst, Some(nat));
        let mut again = connect(40000, Outcome::Established);
        namings.recall(&mut again);
        assert_eq!((again.dns_name, again.nat_dst), (None, None));
        // Full: a third named connection is not kept.
        for sport in [41000, 41001, 41002] {
            let mut c = connect(sport, Outcome::Established);
            c.dns_name = Some("x.example".into());
            namings.remember(&c);
        }
        assert_eq!(namings.by_endpoints.len(), 2);
    }
}
