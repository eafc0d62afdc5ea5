//! wsgate: a WebSocket gateway with rooms, fan-out, and exact OpenTelemetry
//! metrics and traces. See ARCHITECTURE.md for the map.

pub mod admission;
pub mod api;
pub mod app;
pub mod auth;
pub mod broker;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod http;
pub mod hub;
pub mod message;
pub mod outbox;
pub mod publish;
pub mod server;
pub mod telemetry;
pub mod ws;

pub use app::{AppState, Application};
pub use config::Config;
