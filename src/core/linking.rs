//! Linked accounts and their devices (DESIGN.md section 2).
//!
//! Presence from an owner's real accounts to her virtual JID: the linking
//! handshake (`subscribed`/`unsubscribed`), each resource's availability,
//! and learning each device's features from its caps (verified and cached)
//! or a direct disco#info.

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use rand::Rng;
use tracing::{debug, info, warn};

use super::devices::{classes_of, read_disco_info, Device, Features};
use super::stanza::{self, element, ns, ErrorType};
use super::OwnerId;
use super::{AccountState, Core, PendingIq, Purpose, StoreOp, Time};

/// How long a link code works.
const LINK_MS: u64 = 15 * 60 * 1000;
/// Wrong codes before a pending link is dropped.
const CODE_ATTEMPTS: u32 = 5;
/// Characters of a code, from an alphabet without look-alikes: 32^8 = 2^40.
const CODE_LEN: usize = 8;
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Pending links per owner, and overall.
const LINKS_PER_OWNER: usize = 4;
const LINKS_MAX: usize = 10_000;

/// A link asked for by owner `owner`, waiting for the account to send
/// `code` back.
#[derive(Debug, Clone)]
pub(super) struct PendingLink {
    owner: OwnerId,
    code: String,
    expires: Time,
    attempts: u32,
}

impl Core {
    /// Presence from one of owner `i`'s own accounts to her virtual JID.
    pub(super) fn account_presence(&mut self, now: Time, i: OwnerId, stanza: &Element, from: Jid) {
        let typ = stanza.attr("type");
        if typ.is_none() {
            // The common case, every device's every change: no bare JID
            // built for it.
            match from.try_into_full() {
                Ok(full) => self.device_available(now, i, stanza, full),
                Err(from) => debug!(from = %from, "dropped: available presence from a bare JID"),
            }
            return;
        }
        let account = from.to_bare();
        match typ {
            None => {} // above
            Some("unavailable") => match from.try_as_full() {
                Ok(full) => {
                    let full = full.clone();
                    self.device_gone(now, i, &full);
                }
                // RFC 6121 §4.3.2: no available resource (also the answer
                // to our probe, and what the server sends on approval).
                Err(_) => self.forget_devices(i, Some(&account), now),
            },
            Some("subscribed") => {
                self.set_approved(i, account.as_str(), true);
                let from = self.owners[i].virtual_jid.to_string();
                self.out.send(stanza::stanza(
                    "presence",
                    &from,
                    account.as_str(),
                    Some("probe"),
                ));
                // Her profile and OMEMO device list, now that we may ask,
                // and whether her server wakes her devices asleep.
                self.fetch_primary_profile(now, i);
                self.ask_push(now, i, &account);
            }
            Some("unsubscribed") => {
                let linked = self.owners[i]
                    .accounts
                    .iter()
                    .any(|(a, s)| *a == account && s.linked_by_owner);
                if linked {
                    // The account revokes: the link ends at once.
                    // It removed her itself: nothing to tell it.
                    self.unlink_account(now, i, &account, false);
                } else {
                    self.set_approved(i, account.as_str(), false);
                    self.forget_devices(i, Some(&account), now);
                }
            }
            Some("error") => {
                warn!(owner = %self.owners[i].name, account = %account, "presence error from a linked account");
            }
            Some("subscribe") | Some("unsubscribe") | Some("probe") => {
                // The owner as a watcher of her own virtual JID.
                self.watcher_presence(now, i, stanza, from, true);
            }
            Some(_) => self
                .out
                .reply_error(stanza, ErrorType::Modify, "bad-request"),
        }
    }

    /// Runs for every presence of every device: the account is named by
    /// its text (a bare JID of its own would be an allocation each time),
    /// and only a change is journalled and stored.
    fn set_approved(&mut self, i: OwnerId, account: &str, approved: bool) {
        let Some(jid) = self.owners[i]
            .accounts
            .iter()
            .find(|(a, s)| a.as_str() == account && s.approved != approved)
            .map(|(a, _)| a.clone())
        else {
            return;
        };
        self.journal_account(i, &jid);
        let owner = &mut self.owners[i];
        let Some((_, state)) = owner.accounts.iter_mut().find(|(a, _)| *a == jid) else {
            return;
        };
        state.approved = approved;
        info!(owner = %owner.name, account = %jid, approved, "account link changed");
        self.out.keep(StoreOp::Account {
            owner: owner.name.clone(),
            account: jid,
            state: Some(*state),
        });
    }

