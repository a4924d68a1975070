//! The owners, as a registry with typed ids: an [`OwnerId`] names one
//! owner for as long as the core runs, and nothing else can be passed
//! where one is wanted (a class index, a leg index, a count).

use std::collections::HashMap;
use std::ops::{Index, IndexMut};

use jid::BareJid;

use super::presence::Publishing;
use super::watchlist::Watchers;
use super::{devices, rules, AccountState, CandidatePolicy, ContactState, OwnerConfig};

/// One owner, as long as the core runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(u32);

impl OwnerId {
    /// The `n`th owner, for tests that build a guard by hand.
    #[cfg(test)]
    pub(crate) const fn nth(n: u32) -> OwnerId {
        OwnerId(n)
    }
}

impl std::fmt::Display for OwnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "owner#{}", self.0)
    }
}

/// One owner's live state.
#[derive(Debug, Clone)]
pub(super) struct Owner {
    pub(super) name: String,
    pub(super) virtual_jid: BareJid,
    pub(super) accounts: Vec<(BareJid, AccountState)>,
    pub(super) candidates: CandidatePolicy,
    pub(super) rules: Vec<rules::Rule>,
    pub(super) timezone: chrono_tz::Tz,
    /// Her devices: online now, and every one she has had.
    pub(super) devices: devices::Devices,
    /// Her watchers, with the policy, allow and block lists that decide
    /// who may become one.
    pub(super) watchers: Watchers,
    /// Her subscriptions to contacts, from her virtual JID.
    pub(super) contacts: HashMap<BareJid, ContactState>,
    /// What her watchers last heard and when they hear next.
    pub(super) publishing: Publishing,
    /// Whether her OMEMO keys are served (`privacy encryption on|off`).
    pub(super) omemo: bool,
    /// The name she set for her contacts to see (`name`), over her
    /// account's.
    pub(super) display_name: Option<String>,
    /// Her OMEMO device list as last heard from her account (labels
    /// dropped): what a new watcher is told, as a server's PEP does.
    pub(super) key_list: Option<minidom::Element>,
    /// Accounts whose OMEMO device list her virtual JID follows this run.
    pub(super) key_peers: std::collections::HashSet<BareJid>,
    /// Her vCard, avatar and nick as her contacts see them.
    pub(super) profile: super::profile::Profile,
    /// Set up by the admin in component.toml (not removable by her).
    pub(super) provisioned: bool,
    /// The last status of hers we withheld and told her about, so that
    /// she is told once per text, not at every presence.
    pub(super) told_withheld: Option<String>,
    /// Her accounts whose server says it pushes to devices asleep
    /// (XEP-0357 `urn:xmpp:push:0` in the account's disco#info), as
    /// asked this run.
    pub(super) push_accounts: std::collections::HashSet<BareJid>,
    /// Her views and who is in which (DESIGN.md section 13).
    pub(super) views: super::views::Views,
}

/// How long a device offline still counts as asleep rather than gone:
/// a phone unused for a month is not woken for a call.
pub(super) const ASLEEP_FOR_MS: u64 = 30 * 86_400_000;

/// What her device is to a call (the `devices` command shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Online now.
    Live,
    /// Offline, and woken through her account's push when called.
    Asleep,
    /// Offline and not woken: her server does not push, a device of the
    /// same account is online (a propose to the account would go there),
    /// she said not to, or it has not been seen for a month.
    Gone,
}

impl Owner {
    /// Owner `oc` as she starts: her configured settings, no device, no
    /// watcher (the store's records are loaded onto her after).
    pub(super) fn new(
        oc: &OwnerConfig,
        virtual_jid: BareJid,
        classes: usize,
        provisioned: bool,
    ) -> Owner {
        Owner {
            name: oc.name.clone(),
            virtual_jid,
            accounts: oc
                .accounts
                .iter()
                .map(|a| (a.clone(), AccountState::default()))
                .collect(),
            candidates: oc.candidates,
            rules: oc.rules.clone(),
            timezone: oc.timezone,
            devices: devices::Devices::default(),
            watchers: Watchers::new(oc.subscription, oc.allow.clone(), oc.blocked.clone()),
            contacts: HashMap::new(),
            publishing: Publishing::new(classes),
            profile: Default::default(),
            omemo: true,
            key_peers: Default::default(),
            key_list: None,
            display_name: None,
            provisioned,
            told_withheld: None,
            push_accounts: Default::default(),
            views: Default::default(),
        }
    }

