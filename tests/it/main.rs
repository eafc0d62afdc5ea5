//! wsgate's integration tests: one crate, one binary to link.
//!
//! `helpers` is the vocabulary (a gateway on port 0, protocol-speaking clients,
//! `/metrics` as a map); `binary` and `collector` run the real executable against
//! a fake OTLP receiver. Each other module checks one behaviour.

mod admin;
mod admission;
mod api;
mod backpressure;
mod bench;
mod binary;
mod browser;
mod collector;
mod errors;
mod faults;
mod handshakes;
mod helpers;
mod limits;
mod messaging;
mod metrics;
mod nats;
mod nats_auth;
mod nats_jwt;
mod nats_limits;
mod nats_server;
mod nats_startup;
mod nats_tls;
mod otlp_tls;
mod pki;
mod promql;
mod quiet_defaults;
mod security;
mod shutdown;
mod tokens;
mod traces;
