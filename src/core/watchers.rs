//! Watchers of a virtual JID (RFC 6121 sections 3 and 4, DESIGN.md
//! section 4): the component acts as the virtual JID's server.
//!
//! Every decision is queued for the store before the answer that
//! acknowledges it, so the shell makes it durable first.

use jid::{BareJid, Jid};
use minidom::Element;
use tracing::{debug, info, trace};

use super::address::proxy_jid;
use super::router::Target;
use super::stanza::{self, ErrorType};
use super::watchlist::Decision;
use super::OwnerId;
use super::{ContactState, Core, StoreOp, Time, WatcherState};

/// XEP-0172 user nickname.
const NICK: &str = "http://jabber.org/protocol/nick";

/// How long a request without a nick waits for the name on his card.
const NAME_TIMEOUT_MS: u64 = 3_000;

impl Core {
    /// Every presence stanza, by routing-table row.
    pub(super) fn handle_presence(
        &mut self,
        now: Time,
        stanza: &Element,
        from: Jid,
        target: Target,
    ) {
        let account_owner = self.out.secrets.sender_owner(&from);
        match target {
            Target::Owner { owner, .. } if account_owner == Some(owner) => {
                self.account_presence(now, owner, stanza, from)
            }
            // One owner answering another's request: `subscribed` or
            // `unsubscribed` from her account to his virtual JID decides
            // for the accounts of his that asked (DESIGN.md section 10).
            Target::Owner { owner, .. }
                if let Some(me) = account_owner.filter(|&o| {
                    o != owner
                        && matches!(
                            stanza.attr("type"),
                            Some("subscribed") | Some("unsubscribed")
                        )
                }) =>
            {
                let his: Vec<BareJid> = self.owners[me]
                    .watchers
                    .jids()
                    .filter(|w| self.out.secrets.account_owner(w) == Some(owner))
                    .collect();
                for w in his {
                    self.owner_decision(me, &w, stanza);
                }
            }
            Target::Owner { owner, .. } => self.watcher_presence(now, owner, stanza, from, false),
            Target::Proxy { remote } => match account_owner {
                Some(owner) => self.owner_decision(owner, &remote, stanza),
                None => trace!(from = %from, "dropped: presence to a proxy JID from a stranger"),
            },
            Target::Nobody => match stanza.attr("type") {
                // RFC 6121 §3.1.3 and §4.3: no such contact.
                Some("subscribe") | Some("probe") => {
                    let to = stanza.attr("to").unwrap_or_default().to_owned();
                    let bare = Jid::new(&to).map(|j| j.to_bare().to_string()).unwrap_or(to);
                    self.out.send(stanza::stanza(
                        "presence",
                        &bare,
                        from.to_bare().as_str(),
                        Some("unsubscribed"),
                    ));
                }
                _ => trace!(from = %from, "dropped: presence to nobody"),
            },
            // The service itself: always online, for anyone who adds it
            // as a contact to chat with it (RFC 6121 answers, no state).
            Target::Domain => {
                let domain = self.cfg.domain.clone();
                let to = from.to_bare().to_string();
                match stanza.attr("type") {
                    // Available from a full JID of the domain: some
                    // clients (Gajim) show a contact online only for a
                    // resource; anything sent to it still reaches us.
                    Some("subscribe") => {
                        self.out
                            .send(stanza::stanza("presence", &domain, &to, Some("subscribed")));
                        self.out.send(stanza::stanza(
                            "presence",
                            &format!("{domain}/service"),
                            &to,
                            None,
                        ));
                    }
                    Some("probe") => self.out.send(stanza::stanza(
                        "presence",
                        &format!("{domain}/service"),
                        &to,
                        None,
                    )),
                    Some("unsubscribe") => self.out.send(stanza::stanza(
                        "presence",
                        &domain,
                        &to,
                        Some("unsubscribed"),
                    )),
                    _ => trace!(from = %from, "ignored presence to the domain"),
                }
            }
        }
    }

