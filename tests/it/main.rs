//! wsgate's integration tests: one crate, one binary to link.
//!
//! `helpers/` is the vocabulary, one fixture per module (a gateway on port 0,
//! the real binary, protocol-speaking clients, `/metrics` as a map, a real
//! nats-server, a fake OTLP collector, polling with deadlines). Each other
//! module checks one behaviour.

mod admin;
mod admission;
mod api;
mod backpressure;
mod bench;
mod bench_drops;
mod browser;
mod browser_traces;
mod errors;
mod faults;
mod handshakes;
mod helpers;
mod history;
mod history_nats;
mod history_traces;
mod limits;
mod messaging;
mod metrics;
mod nats;
mod nats_auth;
mod nats_limits;
mod nats_startup;
mod nats_tls;
mod otlp_export;
mod otlp_tls;
mod promql;
mod quiet_defaults;
mod security;
mod shutdown;
mod tokens;
mod traces;
