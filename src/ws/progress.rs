//! When a connection's socket last accepted bytes, so the write loop can tell a
//! slow write that is moving from a stalled one (`--write-timeout`).
//!
//! A deadline on each batch would do the wrong thing both ways: a large batch
//! on a slow but healthy link can take longer than any fixed deadline, while a
//! client that stopped reading holds a small batch forever. What matters is
//! whether the socket accepts anything, so the write side of the socket is
//! wrapped and counts the bytes it accepts. A count rather than a timestamp:
//! a relaxed add per write costs nothing, a clock read per write costs more
//! than the rest of a small write's bookkeeping, and the write loop only needs
//! to notice that the count stopped moving (see `writer::unless_stalled`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes the socket has accepted, shared between the socket wrapper (which
/// adds to it) and the write loop (which watches it move).
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteProgress(Arc<AtomicU64>);

impl WriteProgress {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Bytes accepted so far.
    pub(crate) fn written(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(super) fn record(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A socket whose successful writes are counted in a [`WriteProgress`].
/// Reads pass through untouched.
pub(crate) struct Stamped<S> {
    inner: S,
    progress: WriteProgress,
}

impl<S> Stamped<S> {
    pub(crate) fn new(inner: S, progress: WriteProgress) -> Self {
        Self { inner, progress }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stamped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stamped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.progress.record(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.progress.record(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
