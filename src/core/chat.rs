//! Chat through the virtual JID (DESIGN.md sections 7 and 10).
//!
//! A message to `alice@D` reaches the owner from the sender's proxy full
//! JID (`bob\40example.org@D/<his resource>`: one per remote resource, so
//! her client keeps one conversation per device of his and answers
//! receipts to it), sent to each linked account's bare JID so that her
//! server does what it does for any contact: deliver to her devices
//! (highest priority, carbons to the others), or store it offline and in
//! her archive when none is online. Her reply to the proxy full JID
//! reaches that resource of his (the bare proxy JID: his server decides)
//! from `alice@D/chat`. When the sender is another owner, each sees only
//! the other's virtual JID (`bob@D/chat`), never a real one.
//!
//! Everything else in the message (receipts, chat states, markers,
//! corrections, retractions, replies, hints, encrypted payloads) passes
//! through with its id unchanged, so whatever refers to a message by id
//! refers to the same message on both sides; only elements her server
//! stamped about her own account are dropped. An error for a message we
//! relayed goes back to its sender from the address he wrote to.

use std::collections::VecDeque;

use jid::{BareJid, Jid};
use minidom::Element;
use tracing::trace;

use super::address::proxy_jid;
use super::router::Target;
use super::rules::{self, CallContext};
use super::stanza::{self, ns, ErrorType};
use super::OwnerId;
use super::{Core, Time};

/// XEP-0359 stanza ids are stamped by a server about its own user.
const STANZA_ID: &str = "urn:xmpp:sid:0";

/// Messages whose errors we can still take back to their sender.
const RECENT_RELAYS: usize = 1024;

/// A message we relayed: sent to `to` with `id`, on behalf of `sender`,
/// who wrote to `wrote_to`.
#[derive(Debug)]
struct Relayed {
    to: BareJid,
    id: String,
    sender: Jid,
    wrote_to: String,
}

/// The latest [`RECENT_RELAYS`] relayed messages (with an id), so that
/// an error coming back finds its way to the sender.
#[derive(Debug, Default)]
pub(super) struct RecentRelays(VecDeque<Relayed>);

impl RecentRelays {
    fn push(&mut self, r: Relayed) {
        if self.0.len() >= RECENT_RELAYS {
            self.0.pop_front();
        }
        self.0.push_back(r);
    }

    fn take(&mut self, from: &BareJid, id: &str) -> Option<Relayed> {
        let i = self.0.iter().rposition(|r| r.to == *from && r.id == id)?;
        self.0.remove(i)
    }
}

/// A copy of `msg` from `from` to `to`, keeping its type, id and payloads.
fn relayed(msg: &Element, from: &str, to: &str) -> Element {
    let mut out = stanza::stanza("message", from, to, msg.attr("type"));
    if let Some(id) = msg.attr("id") {
        stanza::set_attr(&mut out, "id", id);
    }
    for child in msg
        .children()
        .filter(|c| !(c.name() == "stanza-id" && c.has_ns(STANZA_ID)))
    {
        out.append_child(child.clone());
    }
    out
}

impl Core {
    /// The devices her chat rule names for `sender`, online now; empty
    /// when no chat rule names devices (DESIGN.md section 7: default is
    /// every device, as her server does it).
    fn chat_devices(&self, now: Time, owner: OwnerId, sender: &BareJid) -> Vec<jid::FullJid> {
        let Some(class) = self.cfg.classes.iter().position(|c| c.name == "chat") else {
            return vec![];
        };
        let o = &self.owners[owner];
        let ctx = CallContext {
            class: "chat",
            caller: sender,
            caller_is_watcher: o.watchers.is_subscribed(sender),
            weekday: chrono::Datelike::weekday(&self.local_time(now, owner)),
            minute: {
                let t = self.local_time(now, owner);
                (chrono::Timelike::hour(&t) * 60 + chrono::Timelike::minute(&t)) as u16
            },
            best_show: o.devices.best_show(class),
        };
        // Ring rules decide calls; only a rule that names the chat class
        // decides where chat goes.
        let chat_rules: Vec<rules::Rule> = o
            .rules
            .iter()
            .filter(|r| r.classes.iter().any(|c| c == "chat"))
            .cloned()
            .collect();
        match rules::matching(&chat_rules, &ctx) {
            Some(rule) if !rule.reject && !rule.devices.is_empty() => rule
                .devices
                .iter()
                .flat_map(|name| {
                    o.devices
                        .live
                        .keys()
                        .filter(move |j| j.resource().as_str() == name)
                })
                .cloned()
                .collect(),
            _ => vec![],
        }
    }

