//! Chat through the virtual JID (DESIGN.md section 7).
//!
//! A message to `alice@D` reaches the owner from the sender's proxy JID
//! (`bob\40example.org@D`), sent to each linked account's bare JID so that
//! her server does what it does for any contact: deliver to her devices
//! (highest priority, carbons to the others), or store it offline and in
//! her archive when none is online. Her reply to the proxy JID reaches the
//! sender from `alice@D/chat`. Everything else in the message (receipts,
//! chat states, corrections, hints, encrypted payloads) passes through;
//! only elements her server stamped about her own account are dropped.

use jid::Jid;
use minidom::Element;
use tracing::trace;

use super::address::proxy_jid;
use super::router::Target;
use super::rules::{self, CallContext};
use super::stanza::{self, ErrorType};
use super::{Core, Time};

/// XEP-0359 stanza ids are stamped by a server about its own user.
const STANZA_ID: &str = "urn:xmpp:sid:0";

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
    fn chat_devices(&self, now: Time, owner: usize, sender: &jid::BareJid) -> Vec<jid::FullJid> {
        let Some(class) = self.cfg.classes.iter().position(|c| c.name == "chat") else {
            return vec![];
        };
        let o = &self.owners[owner];
        let ctx = CallContext {
            class: "chat",
            caller: sender,
            caller_is_watcher: o.watchers.get(sender) == Some(&super::WatcherState::Subscribed),
            weekday: chrono::Datelike::weekday(&self.local_time(now, owner)),
            minute: {
                let t = self.local_time(now, owner);
                (chrono::Timelike::hour(&t) * 60 + chrono::Timelike::minute(&t)) as u16
            },
            best_show: o
                .devices
                .values()
                .filter(|d| d.classes & (1 << class) != 0)
                .map(|d| d.show)
                .min(),
        };
        match rules::matching(&o.rules, &ctx) {
            Some(rule) if !rule.reject && !rule.devices.is_empty() => rule
                .devices
                .iter()
                .flat_map(|name| {
                    o.devices
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
        let account_owner = self.secrets.account_owner(&sender);
        match target {
            Target::Owner { owner, .. } if account_owner.is_none() => {
                let owner = *owner;
                if super::listed(&self.owners[owner].blocked, &sender) {
                    trace!("dropped: message from a blocked sender");
                    return true;
                }
                let Some(proxy) = proxy_jid(&sender, &self.cfg.domain) else {
                    self.reply_error(msg, ErrorType::Modify, "jid-malformed");
                    return true;
                };
                // A chat rule naming devices delivers to those that are
                // online, only them (private, no carbons); otherwise, or
                // with none online, her server delivers as for any contact.
                let chosen = self.chat_devices(now, owner, &sender);
                if chosen.is_empty() {
                    for account in self.linked_accounts(owner) {
                        self.send(relayed(msg, proxy.as_str(), account.as_str()));
                    }
                } else {
                    for device in chosen {
                        let mut m = relayed(msg, proxy.as_str(), device.as_str());
                        m.append_child(Element::bare("private", super::jingle::CARBONS));
                        m.append_child(Element::bare("no-copy", super::jingle::HINTS));
                        self.send(m);
                    }
                }
                true
            }
            Target::Proxy { remote } if account_owner.is_some() => {
                let owner = account_owner.expect("matched is_some");
                if self.secrets.account_owner(remote).is_some() {
                    // Owners talk to each other through their real accounts.
                    self.reply_error(msg, ErrorType::Cancel, "service-unavailable");
                    return true;
                }
                let face = format!("{}/chat", self.owners[owner].virtual_jid);
                self.send_on_behalf(msg, relayed(msg, &face, remote.as_str()));
                true
            }
            _ => false,
        }
    }
}
