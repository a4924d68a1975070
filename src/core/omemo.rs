//! End-to-end encryption through the virtual JID (DESIGN.md section 11):
//! OMEMO as Conversations, Dino and Gajim speak it
//! (`eu.siacs.conversations.axolotl`, XEP-0384 v0.3).
//!
//! An OMEMO client encrypts to the device list and bundles it finds in its
//! peer's PEP. So that Bob can encrypt to `alice@D` and her devices to his
//! proxy JID:
//! - a PEP `items` request to `alice@D` for the device list or a bundle is
//!   asked of her account, from `alice@D`, and its answer goes back to Bob;
//! - the same request from one of her accounts to Bob's proxy JID is asked
//!   of Bob's account, from `alice@D`, and his answer goes back to her.
//!
//! Changes reach the other side as PEP events: the component subscribes,
//! as `alice@D`, to the device list of her account and of each contact
//! whose keys her devices asked for, and passes each change on, hers to
//! her watchers from `alice@D`, his to her accounts from his proxy JID.
//!
//! Asked live rather than cached: a bundle loses a pre-key with every new
//! session, and a device list changes when a device first starts, before
//! or after its presence. The encrypted messages themselves pass through
//! the chat relay untouched (`chat.rs`); the sender's JID is not inside
//! them in this version of OMEMO, so the relay does not break them.
//!
//! What a device list says is what any encrypted contact must see: device
//! ids (random numbers) and public keys. Device labels (a newer,
//! optional attribute) are free text a client may fill with a device name,
//! so they are dropped.
//!
//! `urn:xmpp:omemo:2` is not served: its envelope seals the sender's JID
//! inside the ciphertext (XEP-0420 `<from/>`), which says Bob's real JID
//! where her device expects the proxy JID.

use jid::{BareJid, Jid};
use minidom::Element;

use super::profile::{PUBSUB, PUBSUB_EVENT};
use super::router::{Resource, Target};
use super::stanza;
use super::OwnerId;

/// The namespace of OMEMO's elements.
pub const AXOLOTL: &str = "eu.siacs.conversations.axolotl";
/// The device list node.
pub const DEVICELIST: &str = "eu.siacs.conversations.axolotl.devicelist";
/// The prefix of a device's bundle node (`...bundles:<device id>`).
pub const BUNDLES: &str = "eu.siacs.conversations.axolotl.bundles:";

/// Whether `payload` (of an IQ get) asks for OMEMO items: the device list
/// or a device's bundle.
pub fn asks_keys(payload: &Element) -> bool {
    payload.is("pubsub", PUBSUB)
        && payload
            .get_child("items", PUBSUB)
            .and_then(|i| i.attr("node"))
            .is_some_and(|n| {
                n == DEVICELIST
                    || n.strip_prefix(BUNDLES)
                        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            })
}

/// `el` without what a PEP answer or event may say of her devices: the
/// `label` of any OMEMO `<device/>`, and the `publisher` of any item
/// (XEP-0060 §7.1.2.3: the full JID of the device that published it).
pub fn drop_labels(el: &mut Element) {
    if el.is("device", AXOLOTL) {
        el.attrs_mut()
            .remove(&minidom::rxml::Namespace::NONE, "label");
    }
    if el.name() == "item" && (el.has_ns(PUBSUB) || el.has_ns(PUBSUB_EVENT)) {
        el.attrs_mut()
            .remove(&minidom::rxml::Namespace::NONE, "publisher");
    }
    for child in el.children_mut() {
        drop_labels(child);
    }
}

/// An XEP-0060 subscription of `from` to `account`'s PEP node `node`.
pub(super) fn subscribe_to(from: &str, account: &str, node: &str, id: String) -> Element {
    let mut iq = stanza::stanza("iq", from, account, Some("set"));
    stanza::set_attr(&mut iq, "id", id);
    let mut pubsub = Element::bare("pubsub", PUBSUB);
    pubsub.append_child(stanza::element(
        "subscribe",
        PUBSUB,
        &[("node", node), ("jid", from)],
    ));
    iq.append_child(pubsub);
    iq
}

impl super::Core {
    /// Owner `i`'s virtual JID subscribes to `account`'s device list
    /// (her own, or a contact's her devices asked about), once per run.
    pub(super) fn follow_device_list(&mut self, i: OwnerId, account: &BareJid) {
        let owner = &mut self.owners[i];
        if !owner.omemo || !owner.key_peers.insert(account.clone()) {
            return;
        }
        let from = owner.virtual_jid.to_string();
        let id = self.out.next_id();
        self.out
            .send(subscribe_to(&from, account.as_str(), DEVICELIST, id));
    }

    /// Asks her account `account` for its device list, to tell new
    /// watchers (the subscription above tells us its changes).
    pub(super) fn fetch_key_list(&mut self, now: super::Time, i: OwnerId, account: &BareJid) {
        if !self.owners[i].omemo {
            return;
        }
        let mut pubsub = Element::bare("pubsub", PUBSUB);
        pubsub.append_child(stanza::element("items", PUBSUB, &[("node", DEVICELIST)]));
        let purpose = super::Purpose::KeyList { owner: i };
        self.ask_from(now, i, account, pubsub, purpose, self.cfg.iq_timeout_ms);
    }

