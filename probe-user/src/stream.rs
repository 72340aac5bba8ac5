//! Events as an async (tokio) [`Stream`], for agents that embed the tracer.

use std::{
    collections::VecDeque,
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_core::Stream;
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::{Interval, MissedTickBehavior},
};

use crate::{Counters, Event, Tracer};

/// How often waiting events are collected when the kernel does not signal: it wakes the reader
/// only once a quarter of the ring buffer is full, so that a quiet system costs no wake-ups.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// The events of an attached [`Tracer`], as a [`Stream`] (see [`Tracer::into_stream`]).
/// Dropping it detaches everything.
///
/// ```no_run
/// use probe_user::{Event, Tracer};
/// use tokio_stream::StreamExt as _;
///
/// # async fn agent() -> Result<(), Box<dyn std::error::Error>> {
/// let mut events = Tracer::builder().lifetime(true).accepts(true).attach()?.into_stream()?;
/// // One event at a time...
/// match events.next().await {
///     Some(Event::Connect(c)) => println!("{} connected to {}", c.comm(), c.dst),
///     Some(Event::Accept(a)) => println!("{} accepted {} on {}", a.comm(), a.src, a.dst),
///     Some(Event::Close(c)) => println!("{} closed after {} ns", c.connect.dst, c.duration_ns()),
///     None => {}
/// }
/// // ... or every waiting one at once.
/// let n = events.next_batch(|event| println!("{event:?}")).await;
/// // At the end: detach, then what the programs emitted before that.
/// events.detach();
/// events.drain(|event| {
///     if let Event::Connect(connect) = event {
///         println!("{}", connect.dst);
///     }
/// });
/// println!("{n} in the batch, {} lost", events.counters().lost());
/// # Ok(())
/// # }
/// ```
pub struct EventStream {
    tracer: AsyncFd<Tracer>,
    ready: VecDeque<Event>,
    tick: Interval,
}

impl Tracer {
    /// Turns the tracer into a [`Stream`] of events. Needs a tokio runtime with I/O and time
    /// enabled; events reach the stream within [`DRAIN_INTERVAL`].
    pub fn into_stream(self) -> io::Result<EventStream> {
        let mut tick = tokio::time::interval(DRAIN_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // SAFETY: the tracer owns the ring buffer's fd and never closes or replaces it while
        // registered; it is dropped (closing the fd) only after the AsyncFd deregisters it.
        let tracer = unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) }?;
        Ok(EventStream {
            tracer,
            ready: VecDeque::new(),
            tick,
        })
    }
}

impl EventStream {
    /// What was received and lost so far (see [`Tracer::counters`]).
    pub fn counters(&self) -> Counters {
        self.tracer.get_ref().counters()
    }

    /// The tracer, for its statistics, counters and counts. Read-only: the stream's reactor
    /// holds the tracer's ring-buffer descriptor, which must stay the tracer's own while
    /// registered (a `&mut Tracer` could swap in another one). What needs `&mut` has its own
    /// method here.
    pub fn tracer(&self) -> &Tracer {
        self.tracer.get_ref()
    }

    /// Hands every event already waiting to `on_event`, those the stream has queued first, and
    /// returns how many there were, without waiting (see [`Tracer::drain`]): after
    /// [`EventStream::detach`], the last events.
    pub fn drain(&mut self, mut on_event: impl FnMut(&Event)) -> usize {
        let queued = self.ready.len();
        for event in self.ready.drain(..) {
            on_event(&event);
        }
        queued + self.tracer.get_mut().drain(on_event)
    }

    /// Detaches every program and waits for their runs in progress (see [`Tracer::detach`]);
    /// the stream then yields what they recorded, and [`EventStream::drain`] takes it at once.
    pub fn detach(&mut self) {
        self.tracer.get_mut().detach();
    }

    /// Counts as missed the connects entered more than `max_age` ago that will never complete
    /// (see [`Tracer::reap_pending`]); returns how many.
    pub fn reap_pending(&mut self, max_age: Duration) -> usize {
        self.tracer.get_mut().reap_pending(max_age)
    }

    /// Retires the counts of cgroups gone for at least `after` (see
    /// [`Tracer::retire_gone_cgroups`]).
    pub fn retire_gone_cgroups(&mut self, after: Duration) -> Vec<crate::ConnectCount> {
        self.tracer.get_mut().retire_gone_cgroups(after)
    }

    /// Waits until events arrive, then hands every waiting one to `on_event` at once and returns
    /// how many there were: the batch form of the stream, for consumers that write in batches.
    pub async fn next_batch(&mut self, mut on_event: impl FnMut(&Event)) -> usize {
        poll_fn(|cx| self.poll_batch(cx, &mut on_event)).await
    }

    /// Hands every waiting event to `on_event` (`Ready(n)`, n > 0), or registers for the next
    /// chance of events (`Pending`).
    fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        mut on_event: impl FnMut(&Event),
    ) -> Poll<usize> {
        loop {
            let mut n = 0;
            while let Some(event) = self.ready.pop_front() {
                on_event(&event);
                n += 1;
            }
            n += self.tracer.get_mut().drain(&mut on_event);
            if n > 0 {
                return Poll::Ready(n);
            }
            if self.poll_wake(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Registers for the next chance of events (the ring buffer's descriptor or the drain
    /// tick); `Ready` if one has come since, so the caller should drain again.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.tracer.poll_read_ready_mut(cx) {
            Poll::Ready(Ok(mut guard)) => {
                guard.clear_ready();
                return Poll::Ready(());
            }
            // The ring buffer's descriptor cannot fail once registered; the tick still drains.
            Poll::Ready(Err(_)) | Poll::Pending => {}
        }
        self.tick.poll_tick(cx).map(|_| ())
    }
}

impl Stream for EventStream {
    type Item = Event;

    /// The next event. The stream never ends by itself: tracing goes on until it is dropped.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        if let Some(event) = this.ready.pop_front() {
            return Poll::Ready(Some(event));
        }
        // The queue is empty: refill it with the next batch.
        let mut batch = std::mem::take(&mut this.ready);
        let polled = this.poll_batch(cx, |event| batch.push_back(event.clone()));
        this.ready = batch;
        polled.map(|_| this.ready.pop_front())
    }
}
