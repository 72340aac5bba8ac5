//! What a tracer reports ([`Report`]), and its one translation into the kernel side's globals
//! ([`Report::globals`]).

use std::time::Duration;

use probe_common::{CountBy, OutcomeConfig};

use crate::Mode;

/// What a [`crate::Tracer`] reports for the connects it admits: their times only, an event for
/// each, or counts kept in the kernel. Combinations that cannot work (counts or outcomes of
/// connects whose destination is not read) cannot be expressed; [`Report::from_switches`]
/// checks independent switches, as a command line has them.
///
/// ```
/// use probe_user::{CountBy, OutcomeFilter, Outcomes, Report};
///
/// // An event per connect once its outcome is known, failures only.
/// let failures = Report::Events {
///     outcome: Outcomes::Tracked(OutcomeFilter::default().failed_only(true)),
/// };
/// // Connects counted per destination port and per caller's cgroup, with their outcomes.
/// let counts = Report::Counts {
///     by: CountBy::Port,
///     per_cgroup: true,
///     outcome: Outcomes::Tracked(OutcomeFilter::default()),
/// };
/// assert_eq!(counts.count_by(), Some(CountBy::Port));
/// assert_eq!(failures.count_by(), None);
/// assert_eq!(Report::default(), Report::Events { outcome: Outcomes::Untracked });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Report {
    /// Only the time and function of each call (as `--format minimal` prints them): no
    /// return probe is attached, so this costs about half as much. Events carry only
    /// `boot_ns` and `family`.
    Timestamps,
    /// An event for each connect, with its source, destination and return value (and with
    /// outcomes, how it ended).
    Events {
        /// When a connect is reported, and which.
        outcome: Outcomes,
    },
    /// Connects counted in the kernel, per destination, port, cgroup or container (per cgroup
    /// in the kernel, merged by container here), instead of an event for each: nothing
    /// crosses to userspace per connect; read the counts with
    /// [`crate::Tracer::connect_counts`]. By DNS name ([`CountBy::Name`]), or with the
    /// tracer's names or NAT destinations, the kernel cannot count them: each connect is then
    /// an event that the tracer counts as it drains it
    /// ([`crate::Tracer::counts_in_userspace`]), so drain (or stream) as for events.
    Counts {
        /// What connects are counted by.
        by: CountBy,
        /// By destination or port: per caller's cgroup too
        /// ([`crate::ConnectCount::workload`]), as metrics labelled by cgroup or container
        /// need. Implied by cgroup or container.
        per_cgroup: bool,
        /// When a connect is counted, and which (with outcomes: by outcome and latency bucket
        /// too).
        outcome: Outcomes,
    },
}

impl Default for Report {
    /// An event for each connect at its call's return.
    fn default() -> Self {
        Report::Events {
            outcome: Outcomes::Untracked,
        }
    }
}

/// When a connect is reported (or counted), and which connects are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcomes {
    /// At its call's return, whether the call succeeded or not.
    #[default]
    Untracked,
    /// Only calls that get as far as sending a SYN, from a single hook on `tcp_connect` (which
    /// sees the whole 4-tuple) instead of an entry and a return probe: cheaper, but calls
    /// that fail are not reported and `ret` is always 0. The time is taken inside the call
    /// rather than at its entry.
    SuccessesOnly,
    /// Once its outcome is known ([`crate::Completion`] in every event): when its socket
    /// leaves SYN_SENT, or at once if the call failed. Connects still in SYN_SENT when
    /// tracing ends come out of the last [`crate::Tracer::drain`] after
    /// [`crate::Tracer::detach`] as [`crate::Outcome::Pending`]. With the kprobe and fentry
    /// backends this attaches one more program, on `sock:inet_sock_set_state`.
    Tracked(OutcomeFilter),
}

/// Which connects with a known outcome are reported, filtered in the kernel (default: all).
///
/// ```
/// use std::time::Duration;
/// use probe_user::OutcomeFilter;
///
/// let slow_failures = OutcomeFilter::default()
///     .failed_only(true)
///     .min_latency(Duration::from_millis(100));
/// assert!(slow_failures.is_failed_only());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeFilter {
    failed_only: bool,
    min_latency: Duration,
}

