//! Putting memory back when the store refuses a change.
//!
//! Every change the core asks the store to keep is applied to memory at
//! once, before the store has taken it. When the store then refuses it
//! (a full disk, an I/O error) the requester is told so, and what memory
//! holds must go back to what the store holds: otherwise a watcher answered
//! `internal-server-error` would still be a watcher, and get presence,
//! whenever the store cannot be reopened to rebuild the core from. Each
//! place that makes an acknowledged change records here how to take it
//! back; [`Core::handle_store_failure`] takes back the input's changes,
//! newest first.

use jid::BareJid;
use tracing::debug;

use super::OwnerId;
use super::{rules, AccountState, CandidatePolicy, ContactState, Core, DeviceRecord, Owner};
use super::{SubscriptionPolicy, WatcherState};

/// The settings of one owner a command may change, as they were.
#[derive(Debug)]
pub(super) struct Settings {
    rules: Vec<rules::Rule>,
    blocked: Vec<String>,
    policy: SubscriptionPolicy,
    candidates: CandidatePolicy,
    omemo: bool,
    display_name: Option<String>,
    records: std::collections::HashMap<jid::FullJid, DeviceRecord>,
    views: super::views::Views,
}

/// How to take back one acknowledged change.
#[derive(Debug)]
pub(super) enum Undo {
    Watcher {
        owner: OwnerId,
        watcher: BareJid,
        before: Option<WatcherState>,
    },
    Contact {
        owner: OwnerId,
        contact: BareJid,
        before: Option<ContactState>,
    },
    Account {
        owner: OwnerId,
        account: BareJid,
        before: Option<AccountState>,
        /// Whose account the guard knew it as.
        proven: Option<OwnerId>,
    },
    Settings {
        owner: OwnerId,
        before: Box<Settings>,
    },
    /// She registered: the newest owner goes again.
    Registered { owner: OwnerId },
    /// She unregistered: she comes back as she was.
    Unregistered { owner: OwnerId, before: Box<Owner> },
}

impl Core {
    /// Records how to take back a change about to be made to owner `i`'s
    /// watcher `w`.
    pub(super) fn journal_watcher(&mut self, i: OwnerId, w: &BareJid) {
        let before = self.owners[i].watchers.get(w).copied();
        self.journal.push(Undo::Watcher {
            owner: i,
            watcher: w.clone(),
            before,
        });
    }

    pub(super) fn journal_contact(&mut self, i: OwnerId, c: &BareJid) {
        let before = self.owners[i].contacts.get(c).copied();
        self.journal.push(Undo::Contact {
            owner: i,
            contact: c.clone(),
            before,
        });
    }

    pub(super) fn journal_account(&mut self, i: OwnerId, a: &BareJid) {
        let before = self.owners[i]
            .accounts
            .iter()
            .find(|(j, _)| j == a)
            .map(|(_, s)| *s);
        let proven = self.out.secrets.account_owner(a);
        self.journal.push(Undo::Account {
            owner: i,
            account: a.clone(),
            before,
            proven,
        });
    }

    /// Before a command of owner `i` runs: her settings as they are.
    pub(super) fn journal_settings(&mut self, i: OwnerId) {
        let o = &self.owners[i];
        let before = Box::new(Settings {
            rules: o.rules.clone(),
            blocked: o.watchers.blocked.clone(),
            policy: o.watchers.policy,
            candidates: o.candidates,
            omemo: o.omemo,
            display_name: o.display_name.clone(),
            records: o.devices.records.clone(),
            views: o.views.clone(),
        });
        self.journal.push(Undo::Settings { owner: i, before });
    }

    /// Takes back the changes of the current input, newest first.
    pub(super) fn undo_journal(&mut self) {
        while let Some(undo) = self.journal.pop() {
            debug!(?undo, "taking back a change the store refused");
            match undo {
                Undo::Watcher {
                    owner,
                    watcher,
                    before,
                } => {
                    let map = &mut self.owners[owner].watchers;
                    match before {
                        Some(s) => map.insert(watcher, s),
                        None => map.remove(&watcher),
                    };
                }
                Undo::Contact {
                    owner,
                    contact,
                    before,
                } => {
                    let map = &mut self.owners[owner].contacts;
                    match before {
                        Some(s) => map.insert(contact, s),
                        None => map.remove(&contact),
                    };
                }
                Undo::Account {
                    owner,
                    account,
                    before,
                    proven,
                } => {
                    let accounts = &mut self.owners[owner].accounts;
                    match (before, accounts.iter_mut().find(|(a, _)| *a == account)) {
                        (Some(s), Some(entry)) => entry.1 = s,
                        (Some(s), None) => accounts.push((account.clone(), s)),
                        (None, _) => accounts.retain(|(a, _)| *a != account),
                    }
                    match proven {
                        Some(o) => self.out.secrets.add_account(account, o),
                        None => self.out.secrets.del_account(&account),
                    }
                }
                Undo::Settings { owner, before } => {
                    let o = &mut self.owners[owner];
                    let Settings {
                        rules,
                        blocked,
                        policy,
                        candidates,
                        omemo,
                        display_name,
                        records,
                        views,
                    } = *before;
                    o.views = views;
                    o.omemo = omemo;
                    o.display_name = display_name;
                    o.rules = rules;
                    o.watchers.blocked = blocked;
                    o.watchers.policy = policy;
                    o.candidates = candidates;
                    o.devices.records = records;
                }
                Undo::Registered { owner } => {
                    // Owners are only ever appended: the newest is hers.
                    match self.owners.pop() {
                        Some((id, o)) if id == owner => {
                            self.by_name.remove(&o.name);
                            for (a, _) in &o.accounts {
                                self.out.secrets.del_account(a);
                            }
                            if let Some(due) = o.publishing.due {
                                self.dirty.remove(&(due, owner));
                            }
                        }
                        Some((_, o)) => {
                            tracing::error!(%owner, "bug: a registration to take back is not the newest owner");
                            self.owners.push(o);
                        }
                        None => {}
                    }
                }
                Undo::Unregistered { owner, before } => {
                    let o = *before;
                    self.by_name.insert(o.name.clone(), owner);
                    for (a, _) in &o.accounts {
                        self.out.secrets.add_account(a.clone(), owner);
                    }
                    // Her devices are secrets again, as they were.
                    o.devices.register_all(&mut self.out.secrets, owner);
                    if let Some(due) = o.publishing.due {
                        self.dirty.insert((due, owner));
                    }
                    self.owners.restore(owner, o);
                }
            }
        }
    }
}
