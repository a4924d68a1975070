//! Her face to the world (DESIGN.md section 11): the vCard, avatar and
//! nick that her contacts' clients show for `alice@D`.
//!
//! The profile is mirrored from her account's `vcard-temp` (XEP-0054), the
//! one profile every server keeps and converts to and from PEP avatars
//! (Prosody's `mod_vcard_legacy`, ejabberd's `mod_vcard`). From it we
//! serve, on `alice@D`:
//! - the vCard itself (XEP-0054), with `JABBERID` replaced by her virtual
//!   JID and every field that names one of her accounts or devices left out;
//! - its photo's hash in her class presences (XEP-0153), so that clients
//!   know when to fetch it;
//! - PEP items (XEP-0163) of the XEP-0084 avatar (metadata and data) and
//!   the XEP-0172 nick, which Dino and Gajim read rather than the vCard.
//!
//! We learn of a change when one of her devices' presences carries a photo
//! hash that is not ours (her server or client puts it there), and on
//! every (re)connect. No polling per stanza.

use base64::Engine;
use minidom::Element;
use sha1::{Digest, Sha1};

use super::stanza::{element, text_element};

/// XEP-0054.
pub const VCARD: &str = "vcard-temp";
/// XEP-0153.
pub const VCARD_UPDATE: &str = "vcard-temp:x:update";
/// XEP-0060.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 §7.
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0084.
pub const AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0084.
pub const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
/// XEP-0172.
pub const NICK: &str = "http://jabber.org/protocol/nick";
/// XEP-0292: the PEP node of her vCard4.
pub const VCARD4_NODE: &str = "urn:xmpp:vcard4";
/// RFC 6351.
pub const VCARD4: &str = "urn:ietf:params:xml:ns:vcard-4.0";
/// Her account's PEP nodes whose change means her card changed: her
/// virtual JID subscribes to them, and an event makes it ask again.
pub const PROFILE_NODES: [&str; 3] = [NICK, VCARD4_NODE, AVATAR_METADATA];

/// Her photo, as her vCard holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    /// SHA-1 of the image bytes, lower-case hex: the XEP-0153 hash and the
    /// XEP-0084 item id.
    pub id: String,
    /// Its media type (`image/png`).
    pub mime: String,
    /// The image, base64 without line breaks.
    pub data: String,
    /// Its size in bytes.
    pub bytes: usize,
}

/// What her contacts' clients show of her.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Her vCard as served: scrubbed, `JABBERID` her virtual JID.
    card: Option<Element>,
    photo: Option<Photo>,
    /// From the card: `NICKNAME`, else `FN`.
    card_nick: Option<String>,
    /// The photo hash we last asked her account about, so that each of
    /// her devices' presences does not ask again.
    pub(super) asked: Option<String>,
}

/// Whether `el`, its attributes or any text below it satisfies `bad`.
fn mentions(el: &Element, bad: &impl Fn(&str) -> bool) -> bool {
    el.attrs().iter().any(|(_, v)| bad(v))
        || el.texts().any(bad)
        || el.children().any(|c| mentions(c, bad))
}