    /// Presence from a (would-be) watcher to owner `i`'s virtual JID.
    /// `own` marks the owner's own account, approved without asking.
    pub(super) fn watcher_presence(
        &mut self,
        now: Time,
        i: OwnerId,
        stanza: &Element,
        from: Jid,
        own: bool,
    ) {
        let watcher = from.to_bare();
        if self.owners[i].watchers.is_blocked(&watcher) {
            trace!(owner = %self.owners[i].name, "dropped: blocked sender");
            return;
        }
        match stanza.attr("type") {
            Some("subscribe") => self.subscribe(now, i, watcher, stanza, own),
            Some("unsubscribe") => self.unsubscribe(i, &watcher),
            Some("probe") => {
                if self.owners[i].watchers.is_subscribed(&watcher) {
                    self.send_current(i, from.as_str());
                } else {
                    // RFC 6121 §4.3.2: not subscribed.
                    let virtual_jid = self.owners[i].virtual_jid.to_string();
                    self.out.send(stanza::stanza(
                        "presence",
                        &virtual_jid,
                        from.as_str(),
                        Some("unsubscribed"),
                    ));
                }
            }
            // Her contact answering her request, or his presence once he
            // approved it (DESIGN.md section 10).
            None | Some("unavailable") | Some("subscribed") | Some("unsubscribed")
                if self.owners[i].contacts.contains_key(&watcher) =>
            {
                self.contact_presence(i, stanza, &from)
            }
            // Anyone else's `subscribed`, `unsubscribed` and directed
            // presence need nothing from us.
            None | Some("unavailable") | Some("subscribed") | Some("unsubscribed")
            | Some("error") => {
                trace!(from = %from, "ignored presence from a watcher");
            }
            Some(_) => self
                .out
                .reply_error(stanza, ErrorType::Modify, "bad-request"),
        }
    }

    fn subscribe(&mut self, now: Time, i: OwnerId, watcher: BareJid, stanza: &Element, own: bool) {
        let limit = self.cfg.limits.watchers_per_owner;
        match self.owners[i].watchers.decide(&watcher, own, limit) {
            Decision::AnswerAgain => self.send_subscribed(i, &watcher),
            Decision::Approve => self.approve(i, watcher),
            Decision::AlreadyAsked => trace!(watcher = %watcher, "subscription already pending"),
            Decision::Full => {
                info!(owner = %self.owners[i].name, "watcher limit reached");
                self.out
                    .reply_error(stanza, ErrorType::Wait, "resource-constraint");
            }
            Decision::Ask => self.ask_owner(now, i, watcher, stanza),
        }
    }

    /// DESIGN.md section 4, policy `ask`: the owner's accounts get a
    /// `subscribe` from the watcher's proxy JID.
    fn ask_owner(&mut self, now: Time, i: OwnerId, watcher: BareJid, request: &Element) {
        // How she knows him: his JID, or another owner's virtual JID.
        let shown = self.shown_watcher(watcher.as_str());
        let Some(proxy) = self.face_of(&watcher) else {
            debug!(watcher = %watcher, "no proxy JID for watcher");
            return;
        };
        // A roster of hers that still has the proxy JID subscribed (from
        // an earlier time he watched) would make her server answer this
        // request itself: clear it first, so that she is the one asked.
        self.withdraw_request(i, &watcher);
        self.journal_watcher(i, &watcher);
        let owner = &mut self.owners[i];
        owner
            .watchers
            .insert(watcher.clone(), WatcherState::Pending);
        info!(owner = %owner.name, "subscription request forwarded to the owner");
        self.out.keep(StoreOp::Watcher {
            owner: owner.name.clone(),
            watcher: watcher.clone(),
            state: Some(WatcherState::Pending),
        });
        let watcher_jid = watcher;
        // What he wrote with his request (its status text, his XEP-0172
        // nick) is his, and goes to her with it.
        let his: Vec<Element> = request
            .children()
            .filter(|c| c.is("status", stanza::ns::COMPONENT) || c.is("nick", NICK))
            .cloned()
            .collect();
        let asks: Vec<Element> = self
            .linked_accounts(i)
            .iter()
            .map(|a| {
                let mut ask =
                    stanza::stanza("presence", proxy.as_str(), a.as_str(), Some("subscribe"));
                for c in &his {
                    ask.append_child(c.clone());
                }
                ask
            })
            .collect();
        if his.iter().any(|c| c.is("nick", NICK)) {
            return self.send_asks(i, &watcher_jid, asks, "");
        }
        if self.out.secrets.account_owner(&watcher_jid).is_some() {
            // Another owner: she knows him by his virtual JID.
            return self.send_asks(i, &watcher_jid, asks, &shown);
        }
        // Without a nick of his, her roster would name him by the escaped
        // proxy JID (`bob\40example.org`). His own profile names him (as
        // his contacts see him); failing that, his address reads better.
        let purpose = super::Purpose::HisName {
            owner: i,
            watcher: watcher_jid.clone(),
            asks: asks.clone(),
            fallback: shown.clone(),
        };
        let card = Element::bare("vCard", super::profile::VCARD);
        let timeout = self.cfg.iq_timeout_ms.min(NAME_TIMEOUT_MS);
        if !self.ask_from(now, i, &watcher_jid, card, purpose, timeout) {
            self.send_asks(i, &watcher_jid, asks, &shown);
        }
    }

