//! wsgate: a WebSocket gateway with rooms, fan-out, and exact OpenTelemetry
//! metrics and traces. See ARCHITECTURE.md for the map.
//!
//! The library is the gateway's binary and its tests' one door in: what they
//! need is public, the rest is the crate's own (so the compiler reports what
//! nothing uses). The wire format is the `wsgate-protocol` crate.

pub mod admission;
pub mod auth;
pub mod config;
pub mod telemetry;

mod api;
mod app;
mod broker;
mod delivery;
mod demo;
mod history;
mod hub;
mod labels;
mod message;
mod outbox;
mod publish;
mod router;
mod secret;
mod server;
mod state;
mod sync;
mod ws;

pub use app::Application;
pub use config::{Cli, Config};
pub use outbox::SlowConsumerPolicy;
