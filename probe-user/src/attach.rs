//! [`TracerBuilder::attach`]: the options turned into an attached [`Tracer`], through the
//! stages in `loader` (validate, prepare, then for each backend tried: load, fill the filters)
//! and `backend` (attach), falling back from one backend to the next, and from the object with
//! BPF atomics to the one without where the kernel refuses it.

use probe_common::{Backend, CountBy};

use crate::{
    BackendError, Error, Report, Tracer, TracerBuilder, backend, error::BackendErrors, loader,
    loader::Loaded, tally::TallyConfig,
};

impl Tracer {
    /// A builder with no filters, tracing both families, reporting an event for each connect.
    ///
    /// ```no_run
    /// use probe_user::{Event, Tracer};
    ///
    /// let mut tracer = Tracer::builder().filter_ports([80]).attach()?;
    /// tracer.drain(|event| {
    ///     if let Event::Connect(c) = event {
    ///         println!("{} connected to {}", c.pid, c.dst)
    ///     }
    /// });
    /// # Ok::<(), probe_user::Error>(())
    /// ```
    pub fn builder() -> TracerBuilder {
        TracerBuilder::default()
    }
}

impl TracerBuilder {
    /// Checks the options, privileges and kernel features, loads the programs and attaches them
    /// with the chosen backend, or else the first of [`Backend::AUTO_ORDER`] that works (see
    /// [`Tracer::fallbacks`]). Tracing has started when this returns; on an error nothing stays
    /// loaded or attached.
    pub fn attach(mut self) -> Result<Tracer, Error> {
        let started = std::time::Instant::now();
        self.follow_lifetimes()?;
        if self.accepts && matches!(self.report, Report::Timestamps) {
            return Err(crate::Conflict::TimestampsAccepts.into());
        }
        let tally = self.count_in_userspace();
        let mut startup = crate::Startup::default();
        let keys = loader::validate(&self)?;
        let mut prepared = loader::prepare(&self, &mut startup)?;
        // Checking privileges and features counts as loading.
        startup.load = started.elapsed() - startup.btf;
        // Before attaching, so that every run of every program is accounted.
        let stats = if self.program_stats {
            Some(
                aya::sys::enable_stats(aya::sys::Stats::RunTime)
                    .map_err(|e| Error::Stats(e.io_error))?,
            )
        } else {
            None
        };
        // Each backend gets an object loaded for it (maps sized for what it uses): a fallback
        // costs a second load, on kernels without the backend tried first.
        let mut backends: Vec<Backend> = self
            .backend
            .map_or(Backend::AUTO_ORDER.to_vec(), |backend| vec![backend]);
        backends.reverse();
        let mut fallbacks = Vec::new();
        let mut atomics_rejected = None;
        while let Some(backend) = backends.pop() {
            let loading = std::time::Instant::now();
            let mut ebpf = loader::load(&self, &keys, &prepared, backend)?;
            let logger = loader::start_logger(&mut ebpf)?;
            loader::fill_filters(&mut ebpf, &self, &keys)?;
            startup.load += loading.elapsed();
            let attaching = std::time::Instant::now();
            let attached = backend::attach(&mut ebpf, backend, &self, prepared.functions.as_ref());
            startup.attach += attaching.elapsed();
            match attached {
                Ok(()) => {
                    let failure_hooks = if self.report.outcome_filter().is_some()
                        && let Some(packets) = &prepared.packets
                    {
                        let hooking = std::time::Instant::now();
                        let hooks =
                            backend::attach_failure_hooks(&mut ebpf, packets.drops.is_some());
                        startup.attach += hooking.elapsed();
                        hooks
                    } else {
                        crate::FailureHooks::default()
                    };
                    if self.names.is_some() {
                        let hooking = std::time::Instant::now();
                        backend::attach_names(&mut ebpf).map_err(Error::Names)?;
                        startup.attach += hooking.elapsed();
                    }
                    if self.nat {
                        let hooking = std::time::Instant::now();
                        backend::attach_nat(&mut ebpf).map_err(Error::Nat)?;
                        startup.attach += hooking.elapsed();
                    }
                    let mut trampolines = false;
                    if self.accepts {
                        let hooking = std::time::Instant::now();
                        trampolines =
                            backend::attach_accepts(&mut ebpf, prepared.functions.as_ref())
                                .map_err(Error::Accepts)?;
                        startup.attach += hooking.elapsed();
                    }
                    if self.lifetime {
                        // Without it the connections open at the end are reported all the same,
                        // without their counters.
                        if let Err(e) = backend::load_live_figures(&mut ebpf) {
                            log::warn!("connections open at the end will have no counters: {e}");
                        }
                    }
                    let loaded = Loaded {
                        tally,
                        nat: self.nat,
                        lifetime: self.lifetime,
                        trampolines,
                        names: self.names,
                        failure_hooks,
                        backend,
                        fallbacks,
                        atomics: prepared.atomics,
                        atomics_rejected,
                        report: self.report,
                        identity: self.needs_identity(),
                        max_series: self.max_series,
                    };
                    return Tracer::new(ebpf, loaded, logger, stats, startup);
                }
                // The kernel's version says it has BPF atomics, but its verifier (or JIT)
                // refuses the object built with them (a kernel that differs from upstream's
                // of its version): the same backend again with the object without.
                Err(error)
                    if prepared.atomics && prepared.atomics_fallback && error.is_rejection() =>
                {
                    let error = BackendError { backend, error };
                    log::warn!(
                        "{backend}: {error}; loading the eBPF object without BPF atomics instead"
                    );
                    log::debug!("{backend}: {}", error.reason());
                    prepared.atomics = false;
                    atomics_rejected = Some(error);
                    backends.push(backend);
                }
                Err(error) if self.backend.is_some() => {
                    return Err(Error::Attach(BackendError { backend, error }));
                }
                Err(error) => fallbacks.push(BackendError { backend, error }),
            }
        }
        Err(Error::NoBackend(BackendErrors(fallbacks)))
    }
}

