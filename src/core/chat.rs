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
use super::stanza::{self, ErrorType};
use super::Core;

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
    /// A message that is chat through a virtual JID; `false` if not one.
    pub(super) fn chat_message(&mut self, msg: &Element, from: &Jid, target: &Target) -> bool {
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
                for account in self.linked_accounts(owner) {
                    self.send(relayed(msg, proxy.as_str(), account.as_str()));
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
