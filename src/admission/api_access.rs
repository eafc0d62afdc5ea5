//! Who may use `POST /api/publish`: the API key, checked in constant time, and
//! the slots that bound how many requests are handled at once.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Who may publish over HTTP, how many requests at once, and how long a body
/// may take.
pub(crate) struct ApiAccess {
    /// SHA-256 of `--api-key`, computed once: hashing the key per request
    /// would take time that grows with the key's length.
    key_digest: Option<[u8; 32]>,
    /// `--max-api-concurrency` slots; a permit lives as long as its request.
    permits: Arc<Semaphore>,
    /// `--request-timeout`.
    pub(crate) body_timeout: Duration,
}

impl ApiAccess {
    /// `api_key` is `--api-key`'s value (see `config::Secret`).
    pub(crate) fn new(api_key: Option<&str>, max_concurrency: u32, body_timeout: Duration) -> Self {
        Self {
            key_digest: api_key.map(digest),
            permits: Arc::new(Semaphore::new(max_concurrency as usize)),
            body_timeout,
        }
    }

    /// Whether `--api-key` is set.
    pub(crate) fn has_key(&self) -> bool {
        self.key_digest.is_some()
    }

    /// Whether `presented` is the API key. Both sides are compared as SHA-256
    /// digests, in constant time: comparing the strings themselves, even with
    /// `subtle`, returns at once when the lengths differ, which tells a prober
    /// how long the key is. Digests are always 32 bytes, and hashing the
    /// presented value costs time that depends only on what the caller sent.
    pub(crate) fn key_matches(&self, presented: &str) -> bool {
        self.key_digest
            .is_some_and(|key| bool::from(digest(presented).ct_eq(&key)))
    }

    /// A slot for one request, or `None` when every slot is taken: the caller
    /// is told to come back rather than queued, so waiting costs the server
    /// nothing.
    pub(crate) fn enter(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_matches_itself_and_nothing_else() {
        let api = ApiAccess::new(Some("backend-key"), 1, Duration::from_secs(1));
        assert!(api.key_matches("backend-key"));
        for wrong in [
            "",
            "b",
            "backend-ke",
            "backend-key ",
            "backend-key-and-more",
            "BACKEND-KEY",
        ] {
            assert!(!api.key_matches(wrong), "{wrong:?}");
        }
        let open = ApiAccess::new(None, 1, Duration::from_secs(1));
        assert!(!open.key_matches(""), "no key configured: nothing matches");
    }
}
