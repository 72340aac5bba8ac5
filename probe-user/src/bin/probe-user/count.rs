//! `--count`, `--metrics` and `--otlp-endpoint`: the kernel counts connects; this prints its
//! table every interval and at exit, answers scrapes with it and hands it to the OTLP pusher
//! (with `--stats`, the programs' statistics too).

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use probe_user::{EventStream, Formatter};

use crate::{
    metrics,
    output::{BatchedStdout, Signals, until_signal},
    stats,
};

/// What to do with the kernel's counts.
pub struct Counting {
    /// The tracer, as a stream: with counts kept in userspace (`--names`, `--nat`) its events
    /// are counted as they come.
    pub events: EventStream,
    pub formatter: Formatter,
    /// `--count`: print a table this often and at the end.
    pub tables: Option<Duration>,
    /// `--metrics`: scrapes to answer.
    pub scrapes: Option<tokio::sync::mpsc::Receiver<metrics::Scrape>>,
    /// `--otlp-endpoint`: where each export's exposition goes.
    pub otlp: Option<metrics::otlp::Exporter>,
    /// The labels of the metrics' series.
    pub options: metrics::Options,
    /// The expositions being written ([`metrics::body::WRITERS`]).
    pub writers: Arc<tokio::sync::Semaphore>,
    /// The names each cgroup's series were first exported with.
    pub pins: metrics::Pins,
    /// `--retire-after`, and when gone cgroups were last looked for.
    pub retire_after: Duration,
    pub last_retire: std::time::Instant,
    /// `--stats`: the programs' run counts and times with every table (on stderr) and in every
    /// scrape, and everything `--stats` prints at exit.
    pub stats: bool,
    /// A table was printed with `--stats`: its program statistics follow once it is written.
    pub stats_due: bool,
}

impl Counting {
    /// Keeps the bookkeeping going (no events come through the ring buffer, but calls whose
    /// return was missed are reaped) and appends the count table, if tables are printed.
    fn update(&mut self, out: &mut Vec<u8>) {
        self.table(out);
        self.stats_due = self.tables.is_some() && self.stats;
    }

    /// Every `--retire-after` / 4 (at most a minute), retires the counts of cgroups gone
    /// for `--retire-after`.
    fn retire(&mut self) {
        let every = (self.retire_after / 4).min(Duration::from_secs(60));
        if self.last_retire.elapsed() < every {
            return;
        }
        self.last_retire = std::time::Instant::now();
        let retired = self.events.retire_gone_cgroups(self.retire_after);
        if !retired.is_empty() {
            log::info!(
                "retired {} rows of cgroups gone for {}",
                retired.len(),
                humantime::format_duration(self.retire_after)
            );
            self.pins.retire(&retired, self.options);
        }
    }

    /// The bookkeeping and the table of [`Counting::update`], without the program statistics.
    fn table(&mut self, out: &mut Vec<u8>) {
        self.events.drain(|_| {});
        if self.tables.is_some() {
            let unix_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.formatter
                .write_counts(out, unix_s, &self.events.tracer().connect_counts());
        }
    }

    /// The metrics as they are now: what a scrape or an OTLP export sends.
    pub fn exposition(&mut self) -> metrics::Exposition {
        // What came since the last batch, counted in userspace (nothing without a tally).
        self.events.drain(|_| {});
        let tracer = self.events.tracer();
        let rows = tracer.connect_counts();
        let (series, max_series) = tracer.series();
        let retired = tracer.retired();
        let book = metrics::Bookkeeping {
            counters: tracer.counters(),
            series: series as u64,
            max_series: u64::from(max_series),
            retired_series: retired.series,
            retired_connects: retired.connects,
        };
        let programs = self.stats.then(|| tracer.program_stats());
        metrics::Exposition::collect(
            &rows,
            book,
            self.options,
            &mut self.pins,
            programs.as_deref(),
        )
    }

    /// Hands the counts as they are now to the OTLP pusher.
    fn export(&mut self) {
        let exposition = self.exposition();
        if let Some(otlp) = &self.otlp {
            otlp.hand(exposition);
        }
    }

    /// Answers one scrape with the counts as they are now (read here, written out as the
    /// client takes them), or as busy if [`metrics::body::WRITERS`] expositions are being
    /// written.
    fn answer(&mut self, reply: metrics::Scrape) {
        if reply.is_closed() {
            return;
        }
        let Ok(writer) = Arc::clone(&self.writers).try_acquire_owned() else {
            let _ = reply.send(None);
            return;
        };
        let _ = reply.send(Some(metrics::body::exposition(self.exposition(), writer)));
    }
}

/// `--count` / `--metrics`: prints the kernel's count table every interval and at the end,
/// and answers scrapes, until a signal.
pub async fn count_until_signal(
    mut counting: Counting,
    mut out: BatchedStdout,
    mut signals: Signals,
) -> Result<()> {
    // Without --count, the tick only keeps the bookkeeping going.
    let period = counting.tables.unwrap_or(Duration::from_secs(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // Retirement looks every second whether it is due, whatever the tables' interval.
    let second = Duration::from_secs(1);
    let mut retire = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    let step = async |counting: &mut Counting, out: &mut Vec<u8>| {
        // The previous step's table is written by now (stdout): its program statistics
        // (stderr) follow it.
        if std::mem::take(&mut counting.stats_due) {
            stats::print_programs(counting.events.tracer());
        }
        let (scrapes, otlp) = (&mut counting.scrapes, &mut counting.otlp);
        // Counted from events: each batch as it comes (nothing to wait for otherwise).
        let tallied = counting.events.tracer().counts_in_userspace();
        let events = &mut counting.events;
        let batch = async {
            match tallied {
                true => events.next_batch(|_| {}).await,
                false => std::future::pending().await,
            }
        };
        let scrape = async {
            match scrapes {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let export = async {
            match otlp {
                Some(otlp) => otlp.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => counting.update(out),
            _ = retire.tick() => counting.retire(),
            Some(reply) = scrape => counting.answer(reply),
            () = export => counting.export(),
            _ = batch => {}
        }
    };
    // At the end: detach first, so that the last table and the counters below account for
    // every connect a program saw. The program statistics follow once, with the rest of
    // `--stats`.
    let last = |counting: &mut Counting, out: &mut Vec<u8>| {
        counting.events.detach();
        counting.table(out);
    };
    if !until_signal(&mut counting, &mut signals, &mut out, step, last).await? {
        return Ok(());
    }
    let events = &mut counting.events;
    if counting.stats {
        stats::print(events.tracer(), events.tracer().pending_calls());
    }
    events.reap_pending(Duration::ZERO);
    // The last push, after the detach: it has every connect.
    if let Some(otlp) = counting.otlp.take() {
        otlp.finish(counting.exposition()).await;
    }
    let tracer = counting.events.tracer();
    let counted: u64 = tracer.connect_counts().iter().map(|c| c.connects).sum();
    let counters = tracer.counters();
    let retired = tracer.retired();
    // With --accept the rows count accepts too.
    let what = match counting.options.with_accepts {
        true => "connects and accepts",
        false => "connects",
    };
    eprintln!(
        "probe-user: {} {what} counted, {} dropped, {} missed, {} malformed",
        counted + retired.connects,
        counters.dropped,
        counters.missed,
        counters.malformed
    );
    if counters.overflow > 0 || retired.series > 0 {
        let (_, max_series) = tracer.series();
        eprintln!(
            "probe-user: {} {what} counted as \"other\" beyond --max-series {max_series}, {} of retired cgroups",
            counters.overflow, retired.connects
        );
    }
    crate::trace::warn_if_inexact(tracer);
    Ok(())
}
