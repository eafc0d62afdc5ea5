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

use super::tls::{TlsNotes, TlsTrouble};

pub(crate) struct ConnectFailures {
    interval: Duration,
    /// With TLS: what went wrong in the handshake, which async-nats's event
    /// does not say.
    tls_notes: Option<TlsNotes>,
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
    pub(crate) fn new(interval: Duration, tls_notes: Option<TlsNotes>) -> Self {
        Self {
            interval,
            tls_notes,
            state: Mutex::default(),
        }
    }

    /// One failed attempt; `error` is async-nats's description of it.
    pub(crate) fn failed(&self, error: &str) {
        // Taken on every failure, so a note is never blamed for a later
        // failure of another kind.
        let trouble = self.tls_notes.as_ref().and_then(TlsNotes::take);
        let Some(suppressed) = self.admit() else {
            return;
        };
        match trouble {
            Some(TlsTrouble::CertRefused(reason)) => tracing::warn!(
                error = %reason,
                suppressed,
                "cannot connect to NATS: the server's TLS certificate was refused (is --nats-ca \
                 the CA that signed it?); /readyz answers 503 until a connection is made"
            ),
            Some(TlsTrouble::ClientCertWanted) => tracing::warn!(
                error,
                suppressed,
                "cannot connect to NATS: the server wants a client certificate (give it with \
                 --nats-cert and --nats-key); /readyz answers 503 until a connection is made"
            ),
            None => tracing::warn!(
                error,
                suppressed,
                "cannot connect to NATS (check --nats-url and what the server requires: TLS, \
                 --nats-ca, a client certificate, --nats-creds); /readyz answers 503 until a \
                 connection is made"
            ),
        }
    }

    /// Whether this failure is logged: `Some(failures left out since the
    /// last line)` for the first since a connection, then once per interval.
    fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let due = state
            .logged_at
            .is_none_or(|at| at.elapsed() >= self.interval);
        if due {
            state.logged_at = Some(Instant::now());
            Some(std::mem::take(&mut state.unlogged))
        } else {
            state.unlogged += 1;
            None
        }
    }

    /// A connection was made: the next failure is news again.
    pub(crate) fn connected(&self) {
        if let Some(notes) = &self.tls_notes {
            notes.take();
        }
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_logged_then_one_per_interval_with_the_count_left_out() {
        let failures = ConnectFailures::new(Duration::from_secs(3600), None);
        assert_eq!(failures.admit(), Some(0));
        assert_eq!(failures.admit(), None);
        assert_eq!(failures.admit(), None);
        // After a connection, the next failure is news.
        failures.connected();
        assert_eq!(failures.admit(), Some(0));
        // Once the interval has passed, a line reports those left out.
        let failures = ConnectFailures::new(Duration::from_millis(1), None);
        assert_eq!(failures.admit(), Some(0));
        let mut left_out = 0;
        let reported = loop {
            match failures.admit() {
                None => left_out += 1,
                Some(reported) => break reported,
            }
        };
        assert_eq!(reported, left_out);
    }

    #[test]
    fn a_tls_note_is_taken_by_the_failure_it_explains() {
        let notes = TlsNotes::default();
        let failures = ConnectFailures::new(Duration::ZERO, Some(notes.clone()));
        notes.note(TlsTrouble::ClientCertWanted);
        failures.failed("IO error");
        assert_eq!(notes.take(), None, "taken by the failure");
        notes.note(TlsTrouble::ClientCertWanted);
        failures.connected();
        assert_eq!(notes.take(), None, "forgotten at a connection");
    }
}