    /// A message that is chat through a virtual JID; `false` if not one.
    pub(super) fn chat_message(
        &mut self,
        now: Time,
        msg: &Element,
        from: &Jid,
        target: &Target,
    ) -> bool {
        // RFC 6121 §5.2.2: chat and normal are conversations; errors,
        // groupchat and headline messages are not relayed.
        if !matches!(msg.attr("type"), None | Some("chat") | Some("normal")) {
            return false;
        }
        let sender = from.to_bare();
        let account_owner = self.out.secrets.account_owner(&sender);
        match target {
            Target::Owner { owner, .. } if account_owner != Some(*owner) => {
                let owner = *owner;
                if self.owners[owner].watchers.is_blocked(&sender) {
                    trace!("dropped: message from a blocked sender");
                    return true;
                }
                // Who she sees: another owner by his virtual JID, anyone
                // else by a proxy JID per resource of his.
                let face = match account_owner {
                    Some(other) => format!("{}/chat", self.owners[other].virtual_jid),
                    None => {
                        let Some(proxy) = proxy_jid(&sender, &self.cfg.domain) else {
                            self.out
                                .reply_error(msg, ErrorType::Modify, "jid-malformed");
                            return true;
                        };
                        match from.resource() {
                            Some(r) => format!("{proxy}/{r}"),
                            None => proxy.to_string(),
                        }
                    }
                };
                // A chat rule naming devices delivers to those that are
                // online, only them (private, no carbons); otherwise, or
                // with none online, her server delivers as for any contact.
                let chosen = self.chat_devices(now, owner, &sender);
                let wrote_to = msg.attr("to").unwrap_or_default().to_owned();
                let mut sent = false;
                if chosen.is_empty() {
                    for account in self.linked_accounts(owner) {
                        sent |= self
                            .out
                            .send_on_behalf(msg, relayed(msg, &face, account.as_str()));
                        self.remember_relay(msg, account, from, &wrote_to);
                    }
                } else {
                    for device in chosen {
                        let mut m = relayed(msg, &face, device.as_str());
                        m.append_child(Element::bare("private", super::jingle::CARBONS));
                        m.append_child(Element::bare("no-copy", super::jingle::HINTS));
                        sent |= self.out.send_on_behalf(msg, m);
                        self.remember_relay(msg, device.to_bare(), from, &wrote_to);
                    }
                }
                if !sent && self.linked_accounts(owner).is_empty() {
                    self.out
                        .reply_error(msg, ErrorType::Cancel, "service-unavailable");
                }
                true
            }
            // Her reply to a proxy JID: to him (that resource of his, if
            // she wrote to one), from her chat class.
            Target::Proxy { remote } if let Some(owner) = account_owner => {
                let face = format!("{}/chat", self.owners[owner].virtual_jid);
                let resource = msg
                    .attr("to")
                    .and_then(|t| Jid::new(t).ok())
                    .and_then(|t| t.resource().map(|r| r.to_string()));
                let to = match (self.out.secrets.account_owner(remote), resource) {
                    // A proxy JID of an account that became an owner's:
                    // his accounts, from her virtual JID only.
                    (Some(_), _) => remote.to_string(),
                    (None, Some(r)) => format!("{remote}/{r}"),
                    (None, None) => remote.to_string(),
                };
                let wrote_to = msg.attr("to").unwrap_or_default().to_owned();
                if self.out.send_on_behalf(msg, relayed(msg, &face, &to)) {
                    self.remember_relay(msg, remote.clone(), from, &wrote_to);
                }
                true
            }
            // Her own account to her own virtual JID, and the rest.
            _ => false,
        }
    }

    fn remember_relay(&mut self, msg: &Element, to: BareJid, sender: &Jid, wrote_to: &str) {
        if let Some(id) = msg.attr("id") {
            self.chat_relays.push(Relayed {
                to,
                id: id.to_owned(),
                sender: sender.clone(),
                wrote_to: wrote_to.to_owned(),
            });
        }
    }

    /// A message error from someone we relayed a message to: back to the
    /// sender of that message, from the address he wrote to, with the
    /// condition only (what the far side's server wrote about its users
    /// stays there). `false` if it answers nothing we relayed.
    pub(super) fn chat_error(&mut self, msg: &Element, from: &Jid) -> bool {
        if msg.attr("type") != Some("error") {
            return false;
        }
        let Some(id) = msg.attr("id") else {
            return false;
        };
        let Some(r) = self.chat_relays.take(&from.to_bare(), id) else {
            return false;
        };
        let error = msg.get_child("error", ns::COMPONENT);
        let typ = error.and_then(|e| e.attr("type")).unwrap_or("cancel");
        let condition = error
            .and_then(|e| {
                e.children()
                    .find(|c| c.has_ns(ns::STANZAS) && c.name() != "text")
            })
            .map_or("service-unavailable", |c| c.name());
        let mut out = stanza::stanza("message", &r.wrote_to, r.sender.as_str(), Some("error"));
        stanza::set_attr(&mut out, "id", id);
        let mut e = stanza::element("error", ns::COMPONENT, &[("type", typ)]);
        e.append_child(Element::bare(condition, ns::STANZAS));
        out.append_child(e);
        self.out.send(out);
        true
    }
}