    /// His requests to her accounts, with `name` as his nick unless
    /// they carry his own; none if he is no longer waiting for her (he
    /// withdrew, or she decided while his name was asked for).
    pub(super) fn send_asks(
        &mut self,
        i: OwnerId,
        watcher: &BareJid,
        asks: Vec<Element>,
        name: &str,
    ) {
        if self.owners[i].watchers.get(watcher) != Some(&WatcherState::Pending) {
            return trace!(watcher = %watcher, "request no longer pending, not shown");
        }
        for mut ask in asks {
            if !ask.has_child("nick", NICK) && !name.is_empty() {
                ask.append_child(stanza::text_element("nick", NICK, name));
            }
            self.out.send(ask);
        }
    }

    pub(super) fn approve(&mut self, i: OwnerId, watcher: BareJid) {
        self.journal_watcher(i, &watcher);
        let owner = &mut self.owners[i];
        owner
            .watchers
            .insert(watcher.clone(), WatcherState::Subscribed);
        if self.out.secrets.account_owner(&watcher) == Some(i) {
            info!(owner = %owner.name, "her own account watches her address");
        } else {
            info!(owner = %owner.name, "watcher approved");
        }
        self.out.keep(StoreOp::Watcher {
            owner: owner.name.clone(),
            watcher: watcher.clone(),
            state: Some(WatcherState::Subscribed),
        });
        self.send_subscribed(i, &watcher);
    }

    /// `subscribed` from the virtual JID, then what the watcher may see now.
    fn send_subscribed(&mut self, i: OwnerId, watcher: &BareJid) {
        let virtual_jid = self.owners[i].virtual_jid.to_string();
        self.out.send(stanza::stanza(
            "presence",
            &virtual_jid,
            watcher.as_str(),
            Some("subscribed"),
        ));
        self.send_current(i, watcher.as_str());
        // As a server's PEP does for a new contact: her avatar, nick and
        // OMEMO devices.
        let mut events =
            self.profile_events(i, &[super::profile::AVATAR_METADATA, super::profile::NICK]);
        events.extend(self.key_list_event(i));
        for m in events {
            self.out.send_to_each(m, vec![watcher.to_string()]);
        }
    }

    /// RFC 6121 §3.3.3: the watcher cancelled; it gets `unavailable` from
    /// every class it could see.
    fn unsubscribe(&mut self, i: OwnerId, watcher: &BareJid) {
        let Some(old) = self.remove_watcher(i, watcher) else {
            return;
        };
        if old == WatcherState::Subscribed {
            self.send_unavailable(i, watcher.as_str());
        }
        // Her roster follows: the request she was shown, or the
        // subscription she approved, is withdrawn.
        self.withdraw_request(i, watcher);
    }