impl OutcomeFilter {
    /// Only connects that did not come up (every outcome but established), or all.
    pub fn failed_only(mut self, yes: bool) -> Self {
        self.failed_only = yes;
        self
    }

    /// Only connects whose latency is at least `min` (zero: all).
    pub fn min_latency(mut self, min: Duration) -> Self {
        self.min_latency = min;
        self
    }

    /// Whether only connects that did not come up are reported.
    pub fn is_failed_only(&self) -> bool {
        self.failed_only
    }

    /// The least latency of a reported connect.
    pub fn least_latency(&self) -> Duration {
        self.min_latency
    }

    /// [`OutcomeFilter::least_latency`] in nanoseconds, as the kernel side compares it.
    pub(crate) fn min_latency_ns(&self) -> u64 {
        u64::try_from(self.min_latency.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Switches of [`Report::from_switches`] that do not go together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// Counting needs each connect's destination, which timestamps alone do not read.
    #[error(
        "counting needs each connect's destination, which timestamps-only tracing does not read"
    )]
    TimestampsCounted,
    /// Outcomes need each call's return and socket, which timestamps alone do not follow.
    #[error(
        "outcomes need each connect call's return and socket, which timestamps-only tracing does not follow"
    )]
    TimestampsOutcomes,
    /// Outcomes need each call's return and socket, which successes only do not follow.
    #[error(
        "outcomes need each connect call's return and socket, which successes-only tracing does not follow"
    )]
    SuccessesOutcomes,
    /// Following connections to their close needs an event for each connect that came up.
    #[error(
        "following connections to their close needs each connect's outcome, established ones included: not timestamps only, successes only or failed only"
    )]
    LifetimeNeedsOutcomes,
    /// Accepted connections are reported (or counted) from a record each, which
    /// timestamps-only tracing does not make.
    #[error(
        "accepted connections are reported from a record of each, which timestamps-only tracing does not make"
    )]
    TimestampsAccepts,
}

/// The kernel side's globals that say what to report, set at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Globals {
    /// `ENTRY_ONLY`: timestamps, from the entry hooks alone.
    pub entry_only: u8,
    /// `COUNT_BY`: a `CountBy`, or `CountBy::OFF` for events.
    pub count_by: u8,
    /// `COUNT_CGROUP`: count keys carry the caller's cgroup id.
    pub count_cgroup: u8,
    /// `OUTCOME`: outcomes and their filters.
    pub outcome: OutcomeConfig,
    /// `IDENTITY`: records carry the caller's identity (asked for, or counted per cgroup).
    pub identity: u8,
    /// `CALLER_NAMES`: records carry the caller's uid and comm.
    pub caller_names: u8,
}

impl Report {
    /// The report of independent switches, as a command line has them (timestamps only,
    /// successes only, outcomes with their filter, counts by what and whether per cgroup
    /// too), or the first two that conflict: the one place they are checked against each
    /// other.
    ///
    /// ```
    /// use probe_user::{Conflict, CountBy, OutcomeFilter, Report};
    ///
    /// let outcomes = Some(OutcomeFilter::default());
    /// assert_eq!(
    ///     Report::from_switches(false, true, outcomes, None),
    ///     Err(Conflict::SuccessesOutcomes)
    /// );
    /// let report = Report::from_switches(false, true, None, Some((CountBy::Port, false)));
    /// assert_eq!(report.unwrap().count_by(), Some(CountBy::Port));
    /// ```
    pub fn from_switches(
        timestamps_only: bool,
        successes_only: bool,
        outcome: Option<OutcomeFilter>,
        counts: Option<(CountBy, bool)>,
    ) -> Result<Report, Conflict> {
        match (timestamps_only, counts, outcome) {
            (true, Some(_), _) => return Err(Conflict::TimestampsCounted),
            (true, None, Some(_)) => return Err(Conflict::TimestampsOutcomes),
            // Successes only hooks `tcp_connect`, which has the destination anyway: its events
            // carry every field, whether the caller shows them or not.
            (true, None, None) if !successes_only => return Ok(Report::Timestamps),
            _ => {}
        }
        let outcome = match (outcome, successes_only) {
            (Some(_), true) => return Err(Conflict::SuccessesOutcomes),
            (Some(filter), false) => Outcomes::Tracked(filter),
            (None, true) => Outcomes::SuccessesOnly,
            (None, false) => Outcomes::Untracked,
        };
        Ok(match counts {
            Some((by, per_cgroup)) => Report::Counts {
                by,
                per_cgroup,
                outcome,
            },
            None => Report::Events { outcome },
        })
    }

