//! Per-key connection allowances (`--max-connections-per-ip`,
//! `--max-connections-per-user`): a count per key, and a guard per connection
//! that gives its share back when the connection ends.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use wsgate_protocol::room::Tenant;

/// Up to `max` connections per key. Keys with no connection are removed, so the
/// map holds at most one entry per open connection.
pub(super) struct Slots<K> {
    max: u32,
    /// A std mutex around a map update; never held across `.await`.
    counts: Mutex<HashMap<K, u32>>,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// `None` for 0: the allowance is off.
    pub(super) fn new(max: u32) -> Option<Arc<Self>> {
        (max > 0).then(|| {
            Arc::new(Self {
                max,
                counts: Mutex::default(),
            })
        })
    }

    /// One slot for `key`, or `None` when its allowance is used up.
    pub(super) fn take(this: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut counts = lock(&this.counts);
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= this.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: this.clone(),
            key,
        })
    }
}

/// One connection's share of its key's allowance, returned on drop.
pub(super) struct Slot<K: Hash + Eq> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = lock(&self.slots.counts);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl<K: Hash + Eq + fmt::Debug> fmt::Debug for Slot<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slot({:?})", self.key)
    }
}

/// What `--max-connections-per-ip` counts: one client.
///
/// An IPv6 host is normally given a whole /64 and picks addresses in it at
/// will (privacy extensions rotate them), so counting single IPv6 addresses
/// would let one host open 2^64 allowances. An IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, from a dual-stack socket) is its IPv4 client.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) enum ClientKey {
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of the address.
    V6Prefix(u64),
}

impl ClientKey {
    pub(super) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Prefix(prefix_64(v6)),
            },
        }
    }
}

fn prefix_64(ip: Ipv6Addr) -> u64 {
    (ip.to_bits() >> 64) as u64
}

/// What `--max-connections-per-user` counts: a token's `sub` within its tenant,
/// since tenants are separate namespaces and may reuse user names.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct UserKey {
    pub(super) tenant: Tenant,
    pub(super) sub: String,
}

impl fmt::Debug for UserKey {
    /// User names stay out of logs: `Admitted` is `Debug`-printed on the
    /// upgrade path's debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserKey([user])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(a: &str, b: &str, same: bool) {
        let key = |s: &str| ClientKey::of(s.parse().unwrap());
        assert_eq!(key(a) == key(b), same, "{a} vs {b}");
    }

    #[test]
    fn client_keys() {
        check("10.0.0.1", "10.0.0.1", true);
        check("10.0.0.1", "10.0.0.2", false);
        check("2001:db8::1", "2001:db8::2", true);
        check("2001:db8:0:0:ffff::1", "2001:db8::1", true);
        check("2001:db8:0:1::1", "2001:db8::1", false);
        check("::ffff:10.0.0.1", "10.0.0.1", true);
        check("::ffff:10.0.0.1", "10.0.0.2", false);
        check("::1", "::2", true);
    }

    #[test]
    fn slots_are_returned_on_drop_and_empty_keys_forgotten() {
        let slots = Slots::new(2).unwrap();
        let a = Slots::take(&slots, 'a').unwrap();
        let b = Slots::take(&slots, 'a').unwrap();
        assert!(Slots::take(&slots, 'a').is_none());
        let _other = Slots::take(&slots, 'b').unwrap();
        drop(a);
        let _c = Slots::take(&slots, 'a').unwrap();
        drop(b);
        drop(_c);
        assert!(!slots.counts.lock().unwrap().contains_key(&'a'));
        assert!(Slots::<char>::new(0).is_none());
    }
}
