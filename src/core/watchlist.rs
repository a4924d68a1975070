//! One owner's watchers (RFC 6121 section 3, DESIGN.md section 4): who
//! watches her, who waits for her answer, who may watch without asking,
//! who gets nothing, and the decision for a new request.

use jid::BareJid;

use super::{SubscriptionPolicy, WatcherState};

/// What to do with a `subscribe` to her virtual JID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Approved already: `subscribed` again (RFC 6121 §3.1.3).
    AnswerAgain,
    /// Approve now: her own account, policy `open`, or an allowed JID.
    Approve,
    /// Asked already; a repeat asks nothing new.
    AlreadyAsked,
    /// No room for another watcher.
    Full,
    /// Forward to her to decide.
    Ask,
}

/// Her watchers and the settings that decide who may become one.
#[derive(Debug, Clone, Default)]
pub(super) struct Watchers {
    map: WatcherMap,
    /// Who may watch without asking her.
    pub(super) policy: SubscriptionPolicy,
    /// JIDs or domains approved without asking.
    pub(super) allow: Vec<String>,
    /// JIDs or domains that get nothing.
    pub(super) blocked: Vec<String>,
}

impl Watchers {
    pub(super) fn new(
        policy: SubscriptionPolicy,
        allow: Vec<String>,
        blocked: Vec<String>,
    ) -> Self {
        Watchers {
            map: WatcherMap::default(),
            policy,
            allow,
            blocked,
        }
    }

    /// What to do with `watcher`'s request; `own` is her own account.
    pub(super) fn decide(&self, watcher: &BareJid, own: bool, limit: usize) -> Decision {
        let auto = own || self.policy == SubscriptionPolicy::Open || listed(&self.allow, watcher);
        match self.map.get(watcher) {
            Some(WatcherState::Subscribed) => Decision::AnswerAgain,
            Some(WatcherState::Pending) if auto => Decision::Approve,
            Some(WatcherState::Pending) => Decision::AlreadyAsked,
            None if self.map.len() >= limit => Decision::Full,
            None if auto => Decision::Approve,
            None => Decision::Ask,
        }
    }

    /// Whether `jid` is on her block list (by JID or domain).
    pub(super) fn is_blocked(&self, jid: &BareJid) -> bool {
        listed(&self.blocked, jid)
    }

    /// Whether `jid` watches her (approved).
    pub(super) fn is_subscribed(&self, jid: &BareJid) -> bool {
        self.map.get(jid) == Some(&WatcherState::Subscribed)
    }

    /// Everyone who watches her (approved).
    pub(super) fn subscribed(&self) -> impl Iterator<Item = &BareJid> {
        self.map
            .iter()
            .filter(|(_, s)| **s == WatcherState::Subscribed)
            .map(|(w, _)| w)
    }

    pub(super) fn get(&self, jid: &BareJid) -> Option<&WatcherState> {
        self.map.get(jid)
    }

    pub(super) fn contains_key(&self, jid: &BareJid) -> bool {
        self.map.contains_key(jid)
    }

    pub(super) fn insert(&mut self, jid: BareJid, state: WatcherState) -> Option<WatcherState> {
        self.map.insert(jid, state)
    }

    pub(super) fn remove(&mut self, jid: &BareJid) -> Option<WatcherState> {
        self.map.remove(jid)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&BareJid, &WatcherState)> {
        self.map.iter()
    }

    /// Everyone who watches her or waits for her answer.
    pub(super) fn keys(&self) -> impl Iterator<Item = &BareJid> {
        self.map.keys()
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Nobody watches or waits any more (she unregistered).
    pub(super) fn clear(&mut self) {
        self.map.clear();
    }
}

/// Her watchers by JID, in JID order: the subset of a map's interface
/// `Watchers` uses, over a sorted `Vec` that grows by a quarter at a
/// time. An owner has tens of watchers, for which a hash table's empty
/// slots cost more than the entries (benches/component.rs, memory per
/// watcher edge); a lookup is a binary search, and lookups are rare (a
/// watcher's own presence), while publishing walks them all.
#[derive(Debug, Clone, Default)]
struct WatcherMap(Vec<(BareJid, WatcherState)>);

impl WatcherMap {
    fn find(&self, jid: &BareJid) -> Result<usize, usize> {
        self.0.binary_search_by(|(j, _)| j.cmp(jid))
    }

    fn get(&self, jid: &BareJid) -> Option<&WatcherState> {
        self.find(jid).ok().map(|i| &self.0[i].1)
    }

    fn contains_key(&self, jid: &BareJid) -> bool {
        self.find(jid).is_ok()
    }

    fn insert(&mut self, jid: BareJid, state: WatcherState) -> Option<WatcherState> {
        match self.find(&jid) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, state)),
            Err(i) => {
                if self.0.len() == self.0.capacity() {
                    // A quarter more, not double: most lists stop growing.
                    self.0.reserve_exact((self.0.len() / 4).max(4));
                }
                self.0.insert(i, (jid, state));
                None
            }
        }
    }

    fn remove(&mut self, jid: &BareJid) -> Option<WatcherState> {
        self.find(jid).ok().map(|i| self.0.remove(i).1)
    }

    fn iter(&self) -> impl Iterator<Item = (&BareJid, &WatcherState)> {
        self.0.iter().map(|(j, s)| (j, s))
    }

    fn keys(&self) -> impl Iterator<Item = &BareJid> {
        self.0.iter().map(|(j, _)| j)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Vec::new();
    }
}

/// Whether `jid` matches an entry of an allow or block list (a bare JID or
/// a domain).
pub(super) fn listed(list: &[String], jid: &BareJid) -> bool {
    list.iter().any(|e| {
        e.eq_ignore_ascii_case(jid.as_str()) || e.eq_ignore_ascii_case(jid.domain().as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    #[test]
    fn a_request_is_decided_by_state_policy_allow_list_and_limit() {
        let mut w = Watchers::new(
            SubscriptionPolicy::Ask,
            vec!["friends.example".into()],
            vec![],
        );
        assert_eq!(w.decide(&jid("bob@x.example"), false, 2), Decision::Ask);
        assert_eq!(w.decide(&jid("bob@x.example"), true, 2), Decision::Approve);
        assert_eq!(
            w.decide(&jid("ann@friends.example"), false, 2),
            Decision::Approve
        );
        w.insert(jid("bob@x.example"), WatcherState::Pending);
        assert_eq!(
            w.decide(&jid("bob@x.example"), false, 2),
            Decision::AlreadyAsked
        );
        w.insert(jid("cat@x.example"), WatcherState::Subscribed);
        assert_eq!(
            w.decide(&jid("cat@x.example"), false, 2),
            Decision::AnswerAgain
        );
        assert_eq!(w.decide(&jid("dan@x.example"), false, 2), Decision::Full);
        w.policy = SubscriptionPolicy::Open;
        assert_eq!(w.decide(&jid("bob@x.example"), false, 2), Decision::Approve);
        assert_eq!(w.subscribed().collect::<Vec<_>>(), [&jid("cat@x.example")]);
    }
}