    /// What connects are counted by, when counting.
    pub fn count_by(&self) -> Option<CountBy> {
        match self {
            Report::Counts { by, .. } => Some(*by),
            _ => None,
        }
    }

    /// Which connects with a known outcome are reported, when outcomes are tracked.
    pub fn outcome_filter(&self) -> Option<OutcomeFilter> {
        match self.outcomes() {
            Outcomes::Tracked(filter) => Some(filter),
            _ => None,
        }
    }

    /// When connects are reported, and which.
    fn outcomes(&self) -> Outcomes {
        match self {
            Report::Timestamps => Outcomes::Untracked,
            Report::Events { outcome } | Report::Counts { outcome, .. } => *outcome,
        }
    }

    /// Whether count keys carry the caller's cgroup: counting by cgroup or container, or per
    /// cgroup too.
    pub(crate) fn counts_per_cgroup(&self) -> bool {
        match self {
            Report::Counts { by, per_cgroup, .. } => {
                *per_cgroup || matches!(by, CountBy::Cgroup | CountBy::Container)
            }
            _ => false,
        }
    }

    /// The hooks this report needs.
    pub(crate) fn mode(&self) -> Mode {
        match (self, self.outcomes()) {
            (Report::Timestamps, _) => Mode::TimestampsOnly,
            (_, Outcomes::SuccessesOnly) => Mode::SuccessesOnly,
            _ => Mode::Full,
        }
    }

    /// The kernel side's globals for this report, with the caller's identity read if asked
    /// for (`identity`, or implied by counts per cgroup) and its uid and comm if asked for.
    pub(crate) fn globals(&self, identity: bool, caller_names: bool) -> Globals {
        let outcome = match self.outcome_filter() {
            None => OutcomeConfig::OFF,
            Some(filter) => OutcomeConfig {
                enabled: 1,
                failed_only: u8::from(filter.failed_only),
                min_latency_ns: filter.min_latency_ns(),
                ..OutcomeConfig::OFF
            },
        };
        Globals {
            entry_only: u8::from(*self == Report::Timestamps),
            count_by: self.count_by().map_or(CountBy::OFF, |by| by as u8),
            count_cgroup: u8::from(self.counts_per_cgroup()),
            outcome,
            identity: u8::from(identity || self.counts_per_cgroup()),
            caller_names: u8::from(caller_names),
        }
    }
}

#[cfg(test)]
mod tests {
    use probe_common::Named as _;

    use super::*;

    const OFF: OutcomeConfig = OutcomeConfig::OFF;

    fn globals(report: Report) -> Globals {
        report.globals(false, true)
    }

    #[test]
    fn events_and_timestamps_set_no_counting() {
        let events = Globals {
            entry_only: 0,
            count_by: CountBy::OFF,
            count_cgroup: 0,
            outcome: OFF,
            identity: 0,
            caller_names: 1,
        };
        assert_eq!(globals(Report::default()), events);
        assert_eq!(Report::default().mode(), Mode::Full);
        let timestamps = Globals {
            entry_only: 1,
            ..events
        };
        assert_eq!(globals(Report::Timestamps), timestamps);
        assert_eq!(Report::Timestamps.mode(), Mode::TimestampsOnly);
        let successes = Report::Events {
            outcome: Outcomes::SuccessesOnly,
        };
        assert_eq!(globals(successes), events);
        assert_eq!(successes.mode(), Mode::SuccessesOnly);
        let quiet = Report::default().globals(true, false);
        assert_eq!((quiet.identity, quiet.caller_names), (1, 0));
    }

