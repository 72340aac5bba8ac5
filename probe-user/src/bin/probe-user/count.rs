//! `--count` and `--metrics`: the kernel counts connects; this prints its table every interval
//! and at exit, and answers scrapes with it (with `--stats`, the programs' statistics too).

use std::time::Duration;

use anyhow::Result;
use probe_user::{Formatter, Tracer};

use crate::{
    metrics,
    output::{BatchedStdout, Signals, until_signal},
    stats,
};

/// What to do with the kernel's counts.
pub struct Counting {
    pub tracer: Tracer,
    pub formatter: Formatter,
    /// `--count`: print a table this often and at the end.
    pub tables: Option<Duration>,
    /// `--metrics`: scrapes to answer.
    pub scrapes: Option<tokio::sync::mpsc::Receiver<metrics::Scrape>>,
    /// `--count-by destination` given explicitly: metrics carry a daddr label.
    pub daddr_labels: bool,
    /// `--metrics-label`.
    pub workload_label: Option<metrics::WorkloadLabel>,
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

    /// The bookkeeping and the table of [`Counting::update`], without the program statistics.
    fn table(&mut self, out: &mut Vec<u8>) {
        self.tracer.drain(|_| {});
        if self.tables.is_some() {
            let unix_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.formatter
                .write_counts(out, unix_s, &self.tracer.connect_counts());
        }
    }

    /// Answers one scrape with the counts as they are now.
    fn answer(&self, reply: metrics::Scrape) {
        let text = metrics::render(
            &self.tracer.connect_counts(),
            self.tracer.counters(),
            self.daddr_labels,
            self.workload_label,
            self.stats.then(|| self.tracer.program_stats()).as_deref(),
        );
        let _ = reply.send(text);
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
    let step = async |counting: &mut Counting, out: &mut Vec<u8>| {
        // The previous step's table is written by now (stdout): its program statistics
        // (stderr) follow it.
        if std::mem::take(&mut counting.stats_due) {
            stats::print_programs(&counting.tracer);
        }
        let scrape = async {
            match &mut counting.scrapes {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => counting.update(out),
            Some(reply) = scrape => counting.answer(reply),
        }
    };
    // At the end: detach first, so that the last table and the counters below account for
    // every connect a program saw. The program statistics follow once, with the rest of
    // `--stats`.
    let last = |counting: &mut Counting, out: &mut Vec<u8>| {
        counting.tracer.detach();
        counting.table(out);
    };
    if !until_signal(&mut counting, &mut signals, &mut out, step, last).await? {
        return Ok(());
    }
    let tracer = &mut counting.tracer;
    if counting.stats {
        stats::print(tracer, tracer.pending_calls());
    }
    tracer.reap_pending(Duration::ZERO);
    let counted: u64 = tracer.connect_counts().iter().map(|c| c.connects).sum();
    let counters = tracer.counters();
    eprintln!(
        "probe-user: {counted} connects counted, {} dropped, {} missed, {} malformed",
        counters.dropped, counters.missed, counters.malformed
    );
    crate::trace::warn_if_inexact(tracer);
    Ok(())
}