fn child_text(el: &Element, name: &str) -> Option<String> {
    let t = el.get_child(name, VCARD)?.text();
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

impl Profile {
    /// The profile served for her vCard `card` (as her account answered
    /// it), for virtual JID `virtual_jid`. `names_secret` tells whether a
    /// text names one of her accounts or devices; a field that does is
    /// left out.
    pub fn from_vcard(
        card: &Element,
        virtual_jid: &str,
        names_secret: impl Fn(&str) -> bool,
    ) -> Profile {
        let mut served = Element::bare("vCard", VCARD);
        let mut photo = None;
        for field in card.children() {
            if field.ns() != VCARD {
                continue;
            }
            if field.name() == "JABBERID" {
                served.append_child(text_element("JABBERID", VCARD, virtual_jid));
                continue;
            }
            if mentions(field, &names_secret) {
                continue;
            }
            if field.name() == "PHOTO" {
                photo = read_photo(field);
            }
            served.append_child(field.clone());
        }
        let card_nick = child_text(&served, "NICKNAME").or_else(|| child_text(&served, "FN"));
        Profile {
            card: Some(served),
            photo,
            card_nick,
            asked: None,
        }
    }

    /// Her account has no vCard (or would not give it).
    pub fn empty() -> Profile {
        Profile::default()
    }

    /// Whether anything watchers see differs from `other`.
    pub fn differs(&self, other: &Profile) -> bool {
        self.card != other.card
    }

    /// The vCard served, if she has one.
    pub fn card(&self) -> Option<&Element> {
        self.card.as_ref()
    }

    /// The vCard served now, without the fields that name a secret
    /// learned since it was mirrored (a device that came online later),
    /// and with `name` (set by her) as its name when she set one.
    pub fn card_now(
        &self,
        name: Option<&str>,
        names_secret: impl Fn(&str) -> bool,
    ) -> Option<Element> {
        if self.card.is_none() && name.is_none() {
            return None;
        }
        let mut now = Element::bare("vCard", VCARD);
        if let Some(name) = name {
            now.append_child(text_element("FN", VCARD, name));
            now.append_child(text_element("NICKNAME", VCARD, name));
        }
        let fields = self.card.iter().flat_map(|c| c.children());
        for field in fields.filter(|f| !mentions(f, &names_secret)) {
            if name.is_some() && matches!(field.name(), "FN" | "NICKNAME") {
                continue;
            }
            now.append_child(field.clone());
        }
        Some(now)
    }

    /// Her photo, if her card has one.
    pub fn photo(&self) -> Option<&Photo> {
        self.photo.as_ref()
    }

    /// The name her contacts' clients show: `nick` (set by her) if any,
    /// else her card's.
    pub fn nick<'a>(&'a self, nick: Option<&'a str>) -> Option<&'a str> {
        nick.or(self.card_nick.as_deref())
    }

    /// The XEP-0153 element for her class presences, once her card is
    /// known: the photo hash, or an empty `<photo/>` for none.
    pub fn presence_update(&self) -> Option<Element> {
        self.card.as_ref()?;
        let mut x = Element::bare("x", VCARD_UPDATE);
        match &self.photo {
            Some(p) => x.append_child(text_element("photo", VCARD_UPDATE, &p.id)),
            None => x.append_child(Element::bare("photo", VCARD_UPDATE)),
        };
        Some(x)
    }

    /// The item of PEP node `node` she has, as XEP-0060 serves it, or
    /// `None` when the node is one we do not serve or she has nothing
    /// there (`item-not-found`).
    pub fn item(&self, node: &str, nick: Option<&str>) -> Option<Element> {
        let (id, payload) = match node {
            AVATAR_METADATA => {
                let p = self.photo.as_ref()?;
                let mut meta = Element::bare("metadata", AVATAR_METADATA);
                meta.append_child(element(
                    "info",
                    AVATAR_METADATA,
                    &[
                        ("id", &p.id),
                        ("bytes", &p.bytes.to_string()),
                        ("type", &p.mime),
                    ],
                ));
                (p.id.clone(), meta)
            }
            AVATAR_DATA => {
                let p = self.photo.as_ref()?;
                (p.id.clone(), text_element("data", AVATAR_DATA, &p.data))
            }
            NICK => (
                "current".to_owned(),
                text_element("nick", NICK, self.nick(nick)?),
            ),
            _ => return None,
        };
        let mut item = element("item", PUBSUB, &[("id", &id)]);
        item.append_child(payload);
        Some(item)
    }

    /// The answer to an XEP-0060 `items` request for `node`.
    pub fn items(&self, node: &str, nick: Option<&str>) -> Option<Element> {
        let item = self.item(node, nick)?;
        let mut items = element("items", PUBSUB, &[("node", node)]);
        items.append_child(item);
        let mut pubsub = Element::bare("pubsub", PUBSUB);
        pubsub.append_child(items);
        Some(pubsub)
    }

    /// The XEP-0060 §7.1.2 event announcing her item of `node`, for a
    /// `headline` message.
    pub fn event(&self, node: &str, nick: Option<&str>) -> Option<Element> {
        let item = self.item(node, nick)?;
        let payload = item.children().next()?.clone();
        Some(event_of(node, item.attr("id").unwrap_or_default(), payload))
    }
}

/// The XEP-0060 §7.1.2 event announcing `payload` as item `id` of `node`.
pub fn event_of(node: &str, id: &str, payload: Element) -> Element {
    let mut item = element("item", PUBSUB_EVENT, &[("id", id)]);
    item.append_child(payload);
    let mut items = element("items", PUBSUB_EVENT, &[("node", node)]);
    items.append_child(item);
    let mut event = Element::bare("event", PUBSUB_EVENT);
    event.append_child(items);
    event
}

/// A `headline` message from `from` carrying `event`, as a PEP service
/// sends it; the `to` is set per recipient by the sender.
pub fn event_message(from: &str, event: Element) -> Element {
    let mut m = super::stanza::stanza("message", from, from, Some("headline"));
    m.append_child(event);
    m
}

/// The name a vCard gives: `NICKNAME`, else `FN` (at most 64 characters).
pub fn card_name(card: &Element) -> Option<String> {
    child_text(card, "NICKNAME")
        .or_else(|| child_text(card, "FN"))
        .map(|n| n.chars().take(64).collect())
}

/// Whether `payload` (of an IQ get) asks for her vCard4 (XEP-0292).
pub fn asks_vcard4(payload: &Element) -> bool {
    payload.is("pubsub", PUBSUB)
        && payload
            .get_child("items", PUBSUB)
            .and_then(|i| i.attr("node"))
            == Some(VCARD4_NODE)
}

/// Whether `payload` (of an IQ get her client sends a contact's proxy
/// JID) asks what his client shows of him: his vCard, vCard4, avatar or
/// nick.
pub fn asks_contact_profile(payload: &Element) -> bool {
    payload.is("vCard", VCARD)
        || payload.is("pubsub", PUBSUB)
            && payload
                .get_child("items", PUBSUB)
                .and_then(|i| i.attr("node"))
                .is_some_and(|n| [AVATAR_METADATA, AVATAR_DATA, NICK, VCARD4_NODE].contains(&n))
}

/// `el` (an answer her account gave) with every field of a vCard4 in it
/// that satisfies `names_secret` left out: her `impp` of her real
/// account, an `email` equal to it, a note naming a device.
pub fn scrub_vcard4(el: &mut Element, names_secret: &impl Fn(&str) -> bool) {
    if el.is("vcard", VCARD4) {
        let kept: Vec<Element> = el
            .children()
            .filter(|f| !mentions(f, names_secret))
            .cloned()
            .collect();
        let mut clean = Element::bare("vcard", VCARD4);
        for f in kept {
            clean.append_child(f);
        }
        *el = clean;
        return;
    }
    for child in el.children_mut() {
        scrub_vcard4(child, names_secret);
    }
}

/// The photo of a vCard `PHOTO` field, if it holds an image inline (an
/// `EXTVAL` link is left as the card has it).
fn read_photo(field: &Element) -> Option<Photo> {
    let b64: String = field
        .get_child("BINVAL", VCARD)?
        .text()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .ok()?;
    if bytes.is_empty() {
        return None;
    }
    let id = Sha1::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mime = child_text(field, "TYPE").unwrap_or_else(|| "image/png".to_owned());
    Some(Photo {
        id,
        mime,
        data: b64,
        bytes: bytes.len(),
    })
}

/// The photo hash a device's presence announces (XEP-0153), if any.
pub fn announced_photo(presence: &Element) -> Option<String> {
    let photo = presence
        .get_child("x", VCARD_UPDATE)?
        .get_child("photo", VCARD_UPDATE)?
        .text();
    Some(photo.trim().to_ascii_lowercase())
}

impl super::Core {
    /// Asks her account `account` for its vCard, as her virtual JID (her
    /// server answers its contacts, and anyone, for a bare JID's card).
    pub(super) fn fetch_profile(
        &mut self,
        now: super::Time,
        i: super::OwnerId,
        account: &jid::BareJid,
    ) {
        let purpose = super::Purpose::Profile { owner: i };
        let card = Element::bare("vCard", VCARD);
        self.ask_from(now, i, account, card, purpose, self.cfg.iq_timeout_ms);
    }

    /// Her first proven account, whose card is hers to show.
    pub(super) fn fetch_primary_profile(&mut self, now: super::Time, i: super::OwnerId) {
        if let Some(a) = self.primary_account(i) {
            self.fetch_profile(now, i, &a);
            self.follow_device_list(i, &a);
            self.fetch_key_list(now, i, &a);
            let from = self.owners[i].virtual_jid.to_string();
            for node in PROFILE_NODES {
                let id = self.out.next_id();
                self.out
                    .send(super::omemo::subscribe_to(&from, a.as_str(), node, id));
            }
        }
    }

    /// A device of hers announced photo `hash`: if it is not the one we
    /// serve, her card changed, and we ask her account once per hash.
    pub(super) fn photo_announced(
        &mut self,
        now: super::Time,
        i: super::OwnerId,
        account: &jid::BareJid,
        hash: String,
    ) {
        let profile = &mut self.owners[i].profile;
        let ours = profile.photo().map_or("", |p| p.id.as_str());
        if hash == ours || profile.asked.as_deref() == Some(hash.as_str()) {
            return;
        }
        profile.asked = Some(hash);
        self.fetch_profile(now, i, account);
    }

    /// Her account's answer to our vCard request: the new profile is kept
    /// and, when it changed, her watchers hear of it (a new photo hash in
    /// her class presences and XEP-0163 events).
    pub(super) fn profile_answer(&mut self, now: super::Time, iq: &Element, i: super::OwnerId) {
        let card = match iq.attr("type") {
            Some("result") => iq.get_child("vCard", VCARD),
            _ => None,
        };
        let jid = self.owners[i].virtual_jid.to_string();
        let secrets = &self.out.secrets;
        let mut new = match card {
            // An empty card is no card.
            Some(c) if c.children().next().is_some() => {
                Profile::from_vcard(c, &jid, |t| secrets.names_secret(t, None).is_some())
            }
            _ => Profile::empty(),
        };
        let owner = &mut self.owners[i];
        new.asked = owner.profile.asked.take();
        if !new.differs(&owner.profile) {
            return;
        }
        let photo_changed = new.photo() != owner.profile.photo();
        tracing::info!(owner = %owner.name, photo = photo_changed, "her profile changed");
        owner.profile = new;
        self.out.keep(super::StoreOp::Profile {
            owner: owner.name.clone(),
            card: owner.profile.card().map(String::from),
        });
        // Her class presences carry the photo hash: all are news now.
        owner.publishing.forget_available();
        let watchers: Vec<String> = owner.watchers.subscribed().map(|w| w.to_string()).collect();
        let nodes: &[&str] = if photo_changed {
            &[AVATAR_METADATA, NICK]
        } else {
            &[NICK]
        };
        if !watchers.is_empty() {
            for m in self.profile_events(i, nodes) {
                self.out.send_to_each(m, watchers.clone());
            }
        }
        self.mark_dirty(i, now);
    }

    /// She set or reset the name her contacts see: her watchers hear it.
    pub(super) fn name_changed(&mut self, i: super::OwnerId) {
        let watchers: Vec<String> = self.owners[i]
            .watchers
            .subscribed()
            .map(|w| w.to_string())
            .collect();
        if watchers.is_empty() {
            return;
        }
        for m in self.profile_events(i, &[NICK]) {
            self.out.send_to_each(m, watchers.clone());
        }
    }

    /// Her items of `nodes` as XEP-0163 events from her virtual JID (the
    /// `to` is set by the caller): what a server's PEP sends a contact
    /// when an item changes, and when the contact subscribes.
    pub(super) fn profile_events(&self, i: super::OwnerId, nodes: &[&str]) -> Vec<Element> {
        let owner = &self.owners[i];
        let jid = owner.virtual_jid.to_string();
        let name = owner.display_name.as_deref();
        nodes
            .iter()
            .filter_map(|node| owner.profile.event(node, name))
            .map(|event| event_message(&jid, event))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

    fn card(extra: &str) -> Element {
        format!(
            "<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><JABBERID>alice@example.org</JABBERID>\
             <EMAIL><USERID>alice@example.org</USERID></EMAIL><NOTE>on my phone-x1</NOTE>\
             <URL>https://alice.example</URL>{extra}</vCard>"
        )
        .parse()
        .unwrap()
    }

    fn secret(t: &str) -> bool {
        t.contains("alice@example.org") || t.contains("phone-x1")
    }

    #[test]
    fn a_card_is_served_without_what_names_her_accounts_or_devices() {
        let p = Profile::from_vcard(&card(""), "alice@unified.example", secret);
        let served = String::from(p.card().unwrap());
        assert!(
            served.contains("<JABBERID>alice@unified.example</JABBERID>"),
            "{served}"
        );
        assert!(served.contains("Alice Liddell"));
        assert!(served.contains("https://alice.example"));
        assert!(!served.contains("alice@example.org"), "{served}");
        assert!(!served.contains("phone-x1"), "{served}");
        assert_eq!(p.nick(None), Some("Alice Liddell"));
        assert_eq!(p.nick(Some("Al")), Some("Al"));
        // No photo: clients are told so.
        let x = String::from(&p.presence_update().unwrap());
        assert!(x.contains("<photo/>"), "{x}");
        assert!(p.item(AVATAR_METADATA, None).is_none());
    }

    #[test]
    fn her_photo_becomes_the_presence_hash_and_the_avatar_items() {
        let photo = format!(
            "<PHOTO><TYPE>image/png</TYPE><BINVAL>{}\n{}</BINVAL></PHOTO><NICKNAME>Al</NICKNAME>",
            &PNG[..40],
            &PNG[40..]
        );
        let p = Profile::from_vcard(&card(&photo), "alice@unified.example", secret);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(PNG)
            .unwrap();
        let hash: String = Sha1::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let ph = p.photo().unwrap();
        assert_eq!(ph.id, hash);
        assert_eq!(ph.bytes, bytes.len());
        assert_eq!(ph.data, PNG);
        let x = p.presence_update().unwrap();
        assert_eq!(x.get_child("photo", VCARD_UPDATE).unwrap().text(), hash);
        let meta = p.items(AVATAR_METADATA, None).unwrap();
        let info = meta
            .get_child("items", PUBSUB)
            .and_then(|i| i.get_child("item", PUBSUB))
            .and_then(|i| i.get_child("metadata", AVATAR_METADATA))
            .and_then(|m| m.get_child("info", AVATAR_METADATA))
            .unwrap();
        assert_eq!(info.attr("id"), Some(hash.as_str()));
        assert_eq!(info.attr("type"), Some("image/png"));
        let data = p.items(AVATAR_DATA, None).unwrap();
        assert!(String::from(&data).contains(PNG));
        let nick = p.event(NICK, None).unwrap();
        assert!(
            String::from(&nick).contains(">Al</nick>"),
            "{}",
            String::from(&nick)
        );
        assert!(p.items("urn:xmpp:omemo", None).is_none());
    }

    #[test]
    fn a_presence_names_the_photo_hash_it_announces() {
        let p: Element = "<presence xmlns='jabber:component:accept'><x xmlns='vcard-temp:x:update'><photo>ABC</photo></x></presence>".parse().unwrap();
        assert_eq!(announced_photo(&p).as_deref(), Some("abc"));
        let p: Element = "<presence xmlns='jabber:component:accept'/>"
            .parse()
            .unwrap();
        assert_eq!(announced_photo(&p), None);
    }
}
