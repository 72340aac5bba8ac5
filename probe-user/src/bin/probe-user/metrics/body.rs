//! The body of the endpoint's responses: a short fixed text, or an exposition's chunks as they
//! are written ([`super::text::write`] on a blocking thread, a few chunks ahead of the client),
//! so that a scrape of any size holds a few chunks in memory, not its whole text.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// Chunks written ahead of what the client has taken.
pub const CHUNKS_AHEAD: usize = 4;

/// Expositions being written at once: each holds a scrape's worth of series (about 10 MiB at
/// 10,000 label sets with outcomes) until its client has read it all, or its connection's
/// deadline (10 s) passes. A scrape beyond them is answered `503` (`retry-after: 1`), so
/// clients that ask and never read hold at most this many, whatever their number.
pub const WRITERS: usize = 2;

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// All of it (sent with a `content-length`).
    Full(Option<Bytes>),
    /// Chunks until the writer is done (sent chunked).
    Chunks(mpsc::Receiver<Bytes>),
}

impl Body {
    /// A fixed body.
    pub fn text(text: impl Into<Bytes>) -> Self {
        Body::Full(Some(text.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(text) => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
            Body::Chunks(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
            Body::Chunks(_) => SizeHint::default(),
        }
    }
}

/// Writes `exposition` as OpenMetrics text on a blocking thread into the returned body's
/// chunks, at most [`CHUNKS_AHEAD`] ahead of the client (and stops if the client goes),
/// holding `writer` (one of [`WRITERS`]) until it is done.
pub fn exposition(exposition: super::Exposition, writer: OwnedSemaphorePermit) -> Body {
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        super::text::write(&exposition, |chunk| tx.blocking_send(chunk.into()).is_ok());
        drop(writer);
    });
    Body::Chunks(rx)
}
