//! One owner's watchers (RFC 6121 section 3, DESIGN.md section 4): who
//! watches her, who waits for her answer, who may watch without asking,
//! who gets nothing, and the decision for a new request.

use jid::BareJid;
use tracing::warn;

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

    /// Everyone who watches her (approved), as bare JID text.
    pub(super) fn subscribed(&self) -> impl Iterator<Item = &str> {
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

    /// Each watcher's bare JID text, with its state.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &WatcherState)> {
        self.map.iter()
    }

    /// Everyone who watches her or waits for her answer, as JIDs (each
    /// parsed again from the list's text: for the rare paths that need
    /// one).
    pub(super) fn jids(&self) -> impl Iterator<Item = BareJid> + '_ {
        self.map.keys().filter_map(|w| BareJid::new(w).ok())
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
/// `Watchers` uses. An owner has tens of watchers and there are many
/// owners, so an edge costs what it must and little more
/// (benches/memory.rs): every JID's text back to back in one buffer, and
/// an 8-byte entry per watcher (where its text is, its state), sorted by
/// JID. A `BareJid` per watcher was 32 bytes and an allocation of its own
/// (at least 32 more) around the text. Both grow by a quarter at a time;
/// the text removed watchers leave is reclaimed when it is half the
/// buffer. A lookup is a binary search; lookups are rare (a watcher's own
/// presence), while publishing walks them all.
#[derive(Debug, Clone, Default)]
struct WatcherMap {
    /// Every watcher's JID, back to back (and removed ones' until
    /// reclaimed).
    text: String,
    /// Sorted by JID text, which is `BareJid`'s order.
    entries: Vec<Entry>,
    /// Bytes of `text` no entry uses any more.
    unused: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u32,
    len: u16,
    state: WatcherState,
}

/// How much to reserve so that `need` more fit, if they do not: a
/// quarter more (at least `need`, and 4), not double: most lists stop
/// growing.
fn more(have: usize, cap: usize, need: usize) -> Option<usize> {
    (have + need > cap).then(|| (have / 4).max(need).max(4))
}

impl WatcherMap {
    fn jid(&self, e: &Entry) -> &str {
        let at = e.at as usize;
        self.text
            .get(at..at + usize::from(e.len))
            .unwrap_or_default()
    }

    fn find(&self, jid: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| self.jid(e).cmp(jid))
    }

    fn get(&self, jid: &BareJid) -> Option<&WatcherState> {
        self.find(jid.as_str()).ok().map(|i| &self.entries[i].state)
    }

    fn contains_key(&self, jid: &BareJid) -> bool {
        self.find(jid.as_str()).is_ok()
    }

    fn insert(&mut self, jid: BareJid, state: WatcherState) -> Option<WatcherState> {
        let jid = jid.as_str();
        let i = match self.find(jid) {
            Ok(i) => return Some(std::mem::replace(&mut self.entries[i].state, state)),
            Err(i) => i,
        };
        // A bare JID is at most 2,047 bytes (RFC 7622: node and domain of
        // 1,023 each), and her watcher limit keeps the text far below
        // 4 GiB; past either, an entry could not say where its text is.
        let end = self.text.len() + jid.len();
        let (Ok(len), Ok(end)) = (u16::try_from(jid.len()), u32::try_from(end)) else {
            warn!(len = jid.len(), "watcher list full: watcher not kept");
            return None;
        };
        let at = end - u32::from(len);
        if let Some(n) = more(self.text.len(), self.text.capacity(), jid.len()) {
            self.text.reserve_exact(n);
        }
        self.text.push_str(jid);
        if let Some(n) = more(self.entries.len(), self.entries.capacity(), 1) {
            self.entries.reserve_exact(n);
        }
        self.entries.insert(i, Entry { at, len, state });
        None
    }

    fn remove(&mut self, jid: &BareJid) -> Option<WatcherState> {
        let i = self.find(jid.as_str()).ok()?;
        let e = self.entries.remove(i);
        self.unused += usize::from(e.len);
        if self.entries.is_empty() {
            self.clear();
        } else if self.unused * 2 > self.text.len() {
            self.reclaim();
        }
        Some(e.state)
    }

    /// Writes the text again without what removed watchers left.
    fn reclaim(&mut self) {
        let mut text = String::with_capacity(self.text.len() - self.unused);
        for e in &mut self.entries {
            let at = e.at as usize;
            let jid = self
                .text
                .get(at..at + usize::from(e.len))
                .unwrap_or_default();
            // Within the old text's length, which fit in a u32.
            e.at = text.len() as u32;
            text.push_str(jid);
        }
        self.text = text;
        self.unused = 0;
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &WatcherState)> {
        self.entries.iter().map(|e| (self.jid(e), &e.state))
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| self.jid(e))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        *self = WatcherMap::default();
    }
}

/// Whether `jid` matches an entry of an allow or block list (a bare JID or
/// a domain).
pub(super) fn listed(list: &[String], jid: &BareJid) -> bool {
    listed_text(list, jid.as_str())
}

/// [`listed`] for a bare JID's text.
pub(super) fn listed_text(list: &[String], jid: &str) -> bool {
    // A node has no '@' (RFC 7622 §3.3.1): the domain follows the first.
    let domain = jid.split_once('@').map_or(jid, |(_, d)| d);
    list.iter()
        .any(|e| e.eq_ignore_ascii_case(jid) || e.eq_ignore_ascii_case(domain))
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
        assert_eq!(w.subscribed().collect::<Vec<_>>(), ["cat@x.example"]);
    }

    /// The packed list answers as a sorted map would, through inserts,
    /// state changes and removals that make it reclaim its text.
    #[test]
    fn the_packed_watcher_list_behaves_as_a_sorted_map() {
        use std::collections::BTreeMap;
        let mut map = WatcherMap::default();
        let mut model: BTreeMap<String, WatcherState> = BTreeMap::new();
        let mut x: u64 = 7;
        for step in 0..4000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let who = format!("w{}@d{}.example", (x >> 33) % 60, (x >> 20) % 3);
            let state = if (x >> 40) % 2 == 0 {
                WatcherState::Pending
            } else {
                WatcherState::Subscribed
            };
            // Removals outnumber inserts in the second half: the list
            // shrinks and its text is reclaimed on the way.
            let remove = (x >> 45) % 10 < if step < 2000 { 3 } else { 7 };
            if remove {
                assert_eq!(map.remove(&jid(&who)), model.remove(&who), "{step}");
            } else {
                assert_eq!(
                    map.insert(jid(&who), state),
                    model.insert(who.clone(), state),
                    "{step}"
                );
            }
            assert_eq!(map.get(&jid(&who)), model.get(&who));
            // What removed watchers left is never more than half the text.
            assert!(map.unused * 2 <= map.text.len(), "{step}");
            assert_eq!(
                map.text.len() - map.unused,
                model.keys().map(String::len).sum::<usize>()
            );
        }
        let got: Vec<(&str, &WatcherState)> = map.iter().collect();
        let want: Vec<(&str, &WatcherState)> = model.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(got, want);
        assert_eq!(map.len(), model.len());
    }
}
