//! WebSocket connections: the opening handshake, and one session per connection.

mod handle;
mod progress;
mod rate;
mod recover;
mod recover_stream;
mod session;
pub(crate) mod upgrade;
mod writer;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;

/// A server-side WebSocket over an upgraded HTTP/1.1 connection, whose writes
/// are stamped for the write timeout.
pub(crate) type Ws = WebSocketStream<progress::Stamped<TokioIo<Upgraded>>>;

/// Every connection holds its two task futures for life, so their sizes are
/// per-connection memory (the idle target is 10 KiB per connection, a 2 KiB
/// read buffer included). These budgets catch a regression such as a stack
/// buffer or an unboxed rare path that bloats every session.
#[cfg(test)]
mod memory_budget {
    use std::future::Future;

    /// The size of the future an async fn returns, without calling it.
    fn future_size<F, A, B, C, D, Fut>(_: &F) -> usize
    where
        F: Fn(A, B, C, D) -> Fut,
        Fut: Future,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn task_futures_stay_small() {
        let session = future_size(&super::session::run);
        assert!(session <= 2_304, "the session future is {session} bytes");
        let writer = {
            fn size<F, Fut: Future>(_: &F) -> usize
            where
                F: Fn(super::writer::Writer) -> Fut,
            {
                std::mem::size_of::<Fut>()
            }
            size(&super::writer::Writer::run)
        };
        assert!(writer <= 1_024, "the writer future is {writer} bytes");
        let outbox = std::mem::size_of::<crate::outbox::Outbox>();
        assert!(outbox <= 192, "the outbox is {outbox} bytes");
    }
}
