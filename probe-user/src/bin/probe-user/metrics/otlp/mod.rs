//! `--otlp-endpoint`: the metrics of `--metrics` pushed to an OpenTelemetry collector over
//! OTLP (gRPC or http/protobuf), every `OTEL_METRIC_EXPORT_INTERVAL` and once more at exit.
//!
//! The counting task builds the same [`Exposition`] a scrape gets and hands it over
//! ([`Exporter::hand`]); a task of its own converts it ([`convert`]) and sends it ([`push`])
//! within the timeout, so a slow or absent receiver never holds up counting or scrapes.
//! Configuration ([`config`]) is read and checked at start, before anything is attached.

mod config;
mod convert;
mod push;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use hyper::Uri;
use tokio::sync::watch;

use config::Config;

use super::Exposition;

/// The checked configuration and TLS set-up of `--otlp-endpoint`, made before attaching.
pub struct Prepared {
    config: Config,
    tls: Option<rustls::ClientConfig>,
}

/// `--otlp-endpoint [URL]` (empty: no URL given) with the process's environment, or the one
/// line that says what is wrong with them.
pub fn prepare(flag: &str) -> Result<Prepared, String> {
    let flag = Some(flag).filter(|f| !f.is_empty());
    let config = Config::from_env(flag, |name| std::env::var(name).ok())?;
    let tls = push::tls(&config)?;
    Ok(Prepared { config, tls })
}

/// Hands expositions to the pushing task, every interval and at the end.
pub struct Exporter {
    interval: tokio::time::Interval,
    latest: watch::Sender<push::Latest>,
    task: tokio::task::JoinHandle<push::Outcome>,
    endpoint: Uri,
}

impl Exporter {
    /// Starts the pushing task; `start` is when tracing started, the start of every
    /// cumulative series.
    pub fn start(prepared: Prepared, start: SystemTime) -> Exporter {
        let Prepared { config, tls } = prepared;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let node = std::env::var("K8S_NODE_NAME")
            .ok()
            .filter(|n| !n.is_empty());
        let resource = convert::resource(&config.resource, host.trim(), node.as_deref());
        let transport = push::Transport::new(&config, tls);
        let (latest, receiver) = watch::channel(None);
        let task = tokio::spawn(push::pusher(
            receiver,
            transport,
            config.endpoint.clone(),
            config.timeout,
            resource,
            unix_nanos(start),
        ));
        let period = config.interval;
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        eprintln!(
            "probe-user: pushing metrics over OTLP ({}) to {} every {}",
            config.protocol.name(),
            config.endpoint,
            humantime::format_duration(period)
        );
        Exporter {
            interval,
            latest,
            task,
            endpoint: config.endpoint,
        }
    }

    /// Completes when the next push is due.
    pub async fn tick(&mut self) {
        self.interval.tick().await;
    }

    /// Hands the counts as they are now to the pushing task (replacing one it has not taken
    /// yet: the newest carries every count).
    pub fn hand(&self, exposition: Exposition) {
        let now = unix_nanos(SystemTime::now());
        self.latest.send_replace(Some((Arc::new(exposition), now)));
    }

    /// Hands over the last exposition, waits for its push (bounded by the timeout) and says
    /// on stderr how the pushes went if any failed.
    pub async fn finish(self, last: Exposition) {
        self.hand(last);
        drop(self.latest);
        let outcome = match self.task.await {
            Ok(outcome) => outcome,
            Err(e) => {
                eprintln!("probe-user: OTLP pushing stopped: {e}");
                return;
            }
        };
        if let Some(e) = &outcome.last_error {
            eprintln!(
                "probe-user: the last OTLP push to {} failed, its counts are not there: {e}",
                self.endpoint
            );
        }
        if outcome.failures > 0 {
            eprintln!(
                "probe-user: {} of {} OTLP pushes failed",
                outcome.failures, outcome.pushes
            );
        }
    }
}

/// `time` in nanoseconds since the Unix epoch (0 before it).
fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
