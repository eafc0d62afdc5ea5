//! The test vocabulary, one fixture per module, used by every test file:
//! - `api`: `POST /api/publish` as a backend calls it;
//! - `app`: a gateway in this process on port 0 (`spawn_app*`, `TestApp`);
//! - `gateway`: the real `wsgate` binary as a child process (`Gateway`);
//! - `client`: protocol-speaking WebSocket clients (`Client`, `SilentClient`);
//! - `metrics`: `/metrics` as a map;
//! - `wait`: deadlines and polling (`poll_until`, `within`, `require_tool`);
//! - `nats_server`, `nats_jwt`, `nats_nodes`: a real nats-server, its
//!   decentralised-auth keys, and gateways that join it;
//! - `collector`: a fake OTLP collector (gRPC and HTTP, plain or TLS);
//! - `pki`: a throwaway CA and certificates;
//! - `tokens`: JWTs for `--jwt-secret` gateways.

mod api;
mod app;
mod client;
mod collector;
mod gateway;
mod metrics;
mod nats_jwt;
mod nats_nodes;
mod nats_server;
mod pki;
mod tokens;
mod wait;

pub use api::*;
pub use app::*;
pub use client::*;
pub use collector::*;
pub use gateway::*;
pub use metrics::*;
pub use nats_jwt::*;
pub use nats_nodes::*;
pub use nats_server::*;
pub use pki::*;
pub use tokens::*;
pub use wait::*;
