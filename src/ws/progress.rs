//! When a connection's socket last accepted bytes, so the write loop can tell a
//! slow write that is moving from a stalled one (`--write-timeout`).
//!
//! A deadline on each batch would do the wrong thing both ways: a large batch
//! on a slow but healthy link can take longer than any fixed deadline, while a
//! client that stopped reading holds a small batch forever. What matters is
//! whether the socket accepts anything, so the write side of the socket is
//! wrapped and stamps the time of every write that made progress.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The time of the last write that made progress, shared between the socket
/// wrapper (which stamps it) and the write loop (which reads it).
#[derive(Debug, Clone)]
pub struct WriteProgress(Arc<Stamp>);

#[derive(Debug)]
struct Stamp {
    /// When the connection started; stamps are nanoseconds since then.
    start: Instant,
    last: AtomicU64,
}

impl WriteProgress {
    pub fn new() -> Self {
        Self(Arc::new(Stamp {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }))
    }

    /// When the socket last accepted bytes (the connection's start if never).
    pub fn last(&self) -> Instant {
        self.0.start + std::time::Duration::from_nanos(self.0.last.load(Ordering::Relaxed))
    }

    pub(super) fn stamp(&self) {
        let nanos = u64::try_from(self.0.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.last.store(nanos, Ordering::Relaxed);
    }
}

/// A socket whose successful writes are stamped in a [`WriteProgress`].
/// Reads pass through untouched.
pub struct Stamped<S> {
    inner: S,
    progress: WriteProgress,
}

impl<S> Stamped<S> {
    pub fn new(inner: S, progress: WriteProgress) -> Self {
        Self { inner, progress }
    }

    pub fn progress(&self) -> &WriteProgress {
        &self.progress
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
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.progress.stamp();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.progress.stamp();
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
