//! Streaming: every connect reported as it happens, one line each, until a signal.

use std::time::Duration;

use anyhow::Result;
use probe_user::{EventStream, Format, Formatter, Tracer};

use crate::{
    output::{BatchedStdout, Signals, until_signal},
    stats,
};

/// What the streaming run is told by the command line.
pub struct Streaming {
    pub format: Format,
    /// `--discard`: decode (and format) every event but write nothing.
    pub discard: Option<String>,
    /// `--stats`: print the program statistics at exit.
    pub stats: bool,
}

/// Prints every connect `tracer` reports, formatted by `formatter`, until a signal; then the
/// counts of what was printed and lost.
pub async fn trace_until_signal(
    tracer: Tracer,
    formatter: Formatter,
    streaming: Streaming,
    mut out: BatchedStdout,
    mut signals: Signals,
) -> Result<()> {
    let backend = tracer.backend();
    let events = tracer.into_stream()?;
    eprintln!(
        "Tracing TCP connects ({} format, {backend}). Hit Ctrl-C to end.",
        streaming.format
    );
    if streaming.format == Format::Life && streaming.discard.is_none() {
        // Through std's stdout, which flushes the line: before any batch is written.
        print!("{}", Formatter::LIFE_HEADER);
    }

    let discard = streaming.discard;
    let mut printing = (events, formatter);
    let step = async |(events, formatter): &mut (EventStream, Formatter), out: &mut Vec<u8>| {
        // Lines follow the wall clock (NTP steps, `date -s`): it is read again as each batch
        // arrives, before its first line is written.
        let mut first = true;
        let write = |event: &probe_user::Event| {
            match discard.as_deref() {
                Some("decoded") => return,
                Some(_) => {
                    formatter.write(out, event);
                    out.clear();
                    return;
                }
                None => {}
            }
            if std::mem::take(&mut first) {
                formatter.follow_clock();
            }
            formatter.write(out, event);
        };
        events.next_batch(write).await;
    };
    // At the end: detach first, so that the last drain sees every event a program emitted and
    // the counters below account for every connect a program saw.
    let last = |(events, formatter): &mut (EventStream, Formatter), out: &mut Vec<u8>| {
        events.detach();
        formatter.follow_clock();
        events.drain(|event| formatter.write(out, event));
        if discard.is_some() {
            out.clear();
        }
    };
    if !until_signal(&mut printing, &mut signals, &mut out, step, last).await? {
        return Ok(());
    }
    let events = &mut printing.0;
    // Calls still in flight at the end will not be reported: counted with the missed ones
    // below, after the in-flight count is shown.
    let in_flight = events.tracer().pending_calls();
    events.reap_pending(Duration::ZERO);
    let tracer = events.tracer();
    if streaming.stats {
        stats::print(tracer, in_flight);
    }
    let counters = tracer.counters();
    eprintln!(
        "probe-user: {} events printed, {} dropped, {} missed, {} malformed",
        counters.events, counters.dropped, counters.missed, counters.malformed
    );
    warn_if_inexact(tracer);
    Ok(())
}

/// Says so when the end could not wait for the programs' last runs (see
/// `Tracer::exit_inexact`).
pub fn warn_if_inexact(tracer: &Tracer) {
    if tracer.exit_inexact() {
        eprintln!(
            "probe-user: warning: could not wait for the programs' last runs; waited 50 ms instead, so a connect recorded later is not in the counts above"
        );
    }
}
