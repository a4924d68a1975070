//! Deadlines in time order, as quinn-proto's `TimerTable` keeps them: the
//! next one is found in O(log n), not by scanning every pending IQ, call
//! and relay after each input.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use super::Time;

/// At most one deadline per key.
#[derive(Debug)]
pub(super) struct Timers<K> {
    by_time: BTreeSet<(Time, K)>,
    at: HashMap<K, Time>,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            by_time: BTreeSet::new(),
            at: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> Timers<K> {
    /// `key` is due at `at`, replacing any deadline it had.
    pub(super) fn set(&mut self, key: K, at: Time) {
        if let Some(old) = self.at.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// `key` has no deadline any more.
    pub(super) fn cancel(&mut self, key: &K) {
        if let Some(old) = self.at.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Time> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// The key of the earliest deadline at or before `now`, which is
    /// removed.
    pub(super) fn pop_due(&mut self, now: Time) -> Option<K> {
        let (t, _) = self.by_time.first()?;
        if *t > now {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.at.remove(&key);
        Some(key)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_due_in_order_and_can_move_or_go() {
        let mut t = Timers::default();
        t.set("a", Time(30));
        t.set("b", Time(10));
        t.set("c", Time(20));
        t.set("a", Time(5));
        t.cancel(&"c");
        assert_eq!(t.next(), Some(Time(5)));
        assert_eq!(t.pop_due(Time(4)), None);
        assert_eq!(t.pop_due(Time(10)), Some("a"));
        assert_eq!(t.pop_due(Time(10)), Some("b"));
        assert_eq!(t.pop_due(Time(100)), None);
        assert_eq!(t.len(), 0);
    }
}
