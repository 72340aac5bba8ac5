//! `probe-user`: the command-line tracer, a thin layer over the `probe_user` library: arguments
//! ([`cli`]) onto a [`probe_user::TracerBuilder`], then events streamed ([`trace`]) or counts
//! printed ([`count`]) onto stdout ([`output`]) or a Prometheus endpoint ([`metrics`]), errors
//! as one line.

mod cli;
mod count;
mod metrics;
mod output;
mod stats;
mod trace;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;
use cli::{Attach, Cli};
use output::{BatchedStdout, Signals};
use probe_user::{CountBy, Family, Format, Formatter, Report, Tracer, WallClock};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line, not clap's usage block: the first line names the problem (completed by
            // the next when that lists the missing arguments or the possible values).
            eprintln!("probe-user: error: {}", cli::one_line(&e.to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Some(what) = &cli.generate {
        return cli::generate(what);
    }
    let report = match cli.report() {
        Ok(report) => report,
        Err(conflict) => {
            eprintln!("probe-user: error: {conflict}");
            return ExitCode::from(2);
        }
    };
    if let Some(contradiction) = cli.contradiction() {
        eprintln!("probe-user: error: {contradiction}");
        return ExitCode::from(2);
    }
    // Before anything is attached: a web config that cannot be used is a usage error, like a
    // bad option (restarting does not fix it).
    let web = match &cli.web_config_file {
        Some(path) => match metrics::web::load(path) {
            Ok(web) => Some(std::sync::Arc::new(web)),
            Err(e) => {
                eprintln!("probe-user: error: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    // The OTLP endpoint and the OTEL_* variables, checked before anything is attached.
    let otlp = match cli.otlp_endpoint.as_deref().map(metrics::otlp::prepare) {
        None => None,
        Some(Ok(prepared)) => Some(prepared),
        Some(Err(e)) => {
            eprintln!("probe-user: error: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("probe-user: error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, report, web, otlp)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<probe_user::Error>() {
                // Its message lists every backend's error with its causes already.
                Some(all @ probe_user::Error::NoBackend(_)) => {
                    eprintln!("probe-user: error: {all}")
                }
                _ => eprintln!("probe-user: error: {e:#}"),
            }
            // A filter value or option the library refused (before touching the kernel) is a
            // usage error, like those clap finds; anything else happened at run time.
            match e.downcast_ref::<probe_user::Error>() {
                Some(probe_user::Error::Filter(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(
    cli: Cli,
    report: Report,
    web: Option<std::sync::Arc<metrics::web::WebConfig>>,
    otlp: Option<metrics::otlp::Prepared>,
) -> Result<()> {
    let counting = cli.counting();
    let count_by = cli.count_by();
    let names = cli.names();
    // JSON lines carry every field, the workload's too; neither counts nor SystemTap's
    // formats show the caller's uid or name.
    let every_field = !counting && cli.format == Format::Json;
    let life = cli.format == Format::Life;
    let lifetime = cli.lifetime();
    let mut builder = Tracer::builder()
        .filter_ports(cli.filter_port)
        .filter_pids(cli.pid)
        .filter_uids(cli.uid)
        .filter_cgroups(cli.cgroup)
        .filter_containers(cli.container)
        .filter_netns(cli.netns)
        .filter_comms(cli.comm)
        .filter_destinations(cli.dst)
        .report(report)
        .max_series(cli.max_series)
        .identity(every_field)
        .caller_names(every_field || life)
        .lifetime(lifetime)
        .accepts(cli.accept)
        .program_stats(cli.stats);
    if let Some(btf) = cli.btf {
        builder = builder.btf_path(btf);
    }
    if let Attach::Only(backend) = cli.attach {
        builder = builder.backend(backend);
    }
    builder = builder.nat(cli.nat);
    if names {
        let default = probe_user::NamesConfig::default();
        builder = builder.names(probe_user::NamesConfig {
            grace: cli.names_grace.unwrap_or(default.grace),
            max: cli.names_max.map_or(default.max, |max| max as usize),
        });
    }
    if cli.ipv4 {
        builder = builder.family(Family::V4);
    } else if cli.ipv6 {
        builder = builder.family(Family::V6);
    }
    // Signals first: a SIGINT that arrives while attaching still ends the run cleanly.
    let signals = Signals::new()?;
    let tracer = builder.attach()?;
    // The start of every cumulative series pushed over OTLP.
    let started = std::time::SystemTime::now();
    for skipped in tracer.fallbacks() {
        eprintln!(
            "probe-user: not attaching with {}: {}",
            skipped.backend,
            skipped.reason()
        );
    }
    if let Some(rejected) = tracer.atomics_rejected() {
        eprintln!(
            "probe-user: loading the eBPF object without BPF atomics: {} (RUST_LOG=debug shows why)",
            rejected.error
        );
    }
    let backend = tracer.backend();
    let mut formatter = Formatter::new(cli.format, WallClock::measure());
    if counting {
        formatter = formatter.count_by(count_by);
    }
    let out = BatchedStdout::default();
    if counting {
        let scrapes = match cli.metrics {
            Some(addr) => {
                let scheme = match web.as_ref().is_some_and(|web| web.tls.is_some()) {
                    true => "https",
                    false => "http",
                };
                let (bound, scrapes) = metrics::serve(addr, web).await?;
                // With port 0 the kernel picks one: say which.
                eprintln!("probe-user: serving metrics on {scheme}://{bound}/metrics");
                Some(scrapes)
            }
            None => None,
        };
        let otlp = otlp.map(|prepared| metrics::otlp::Exporter::start(prepared, started));
        eprintln!("Counting TCP connects by {count_by} ({backend}). Hit Ctrl-C to end.");
        let counting = count::Counting {
            events: tracer.into_stream()?,
            formatter,
            tables: cli.count.then_some(cli.interval),
            scrapes,
            otlp,
            options: metrics::Options {
                with_daddr: cli.count_by == Some(CountBy::Destination),
                with_names: names,
                with_nat: cli.nat,
                label: cli.metrics_label,
                with_accepts: cli.accept,
            },
            pins: metrics::Pins::default(),
            writers: std::sync::Arc::new(tokio::sync::Semaphore::new(metrics::body::WRITERS)),
            retire_after: cli.retire_after,
            last_retire: std::time::Instant::now(),
            stats: cli.stats,
            stats_due: false,
        };
        return count::count_until_signal(counting, out, signals).await;
    }
    let streaming = trace::Streaming {
        format: cli.format,
        discard: cli.discard,
        stats: cli.stats,
    };
    trace::trace_until_signal(tracer, formatter, streaming, out, signals).await
}