    /// What device `jid` (one of her records) is to a call at wall-clock
    /// `wall_ms` (DESIGN.md section 12); accounts on `push_domains` push
    /// whatever their server told us.
    pub(super) fn reach(&self, jid: &jid::FullJid, wall_ms: u64, push_domains: &[String]) -> Reach {
        if self.devices.live.get(jid).is_some() {
            return Reach::Live;
        }
        let Some(record) = self.devices.records.get(jid) else {
            return Reach::Gone;
        };
        let account = jid.to_bare();
        let pushes = self.push_accounts.contains(&account)
            || push_domains.iter().any(|d| d == account.domain().as_str());
        let woken = pushes
            && self.accounts.iter().any(|(a, _)| *a == account)
            && !record.no_push
            && wall_ms.saturating_sub(record.last_seen) <= ASLEEP_FOR_MS
            // A propose to an account with a device online goes to that
            // device, not to the one asleep.
            && !self.devices.live.keys().any(|d| d.to_bare() == account);
        if woken {
            Reach::Asleep
        } else {
            Reach::Gone
        }
    }

    /// Her devices asleep that a call may wake, in JID order.
    pub(super) fn asleep(&self, wall_ms: u64, push_domains: &[String]) -> Vec<jid::FullJid> {
        let mut asleep: Vec<jid::FullJid> = self
            .devices
            .records
            .keys()
            .filter(|j| self.reach(j, wall_ms, push_domains) == Reach::Asleep)
            .cloned()
            .collect();
        asleep.sort();
        asleep
    }
}

/// Every owner, provisioned and registered, by id.
#[derive(Debug, Default)]
pub(super) struct Owners {
    slots: Vec<Owner>,
    /// Owners who unregistered. Their slot stays, emptied, so that an id
    /// still held somewhere (a caps query on its way back) names nobody
    /// rather than someone else; they are no longer listed or counted.
    gone: std::collections::HashSet<OwnerId>,
}

impl Owners {
    /// Owner `i`'s accounts that are proven hers (provisioned, registered,
    /// or linked and approved): the only ones that get her traffic.
    pub(super) fn linked_accounts(&self, i: OwnerId, secrets: &super::Secrets) -> Vec<BareJid> {
        self[i]
            .accounts
            .iter()
            .filter(|(a, _)| secrets.account_owner(a) == Some(i))
            .map(|(a, _)| a.clone())
            .collect()
    }

    pub(super) fn with_capacity(n: usize) -> Owners {
        Owners {
            slots: Vec::with_capacity(n),
            gone: Default::default(),
        }
    }

    /// Adds `owner`; her id.
    pub(super) fn push(&mut self, owner: Owner) -> OwnerId {
        let id = self.next_id();
        self.slots.push(owner);
        id
    }

    /// The id the next owner pushed gets.
    pub(super) fn next_id(&self) -> OwnerId {
        OwnerId(u32::try_from(self.slots.len()).unwrap_or(u32::MAX))
    }

    /// Takes back the newest owner (a registration the store refused).
    pub(super) fn pop(&mut self) -> Option<(OwnerId, Owner)> {
        let o = self.slots.pop()?;
        Some((self.next_id(), o))
    }

    /// Owners here (not those who unregistered).
    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.gone.len()
    }

    /// Every owner's id, in order.
    pub(super) fn ids(&self) -> impl Iterator<Item = OwnerId> + '_ {
        (0..self.next_id().0)
            .map(OwnerId)
            .filter(|id| !self.gone.contains(id))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Owner> + Clone {
        self.slots
            .iter()
            .enumerate()
            .filter(|(n, _)| !self.gone.contains(&OwnerId(*n as u32)))
            .map(|(_, o)| o)
    }

    /// Owner `id` unregistered: no longer listed or counted.
    pub(super) fn remove(&mut self, id: OwnerId) {
        if (id.0 as usize) < self.slots.len() {
            self.gone.insert(id);
        }
    }

    /// Owner `id` is back as `owner` (her unregistration was refused).
    pub(super) fn restore(&mut self, id: OwnerId, owner: Owner) {
        if let Some(slot) = self.slots.get_mut(id.0 as usize) {
            *slot = owner;
            self.gone.remove(&id);
        }
    }
}

impl Index<OwnerId> for Owners {
    type Output = Owner;
    fn index(&self, id: OwnerId) -> &Owner {
        &self.slots[id.0 as usize]
    }
}

impl IndexMut<OwnerId> for Owners {
    fn index_mut(&mut self, id: OwnerId) -> &mut Owner {
        &mut self.slots[id.0 as usize]
    }
}

/// Tests name owners by position (`owners[0]` is the first configured).
#[cfg(test)]
impl Index<usize> for Owners {
    type Output = Owner;
    fn index(&self, n: usize) -> &Owner {
        &self.slots[n]
    }
}

#[cfg(test)]
impl IndexMut<usize> for Owners {
    fn index_mut(&mut self, n: usize) -> &mut Owner {
        &mut self.slots[n]
    }
}
