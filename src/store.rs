//! The only module that knows sled: one tree per map, JSON values, but
//! for her watchers, which are kept in chunks of her list (`lists.rs`).
//!
//! Keys are `owner \0 jid` (or the caps `ver`), so an owner's entries sort
//! together. The core decides what to persist ([`StoreOp`]); the runtime
//! applies the ops and flushes before anything they acknowledge is sent.

use std::path::Path;

use jid::{BareJid, FullJid};
use serde::de::DeserializeOwned;
use sled::transaction::{TransactionError, Transactional};
use tracing::warn;

use crate::core::{StoreOp, Stored, WatcherState};

mod lists;

/// The tree of one key per watcher that versions before [`lists`] wrote;
/// [`Store::open`] moves what it holds into the lists and drops it.
const OLD_WATCHERS: &str = "watchers";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, corruption, full disk).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// The store could not be reopened after a failed write.
    #[error("store: not open (a write failed earlier and it cannot be reopened yet)")]
    Unavailable,
    /// The write transaction gave up (never expected: nothing aborts it).
    #[error("store: transaction aborted")]
    Aborted,
    /// A value could not be encoded.
    #[error("store: cannot encode a value: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The component's durable state.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    /// Her watchers, in chunks ([`lists`]).
    watchers: sled::Tree,
    /// How big a chunk of her watchers grows before it splits.
    chunk_bytes: usize,
    accounts: sled::Tree,
    caps: sled::Tree,
    devices: sled::Tree,
    rules: sled::Tree,
    owners: sled::Tree,
    blocked: sled::Tree,
    settings: sled::Tree,
    contacts: sled::Tree,
    profiles: sled::Tree,
}

fn key(owner: &str, jid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(owner.len() + 1 + jid.len());
    k.extend_from_slice(owner.as_bytes());
    k.push(0);
    k.extend_from_slice(jid.as_bytes());
    k
}

fn split_key(k: &[u8]) -> Option<(String, String)> {
    let pos = k.iter().position(|b| *b == 0)?;
    let owner = std::str::from_utf8(&k[..pos]).ok()?;
    let jid = std::str::from_utf8(&k[pos + 1..]).ok()?;
    Some((owner.to_owned(), jid.to_owned()))
}

/// Reads every `owner \0 jid -> T` entry of a tree, skipping (and logging)
/// entries that no longer decode rather than refusing to start.
fn load_tree<J, T: DeserializeOwned>(
    tree: &sled::Tree,
    parse: impl Fn(&str) -> Option<J>,
) -> Result<Vec<(String, J, T)>, StoreError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        let decoded = split_key(&k).and_then(|(owner, jid)| {
            let jid = parse(&jid)?;
            let value = serde_json::from_slice(&v).ok()?;
            Some((owner, jid, value))
        });
        match decoded {
            Some(entry) => out.push(entry),
            None => {
                warn!(tree = ?std::str::from_utf8(&tree.name()), "skipped an unreadable store entry")
            }
        }
    }
    Ok(out)
}

/// Reads every `key -> T` entry of a tree keyed by text (an owner's name,
/// a caps hash), skipping (and logging) entries that no longer decode.
fn load_keyed<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<(String, T)>, StoreError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        match (std::str::from_utf8(&k), serde_json::from_slice(&v)) {
            (Ok(key), Ok(value)) => out.push((key.to_owned(), value)),
            _ => {
                warn!(tree = ?std::str::from_utf8(&tree.name()), "skipped an unreadable store entry")
            }
        }
    }
    Ok(out)
}

/// The trees, in the order [`Store::commit`] hands them to sled.
#[derive(Debug, Clone, Copy)]
enum T {
    Watchers,
    Accounts,
    Caps,
    Devices,
    Rules,
    Owners,
    Blocked,
    Settings,
    Contacts,
    Profiles,
}

/// One key written (`Some`) or removed (`None`) in one tree.
type Write = (T, Vec<u8>, Option<Vec<u8>>);

