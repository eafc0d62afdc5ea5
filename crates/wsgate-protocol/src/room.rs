//! Room names: the one validated identifier every other module shares.
//!
//! A room name is 1–128 bytes of `[A-Za-z0-9_.:-]`. The alphabet is deliberately
//! narrow: it holds no whitespace, no NATS wildcard (`*`, `>`) and nothing that
//! needs escaping in JSON, a log line or a subject, so a `RoomName` can be put
//! anywhere without further checks.

use std::fmt;
use std::sync::Arc;

/// The longest room name accepted, in bytes.
pub const MAX_ROOM_LEN: usize = 128;

/// A room name that has passed validation. Cloning is a reference-count bump.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a string is not a room name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoom {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {MAX_ROOM_LEN} bytes")]
    TooLong,
    #[error("room name may only contain A-Z a-z 0-9 _ . : -")]
    BadCharacter,
}

impl RoomName {
    /// Validates `name` and returns it as a room name.
    pub fn parse(name: &str) -> Result<Self, InvalidRoom> {
        if name.is_empty() {
            return Err(InvalidRoom::Empty);
        }
        if name.len() > MAX_ROOM_LEN {
            return Err(InvalidRoom::TooLong);
        }
        if !name.bytes().all(is_room_byte) {
            return Err(InvalidRoom::BadCharacter);
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a shared string: a reference-count bump, for span attributes.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

fn is_room_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The longest tenant name accepted, in bytes.
pub const MAX_TENANT_LEN: usize = 64;

/// A tenant: an isolated namespace of rooms. 1–64 bytes of `[A-Za-z0-9_-]`
/// (no `.`, so a tenant is always exactly one NATS subject token).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(Arc<str>);

/// Why a string is not a tenant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tenant must be 1-{MAX_TENANT_LEN} bytes of A-Z a-z 0-9 _ -")]
pub struct InvalidTenant;

impl Tenant {
    pub fn parse(name: &str) -> Result<Self, InvalidTenant> {
        let ok = !name.is_empty()
            && name.len() <= MAX_TENANT_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(Arc::from(name)))
        } else {
            Err(InvalidTenant)
        }
    }

    /// The tenant of clients without one: every connection when tokens are off.
    pub fn default_tenant() -> Self {
        Self(Arc::from("default"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a shared string: a reference-count bump, for span attributes.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A room within a tenant: what the hub and the broker key on. Two tenants
/// using the same room name are two different rooms.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RoomKey {
    pub tenant: Tenant,
    pub room: RoomName,
}

impl RoomKey {
    pub fn new(tenant: Tenant, room: RoomName) -> Self {
        Self { tenant, room }
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        for ok in ["default", "acme", "A-b_9", &"t".repeat(MAX_TENANT_LEN)] {
            assert!(Tenant::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a b", "a*", "ü", &"t".repeat(MAX_TENANT_LEN + 1)] {
            assert_eq!(Tenant::parse(bad), Err(InvalidTenant), "{bad}");
        }
    }

    #[track_caller]
    fn check(input: &str, expected: Result<(), InvalidRoom>) {
        assert_eq!(
            RoomName::parse(input).map(|_| ()),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn room_names() {
        check("lobby", Ok(()));
        check("a", Ok(()));
        check("Team-42_chat.v2:general", Ok(()));
        check(&"x".repeat(MAX_ROOM_LEN), Ok(()));
        check("", Err(InvalidRoom::Empty));
        check(&"x".repeat(MAX_ROOM_LEN + 1), Err(InvalidRoom::TooLong));
        check("has space", Err(InvalidRoom::BadCharacter));
        check("wild*", Err(InvalidRoom::BadCharacter));
        check("tail>", Err(InvalidRoom::BadCharacter));
        check("slash/", Err(InvalidRoom::BadCharacter));
        check("ünï", Err(InvalidRoom::BadCharacter));
        check("quote\"", Err(InvalidRoom::BadCharacter));
    }
}
