//! Linked accounts and their devices (DESIGN.md section 2).
//!
//! Presence from an owner's real accounts to her virtual JID: the linking
//! handshake (`subscribed`/`unsubscribed`), each resource's availability,
//! and learning each device's features from its caps (verified and cached)
//! or a direct disco#info.

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tracing::{debug, info, warn};

use super::devices::{classes_of, read_disco_info, Device, Features};
use super::stanza::{self, element, ns, ErrorType};
use super::{AccountState, Core, DeviceRecord, PendingIq, Purpose, StoreOp, Time};

impl Core {
    /// Presence from one of owner `i`'s own accounts to her virtual JID.
    pub(super) fn account_presence(&mut self, now: Time, i: usize, stanza: &Element, from: Jid) {
        let account = from.to_bare();
        match stanza.attr("type") {
            None => match from.try_into_full() {
                Ok(full) => self.device_available(now, i, stanza, full),
                Err(_) => debug!(from = %account, "dropped: available presence from a bare JID"),
            },
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
                self.set_approved(i, &account, true);
                let from = self.owners[i].virtual_jid.to_string();
                self.send(stanza::stanza(
                    "presence",
                    &from,
                    account.as_str(),
                    Some("probe"),
                ));
            }
            Some("unsubscribed") => {
                self.set_approved(i, &account, false);
                self.forget_devices(i, Some(&account), now);
            }
            Some("error") => {
                warn!(owner = %self.owners[i].name, account = %account, "presence error from a linked account");
            }
            Some("subscribe") | Some("unsubscribe") | Some("probe") => {
                // The owner as a watcher of her own virtual JID.
                self.watcher_presence(i, stanza, from, true);
            }
            Some(_) => self.reply_error(stanza, ErrorType::Modify, "bad-request"),
        }
    }

    fn set_approved(&mut self, i: usize, account: &BareJid, approved: bool) {
        let owner = &mut self.owners[i];
        let Some((_, state)) = owner.accounts.iter_mut().find(|(a, _)| a == account) else {
            return;
        };
        if state.approved == approved {
            return;
        }
        state.approved = approved;
        info!(owner = %owner.name, account = %account, approved, "account link changed");
        self.store.push_back(StoreOp::Account {
            owner: owner.name.clone(),
            account: account.clone(),
            state: *state,
        });
    }

    /// `subscribed` from an account the owner linked herself: the proof
    /// that it is hers. From now on it is one of her accounts.
    pub(super) fn complete_link(&mut self, i: usize, account: &BareJid) {
        self.secrets.add_account(account.clone(), i);
        self.set_approved(i, account, true);
        info!(owner = %self.owners[i].name, "account linked");
        let from = self.owners[i].virtual_jid.to_string();
        self.send(stanza::stanza(
            "presence",
            &from,
            account.as_str(),
            Some("probe"),
        ));
    }

    /// The owner links another of her accounts: asked by a subscription
    /// request, hers once it approves (DESIGN.md section 2).
    pub(super) fn start_link(&mut self, i: usize, account: BareJid) -> Result<(), &'static str> {
        if account.node().is_none() || account.domain().as_str() == self.cfg.domain {
            return Err("that is not an account (user@server) of yours");
        }
        if self.secrets.account_owner(&account).is_some() {
            return Err("that account is already linked to an address here");
        }
        if self.owners[i].accounts.iter().any(|(a, _)| *a == account) {
            return Err("that account was asked already; approve the request there");
        }
        let state = AccountState {
            approved: false,
            linked_by_owner: true,
        };
        let owner = &mut self.owners[i];
        owner.accounts.push((account.clone(), state));
        self.store.push_back(StoreOp::Account {
            owner: owner.name.clone(),
            account: account.clone(),
            state,
        });
        let from = owner.virtual_jid.to_string();
        self.send(stanza::stanza(
            "presence",
            &from,
            account.as_str(),
            Some("subscribe"),
        ));
        Ok(())
    }

    fn device_available(&mut self, now: Time, i: usize, stanza: &Element, full: FullJid) {
        let mut device = match Device::from_presence(stanza) {
            Ok(d) => d,
            Err(e) => {
                warn!(device = %full, error = %e, "bad device presence");
                self.reply_error(stanza, ErrorType::Modify, "bad-request");
                return;
            }
        };
        // A resource's presence means our subscription is in effect.
        self.set_approved(i, &full.to_bare(), true);
        // What the last presence of this device said, read in place: this
        // runs for every presence of every device.
        let (known, new_node, features) = {
            let owner = &self.owners[i];
            let old = owner.devices.get(&full);
            if old.is_none() && owner.devices.len() >= self.cfg.limits.devices_per_owner {
                warn!(owner = %owner.name, "device limit reached, presence ignored");
                return;
            }
            // XEP-0115 §4: caps belong in every presence; a client that
            // leaves them out of a later one has not changed its features.
            if device.caps.is_none() {
                device.caps = old.and_then(|o| o.caps.clone());
            }
            let old_node = old.and_then(|o| o.caps.as_ref()).map(|c| &c.node);
            let new_node = device
                .caps
                .as_ref()
                .filter(|c| Some(&c.node) != old_node)
                .map(|c| c.node.clone());
            let features = old
                .filter(|o| o.caps == device.caps)
                .map(|o| o.features.clone());
            (old.is_some(), new_node, features)
        };
        if let Some(node) = new_node {
            self.secrets.add_node(&node, i);
        }
        device.features = features.unwrap_or_else(|| self.known_features(&device));
        if device.features == Features::Unknown {
            self.ask_features(now, i, &full, &device);
        }
        device.classes = classes_of(&self.cfg.classes, &device.features);
        if !known {
            self.device_seen(now, i, &full);
        } else if self.owners[i].devices.get(&full) == Some(&device) {
            // A re-sent presence (`<delay/>`ed or duplicate): nothing new.
            return;
        }
        debug!(owner = %self.owners[i].name, show = ?device.show, classes = device.classes, "device presence");
        self.owners[i].devices.insert(full, device);
        self.mark_dirty(i, now);
    }

    fn device_seen(&mut self, now: Time, i: usize, full: &FullJid) {
        let owner = &mut self.owners[i];
        let is_new = !owner.records.contains_key(full);
        let record = owner.records.entry(full.clone()).or_insert(DeviceRecord {
            first_seen: now.0,
            last_seen: now.0,
            label: None,
        });
        record.last_seen = now.0;
        let record = record.clone();
        let name = owner.name.clone();
        if is_new {
            self.secrets.add_resource(full.resource().as_str(), i);
        }
        self.store.push_back(StoreOp::DeviceSeen {
            owner: name,
            device: full.clone(),
            record,
        });
    }

    fn device_gone(&mut self, now: Time, i: usize, full: &FullJid) {
        if self.owners[i].devices.remove(full).is_some() {
            debug!(owner = %self.owners[i].name, "device offline");
            self.call_device_gone(now, full);
            self.device_seen(now, i, full);
            self.mark_dirty(i, now);
        }
    }

    /// Drops the live devices of `account` (all accounts: `None`).
    pub(super) fn forget_devices(&mut self, i: usize, account: Option<&BareJid>, now: Time) {
        let gone: Vec<FullJid> = self.owners[i]
            .devices
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
    fn ask_features(&mut self, now: Time, i: usize, full: &FullJid, device: &Device) {
        let ver = device
            .caps
            .as_ref()
            .filter(|c| c.hash == "sha-1")
            .map(|c| c.ver.clone());
        let already = self.pending.values().any(|p| match &p.purpose {
            Purpose::Caps { ver: Some(v), .. } => Some(v) == ver.as_ref(),
            Purpose::Caps { device: d, .. } => d == full,
        });
        if already {
            return;
        }
        if self.pending.len() >= self.cfg.limits.pending_iqs {
            warn!("pending iq limit reached, device stays chat-only for now");
            return;
        }
        let id = self.next_id();
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
                deadline: now.plus_ms(self.cfg.iq_timeout_ms),
                purpose: Purpose::Caps {
                    owner: i,
                    device: full.clone(),
                    ver,
                },
            },
        );
        self.send(iq);
    }

    /// A disco#info answer (or error) to a caps query of ours.
    pub(super) fn caps_answer(&mut self, now: Time, iq: &Element, purpose: Purpose) {
        let Purpose::Caps { owner, device, ver } = purpose;
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
                self.store.push_back(StoreOp::Caps {
                    ver: v.clone(),
                    features: features.iter().cloned().collect(),
                });
                for i in 0..self.owners.len() {
                    let waiting: Vec<FullJid> = self.owners[i]
                        .devices
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
        i: usize,
        device: &FullJid,
        features: Arc<std::collections::BTreeSet<String>>,
    ) {
        let classes = &self.cfg.classes;
        let Some(d) = self.owners[i].devices.get_mut(device) else {
            return;
        };
        d.features = Features::Known(features);
        d.classes = classes_of(classes, &d.features);
        debug!(device_classes = d.classes, "device features learned");
        self.mark_dirty(i, now);
    }
}
