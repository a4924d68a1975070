//! Her watchers on disk: her list in chunks, not one key per watcher.
//!
//! One sled key per watcher cost 177 bytes of sled's memory per watcher
//! once loaded after a restart (the node's entry, the key's own
//! allocation, a JSON value), more than three times the core's whole
//! entry for him; as chunks it costs 29 (`cargo bench --bench memory`).
//! So a chunk holds a run of her list, sorted:
//!
//! - the key is `owner \0 lower bound`, and her first chunk's bound is
//!   empty (`owner \0`), so every JID of hers has exactly one chunk: the
//!   last one whose key is at or before `owner \0 jid`;
//! - the value is one line per watcher, `s jid` (subscribed) or `p jid`
//!   (pending). Lines, not JSON: a JSON pair costs about 16 bytes a
//!   watcher beyond the JID, a line 3. A bare JID has no newline in it
//!   (RFC 7622: the PRECIS classes of its parts exclude controls);
//! - a change rewrites its chunk only. A chunk grown past
//!   [`CHUNK_BYTES`] splits in two; an emptied one goes.
//!
//! sled has no such layout of its own; [`Lists`] plans the writes of one
//! commit over what sled holds, so that several changes to one chunk in
//! one commit see each other.

use std::collections::BTreeMap;

use jid::BareJid;
use tracing::warn;

use super::{key, StoreError};
use crate::core::WatcherState;

/// A chunk splits when its value grows past this: about 40 watchers of
/// 25-byte JIDs; a change writes at most twice this.
pub(super) const CHUNK_BYTES: usize = 1024;

/// The writes to the lists tree one commit makes: key to new value,
/// `None` to remove.
pub(super) struct Lists<'a> {
    tree: &'a sled::Tree,
    chunk_bytes: usize,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

type Entries = Vec<(String, WatcherState)>;

/// A chunk's key and value.
type Chunk = (Vec<u8>, Vec<u8>);

fn encode(entries: &[(String, WatcherState)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entries.iter().map(|(j, _)| j.len() + 3).sum());
    for (jid, state) in entries {
        v.push(match state {
            WatcherState::Subscribed => b's',
            WatcherState::Pending => b'p',
        });
        v.push(b' ');
        v.extend_from_slice(jid.as_bytes());
        v.push(b'\n');
    }
    v
}

/// The lines of a chunk that read, and how many did not.
fn decode(v: &[u8]) -> (Entries, usize) {
    let mut entries = Vec::new();
    let mut bad = 0;
    for line in v.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let state = match line.first() {
            Some(b's') => Some(WatcherState::Subscribed),
            Some(b'p') => Some(WatcherState::Pending),
            _ => None,
        };
        match (state, line.get(2..).map(std::str::from_utf8)) {
            (Some(state), Some(Ok(jid))) if line.get(1) == Some(&b' ') => {
                entries.push((jid.to_owned(), state))
            }
            _ => bad += 1,
        }
    }
    (entries, bad)
}

impl<'a> Lists<'a> {
    pub(super) fn new(tree: &'a sled::Tree, chunk_bytes: usize) -> Lists<'a> {
        Lists {
            tree,
            chunk_bytes,
            writes: BTreeMap::new(),
        }
    }

    /// The chunk `k` falls in among those of the owner whose keys start
    /// at `lo`: as this commit leaves it, else as sled holds it.
    fn chunk_of(&self, lo: &[u8], k: &[u8]) -> Result<Option<Chunk>, StoreError> {
        let planned = self
            .writes
            .range(lo.to_vec()..=k.to_vec())
            .rev()
            .find_map(|(ck, v)| Some((ck.clone(), v.clone()?)));
        let mut held = None;
        for item in self.tree.range(lo..=k).rev() {
            let (ck, v) = item?;
            if !self.writes.contains_key(ck.as_ref()) {
                held = Some((ck.to_vec(), v.to_vec()));
                break;
            }
        }
        Ok(match (planned, held) {
            (Some(p), Some(h)) => Some(if p.0 > h.0 { p } else { h }),
            (p, h) => p.or(h),
        })
    }

    /// Sets (or with `None` removes) one watcher of hers.
    pub(super) fn set(
        &mut self,
        owner: &str,
        jid: &str,
        state: Option<WatcherState>,
    ) -> Result<(), StoreError> {
        let lo = key(owner, "");
        let (ck, mut entries) = match self.chunk_of(&lo, &key(owner, jid))? {
            Some((ck, v)) => {
                let (entries, bad) = decode(&v);
                if bad > 0 {
                    warn!(bad, "dropped unreadable lines of a stored watcher list");
                }
                (ck, entries)
            }
            None => (lo, Vec::new()),
        };
        match (
            entries.binary_search_by(|(j, _)| j.as_str().cmp(jid)),
            state,
        ) {
            (Ok(i), Some(state)) => entries[i].1 = state,
            (Ok(i), None) => {
                entries.remove(i);
            }
            (Err(i), Some(state)) => entries.insert(i, (jid.to_owned(), state)),
            (Err(_), None) => return Ok(()),
        }
        if entries.is_empty() {
            self.writes.insert(ck, None);
            return Ok(());
        }
        let value = encode(&entries);
        if value.len() <= self.chunk_bytes || entries.len() < 2 {
            self.writes.insert(ck, Some(value));
            return Ok(());
        }
        let upper = entries.split_off(entries.len() / 2);
        self.writes.insert(ck, Some(encode(&entries)));
        self.writes
            .insert(key(owner, &upper[0].0), Some(encode(&upper)));
        Ok(())
    }

    /// Removes her whole list.
    pub(super) fn remove_owner(&mut self, owner: &str) -> Result<(), StoreError> {
        let lo = key(owner, "");
        for ck in self.tree.scan_prefix(&lo).keys() {
            self.writes.insert(ck?.to_vec(), None);
        }
        for v in self.writes.range_mut(lo.clone()..) {
            if !v.0.starts_with(&lo) {
                break;
            }
            *v.1 = None;
        }
        Ok(())
    }

    /// The writes planned, in key order.
    pub(super) fn into_writes(self) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
        self.writes.into_iter()
    }
}