    /// Withdraws what the owner's rosters hold from the watcher's proxy JID
    /// (RFC 6121 §3.3: `unsubscribe` cancels a pending request and a
    /// subscription alike), after the watcher or the owner settled it by
    /// another way than her client's answer, so that her rosters never
    /// drift from the component's watchers.
    pub(super) fn withdraw_request(&mut self, i: OwnerId, watcher: &BareJid) {
        let Some(proxy) = self.face_of(watcher) else {
            return;
        };
        for a in self.linked_accounts(i) {
            self.out.send(stanza::stanza(
                "presence",
                proxy.as_str(),
                a.as_str(),
                Some("unsubscribe"),
            ));
        }
    }

    /// How owner `i` names watcher `w` in what she reads: another owner's
    /// account by his virtual JID (his real one is not hers to see),
    /// anyone else by his own JID.
    pub(super) fn shown_watcher(&self, w: &str) -> String {
        match self.out.secrets.account_of(w) {
            Some(o) => self.owners[o].virtual_jid.to_string(),
            None => w.to_string(),
        }
    }

    /// The watchers of owner `i` that `jid` names: his own JID, the
    /// proxy JID her client shows for him, or another owner's virtual JID
    /// (his accounts that watch her or asked to).
    pub(super) fn watchers_named(&self, i: OwnerId, jid: &BareJid) -> Vec<BareJid> {
        if jid.domain().as_str() == self.cfg.domain {
            let node = jid.node().map(|n| n.to_string()).unwrap_or_default();
            if let Some(remote) = super::address::proxied_remote(&node) {
                return vec![remote];
            }
            if let Some(&o) = self.by_name.get(&node) {
                return self.owners[i]
                    .watchers
                    .jids()
                    .filter(|w| self.out.secrets.account_owner(w) == Some(o))
                    .collect();
            }
        }
        vec![jid.clone()]
    }

    /// How a watcher appears to the owner: another owner's account by
    /// his virtual JID, anyone else by his proxy JID.
    pub(super) fn face_of(&self, watcher: &BareJid) -> Option<BareJid> {
        match self.out.secrets.account_owner(watcher) {
            Some(o) => Some(self.owners[o].virtual_jid.clone()),
            None => proxy_jid(watcher, &self.cfg.domain),
        }
    }

    fn remove_watcher(&mut self, i: OwnerId, watcher: &BareJid) -> Option<WatcherState> {
        self.journal_watcher(i, watcher);
        let owner = &mut self.owners[i];
        let old = owner.watchers.remove(watcher)?;
        info!(owner = %owner.name, "watcher removed");
        self.out.keep(StoreOp::Watcher {
            owner: owner.name.clone(),
            watcher: watcher.clone(),
            state: None,
        });
        Some(old)
    }

    /// The owner answered a forwarded request (or cancelled a watcher) by
    /// presence to the watcher's proxy JID.
    fn owner_decision(&mut self, i: OwnerId, remote: &BareJid, stanza: &Element) {
        let state = self.owners[i].watchers.get(remote).copied();
        match (stanza.attr("type"), state) {
            (Some("subscribed"), Some(WatcherState::Pending)) => self.approve(i, remote.clone()),
            // Her client answered: her roster is as she left it.
            (Some("unsubscribed"), Some(_)) => {
                self.refuse_watcher(i, remote);
            }
            // Her client subscribes back to his proxy JID (Conversations,
            // Dino and Gajim do when she approves him): from her virtual
            // JID, to him.
            (Some("subscribe"), _) => self.subscribe_to_contact(i, remote),
            (Some("unsubscribe"), _) => self.unsubscribe_from_contact(i, remote),
            // Her server asking for his presence (her login): asked of him,
            // and his answer reaches her as his presence does.
            (Some("probe"), _)
                if self.owners[i].contacts.get(remote) == Some(&ContactState::Approved) =>
            {
                let from = self.owners[i].virtual_jid.to_string();
                self.out.send(stanza::stanza(
                    "presence",
                    &from,
                    remote.as_str(),
                    Some("probe"),
                ));
            }
            // Her presence towards the proxy JID is never forwarded: what
            // he sees of her is her class presences.
            (typ, _) => trace!(?typ, "ignored presence from the owner to a proxy JID"),
        }
    }

