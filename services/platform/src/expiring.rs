//! A bounded map whose entries expire: the shape shared by the gateway's
//! verified tokens and the product service's cached views.
//!
//! When full it makes room only by dropping expired entries. A live entry is
//! never evicted for a new one, so a burst of one-off keys (forged tokens,
//! a crawler walking the catalog) cannot push out what is in use; the new
//! entry is simply not kept. The caller owns the clock and the lock: `T` is
//! whatever instant type it keeps expiries in, and the map is plain data.
//!
//! Keys are hashed with foldhash, seeded per process, not SipHash: a token
//! is some 300 bytes hashed on every request. Only entries the owner chose
//! to keep (a token whose signature verified, a product that exists) go in,
//! so nobody outside can fill it with chosen colliding keys.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use foldhash::fast::RandomState;

#[derive(Debug)]
pub struct ExpiringMap<K, V, T> {
    capacity: usize,
    entries: HashMap<K, (V, T), RandomState>,
}

impl<K: Eq + Hash, V, T: Ord + Copy> ExpiringMap<K, V, T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::default(),
        }
    }

    /// The value, if its entry has not expired by `now`.
    pub fn get<Q>(&self, key: &Q, now: T) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries
            .get(key)
            .filter(|(_, expires)| now < *expires)
            .map(|(value, _)| value)
    }

    /// Keeps `value` until `expires`. Returns false when it was not kept:
    /// it had already expired, or every other entry is live and the map full.
    pub fn insert(&mut self, key: K, value: V, expires: T, now: T) -> bool {
        if expires <= now {
            return false;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires)| now < *expires);
            if self.entries.len() >= self.capacity {
                return false;
            }
        }
        self.entries.insert(key, (value, expires));
        true
    }

    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.remove(key);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Entries held, expired ones included until room is made.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::ExpiringMap;

    #[test]
    fn an_entry_is_served_until_it_expires() {
        let mut map = ExpiringMap::new(10);

        assert!(map.insert("a".to_owned(), 1, 1_000, 900));

        assert_eq!(map.get("a", 999), Some(&1));
        assert_eq!(map.get("a", 1_000), None, "expired at its expiry");
        assert_eq!(map.get("b", 999), None);
    }

    #[test]
    fn an_entry_that_has_already_expired_is_not_kept() {
        let mut map = ExpiringMap::new(10);

        let kept = map.insert("late", 1, 1_000, 1_010);

        assert!(!kept);
        assert!(map.is_empty());
    }

    #[test]
    fn a_full_map_makes_room_only_from_expired_entries() {
        let mut map = ExpiringMap::new(2);
        map.insert("a", 1, 1_000, 900);
        map.insert("b", 2, 2_000, 900);

        let kept_while_all_live = map.insert("c", 3, 2_000, 950);
        let kept_after_a_expired = map.insert("c", 3, 2_000, 1_500);

        assert!(!kept_while_all_live, "no live entry is evicted");
        assert_eq!(map.get("b", 950), Some(&2));
        assert!(kept_after_a_expired);
        assert_eq!(map.get("c", 1_500), Some(&3));
        assert_eq!(map.len(), 2, "the expired entry made the room");
    }

    #[test]
    fn a_full_map_still_replaces_a_key_it_holds() {
        let mut map = ExpiringMap::new(1);
        map.insert("a", 1, 1_000, 900);

        let kept = map.insert("a", 2, 2_000, 950);

        assert!(kept);
        assert_eq!(map.get("a", 1_500), Some(&2));
    }

    #[test]
    fn removing_and_clearing_forget_entries() {
        let mut map = ExpiringMap::new(10);
        map.insert("a", 1, 1_000, 900);
        map.insert("b", 2, 1_000, 900);

        map.remove("a");
        let after_remove = (map.get("a", 950).copied(), map.get("b", 950).copied());
        map.clear();

        assert_eq!(after_remove, (None, Some(2)));
        assert!(map.is_empty());
    }
}