    /// The owner links another of her accounts (DESIGN.md section 2): the
    /// account is sent a one-time code from the domain, in words that
    /// cannot be mistaken for a contact request, and becomes hers only
    /// when it sends that code back itself ([`Core::confirm_link`]).
    /// Nothing else reaches it, and nothing of hers is shown to it.
    pub(super) fn start_link(
        &mut self,
        now: Time,
        i: OwnerId,
        account: BareJid,
    ) -> Result<String, &'static str> {
        if account.node().is_none() || account.domain().as_str() == self.cfg.domain {
            return Err("that is not an account (user@server)");
        }
        // Another owner's account is treated like any other: it gets the
        // code and cannot use it (confirm_link refuses), so that "link"
        // never tells whether an account has an address here.
        if self.out.secrets.account_owner(&account) == Some(i) {
            return Err("that account is linked to your address already");
        }
        self.pending_links.retain(|_, p| p.expires > now);
        let theirs = self.pending_links.values().filter(|p| p.owner == i).count();
        if !self.pending_links.contains_key(&account)
            && (theirs >= LINKS_PER_OWNER || self.pending_links.len() >= LINKS_MAX)
        {
            return Err("too many links wait for their code; try again later");
        }
        let code: String = (0..CODE_LEN)
            .map(|_| CODE_ALPHABET[self.out.rng().gen_range(0..CODE_ALPHABET.len())] as char)
            .collect();
        self.pending_links.insert(
            account.clone(),
            PendingLink {
                owner: i,
                code: code.clone(),
                expires: now.plus_ms(LINK_MS),
                attempts: 0,
            },
        );
        let virtual_jid = self.owners[i].virtual_jid.clone();
        let domain = self.cfg.domain.clone();
        let text = format!(
            "Someone using {virtual_jid} asked to link this account to that address, so that its devices \
             show up there and its calls ring here. Only do this if {virtual_jid} is your own address.\n\
             To link this account, send this message to {domain}:\n  link confirm {code}\n\
             Otherwise ignore this message: nothing changes. The code works for 15 minutes."
        );
        let mut m = stanza::stanza("message", &domain, account.as_str(), Some("chat"));
        stanza::set_attr(&mut m, "id", self.out.next_id());
        m.append_child(stanza::text_element("body", ns::COMPONENT, &text));
        self.out.send(m);
        info!(owner = %self.owners[i].name, "link asked, code sent");
        Ok(format!(
            "Sent {account} a one-time code from {domain}. From that account, send \"link confirm <code>\" \
             to {domain} within 15 minutes; until then it is not linked."
        ))
    }

    /// `link confirm CODE` from `account`: with the code it was sent, it
    /// becomes one of her accounts, and we subscribe to its presence.
    pub(super) fn confirm_link(&mut self, now: Time, account: &BareJid, code: &str) -> String {
        self.pending_links.retain(|_, p| p.expires > now);
        let Some(p) = self.pending_links.get_mut(account) else {
            return "No link waits for this account (codes work for 15 minutes).".into();
        };
        if !p.code.eq_ignore_ascii_case(code.trim()) {
            p.attempts += 1;
            if p.attempts >= CODE_ATTEMPTS {
                self.pending_links.remove(account);
                return "Wrong code, and too many tries: this link is off; ask for a new one."
                    .into();
            }
            return "That is not the code this account was sent.".into();
        }
        let Some(p) = self.pending_links.remove(account) else {
            return "No link waits for this account.".into();
        };
        let i = p.owner;
        if self.out.secrets.account_owner(account).is_some() {
            return "This account already belongs to an address here.".into();
        }
        let state = AccountState {
            approved: false,
            linked_by_owner: true,
            confirmed: true,
        };
        self.journal_account(i, account);
        let owner = &mut self.owners[i];
        owner.accounts.retain(|(a, _)| a != account);
        owner.accounts.push((account.clone(), state));
        self.out.secrets.add_account(account.clone(), i);
        self.out.keep(StoreOp::Account {
            owner: owner.name.clone(),
            account: account.clone(),
            state: Some(state),
        });
        info!(owner = %owner.name, "account linked");
        let virtual_jid = owner.virtual_jid.to_string();
        self.out.send(super::link_request(&virtual_jid, account));
        // Her other accounts hear of it: a link is hers to know about.
        let note =
            format!("{account} is now linked to {virtual_jid}; \"unlink {account}\" undoes it.");
        for other in self.linked_accounts(i).into_iter().filter(|a| a != account) {
            self.tell(&other, &note);
        }
        format!(
            "This account is now linked to {virtual_jid}. Approve the contact request from {virtual_jid} \
             so that it sees this account's devices. \"unlink\" undoes it."
        )
    }

    /// Ends the link of `account` to owner `i` at once: its devices stop
    /// counting (calls ringing them end), it can no longer act for her,
    /// and we stop asking for its presence. Her last account stays.
    pub(super) fn unlink_account(&mut self, now: Time, i: OwnerId, account: &BareJid, tell: bool) {
        self.forget_devices(i, Some(account), now);
        self.journal_account(i, account);
        let owner = &mut self.owners[i];
        owner.accounts.retain(|(a, _)| a != account);
        self.out.secrets.del_account(account);
        self.adhoc_sessions
            .retain(|_, s| s.requester.to_bare() != *account);
        self.out.keep(StoreOp::Account {
            owner: owner.name.clone(),
            account: account.clone(),
            state: None,
        });
        info!(owner = %owner.name, "account unlinked");
        let virtual_jid = owner.virtual_jid.to_string();
        if tell {
            self.tell(
                account,
                &format!("This account is no longer linked to {virtual_jid}."),
            );
        }
        // We no longer want its presence; its own subscription to her
        // address, if it watches her, is its business.
        self.out.send(stanza::stanza(
            "presence",
            &virtual_jid,
            account.as_str(),
            Some("unsubscribe"),
        ));
    }

    /// A chat message from the service to `to`.
    fn tell(&mut self, to: &BareJid, text: &str) {
        let mut m = stanza::stanza("message", &self.cfg.domain, to.as_str(), Some("chat"));
        stanza::set_attr(&mut m, "id", self.out.next_id());
        m.append_child(stanza::text_element("body", ns::COMPONENT, text));
        self.out.send(m);
    }

    /// Whether the admin set `account` up for owner `i` in the config
    /// (then only the admin can take it away).
    pub(super) fn provisioned_account(&self, i: OwnerId, account: &BareJid) -> bool {
        self.cfg
            .owners
            .iter()
            .any(|o| o.name == self.owners[i].name && o.accounts.contains(account))
    }

    fn device_available(&mut self, now: Time, i: OwnerId, stanza: &Element, full: FullJid) {
        // Found once: nothing below adds or removes a live device before
        // it is set (and `put` checks).
        let slot = self.owners[i].devices.live.slot(&full);
        let before = self.owners[i].devices.live.at(slot);
        let mut device = match Device::from_presence_after(stanza, before) {
            Ok(d) => d,
            Err(e) => {
                warn!(device = %full, error = %e, "bad device presence");
                self.out
                    .reply_error(stanza, ErrorType::Modify, "bad-request");
                return;
            }
        };
        // A resource's presence means our subscription is in effect.
        let bare = full.as_str().split('/').next().unwrap_or_default();
        self.set_approved(i, bare, true);
        if let Some(hash) = super::profile::announced_photo(stanza) {
            self.photo_announced(now, i, &full.to_bare(), hash);
        }
        // What the last presence of this device said, read in place: this
        // runs for every presence of every device.
        let (known, new_node, features) = {
            let owner = &self.owners[i];
            let old = owner.devices.live.at(slot);
            if old.is_none() && owner.devices.live.len() >= self.cfg.limits.devices_per_owner {
                warn!(owner = %owner.name, "device limit reached, presence ignored");
                return;
            }
            // XEP-0115 §4: caps belong in every presence; a client that
            // leaves them out of a later one has not changed its features.
            if device.caps.is_none() {
                device.caps = old.and_then(|o| o.caps.clone());
            }
            let old_caps = old.and_then(|o| o.caps.as_ref());
            // The same caps are the same `Arc` (see `from_presence_after`).
            let new_node = device
                .caps
                .as_ref()
                .filter(|c| !old_caps.is_some_and(|o| Arc::ptr_eq(o, c) || o.node == c.node))
                .map(|c| c.node.clone());
            // Same caps, same features and classes: nothing to look up.
            let features = old
                .filter(|o| o.caps == device.caps)
                .map(|o| (o.features.clone(), o.classes));
            (old.is_some(), new_node, features)
        };
        if let Some(node) = &new_node {
            self.out.secrets.add_node(node, i);
        }
        match features {
            Some((features, classes)) if features != Features::Unknown => {
                device.features = features;
                device.classes = classes;
            }
            _ => {
                device.features = self.known_features(&device);
                if device.features == Features::Unknown {
                    self.ask_features(now, i, &full, &device);
                }
                device.classes = classes_of(&self.cfg.classes, &device.features);
            }
        }
        if !known {
            self.device_seen(now, i, &full);
        }
        if let Some(node) = new_node {
            self.remember_node(i, &full, node);
        }
        let live = &self.owners[i].devices.live;
        let shows = match live.at(slot) {
            // A re-sent presence (`<delay/>`ed or duplicate): nothing new.
            Some(old) if *old == device => return,
            Some(old) => super::presence::change_may_show(live, &full, old, &device),
            None => true,
        };
        debug!(owner = %self.owners[i].name, show = ?device.show, classes = device.classes, shows, "device presence");
        if let Some(status) = &device.status {
            self.tell_withheld(i, &full, status);
        }
        self.owners[i].devices.live.put(slot, full, device);
        // A change behind her best device shows nobody anything: no
        // publish to schedule (most device churn is such).
        if shows {
            self.mark_dirty(i, now);
        }
    }

    /// Her status names one of her accounts or devices, so watchers see
    /// her presence without it: the device that set it is told why, once
    /// per text.
    fn tell_withheld(&mut self, i: OwnerId, device: &FullJid, status: &str) {
        let Some(leak) = self.out.secrets.names_secret(status, None) else {
            return;
        };
        if self.owners[i].told_withheld.as_deref() == Some(status) {
            return;
        }
        self.owners[i].told_withheld = Some(status.to_owned());
        let what = match leak.kind {
            super::address::SecretKind::Account => "one of your accounts",
            super::address::SecretKind::Resource => "one of your devices",
            super::address::SecretKind::CapsNode => "your client",
        };
        let text = format!(
            "Your status \"{status}\" names {what} ({}), so your contacts see your presence without it. \
             Statuses reach them as you write them unless they name one of your accounts or devices.",
            leak.secret
        );
        let mut m = stanza::stanza("message", &self.cfg.domain, device.as_str(), Some("chat"));
        stanza::set_attr(&mut m, "id", self.out.next_id());
        m.append_child(stanza::text_element("body", ns::COMPONENT, &text));
        self.out.send(m);
    }

    /// Keeps a device's caps node in its record (see
    /// [`DeviceRecord::caps_node`]).
    fn remember_node(&mut self, i: OwnerId, full: &FullJid, node: String) {
        let owner = &mut self.owners[i];
        if let Some(record) = owner.devices.remember_node(full, node) {
            self.out.keep(StoreOp::DeviceSeen {
                owner: owner.name.clone(),
                device: full.clone(),
                record,
            });
        }
    }

    fn device_seen(&mut self, now: Time, i: OwnerId, full: &FullJid) {
        let wall = self.wall_ms(now);
        let owner = &mut self.owners[i];
        let record = owner.devices.seen(full, wall, &mut self.out.secrets, i);
        self.out.keep(StoreOp::DeviceSeen {
            owner: owner.name.clone(),
            device: full.clone(),
            record,
        });
    }

    fn device_gone(&mut self, now: Time, i: OwnerId, full: &FullJid) {
        if self.owners[i].devices.live.remove(full).is_some() {
            debug!(owner = %self.owners[i].name, "device offline");
            self.call_device_gone(now, full);
            self.device_seen(now, i, full);
            self.mark_dirty(i, now);
        }
    }

    /// Drops the live devices of `account` (all accounts: `None`).
    pub(super) fn forget_devices(&mut self, i: OwnerId, account: Option<&BareJid>, now: Time) {
        let gone: Vec<FullJid> = self.owners[i]
            .devices
            .live
            .keys()
            .filter(|d| account.is_none_or(|a| d.to_bare() == *a))
            .cloned()
            .collect();
        for d in gone {
            self.device_gone(now, i, &d);
        }
    }

    fn known_features(&self, device: &Device) -> Features {
        match &device.caps {
            Some(c) if c.hash == "sha-1" => self
                .caps_cache
                .get(&c.ver)
                .map_or(Features::Unknown, |f| Features::Known(f.clone())),
            _ => Features::Unknown,
        }
    }

    /// Asks a device for its features: by `node#ver` when it has sha-1 caps
    /// (one query per ver, whoever else has it), else directly.
    fn ask_features(&mut self, now: Time, i: OwnerId, full: &FullJid, device: &Device) {
        let ver = device
            .caps
            .as_ref()
            .filter(|c| c.hash == "sha-1")
            .map(|c| c.ver.clone());
        if self.pending.asking(full, ver.as_ref()) {
            return;
        }
        if self.pending.len() >= self.cfg.limits.pending_iqs {
            warn!("pending iq limit reached, device stays chat-only for now");
            return;
        }
        let id = self.out.next_id();
        let mut query = element("query", ns::DISCO_INFO, &[]);
        if let (Some(c), Some(_)) = (&device.caps, &ver) {
            stanza::set_attr(&mut query, "node", format!("{}#{}", c.node, c.ver));
        }
        let from = self.owners[i].virtual_jid.to_string();
        let mut iq = stanza::stanza("iq", &from, full.as_str(), Some("get"));
        stanza::set_attr(&mut iq, "id", id.clone());
        iq.append_child(query);
        self.pending.insert(
            id,
            PendingIq {
                to: Jid::from(full.clone()),
                purpose: Purpose::Caps {
                    owner: i,
                    device: full.clone(),
                    ver,
                },
            },
            now.plus_ms(self.cfg.iq_timeout_ms),
        );
        self.out.send(iq);
    }

    /// A disco#info answer (or error) to a caps query of ours.
    pub(super) fn caps_answer(&mut self, now: Time, iq: &Element, purpose: Purpose) {
        let Purpose::Caps { owner, device, ver } = purpose else {
            return;
        };
        if iq.attr("type") != Some("result") {
            debug!(device = %device, "disco#info failed, device stays chat-only");
            return;
        }
        let (features, computed) = match read_disco_info(iq) {
            Ok(r) => r,
            Err(e) => {
                warn!(device = %device, error = %e, "unusable disco#info");
                return;
            }
        };
        let features = Arc::new(features);
        match ver {
            Some(v) if v == computed => {
                self.caps_cache.insert(v.clone(), features.clone());
                self.out.keep(StoreOp::Caps {
                    ver: v.clone(),
                    features: features.iter().cloned().collect(),
                });
                for i in self.owners.ids().collect::<Vec<_>>() {
                    let waiting: Vec<FullJid> = self.owners[i]
                        .devices
                        .live
                        .iter()
                        .filter(|(_, d)| {
                            d.features == Features::Unknown
                                && d.caps
                                    .as_ref()
                                    .is_some_and(|c| c.ver == v && c.hash == "sha-1")
                        })
                        .map(|(j, _)| j.clone())
                        .collect();
                    for d in waiting {
                        self.set_features(now, i, &d, features.clone());
                    }
                }
            }
            Some(v) => {
                // XEP-0115 §5.4: not cached; still what this device says of itself.
                warn!(device = %device, announced = %v, computed = %computed, "caps hash mismatch, not cached");
                self.set_features(now, owner, &device, features);
            }
            None => self.set_features(now, owner, &device, features),
        }
    }

    fn set_features(
        &mut self,
        now: Time,
        i: OwnerId,
        device: &FullJid,
        features: Arc<std::collections::BTreeSet<String>>,
    ) {
        let classes = &self.cfg.classes;
        let Some(d) = self.owners[i].devices.live.get_mut(device) else {
            return;
        };
        d.features = Features::Known(features);
        d.classes = classes_of(classes, &d.features);
        debug!(device_classes = d.classes, "device features learned");
        self.mark_dirty(i, now);
    }
}
