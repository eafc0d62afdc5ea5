//! Failed connection attempts to NATS, logged so that an operator learns why
//! a node is not ready, without a line per attempt.
//!
//! The client retries for as long as the node runs (at most a second apart),
//! so each failure cannot be a line. The first is logged at once, then at
//! most one per `--warning-log-interval` with the count of those left out,
//! until a connection is made. `wsgate_broker_connected` at 0 is what alerts
//! read; these lines say why.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::tls::CertRefusals;

pub struct ConnectFailures {
    interval: Duration,
    /// With TLS: why the server's certificate was refused, which async-nats's
    /// event does not say.
    cert_refusals: Option<CertRefusals>,
    /// Locked only to update a few fields, never across an await.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the last line was logged, since the last connection.
    logged_at: Option<Instant>,
    /// Failures not logged since that line.
    unlogged: u64,
}

impl ConnectFailures {
    pub fn new(interval: Duration, cert_refusals: Option<CertRefusals>) -> Self {
        Self {
            interval,
            cert_refusals,
            state: Mutex::default(),
        }
    }

    /// One failed attempt; `error` is async-nats's description of it.
    pub fn failed(&self, error: &str) {
        // Taken on every failure, so a refusal is never blamed for a later
        // failure of another kind.
        let refusal = self.cert_refusals.as_ref().and_then(CertRefusals::take);
        let suppressed = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let due = state
                .logged_at
                .is_none_or(|at| at.elapsed() >= self.interval);
            if !due {
                state.unlogged += 1;
                return;
            }
            state.logged_at = Some(Instant::now());
            std::mem::take(&mut state.unlogged)
        };
        match refusal {
            Some(refusal) => tracing::warn!(
                error = %refusal,
                suppressed,
                "cannot connect to NATS: the server's TLS certificate was refused (is --nats-ca \
                 the CA that signed it?); /readyz answers 503 until a connection is made"
            ),
            None => tracing::warn!(
                error,
                suppressed,
                "cannot connect to NATS (check --nats-url and, as the server requires, --nats-ca, \
                 --nats-cert and --nats-key, --nats-creds); /readyz answers 503 until a \
                 connection is made"
            ),
        }
    }

    /// A connection was made: the next failure is news again.
    pub fn connected(&self) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::default();
    }
}
