//! IQs: what we serve (XEP-0030 disco#info/items, XEP-0199 ping, XEP-0092
//! version on the domain), answers to our own queries, and RFC 6120 errors
//! for everything else.

use jid::{BareJid, Jid};
use minidom::Element;
use tracing::{debug, trace};

use super::adhoc;
use super::devices::our_identity;
use super::omemo::DEVICELIST;
use super::profile;
use super::router::{Resource, Target};
use super::stanza::{element, iq_result, ns, text_element, ErrorType};
use super::OwnerId;
use super::{Core, Time};

impl Core {
    /// Her client's disco#info of a contact's device, by his proxy full
    /// JID (Gajim offers calls only to a device that says it can take
    /// them): asked of his device from her virtual JID, and his answer
    /// goes back to her. Only for a contact who approved her; `false`
    /// otherwise.
    fn contact_disco(&mut self, now: Time, iq: &Element, from: &Jid, remote: &BareJid) -> bool {
        let Some(i) = self.out.secrets.account_owner(&from.to_bare()) else {
            return false;
        };
        if self.owners[i].contacts.get(remote) != Some(&super::ContactState::Approved) {
            return false;
        }
        let Some(resource) = iq
            .attr("to")
            .and_then(|t| Jid::new(t).ok())
            .and_then(|t| t.resource().map(|r| r.to_string()))
        else {
            return false;
        };
        let (Some(payload), to) = (
            iq.children().next().cloned(),
            format!("{remote}/{resource}"),
        ) else {
            return false;
        };
        let her = self.owners[i].virtual_jid.to_string();
        let (calls, mut cx) = self.calls_cx(now);
        calls.relay_get(&mut cx, iq, &her, &to, payload);
        true
    }

    /// A request that a real account answers (DESIGN.md section 11): to
    /// her virtual JID, her vCard4 or OMEMO keys, asked of her account;
    /// from one of her accounts to a contact's proxy JID, his vCard,
    /// avatar, nick or OMEMO keys, asked of his account. Always from her
    /// virtual JID. `false` when it is none of these, or she turned
    /// encryption off (then it is answered as a node she lacks).
    fn pep_relay(&mut self, now: Time, iq: &Element, from: &Jid, target: &Target) -> bool {
        let Some(payload) = iq.children().next() else {
            return false;
        };
        let omemo = super::omemo::asks_keys(payload);
        let (i, to) = match target {
            Target::Owner {
                owner,
                resource: Resource::Bare,
            } if omemo || profile::asks_vcard4(payload) => {
                let i = *owner;
                // Her first proven account: the one whose keys are hers
                // to show (the others' devices are not served yet).
                let Some(primary) = self.primary_account(i) else {
                    return false;
                };
                (i, primary.to_string())
            }
            // Her client asks what his looks like, or his keys: his
            // account answers, asked from her virtual JID.
            Target::Proxy { remote } if omemo || profile::asks_contact_profile(payload) => {
                let Some(i) = self.out.secrets.account_owner(&from.to_bare()) else {
                    return false;
                };
                if self.out.secrets.account_owner(remote).is_some() {
                    // Another owner's account: she knows him by his
                    // virtual JID, never by a proxy JID.
                    return false;
                }
                (i, remote.to_string())
            }
            _ => return false,
        };
        if omemo && !self.owners[i].omemo {
            return false;
        }
        let payload = payload.clone();
        if let (true, Target::Proxy { remote }, Some(DEVICELIST)) = (
            omemo,
            target,
            payload
                .get_child("items", profile::PUBSUB)
                .and_then(|i| i.attr("node")),
        ) {
            // Her devices want his keys: his changes reach them too.
            let remote = remote.clone();
            self.follow_device_list(i, &remote);
        }
        let her = self.owners[i].virtual_jid.to_string();
        let (calls, mut cx) = self.calls_cx(now);
        calls.relay_get(&mut cx, iq, &her, &to, payload);
        true
    }

