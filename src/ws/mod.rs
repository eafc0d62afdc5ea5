//! WebSocket connections: the opening handshake, and one session per connection.

mod frames;
mod session;
pub mod upgrade;
mod writer;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;

/// A server-side WebSocket over an upgraded HTTP/1.1 connection.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;