    /// `contact add`: she adds `remote` from her virtual identity. His
    /// proxy JID asks her accounts (with the name she gave, or his
    /// address, as XEP-0172 nick), so that her client puts him in her
    /// roster when she accepts; and he is asked for his presence from her
    /// virtual JID, as when her client subscribes to the proxy JID.
    pub(super) fn add_contact(
        &mut self,
        i: OwnerId,
        remote: &BareJid,
        name: Option<&str>,
    ) -> String {
        let Some(face) = self.face_of(remote) else {
            return format!("{remote} cannot be given an address here.");
        };
        let nick = name.map_or_else(|| self.shown_watcher(remote.as_str()), str::to_owned);
        for a in self.linked_accounts(i) {
            let mut ask = stanza::stanza("presence", face.as_str(), a.as_str(), Some("subscribe"));
            ask.append_child(stanza::text_element("nick", NICK, &nick));
            self.out.send(ask);
        }
        self.subscribe_to_contact(i, remote);
        format!(
            "{remote} is asked for their presence, from {}. Accept the contact request from {face} in your client: that adds them to your contacts, and what you send there reaches them from your address.",
            self.owners[i].virtual_jid
        )
    }

    /// She wants his presence: `subscribe` from her virtual JID to his
    /// real one, stored before it goes out.
    fn subscribe_to_contact(&mut self, i: OwnerId, remote: &BareJid) {
        let owner = &mut self.owners[i];
        let from = owner.virtual_jid.to_string();
        match owner.contacts.get(remote) {
            // Already approved: her server is told again (RFC 6121 §3.1.3
            // answers a repeated request at once).
            Some(ContactState::Approved) => {
                if let Some(face) = self.face_of(remote) {
                    for a in self.linked_accounts(i) {
                        self.out.send(stanza::stanza(
                            "presence",
                            face.as_str(),
                            a.as_str(),
                            Some("subscribed"),
                        ));
                    }
                }
                return;
            }
            Some(ContactState::Asked) => {}
            None => {
                self.journal_contact(i, remote);
                let owner = &mut self.owners[i];
                owner.contacts.insert(remote.clone(), ContactState::Asked);
                info!(owner = %owner.name, "subscribing to a contact");
                self.out.keep(StoreOp::Contact {
                    owner: owner.name.clone(),
                    contact: remote.clone(),
                    state: Some(ContactState::Asked),
                });
            }
        }
        let mut ask = stanza::stanza("presence", &from, remote.as_str(), Some("subscribe"));
        // XEP-0172 §4.1: her name, so that his client shows who asks.
        let owner = &self.owners[i];
        if let Some(nick) = owner.profile.nick(owner.display_name.as_deref()) {
            ask.append_child(stanza::text_element("nick", NICK, nick));
        }
        self.out.send(ask);
    }

    /// She no longer wants his presence.
    fn unsubscribe_from_contact(&mut self, i: OwnerId, remote: &BareJid) {
        self.journal_contact(i, remote);
        let owner = &mut self.owners[i];
        if owner.contacts.remove(remote).is_none() {
            return;
        }
        self.out.keep(StoreOp::Contact {
            owner: owner.name.clone(),
            contact: remote.clone(),
            state: None,
        });
        let from = owner.virtual_jid.to_string();
        self.out.send(stanza::stanza(
            "presence",
            &from,
            remote.as_str(),
            Some("unsubscribe"),
        ));
    }