impl TracerBuilder {
    /// With [`TracerBuilder::lifetime`]: outcomes (the completion path is what starts
    /// following a connection), untracked outcomes becoming tracked, of events or of counts
    /// (counted in userspace: see [`TracerBuilder::count_in_userspace`]).
    fn follow_lifetimes(&mut self) -> Result<(), crate::Conflict> {
        if !self.lifetime {
            return Ok(());
        }
        let tracked = crate::Outcomes::Tracked(crate::OutcomeFilter::default());
        match &mut self.report {
            Report::Events { outcome } | Report::Counts { outcome, .. } => match outcome {
                crate::Outcomes::Untracked => {
                    *outcome = tracked;
                    Ok(())
                }
                crate::Outcomes::Tracked(filter) if !filter.is_failed_only() => Ok(()),
                _ => Err(crate::Conflict::LifetimeNeedsOutcomes),
            },
            _ => Err(crate::Conflict::LifetimeNeedsOutcomes),
        }
    }

    /// Counts whose keys hold what only userspace knows (a DNS name, a NAT's destination), or
    /// with [`TracerBuilder::lifetime`] what only closes tell, or with
    /// [`TracerBuilder::accepts`] the accepts, are counted from events ([`crate::tally`]): the
    /// kernel side then reports each connect (accept, close) as an event, with the same
    /// outcomes and filters. Counting by name implies the names.
    fn count_in_userspace(&mut self) -> Option<TallyConfig> {
        let Report::Counts { by, outcome, .. } = self.report else {
            return None;
        };
        if by == CountBy::Name && self.names.is_none() {
            self.names = Some(crate::NamesConfig::default());
        }
        if self.names.is_none() && !self.nat && !self.lifetime && !self.accepts {
            return None;
        }
        let config = TallyConfig {
            by,
            per_cgroup: self.report.counts_per_cgroup(),
            max_series: self.max_series,
            lifetime: self.lifetime,
        };
        // Each event then carries its caller's cgroup, which per-cgroup keys need (names and
        // NAT ask for the identity anyway; lifetimes alone do not).
        self.identity |= config.per_cgroup;
        self.report = Report::Events { outcome };
        Some(config)
    }
}
