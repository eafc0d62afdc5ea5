//! A configuration value that must never be printed: a password, a key, a
//! token's signing secret. A core type, so any layer can hold one without
//! depending on the configuration.

use std::fmt;

/// A value whose `Debug` output is redacted; `expose` is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}