    /// Every IQ, by type and routing-table row.
    pub(super) fn handle_iq(&mut self, now: Time, iq: &Element, from: Jid, target: Target) {
        match iq.attr("type") {
            Some("result") | Some("error") => return self.iq_answer(now, iq, &from),
            Some("get") | Some("set") => {}
            // RFC 6120 §8.2.3: type is required and one of four.
            _ => return self.out.reply_error(iq, ErrorType::Modify, "bad-request"),
        }
        // RFC 6120 §8.2.3: a request has an id and exactly one payload.
        let mut children = iq.children();
        let (Some(payload), None, Some(_)) = (children.next(), children.next(), iq.attr("id"))
        else {
            return self.out.reply_error(iq, ErrorType::Modify, "bad-request");
        };
        let get = iq.attr("type") == Some("get");
        if let Target::Owner { owner, .. } = &target {
            let sender = from.to_bare();
            let own = self.out.secrets.account_owner(&sender) == Some(*owner);
            if !own && self.owners[*owner].watchers.is_blocked(&sender) {
                // RFC 6120 §8.2.3 wants an answer, and XEP-0191 §3.5 says
                // which: what an address that serves him nothing says.
                trace!("iq from a blocked sender");
                return self
                    .out
                    .reply_error(iq, ErrorType::Cancel, "service-unavailable");
            }
        }
        if !get && self.call_iq(now, iq, &from, &target) {
            return;
        }
        if target == Target::Domain {
            if !get && payload.is("command", adhoc::COMMANDS) {
                return self.adhoc(now, iq, &from, payload);
            }
            if get
                && payload.is("query", ns::DISCO_ITEMS)
                && payload.attr("node") == Some(adhoc::COMMANDS)
            {
                let items = self.command_items(&from);
                return self.out.send(iq_result(iq, Some(items)));
            }
        }
        if get && self.pep_relay(now, iq, &from, &target) {
            return;
        }
        if let Target::Proxy { remote } = &target {
            if get
                && payload.is("query", ns::DISCO_INFO)
                && self.contact_disco(now, iq, &from, remote)
            {
                return;
            }
        }
        let answer = match target {
            Target::Domain => self.domain_iq(get, payload, &from),
            Target::Owner { owner, resource } => {
                let sender = from.to_bare();
                let sees = self.sees_classes(owner, &from).then_some(&sender);
                self.owner_iq(owner, resource, get, payload, sees)
            }
            Target::Proxy { .. } | Target::Nobody => Err("service-unavailable"),
        };
        match answer {
            Ok(p) => {
                let reply = iq_result(iq, p);
                self.out.send(reply);
            }
            Err(condition) => self.out.reply_error(iq, ErrorType::Cancel, condition),
        }
    }

    fn iq_answer(&mut self, now: Time, iq: &Element, from: &Jid) {
        if self.calls.relay_answer(now, &mut self.out, iq, from) {
            return;
        }
        let Some(id) = iq.attr("id") else {
            return trace!("dropped: iq answer without id");
        };
        // Only the entity we asked may answer (RFC 6120 §8.2.3: the same id
        // from anyone else is not an answer).
        if self.pending.get(id).is_none_or(|p| p.to != *from) {
            return trace!(id, "dropped: iq answer we did not wait for");
        }
        if let Some(p) = self.pending.remove(id) {
            debug!(id, "iq answered");
            match p.purpose {
                super::Purpose::Profile { owner } => self.profile_answer(now, iq, owner),
                super::Purpose::KeyList { owner } => self.key_list_answer(iq, owner),
                super::Purpose::AccountInfo { owner, account } => {
                    self.push_answer(iq, owner, &account)
                }
                super::Purpose::HisName {
                    owner,
                    watcher,
                    asks,
                    fallback,
                } => {
                    let name = iq
                        .get_child("vCard", profile::VCARD)
                        .and_then(profile::card_name)
                        .filter(|n| self.out.secrets.names_secret(n, None).is_none())
                        .unwrap_or(fallback);
                    self.send_asks(owner, &watcher, asks, &name);
                }
                caps => self.caps_answer(now, iq, caps),
            }
        }
    }

    /// Whether `from` may learn which of owner `i`'s classes are online
    /// by asking them: a watcher she approved, her own account, anyone
    /// when she lets anyone watch, or the caller of a live call with her.
    /// Anyone else gets what an offline class answers, so that an IQ to a
    /// class resource tells no more than presence would.
    fn sees_classes(&self, i: OwnerId, from: &Jid) -> bool {
        let sender = from.to_bare();
        let owner = &self.owners[i];
        owner.watchers.policy == super::SubscriptionPolicy::Open
            || owner.watchers.is_subscribed(&sender)
            || self.out.secrets.account_owner(&sender) == Some(i)
            || from
                .clone()
                .try_into_full()
                .is_ok_and(|f| self.calls.has_call_from(&f, i))
    }