    /// From a contact she subscribed to: his answer, or his presence,
    /// reaching her accounts from his proxy JID (his resources as proxy
    /// full JIDs), as his own server would deliver it to her.
    fn contact_presence(&mut self, i: OwnerId, stanza: &Element, from: &Jid) {
        let remote = from.to_bare();
        let Some(face) = self.face_of(&remote) else {
            return;
        };
        let typ = stanza.attr("type");
        let state = self.owners[i].contacts.get(&remote).copied();
        match (typ, state) {
            (Some("subscribed"), Some(ContactState::Asked)) => {
                self.journal_contact(i, &remote);
                let owner = &mut self.owners[i];
                owner
                    .contacts
                    .insert(remote.clone(), ContactState::Approved);
                self.out.keep(StoreOp::Contact {
                    owner: owner.name.clone(),
                    contact: remote.clone(),
                    state: Some(ContactState::Approved),
                });
            }
            (Some("subscribed"), _) => return,
            (Some("unsubscribed"), Some(_)) => {
                self.journal_contact(i, &remote);
                let owner = &mut self.owners[i];
                owner.contacts.remove(&remote);
                self.out.keep(StoreOp::Contact {
                    owner: owner.name.clone(),
                    contact: remote.clone(),
                    state: None,
                });
            }
            // His presence counts once he approved.
            (_, Some(ContactState::Approved)) => {}
            _ => return trace!("presence from a contact who has not approved"),
        }
        let face = match (typ, from.resource()) {
            (None | Some("unavailable"), Some(r))
                if self.out.secrets.account_owner(&remote).is_none() =>
            {
                format!("{face}/{r}")
            }
            _ => face.to_string(),
        };
        for a in self.linked_accounts(i) {
            let mut p = stanza::stanza("presence", &face, a.as_str(), typ);
            for c in stanza.children() {
                p.append_child(c.clone());
            }
            self.out.send(p);
        }
    }

    /// The owner refuses a request or cancels a watcher by a command (or
    /// a block, or giving up her address): her rosters follow.
    pub(super) fn deny_watcher(&mut self, i: OwnerId, remote: &BareJid) {
        if self.refuse_watcher(i, remote) {
            self.withdraw_request(i, remote);
        }
    }

    /// The watcher is told he no longer watches; `false` if he did not.
    fn refuse_watcher(&mut self, i: OwnerId, remote: &BareJid) -> bool {
        let Some(old) = self.remove_watcher(i, remote) else {
            return false;
        };
        if old == WatcherState::Subscribed {
            // RFC 6121 §3.2.3: unavailable first, then unsubscribed.
            self.send_unavailable(i, remote.as_str());
        }
        let virtual_jid = self.owners[i].virtual_jid.to_string();
        self.out.send(stanza::stanza(
            "presence",
            &virtual_jid,
            remote.as_str(),
            Some("unsubscribed"),
        ));
        true
    }

    /// What `to` sees now: every class his view shows available, or one
    /// `unavailable` (DESIGN.md section 13).
    pub(super) fn send_current(&mut self, i: OwnerId, to: &str) {
        let out = self.presences_for(i, to);
        // The first watcher of a view: what its watchers heard is what he
        // just got (an older entry would be stale).
        if let Ok(who) = Jid::new(to).map(|j| j.to_bare()) {
            let (view, _) = self.view_name(i, &who);
            if !self.owners[i].publishing.has_view(view) {
                let view = view.to_owned();
                let shown = self.shown_by(i, self.view_named(i, &view), &self.states(i));
                self.owners[i].publishing.set_view(&view, &shown);
                self.schedule_view_edge(i);
            }
        }
        for p in out {
            self.out.send(p);
        }
    }

    /// `to` no longer watches: every class his view showed available goes.
    fn send_unavailable(&mut self, i: OwnerId, to: &str) {
        let Ok(who) = Jid::new(to).map(|j| j.to_bare()) else {
            return;
        };
        let mut out = Vec::new();
        for c in 0..self.cfg.classes.len() {
            if self.shown_to(i, &who, c).is_some() {
                out.push(self.class_presence(i, c, to, None));
            }
        }
        for p in out {
            self.out.send(p);
        }
    }
}