    #[test]
    fn outcomes_set_their_filters() {
        let filter = OutcomeFilter::default()
            .failed_only(true)
            .min_latency(Duration::from_millis(250));
        let report = Report::Events {
            outcome: Outcomes::Tracked(filter),
        };
        let want = OutcomeConfig {
            enabled: 1,
            failed_only: 1,
            _pad: [0; 6],
            min_latency_ns: 250_000_000,
        };
        assert_eq!(globals(report).outcome, want);
        assert_eq!(report.mode(), Mode::Full);
        let all = Report::Events {
            outcome: Outcomes::Tracked(OutcomeFilter::default()),
        };
        let want = OutcomeConfig { enabled: 1, ..OFF };
        assert_eq!(globals(all).outcome, want);
        let forever = OutcomeFilter::default().min_latency(Duration::MAX);
        let report = Report::Events {
            outcome: Outcomes::Tracked(forever),
        };
        assert_eq!(globals(report).outcome.min_latency_ns, u64::MAX);
    }

    #[test]
    fn counts_carry_the_cgroup_when_per_cgroup_or_by_workload() {
        for &by in CountBy::ALL {
            for per_cgroup in [false, true] {
                let report = Report::Counts {
                    by,
                    per_cgroup,
                    outcome: Outcomes::Untracked,
                };
                let by_workload = matches!(by, CountBy::Cgroup | CountBy::Container);
                let cgroup = u8::from(per_cgroup || by_workload);
                let g = globals(report);
                assert_eq!(
                    (g.count_by, g.count_cgroup, g.identity),
                    (by as u8, cgroup, cgroup)
                );
                assert_eq!((g.entry_only, g.outcome), (0, OFF));
                assert_eq!(report.mode(), Mode::Full);
            }
        }
        let counted_successes = Report::Counts {
            by: CountBy::Port,
            per_cgroup: false,
            outcome: Outcomes::SuccessesOnly,
        };
        assert_eq!(counted_successes.mode(), Mode::SuccessesOnly);
    }

    #[test]
    fn switches_conflict_once() {
        let filter = Some(OutcomeFilter::default());
        let counts = Some((CountBy::Destination, false));
        let cases = [
            // (timestamps only, successes only, outcomes, counts)
            ((true, false, None, None), Ok(Report::Timestamps)),
            (
                (true, false, None, counts),
                Err(Conflict::TimestampsCounted),
            ),
            (
                (true, false, filter, None),
                Err(Conflict::TimestampsOutcomes),
            ),
            (
                (true, false, filter, counts),
                Err(Conflict::TimestampsCounted),
            ),
            (
                (false, true, filter, None),
                Err(Conflict::SuccessesOutcomes),
            ),
            (
                (true, true, filter, None),
                Err(Conflict::TimestampsOutcomes),
            ),
            ((true, true, None, counts), Err(Conflict::TimestampsCounted)),
            (
                (true, true, None, None),
                Ok(Report::Events {
                    outcome: Outcomes::SuccessesOnly,
                }),
            ),
            (
                (false, true, None, counts),
                Ok(Report::Counts {
                    by: CountBy::Destination,
                    per_cgroup: false,
                    outcome: Outcomes::SuccessesOnly,
                }),
            ),
            (
                (false, false, filter, counts),
                Ok(Report::Counts {
                    by: CountBy::Destination,
                    per_cgroup: false,
                    outcome: Outcomes::Tracked(OutcomeFilter::default()),
                }),
            ),
            ((false, false, None, None), Ok(Report::default())),
        ];
        for ((timestamps, successes, outcome, counts), want) in cases {
            let got = Report::from_switches(timestamps, successes, outcome, counts);
            assert_eq!(got, want, "{timestamps} {successes} {outcome:?} {counts:?}");
        }
    }
}