    fn domain_iq(
        &self,
        get: bool,
        payload: &Element,
        from: &Jid,
    ) -> Result<Option<Element>, &'static str> {
        if get && payload.is("query", ns::DISCO_INFO) {
            if let Some(node) = payload.attr("node") {
                // XEP-0050 §2.3: a command node this requester may run.
                return match self.command_info(from, node) {
                    Some(q) => Ok(Some(q)),
                    None => Err("item-not-found"),
                };
            }
            let mut q = element("query", ns::DISCO_INFO, &[]);
            q.append_child(element(
                "identity",
                ns::DISCO_INFO,
                &[
                    ("category", "component"),
                    ("type", "presence"),
                    ("name", "unified-presence"),
                ],
            ));
            for f in [
                ns::DISCO_INFO,
                ns::DISCO_ITEMS,
                ns::PING,
                ns::VERSION,
                adhoc::COMMANDS,
            ] {
                q.append_child(element("feature", ns::DISCO_INFO, &[("var", f)]));
            }
            return Ok(Some(q));
        }
        if get && payload.is("query", ns::DISCO_ITEMS) {
            // XEP-0030 §7: a node we do not have (the commands node is
            // answered before this).
            if payload.attr("node").is_some() {
                return Err("item-not-found");
            }
            // Virtual JIDs are not listed: who is registered is not public.
            return Ok(Some(element("query", ns::DISCO_ITEMS, &[])));
        }
        if get && payload.is("query", ns::VERSION) {
            let mut q = element("query", ns::VERSION, &[]);
            q.append_child(text_element("name", ns::VERSION, "unified-presence"));
            q.append_child(text_element(
                "version",
                ns::VERSION,
                env!("CARGO_PKG_VERSION"),
            ));
            return Ok(Some(q));
        }
        if get && payload.is("ping", ns::PING) {
            return Ok(None);
        }
        Err("service-unavailable")
    }

    fn owner_iq(
        &self,
        i: OwnerId,
        resource: Resource,
        get: bool,
        payload: &Element,
        sees_classes: Option<&BareJid>,
    ) -> Result<Option<Element>, &'static str> {
        match resource {
            // XEP-0030 §7: the bare JID has no nodes (a caps node#ver is
            // asked of the class resource that announced it).
            Resource::Bare
                if get && payload.is("query", ns::DISCO_INFO) && payload.attr("node").is_some() =>
            {
                Err("item-not-found")
            }
            // RFC 6120 §10.5.3.1: the server answers for the bare JID.
            Resource::Bare if get && payload.is("query", ns::DISCO_INFO) => {
                let mut q = element("query", ns::DISCO_INFO, &[]);
                q.append_child(element(
                    "identity",
                    ns::DISCO_INFO,
                    &[("category", "account"), ("type", "registered")],
                ));
                // XEP-0163 §6.1: an account with a PEP service.
                q.append_child(element(
                    "identity",
                    ns::DISCO_INFO,
                    &[("category", "pubsub"), ("type", "pep")],
                ));
                q.append_child(element(
                    "feature",
                    ns::DISCO_INFO,
                    &[("var", ns::DISCO_INFO)],
                ));
                Ok(Some(q))
            }
            Resource::Bare if get && payload.is("ping", ns::PING) => Ok(None),
            // DESIGN.md section 11: her card and PEP items, as a server
            // serves an account's.
            Resource::Bare if get && payload.is("vCard", profile::VCARD) => self.owners[i]
                .profile
                .card_now(self.owners[i].display_name.as_deref(), |t| {
                    self.out.secrets.names_secret(t, None).is_some()
                })
                .map(Some)
                .ok_or("item-not-found"),
            Resource::Bare if get && payload.is("pubsub", profile::PUBSUB) => {
                let Some(items) = payload.get_child("items", profile::PUBSUB) else {
                    return Err("feature-not-implemented");
                };
                let Some(node) = items.attr("node") else {
                    return Err("bad-request");
                };
                let profile = &self.owners[i].profile;
                let name = self.owners[i].display_name.as_deref();
                let Some(item) = profile.item(node, name) else {
                    return Err("item-not-found");
                };
                // Asked for items by id: ours must be one of them.
                let ours = item.attr("id").unwrap_or_default();
                let mut wanted = items.children().filter_map(|c| c.attr("id")).peekable();
                if wanted.peek().is_some() && !wanted.any(|w| w == ours) {
                    return Err("item-not-found");
                }
                Ok(profile.items(node, name))
            }
            // RFC 6120 §10.5.4: a full JID with no available resource.
            // A class his view hides is one he cannot tell from offline.
            Resource::Class(c) if sees_classes.is_none_or(|w| self.shown_to(i, w, c).is_none()) => {
                Err("service-unavailable")
            }
            Resource::Class(c) if get && payload.is("query", ns::DISCO_INFO) => {
                let def = &self.cfg.classes[c];
                let our_node = format!("{}#{}", self.cfg.caps_node, def.ver);
                let mut q = element("query", ns::DISCO_INFO, &[]);
                match payload.attr("node") {
                    None => {}
                    Some(n) if n == our_node => crate::core::stanza::set_attr(&mut q, "node", n),
                    Some(_) => return Err("item-not-found"),
                }
                let id = our_identity();
                q.append_child(element(
                    "identity",
                    ns::DISCO_INFO,
                    &[
                        ("category", &id.category),
                        ("type", &id.kind),
                        ("name", &id.name),
                    ],
                ));
                for f in &def.features {
                    q.append_child(element("feature", ns::DISCO_INFO, &[("var", f)]));
                }
                Ok(Some(q))
            }
            Resource::Class(_) if get && payload.is("ping", ns::PING) => Ok(None),
            Resource::Other => Err("service-unavailable"),
            _ => Err("service-unavailable"),
        }
    }
}