/// Every watcher of every owner, sorted by owner and JID; lines or chunks
/// that do not read are skipped with a warning.
pub(super) fn load(tree: &sled::Tree) -> Result<Vec<(String, BareJid, WatcherState)>, StoreError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        let owner = k
            .iter()
            .position(|b| *b == 0)
            .and_then(|end| std::str::from_utf8(&k[..end]).ok());
        let Some(owner) = owner else {
            warn!("skipped an unreadable stored watcher list");
            continue;
        };
        let (entries, mut bad) = decode(&v);
        for (jid, state) in entries {
            match BareJid::new(&jid) {
                Ok(jid) => out.push((owner.to_owned(), jid, state)),
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            warn!(
                owner,
                bad, "skipped unreadable lines of a stored watcher list"
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(tree: &sled::Tree, lists: Lists) {
        for (k, v) in lists.into_writes() {
            match v {
                Some(v) => tree.insert(k, v).unwrap(),
                None => tree.remove(k).unwrap(),
            };
        }
    }

    #[test]
    fn lines_read_back_and_bad_ones_are_counted() {
        let entries = vec![
            ("a@x".to_string(), WatcherState::Pending),
            ("b@x".to_string(), WatcherState::Subscribed),
        ];
        assert_eq!(decode(&encode(&entries)), (entries, 0));
        let (read, bad) = decode(b"s ok@x\nq what\ns\nsnope\np \xff\n");
        assert_eq!(read, vec![("ok@x".to_string(), WatcherState::Subscribed)]);
        assert_eq!(bad, 4);
    }

    /// Random changes over three owners, some in one commit, with chunks
    /// small enough to split often, against a sorted map; and no chunk
    /// is empty or (with more than one watcher) too big.
    #[test]
    fn chunks_hold_what_a_plain_map_holds() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("lists").unwrap();
        let mut model: BTreeMap<(String, String), WatcherState> = BTreeMap::new();
        let mut seed = 7u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..600 {
            let mut lists = Lists::new(&tree, 64);
            for _ in 0..1 + next(4) {
                let owner = ["al", "alice", "bob"][next(3) as usize];
                let jid = format!("w{}@x.example", next(60));
                let state = match next(3) {
                    0 => None,
                    1 => Some(WatcherState::Pending),
                    _ => Some(WatcherState::Subscribed),
                };
                lists.set(owner, &jid, state).unwrap();
                let k = (owner.to_string(), jid);
                match state {
                    Some(s) => model.insert(k, s),
                    None => model.remove(&k),
                };
            }
            if round % 150 == 149 {
                lists
                    .set("bob", "w1@x.example", Some(WatcherState::Pending))
                    .unwrap();
                lists.remove_owner("bob").unwrap();
                model.retain(|(o, _), _| o != "bob");
            }
            apply(&tree, lists);
            let loaded: Vec<_> = load(&tree)
                .unwrap()
                .into_iter()
                .map(|(o, j, s)| ((o, j.to_string()), s))
                .collect();
            let expected: Vec<_> = model.clone().into_iter().collect();
            assert_eq!(loaded, expected, "round {round}");
        }
        for item in tree.iter() {
            let (_, v) = item.unwrap();
            let (entries, _) = decode(&v);
            assert!(!entries.is_empty());
            assert!(v.len() <= 64 || entries.len() == 1);
        }
        assert!(tree.len() > 6, "the lists split into chunks");
    }
}