    /// Her account's answer: her device list, kept.
    pub(super) fn key_list_answer(&mut self, iq: &Element, i: OwnerId) {
        let list = iq
            .get_child("pubsub", PUBSUB)
            .and_then(|p| p.get_child("items", PUBSUB))
            .and_then(|i| i.get_child("item", PUBSUB))
            .and_then(|i| i.get_child("list", AXOLOTL));
        if let Some(list) = list {
            let mut list = list.clone();
            drop_labels(&mut list);
            self.owners[i].key_list = Some(list);
        }
    }

    /// Her device list as an XEP-0163 event from her virtual JID, for a
    /// new watcher (the `to` is set by the caller).
    pub(super) fn key_list_event(&self, i: OwnerId) -> Option<Element> {
        let owner = &self.owners[i];
        let list = owner.key_list.as_ref().filter(|_| owner.omemo)?;
        let event = super::profile::event_of(DEVICELIST, "current", list.clone());
        Some(super::profile::event_message(
            owner.virtual_jid.as_str(),
            event,
        ))
    }

    /// A device list change her server or a contact's pushes to her
    /// virtual JID; `false` if `msg` is not one.
    pub(super) fn device_list_event(
        &mut self,
        now: super::Time,
        msg: &Element,
        from: &Jid,
        target: &Target,
    ) -> bool {
        let Some(event) = msg.get_child("event", PUBSUB_EVENT) else {
            return false;
        };
        let node = event
            .get_child("items", PUBSUB_EVENT)
            .and_then(|i| i.attr("node"));
        let Target::Owner {
            owner: i,
            resource: Resource::Bare,
        } = *target
        else {
            return false;
        };
        let sender = from.to_bare();
        if node.is_some_and(|n| super::profile::PROFILE_NODES.contains(&n)) {
            // Her name or face changed on her account: her card says how.
            if self.out.secrets.account_owner(&sender) == Some(i) {
                self.fetch_profile(now, i, &sender);
            }
            return true;
        }
        if node != Some(DEVICELIST) {
            return false;
        }
        if !self.owners[i].omemo || !self.owners[i].key_peers.contains(&sender) {
            tracing::trace!(from = %sender, "dropped: a device list we do not follow");
            return true;
        }
        let mut event = event.clone();
        drop_labels(&mut event);
        if self.out.secrets.account_owner(&sender) == Some(i) {
            if let Some(list) = event
                .get_child("items", PUBSUB_EVENT)
                .and_then(|i| i.get_child("item", PUBSUB_EVENT))
                .and_then(|i| i.get_child("list", AXOLOTL))
            {
                self.owners[i].key_list = Some(list.clone());
            }
        }
        let (face, to): (String, Vec<String>) =
            if self.out.secrets.account_owner(&sender) == Some(i) {
                // Hers: to her watchers, from her virtual JID.
                let owner = &self.owners[i];
                (
                    owner.virtual_jid.to_string(),
                    owner.watchers.subscribed().map(|w| w.to_string()).collect(),
                )
            } else {
                // His: to her accounts, from his proxy JID.
                let Some(face) = self.face_of(&sender) else {
                    return true;
                };
                (
                    face.to_string(),
                    self.linked_accounts(i)
                        .iter()
                        .map(|a| a.to_string())
                        .collect(),
                )
            };
        if to.is_empty() {
            return true;
        }
        self.out
            .send_to_each(super::profile::event_message(&face, event), to);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_device_lists_and_bundles_are_omemo_keys() {
        let ask = |node: &str| -> Element {
            format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>")
                .parse()
                .unwrap()
        };
        assert!(asks_keys(&ask(DEVICELIST)));
        assert!(asks_keys(&ask(&format!("{BUNDLES}12345"))));
        assert!(!asks_keys(&ask(BUNDLES)));
        assert!(!asks_keys(&ask(&format!("{BUNDLES}12x"))));
        assert!(!asks_keys(&ask("urn:xmpp:omemo:2:devices")));
        assert!(!asks_keys(&ask("urn:xmpp:avatar:data")));
    }

    #[test]
    fn labels_are_dropped_and_ids_kept() {
        let mut items: Element = format!(
            "<items xmlns='{PUBSUB_EVENT}' node='{DEVICELIST}'><item id='current' publisher='alice@example.org/laptop'>\
             <list xmlns='{AXOLOTL}'><device id='1' label=\"Gajim on alice's laptop\"/><device id='2'/></list></item></items>"
        )
        .parse()
        .unwrap();
        drop_labels(&mut items);
        let item = items.get_child("item", PUBSUB_EVENT).unwrap();
        assert_eq!(item.attr("publisher"), None);
        let list = item.get_child("list", AXOLOTL).unwrap();
        let ids: Vec<_> = list.children().filter_map(|d| d.attr("id")).collect();
        assert_eq!(ids, ["1", "2"]);
        assert!(list.children().all(|d| d.attr("label").is_none()));
    }
}
