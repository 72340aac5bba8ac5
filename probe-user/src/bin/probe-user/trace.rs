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

    let discard = streaming.discard;
    let mut printing = (events, formatter);
    let step = async |(events, formatter): &mut (EventStream, Formatter), out: &mut Vec<u8>| {
        // Lines follow the wall clock (NTP steps, `date -s`): it is read again as each batch
        // arrives, before its first line is written.
        let mut first = true;
        let write = |event: &probe_user::ConnectEvent| {
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
        let tracer = events.tracer_mut();
        tracer.detach();
        formatter.follow_clock();
        tracer.drain(|event| formatter.write(out, event));
        if discard.is_some() {
            out.clear();
        }
    };
    if !until_signal(&mut printing, &mut signals, &mut out, step, last).await? {
        return Ok(());
    }
    let tracer = printing.0.tracer_mut();
    if streaming.stats {
        stats::print(tracer);
    }
    // Calls still in flight now will not be reported: count them with the missed ones.
    tracer.reap_pending(Duration::ZERO);
    let counters = tracer.counters();
    eprintln!(
        "probe-user: {} events printed, {} dropped, {} missed, {} malformed",
        counters.events, counters.dropped, counters.missed, counters.malformed
    );
    Ok(())
}