impl Store {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::open(path)?;
        let store = Store {
            watchers: db.open_tree("watcher_lists")?,
            chunk_bytes: lists::CHUNK_BYTES,
            accounts: db.open_tree("accounts")?,
            caps: db.open_tree("caps")?,
            devices: db.open_tree("devices")?,
            rules: db.open_tree("rules")?,
            owners: db.open_tree("owners")?,
            blocked: db.open_tree("blocked")?,
            settings: db.open_tree("settings")?,
            contacts: db.open_tree("contacts")?,
            profiles: db.open_tree("profiles")?,
            db,
        };
        store.move_old_watchers()?;
        Ok(store)
    }

    /// Moves the watchers of the old one-key-each tree into the lists,
    /// then drops it. Setting a watcher is idempotent, so if this stops
    /// half way it is simply done again at the next start.
    fn move_old_watchers(&self) -> Result<(), StoreError> {
        if !self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == OLD_WATCHERS.as_bytes())
        {
            return Ok(());
        }
        let old = self.db.open_tree(OLD_WATCHERS)?;
        let entries = load_tree::<BareJid, WatcherState>(&old, |j| BareJid::new(j).ok())?;
        let mut lists = lists::Lists::new(&self.watchers, self.chunk_bytes);
        for (owner, jid, state) in &entries {
            lists.set(owner, jid.as_str(), Some(*state))?;
        }
        let mut batch = sled::Batch::default();
        for (k, v) in lists.into_writes() {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.watchers.apply_batch(batch)?;
        self.db.flush()?;
        self.db.drop_tree(OLD_WATCHERS)?;
        self.db.flush()?;
        tracing::info!(
            watchers = entries.len(),
            "moved the stored watchers into per-owner lists"
        );
        Ok(())
    }

    /// Everything the core is loaded with at start.
    pub fn load(&self) -> Result<Stored, StoreError> {
        Ok(Stored {
            settings: load_keyed(&self.settings)?,
            blocked: load_keyed(&self.blocked)?,
            owners: load_keyed(&self.owners)?,
            rules: load_keyed(&self.rules)?,
            watchers: lists::load(&self.watchers)?,
            contacts: load_tree(&self.contacts, |j| BareJid::new(j).ok())?,
            accounts: load_tree(&self.accounts, |j| BareJid::new(j).ok())?,
            devices: load_tree(&self.devices, |j| FullJid::new(j).ok())?,
            caps: load_keyed(&self.caps)?,
            profiles: load_keyed(&self.profiles)?,
        })
    }

    /// Writes the changes of one input as one transaction (a single write
    /// as itself): all of them or none (not yet flushed). Values are
    /// encoded, and the keys an unregistration removes are listed, before
    /// anything is written.
    pub fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut writes: Vec<Write> = Vec::with_capacity(ops.len());
        let mut lists = lists::Lists::new(&self.watchers, self.chunk_bytes);
        for op in ops {
            self.plan(op, &mut writes, &mut lists)?;
        }
        writes.extend(lists.into_writes().map(|(k, v)| (T::Watchers, k, v)));
        let trees = [
            self.watchers.clone(),
            self.accounts.clone(),
            self.caps.clone(),
            self.devices.clone(),
            self.rules.clone(),
            self.owners.clone(),
            self.blocked.clone(),
            self.settings.clone(),
            self.contacts.clone(),
            self.profiles.clone(),
        ];
        if let [(tree, k, v)] = writes.as_slice() {
            // One write is all or nothing by itself. A transaction over
            // all eight trees for it cost time and memory (benches/
            // component.rs, 3000 owners: device sightings 2x, watcher
            // subscriptions 1.6x faster without, and 5 MB less RSS).
            let tree = &trees[*tree as usize];
            match v {
                Some(v) => tree.insert(k.as_slice(), v.as_slice())?,
                None => tree.remove(k.as_slice())?,
            };
            return Ok(());
        }
        trees
            .transaction(|t| {
                for (tree, k, v) in &writes {
                    match v {
                        Some(v) => t[*tree as usize].insert(k.as_slice(), v.as_slice())?,
                        None => t[*tree as usize].remove(k.as_slice())?,
                    };
                }
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => StoreError::Aborted,
            })
    }

    /// Applies one change (as [`Store::commit`] of one).
    pub fn apply(&self, op: &StoreOp) -> Result<(), StoreError> {
        self.commit(std::slice::from_ref(op))
    }

    fn plan(
        &self,
        op: &StoreOp,
        writes: &mut Vec<Write>,
        lists: &mut lists::Lists,
    ) -> Result<(), StoreError> {
        let mut put = |tree: T, k: Vec<u8>, v: Vec<u8>| writes.push((tree, k, Some(v)));
        match op {
            StoreOp::Owner {
                owner,
                record: Some(r),
            } => put(T::Owners, owner.as_bytes().to_vec(), serde_json::to_vec(r)?),
            StoreOp::Owner {
                owner,
                record: None,
            } => {
                // Everything of hers goes.
                lists.remove_owner(owner)?;
                let prefix = key(owner, "");
                for (t, tree) in [
                    (T::Contacts, &self.contacts),
                    (T::Accounts, &self.accounts),
                    (T::Devices, &self.devices),
                ] {
                    for k in tree.scan_prefix(&prefix).keys() {
                        writes.push((t, k?.to_vec(), None));
                    }
                }
                for t in [T::Rules, T::Blocked, T::Settings, T::Profiles, T::Owners] {
                    writes.push((t, owner.as_bytes().to_vec(), None));
                }
            }
            StoreOp::Watcher {
                owner,
                watcher,
                state,
            } => lists.set(owner, watcher.as_str(), *state)?,
            StoreOp::Contact {
                owner,
                contact,
                state,
            } => {
                let k = key(owner, contact.as_str());
                match state {
                    Some(s) => put(T::Contacts, k, serde_json::to_vec(s)?),
                    None => writes.push((T::Contacts, k, None)),
                }
            }
            StoreOp::Account {
                owner,
                account,
                state,
            } => {
                let k = key(owner, account.as_str());
                match state {
                    Some(s) => put(T::Accounts, k, serde_json::to_vec(s)?),
                    None => writes.push((T::Accounts, k, None)),
                }
            }
            StoreOp::Caps { ver, features } => put(
                T::Caps,
                ver.as_bytes().to_vec(),
                serde_json::to_vec(features)?,
            ),
            StoreOp::Settings { owner, settings } => put(
                T::Settings,
                owner.as_bytes().to_vec(),
                serde_json::to_vec(settings)?,
            ),
            StoreOp::Blocked { owner, blocked } => put(
                T::Blocked,
                owner.as_bytes().to_vec(),
                serde_json::to_vec(blocked)?,
            ),
            StoreOp::Profile { owner, card } => {
                let k = owner.as_bytes().to_vec();
                match card {
                    Some(c) => put(T::Profiles, k, serde_json::to_vec(c)?),
                    None => writes.push((T::Profiles, k, None)),
                }
            }
            StoreOp::Rules { owner, rules } => put(
                T::Rules,
                owner.as_bytes().to_vec(),
                serde_json::to_vec(rules)?,
            ),
            StoreOp::Device {
                owner,
                device,
                record,
            }
            | StoreOp::DeviceSeen {
                owner,
                device,
                record,
            } => put(
                T::Devices,
                key(owner, device.as_str()),
                serde_json::to_vec(record)?,
            ),
        }
        Ok(())
    }

    /// Makes every applied change durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unregistered_owner_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bob = BareJid::new("bob@localhost").unwrap();
        let ops = [
            StoreOp::Owner {
                owner: "carol".into(),
                record: Some(crate::core::RegisteredOwner {
                    accounts: vec![bob.clone()],
                }),
            },
            StoreOp::Watcher {
                owner: "carol".into(),
                watcher: bob.clone(),
                state: Some(WatcherState::Subscribed),
            },
            StoreOp::Watcher {
                owner: "alice".into(),
                watcher: bob.clone(),
                state: Some(WatcherState::Subscribed),
            },
            StoreOp::Account {
                owner: "carol".into(),
                account: bob.clone(),
                state: Default::default(),
            },
            StoreOp::Rules {
                owner: "carol".into(),
                rules: vec![],
            },
            StoreOp::Blocked {
                owner: "carol".into(),
                blocked: vec!["x".into()],
            },
            StoreOp::Profile {
                owner: "carol".into(),
                card: Some("<vCard xmlns='vcard-temp'/>".into()),
            },
            StoreOp::Owner {
                owner: "carol".into(),
                record: None,
            },
        ];
        for op in &ops {
            store.apply(op).unwrap();
        }
        store.flush().await.unwrap();
        let loaded = store.load().unwrap();
        assert!(
            loaded.owners.is_empty()
                && loaded.accounts.is_empty()
                && loaded.rules.is_empty()
                && loaded.blocked.is_empty()
                && loaded.profiles.is_empty()
        );
        assert_eq!(loaded.watchers.len(), 1, "alice's watcher stays");
        assert_eq!(loaded.watchers[0].0, "alice");
    }
    use crate::core::{AccountState, DeviceRecord, WatcherState};

    async fn reopen(path: &Path) -> Store {
        for _ in 0..100 {
            match Store::open(path) {
                Ok(s) => return s,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        Store::open(path).unwrap()
    }

    /// A store written by a version with one key per watcher starts with
    /// the same watchers, and the old tree is gone.
    #[tokio::test]
    async fn watchers_kept_one_key_each_are_moved_into_lists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let old = db.open_tree(OLD_WATCHERS).unwrap();
            for (owner, jid, state) in [
                ("alice", "bob@localhost", "\"subscribed\""),
                ("alice", "carol@localhost", "\"pending\""),
                ("dave", "bob@localhost", "\"subscribed\""),
            ] {
                old.insert(key(owner, jid), state.as_bytes()).unwrap();
            }
            old.insert(key("dave", "not a jid@@"), "\"subscribed\"".as_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let store = reopen(dir.path()).await;
        let jid = |j: &str| BareJid::new(j).unwrap();
        let expected = vec![
            (
                "alice".to_string(),
                jid("bob@localhost"),
                WatcherState::Subscribed,
            ),
            (
                "alice".to_string(),
                jid("carol@localhost"),
                WatcherState::Pending,
            ),
            (
                "dave".to_string(),
                jid("bob@localhost"),
                WatcherState::Subscribed,
            ),
        ];
        assert_eq!(store.load().unwrap().watchers, expected);
        assert!(!store
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == OLD_WATCHERS.as_bytes()));
        store.flush().await.unwrap();
        drop(store);
        let store = reopen(dir.path()).await;
        assert_eq!(store.load().unwrap().watchers, expected);
    }

    /// Many watchers of one owner, changed in one commit and one at a
    /// time, split her list into chunks and load as the core's mirror does.
    #[tokio::test]
    async fn a_long_list_in_chunks_loads_as_it_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let op = |i: usize, state| StoreOp::Watcher {
            owner: "alice".into(),
            watcher: BareJid::new(&format!("watcher{i:03}@localhost")).unwrap(),
            state,
        };
        let mut ops: Vec<_> = (0..300)
            .map(|i| op((i * 7) % 300, Some(WatcherState::Pending)))
            .collect();
        ops.push(op(5, None));
        store.commit(&ops).unwrap();
        for i in (0..300).step_by(3) {
            let one = op(i, Some(WatcherState::Subscribed));
            store.apply(&one).unwrap();
            ops.push(one);
        }
        for i in 100..200 {
            let one = op(i, None);
            store.apply(&one).unwrap();
            ops.push(one);
        }
        let mut mirror = Stored::default();
        for op in ops {
            mirror.apply(op);
        }
        mirror
            .watchers
            .sort_by(|a, b| a.1.as_str().cmp(b.1.as_str()));
        assert_eq!(store.load().unwrap().watchers, mirror.watchers);
        assert_eq!(mirror.watchers.len(), 199);
        assert!(store.watchers.len() > 4, "her list is in chunks");
    }

    #[tokio::test]
    async fn what_is_applied_and_flushed_is_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let bob = BareJid::new("bob@localhost").unwrap();
        let alice = BareJid::new("alice@localhost").unwrap();
        let phone = FullJid::new("alice@localhost/phone").unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let ops = [
                StoreOp::Watcher {
                    owner: "alice".into(),
                    watcher: bob.clone(),
                    state: Some(WatcherState::Subscribed),
                },
                StoreOp::Account {
                    owner: "alice".into(),
                    account: alice.clone(),
                    state: Some(AccountState {
                        approved: true,
                        ..AccountState::default()
                    }),
                },
                StoreOp::Account {
                    owner: "alice".into(),
                    account: BareJid::new("alice@work.example").unwrap(),
                    state: Some(AccountState::default()),
                },
                StoreOp::Account {
                    owner: "alice".into(),
                    account: BareJid::new("alice@work.example").unwrap(),
                    state: None,
                },
                StoreOp::Caps {
                    ver: "abc=".into(),
                    features: vec!["urn:x".into()],
                },
                StoreOp::Rules {
                    owner: "alice".into(),
                    rules: vec![crate::core::rules::Rule::default_rule(5_000)],
                },
                StoreOp::Device {
                    owner: "alice".into(),
                    device: phone.clone(),
                    record: DeviceRecord {
                        first_seen: 1,
                        last_seen: 2,
                        label: None,
                        caps_node: Some("https://client.example".into()),
                        no_push: true,
                    },
                },
                StoreOp::Profile {
                    owner: "alice".into(),
                    card: Some("<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>".into()),
                },
            ];
            for op in &ops {
                store.apply(op).unwrap();
            }
            store.flush().await.unwrap();
            // The in-memory mirror the core's tests restart from keeps
            // exactly what the store does.
            let mut mirror = Stored::default();
            for op in ops {
                mirror.apply(op);
            }
            let loaded = store.load().unwrap();
            assert_eq!(format!("{mirror:?}"), format!("{loaded:?}"));
        }
        // sled's flusher thread lets go of the lock of the store just
        // dropped a moment later: reopen as a restart would, after it.
        let store = reopen(dir.path()).await;
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded.watchers,
            vec![("alice".to_string(), bob.clone(), WatcherState::Subscribed)]
        );
        assert_eq!(
            loaded.accounts,
            vec![(
                "alice".to_string(),
                alice,
                AccountState {
                    approved: true,
                    ..AccountState::default()
                }
            )]
        );
        assert_eq!(
            loaded.caps,
            vec![("abc=".to_string(), vec!["urn:x".to_string()])]
        );
        assert_eq!(loaded.devices.len(), 1);
        assert_eq!(loaded.profiles.len(), 1);
        assert_eq!(
            loaded.rules,
            vec![(
                "alice".to_string(),
                vec![crate::core::rules::Rule::default_rule(5_000)]
            )]
        );
        store
            .apply(&StoreOp::Watcher {
                owner: "alice".into(),
                watcher: bob,
                state: None,
            })
            .unwrap();
        assert!(store.load().unwrap().watchers.is_empty());
    }
}
