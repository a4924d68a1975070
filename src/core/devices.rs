//! Live devices, their presence state, and service classes from features.
//!
//! Owns the parsing of a device's presence into [`Device`], XEP-0115
//! verification strings (to check a device's caps and to compute our own),
//! and [`ClassDef`]: which features make a device qualify for a class.
//! Pure data and functions; the core decides when to ask a device for its
//! features and what to cache.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset};
use jid::FullJid;
use minidom::Element;
use sha1::{Digest, Sha1};

use super::stanza::ns;

/// XMPP `<show/>` values plus plain "available", ordered from most to least
/// available (DESIGN.md section 3: chat > none > away > xa > dnd).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Show {
    /// `<show>chat</show>`: free for chat.
    Chat,
    /// No `<show/>`: available.
    Online,
    /// `<show>away</show>`.
    Away,
    /// `<show>xa</show>`: extended away.
    Xa,
    /// `<show>dnd</show>`: do not disturb.
    Dnd,
}

impl Show {
    /// In words, for what her own commands tell her ("online" as on the
    /// status page).
    pub fn words(self) -> &'static str {
        match self {
            Show::Chat => "free to chat",
            Show::Online => "online",
            Show::Away => "away",
            Show::Xa => "away for long",
            Show::Dnd => "do not disturb",
        }
    }

    /// RFC 6121 §4.7.2.1: the `<show/>` text, `None` for plain available.
    pub fn as_xml(self) -> Option<&'static str> {
        match self {
            Show::Chat => Some("chat"),
            Show::Online => None,
            Show::Away => Some("away"),
            Show::Xa => Some("xa"),
            Show::Dnd => Some("dnd"),
        }
    }

    /// Parses `<show/>` text; `None` for a value RFC 6121 does not allow.
    pub fn from_xml(text: &str) -> Option<Show> {
        match text.trim() {
            "chat" => Some(Show::Chat),
            "away" => Some(Show::Away),
            "xa" => Some(Show::Xa),
            "dnd" => Some(Show::Dnd),
            _ => None,
        }
    }
}

/// A device's XEP-0115 caps as announced in its presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    /// The software's node URI (a secret towards watchers).
    pub node: String,
    /// The verification string.
    pub ver: String,
    /// The hash algorithm name (`sha-1` is the one we verify).
    pub hash: String,
}

/// What is known of a device's disco#info features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Features {
    /// Not learned yet: the device counts as chat-only (DESIGN.md section 2).
    Unknown,
    /// Learned from caps or disco#info.
    Known(Arc<BTreeSet<String>>),
}

/// One available resource of a linked account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its availability.
    pub show: Show,
    /// Its status text, as sent.
    pub status: Option<String>,
    /// Its RFC 6121 priority.
    pub priority: i8,
    /// XEP-0319: idle since, when the device says so.
    pub idle_since: Option<DateTime<FixedOffset>>,
    /// XEP-0115 caps, if announced.
    pub caps: Option<Arc<Caps>>,
    /// Its features, once known.
    pub features: Features,
    /// Bit `i` set: qualifies for class `i` of the configured classes.
    pub classes: u32,
}

/// One owner's devices: those online now (from their presence) and a
/// record of every one she has had (first and last seen, her label, its
/// caps node), which outlives restarts. The one place where a device
/// becomes a secret of hers for the privacy guard.
#[derive(Debug, Clone, Default)]
pub(super) struct Devices {
    /// Online now.
    pub(super) live: DeviceMap,
    /// Every device she has had.
    pub(super) records: std::collections::HashMap<FullJid, super::DeviceRecord>,
}

impl Devices {
    /// A stored record, loaded at start (or given back by an undo): the
    /// device and its caps node are secrets of owner `owner` again.
    pub(super) fn restore(
        &mut self,
        device: FullJid,
        record: super::DeviceRecord,
        secrets: &mut super::Secrets,
        owner: super::OwnerId,
    ) {
        secrets.add_device(&device, record.caps_node.as_deref(), owner);
        self.records.insert(device, record);
    }

    /// Every recorded device is a secret of `owner` again (her removal
    /// was taken back).
    pub(super) fn register_all(&self, secrets: &mut super::Secrets, owner: super::OwnerId) {
        for (device, record) in &self.records {
            secrets.add_device(device, record.caps_node.as_deref(), owner);
        }
    }

    /// `device` was seen (came online or went) at wall-clock `wall_ms`:
    /// its record, created (and the device made a secret of `owner`) if
    /// it is new.
    pub(super) fn seen(
        &mut self,
        device: &FullJid,
        wall_ms: u64,
        secrets: &mut super::Secrets,
        owner: super::OwnerId,
    ) -> super::DeviceRecord {
        let record = self.records.entry(device.clone()).or_insert_with(|| {
            secrets.add_device(device, None, owner);
            super::DeviceRecord {
                first_seen: wall_ms,
                last_seen: wall_ms,
                label: None,
                caps_node: None,
                no_push: false,
            }
        });
        record.last_seen = wall_ms;
        record.clone()
    }

    /// Keeps `device`'s caps node in its record; the record if it changed.
    pub(super) fn remember_node(
        &mut self,
        device: &FullJid,
        node: String,
    ) -> Option<super::DeviceRecord> {
        let record = self.records.get_mut(device)?;
        if record.caps_node.as_ref() == Some(&node) {
            return None;
        }
        record.caps_node = Some(node);
        Some(record.clone())
    }

    /// Labels her device with resource `name`: the device and its new
    /// record, or `None` if she has no such device.
    pub(super) fn label(
        &mut self,
        name: &str,
        label: &str,
    ) -> Option<(FullJid, super::DeviceRecord)> {
        let (jid, record) = self
            .records
            .iter_mut()
            .find(|(j, _)| j.resource().as_str() == name)?;
        record.label = Some(label.to_owned());
        Some((jid.clone(), record.clone()))
    }

    /// The most available show of her live devices of `class`, if any
    /// is online (what a rule's `when` looks at).
    pub(super) fn best_show(&self, class: usize) -> Option<Show> {
        self.live
            .values()
            .filter(|d| d.classes & (1 << class) != 0)
            .map(|d| d.show)
            .min()
    }

    /// Whether she has (had) a device with resource `name`.
    pub(super) fn has_named(&self, name: &str) -> bool {
        self.records.keys().any(|j| j.resource().as_str() == name)
            || self.live.keys().any(|j| j.resource().as_str() == name)
    }

    /// The resource names of her devices, sorted, each once.
    pub(super) fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.records.keys().map(|j| j.resource().as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Forgets every device (she unregistered).
    pub(super) fn clear(&mut self) {
        self.live.clear();
        self.records.clear();
    }
}

/// One owner's live devices by full JID, in JID order: the subset of
/// `BTreeMap`'s interface the core uses, over a sorted `Vec`. An owner has
/// a handful of devices (at most `limits.devices_per_owner`), for which a
/// B-tree's leaf is mostly empty slots (benches/component.rs: about 110
/// bytes less per device).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceMap(Vec<(FullJid, Device)>);

/// Up to this many devices, [`DeviceMap`] finds one by scanning.
const SCAN: usize = 8;

impl DeviceMap {
    fn find(&self, jid: &FullJid) -> Result<usize, usize> {
        // A handful of devices: an equality scan compares lengths first
        // and bytes only for a JID of the same length, where a binary
        // search compares bytes at every step. It runs for every device
        // presence.
        if self.0.len() <= SCAN {
            let want = jid.as_str();
            if let Some(i) = self.0.iter().position(|(j, _)| j.as_str() == want) {
                return Ok(i);
            }
        }
        self.0.binary_search_by(|(j, _)| j.cmp(jid))
    }

    /// Where `jid` is (`Ok`), or would go (`Err`): for a caller that
    /// reads the device and then sets it, one search instead of two
    /// ([`DeviceMap::at`], [`DeviceMap::put`]).
    pub fn slot(&self, jid: &FullJid) -> Result<usize, usize> {
        self.find(jid)
    }

    /// The device at a slot [`DeviceMap::slot`] found.
    pub fn at(&self, slot: Result<usize, usize>) -> Option<&Device> {
        slot.ok().and_then(|i| self.0.get(i)).map(|(_, d)| d)
    }

    /// Sets the device at `jid`, at the slot [`DeviceMap::slot`] found
    /// for it while the map was as it is now (else searched again).
    pub fn put(&mut self, slot: Result<usize, usize>, jid: FullJid, device: Device) {
        let fits = match slot {
            Ok(i) => self.0.get(i).is_some_and(|(j, _)| *j == jid),
            Err(i) => {
                i <= self.0.len()
                    && (i == 0 || self.0[i - 1].0 < jid)
                    && self.0.get(i).is_none_or(|(j, _)| jid < *j)
            }
        };
        match slot {
            Ok(i) if fits => self.0[i].1 = device,
            Err(i) if fits => self.0.insert(i, (jid, device)),
            _ => {
                self.insert(jid, device);
            }
        }
    }

    /// The device at `jid`.
    pub fn get(&self, jid: &FullJid) -> Option<&Device> {
        self.find(jid).ok().map(|i| &self.0[i].1)
    }

    /// The device at `jid`, to change it.
    pub fn get_mut(&mut self, jid: &FullJid) -> Option<&mut Device> {
        self.find(jid).ok().map(|i| &mut self.0[i].1)
    }

    /// Sets the device at `jid`; returns the one it replaces.
    pub fn insert(&mut self, jid: FullJid, device: Device) -> Option<Device> {
        match self.find(&jid) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, device)),
            Err(i) => {
                self.0.insert(i, (jid, device));
                None
            }
        }
    }

    /// Takes the device at `jid` out.
    pub fn remove(&mut self, jid: &FullJid) -> Option<Device> {
        self.find(jid).ok().map(|i| self.0.remove(i).1)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets every device.
    pub fn clear(&mut self) {
        self.0 = Vec::new();
    }

    /// Devices with their JIDs, in JID order.
    pub fn iter(&self) -> impl Iterator<Item = (&FullJid, &Device)> {
        self.0.iter().map(|(j, d)| (j, d))
    }

    /// The JIDs, in order.
    pub fn keys(&self) -> impl Iterator<Item = &FullJid> {
        self.0.iter().map(|(j, _)| j)
    }

    /// The devices, in JID order.
    pub fn values(&self) -> impl Iterator<Item = &Device> {
        self.0.iter().map(|(_, d)| d)
    }
}

impl FromIterator<(FullJid, Device)> for DeviceMap {
    fn from_iter<I: IntoIterator<Item = (FullJid, Device)>>(iter: I) -> DeviceMap {
        let mut map = DeviceMap::default();
        for (j, d) in iter {
            map.insert(j, d);
        }
        map
    }
}

/// Why a device's available presence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// `<show/>` with a value RFC 6121 §4.7.2.1 does not define.
    #[error("invalid <show/> value")]
    BadShow,
    /// `<priority/>` that is not an integer in -128..=127 (RFC 6121 §4.7.2.3).
    #[error("invalid <priority/> value")]
    BadPriority,
}

impl Device {
    /// Reads a device's available presence (RFC 6121 §4.7, XEP-0115,
    /// XEP-0319). Features start unknown; the caller fills them in.
    pub fn from_presence(presence: &Element) -> Result<Device, PresenceError> {
        Device::from_presence_after(presence, None)
    }

    /// [`Device::from_presence`], in one pass over the children, taking
    /// the caps of `before` (the same device's last presence) when they
    /// are the same: this runs for every presence of every device, and
    /// caps rarely change.
    pub fn from_presence_after(
        presence: &Element,
        before: Option<&Device>,
    ) -> Result<Device, PresenceError> {
        let (mut show, mut status, mut priority) = (Show::Online, None, 0);
        let (mut idle_since, mut caps) = (None, None);
        // RFC 6121 allows one of each; the first counts, as get_child did.
        let mut seen = [false; 5];
        for child in presence.children() {
            let slot = match child.name() {
                "show" if child.has_ns(ns::COMPONENT) => 0,
                "status" if child.has_ns(ns::COMPONENT) => 1,
                "priority" if child.has_ns(ns::COMPONENT) => 2,
                "idle" if child.has_ns(ns::IDLE) => 3,
                "c" if child.has_ns(ns::CAPS) => 4,
                _ => continue,
            };
            if std::mem::replace(&mut seen[slot], true) {
                continue;
            }
            match slot {
                0 => show = Show::from_xml(&text_of(child)).ok_or(PresenceError::BadShow)?,
                1 => status = Some(child.text()).filter(|s| !s.trim().is_empty()),
                2 => {
                    priority = text_of(child)
                        .trim()
                        .parse::<i8>()
                        .map_err(|_| PresenceError::BadPriority)?
                }
                // A bad idle date is the device's own business: ignore it
                // rather than refuse the whole presence.
                3 => {
                    idle_since = child
                        .attr("since")
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                }
                _ => {
                    // One pass over the attributes, not a search per name.
                    let (mut node, mut ver, mut hash) = (None, None, None);
                    for ((ns, name), value) in child.attrs().iter() {
                        if ns.is_empty() {
                            match name.as_str() {
                                "node" => node = Some(value.as_str()),
                                "ver" => ver = Some(value.as_str()),
                                "hash" => hash = Some(value.as_str()),
                                _ => {}
                            }
                        }
                    }
                    let (Some(node), Some(ver), Some(hash)) = (node, ver, hash) else {
                        continue;
                    };
                    caps = match before.and_then(|b| b.caps.as_ref()) {
                        // `ver` first: it differs whenever the caps do.
                        Some(c) if c.ver == ver && c.node == node && c.hash == hash => {
                            Some(c.clone())
                        }
                        _ => Some(Arc::new(Caps {
                            node: node.to_owned(),
                            ver: ver.to_owned(),
                            hash: hash.to_owned(),
                        })),
                    };
                }
            }
        }
        Ok(Device {
            show,
            status,
            priority,
            idle_since,
            caps,
            features: Features::Unknown,
            classes: 0,
        })
    }
}

/// An element's text, borrowed when it is one text node (as `<show/>`
/// and `<priority/>` always are), where `Element::text` allocates.
fn text_of(el: &Element) -> std::borrow::Cow<'_, str> {
    let mut texts = el.texts();
    match (texts.next(), texts.next()) {
        (None, _) => std::borrow::Cow::Borrowed(""),
        (Some(t), None) => std::borrow::Cow::Borrowed(t),
        _ => std::borrow::Cow::Owned(el.text()),
    }
}

/// One configured service class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassDef {
    /// Its name, also the class resource (`alice@D/<name>`).
    pub name: String,
    /// Features a device must all have to qualify; empty = every device.
    pub requires: Vec<String>,
    /// The priority of the class presence.
    pub priority: i8,
    /// Whether calls of this class go through XEP-0353.
    pub jmi: bool,
    /// What disco#info on the class resource answers (sorted, deduplicated).
    pub features: BTreeSet<String>,
    /// XEP-0115 ver of [`ClassDef::features`] with our identity.
    pub ver: String,
}

/// XEP-0184 receipts, XEP-0085 chat states, XEP-0333 markers, XEP-0308
/// corrections, XEP-0424 retractions, XEP-0461 replies.
pub const CHAT_RELAYED: [&str; 6] = [
    "urn:xmpp:receipts",
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:message-correct:0",
    "urn:xmpp:message-retract:1",
    "urn:xmpp:reply:0",
];

/// XEP-0353 namespace, advertised by call classes.
pub const JMI: &str = "urn:xmpp:jingle-message:0";

impl ClassDef {
    /// A class from its name, required features, priority and JMI flag.
    pub fn new(name: &str, requires: Vec<String>, priority: i8, jmi: bool) -> ClassDef {
        let mut features: BTreeSet<String> = requires.iter().cloned().collect();
        features.insert(ns::DISCO_INFO.to_owned());
        features.insert(ns::CAPS.to_owned());
        features.insert(ns::PING.to_owned());
        if jmi {
            features.insert(JMI.to_owned());
        }
        if name == "chat" {
            // What a conversation through the chat class carries, both
            // ways, ids unchanged: clients ask for receipts and send chat
            // states, markers, corrections, retractions and replies only
            // to an entity that says it takes them.
            features.extend(CHAT_RELAYED.iter().map(|f| (*f).to_owned()));
        }
        let ver = caps_hash(&verification_string(&[our_identity()], &features, &[]));
        ClassDef {
            name: name.to_owned(),
            requires,
            priority,
            jmi,
            features,
            ver,
        }
    }

    /// Whether a device with these features qualifies.
    pub fn qualifies(&self, features: &Features) -> bool {
        match features {
            Features::Unknown => self.requires.is_empty(),
            Features::Known(f) => self.requires.iter().all(|r| f.contains(r)),
        }
    }
}

/// The class bit set for a device's features.
pub fn classes_of(classes: &[ClassDef], features: &Features) -> u32 {
    classes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.qualifies(features))
        .fold(0, |acc, (i, _)| acc | (1 << i))
}

/// A disco identity: category, type, xml:lang, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    /// `category`.
    pub category: String,
    /// `type`.
    pub kind: String,
    /// `xml:lang`, empty when absent.
    pub lang: String,
    /// `name`, empty when absent.
    pub name: String,
}

/// The identity of every class resource.
pub fn our_identity() -> Identity {
    Identity {
        category: "client".into(),
        kind: "pc".into(),
        lang: String::new(),
        name: "unified-presence".into(),
    }
}

/// One XEP-0004 form of extended disco info: FORM_TYPE and (var, values).
pub type ExtForm = (String, Vec<(String, Vec<String>)>);

/// XEP-0115 §5.1 verification string. Forms and fields are sorted here
/// (xmpp-parsers' `compute_disco` does not sort fields by `var`).
pub fn verification_string(
    identities: &[Identity],
    features: &BTreeSet<String>,
    forms: &[ExtForm],
) -> String {
    let mut s = String::new();
    let mut ids: Vec<&Identity> = identities.iter().collect();
    ids.sort();
    for i in ids {
        s.push_str(&format!("{}/{}/{}/{}<", i.category, i.kind, i.lang, i.name));
    }
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    let mut forms: Vec<&ExtForm> = forms.iter().collect();
    forms.sort_by(|a, b| a.0.cmp(&b.0));
    for (form_type, fields) in forms {
        s.push_str(form_type);
        s.push('<');
        let mut fields: Vec<&(String, Vec<String>)> = fields.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for (var, values) in fields {
            s.push_str(var);
            s.push('<');
            let mut values = values.clone();
            values.sort();
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    s
}

/// Base64 of the SHA-1 of a verification string (XEP-0115 §5.1 steps 8-9).
pub fn caps_hash(verification: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(verification.as_bytes()))
}

/// Why a disco#info answer could not be used for caps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoError {
    /// No `<query xmlns='http://jabber.org/protocol/disco#info'/>` child.
    #[error("no disco#info query in the result")]
    NoQuery,
    /// XEP-0115 §5.4: duplicate identities, features or forms.
    #[error("duplicate identity, feature or form")]
    Duplicate,
}

/// Reads a disco#info result: its features and its XEP-0115 ver.
pub fn read_disco_info(iq: &Element) -> Result<(BTreeSet<String>, String), DiscoError> {
    let query = iq
        .get_child("query", ns::DISCO_INFO)
        .ok_or(DiscoError::NoQuery)?;
    let mut identities = Vec::new();
    let mut features = BTreeSet::new();
    let mut forms: Vec<ExtForm> = Vec::new();
    for child in query.children() {
        if child.is("identity", ns::DISCO_INFO) {
            let lang = child
                .attrs()
                .iter()
                .find(|((_, name), _)| name.as_str() == "lang")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let id = Identity {
                category: child.attr("category").unwrap_or_default().to_owned(),
                kind: child.attr("type").unwrap_or_default().to_owned(),
                lang,
                name: child.attr("name").unwrap_or_default().to_owned(),
            };
            if identities.contains(&id) {
                return Err(DiscoError::Duplicate);
            }
            identities.push(id);
        } else if child.is("feature", ns::DISCO_INFO) {
            if let Some(var) = child.attr("var") {
                if !features.insert(var.to_owned()) {
                    return Err(DiscoError::Duplicate);
                }
            }
        } else if child.is("x", ns::DATA) {
            let mut form_type = None;
            let mut fields = Vec::new();
            for field in child.children().filter(|f| f.is("field", ns::DATA)) {
                let var = field.attr("var").unwrap_or_default().to_owned();
                let values: Vec<String> = field
                    .children()
                    .filter(|v| v.is("value", ns::DATA))
                    .map(|v| v.text())
                    .collect();
                if var == "FORM_TYPE" {
                    form_type = values.into_iter().next();
                } else {
                    fields.push((var, values));
                }
            }
            // XEP-0115 §5.4 3.6: a form without FORM_TYPE is ignored.
            if let Some(form_type) = form_type {
                if forms.iter().any(|(t, _)| *t == form_type) {
                    return Err(DiscoError::Duplicate);
                }
                forms.push((form_type, fields));
            }
        }
    }
    let ver = caps_hash(&verification_string(&identities, &features, &forms));
    Ok((features, ver))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot found once sets the device where a search would; a slot the
    /// map has moved past since is searched again, not trusted.
    #[test]
    fn a_device_is_set_at_its_slot_and_a_stale_slot_is_not_trusted() {
        let jid = |r: &str| FullJid::new(&format!("alice@example.org/{r}")).unwrap();
        let dev = |priority| Device {
            priority,
            ..Device::from_presence(&Element::bare("presence", ns::COMPONENT)).unwrap()
        };
        let mut map = DeviceMap::default();
        for (r, p) in [("b", 1), ("d", 2)] {
            let slot = map.slot(&jid(r));
            assert!(map.at(slot).is_none());
            map.put(slot, jid(r), dev(p));
        }
        let slot = map.slot(&jid("c"));
        map.put(slot, jid("c"), dev(3));
        let slot = map.slot(&jid("d"));
        assert_eq!(map.at(slot).map(|d| d.priority), Some(2));
        map.put(slot, jid("d"), dev(4));
        // Stale: "a" arrives after "e"'s slot was found.
        let stale = map.slot(&jid("e"));
        map.insert(jid("a"), dev(5));
        map.put(stale, jid("e"), dev(6));
        let stale = map.slot(&jid("b"));
        map.remove(&jid("a"));
        map.put(stale, jid("b"), dev(7));
        let got: Vec<(String, i8)> = map
            .iter()
            .map(|(j, d)| (j.resource().to_string(), d.priority))
            .collect();
        let want = [("b", 7), ("c", 3), ("d", 4), ("e", 6)];
        assert_eq!(got, want.map(|(r, p)| (r.to_owned(), p)));
    }

    /// XEP-0115 §5.3, the complex example (fields out of `var` order, as a
    /// real client may send them).
    #[test]
    fn xep0115_complex_example_verifies() {
        let xml = r#"<iq xmlns='jabber:component:accept' type='result'>
          <query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
            <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
            <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
            <feature var='http://jabber.org/protocol/caps'/>
            <feature var='http://jabber.org/protocol/disco#info'/>
            <feature var='http://jabber.org/protocol/disco#items'/>
            <feature var='http://jabber.org/protocol/muc'/>
            <x xmlns='jabber:x:data' type='result'>
              <field var='os_version'><value>10.5.1</value></field>
              <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
              <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
              <field var='os'><value>Mac</value></field>
              <field var='software'><value>Psi</value></field>
              <field var='software_version'><value>0.11</value></field>
            </x>
          </query></iq>"#;
        let el: Element = xml.parse().unwrap();
        let (features, ver) = read_disco_info(&el).unwrap();
        assert_eq!(ver, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
        assert!(features.contains("http://jabber.org/protocol/muc"));
    }

    #[test]
    fn duplicate_features_fail_verification() {
        let xml = "<iq xmlns='jabber:component:accept' type='result'><query xmlns='http://jabber.org/protocol/disco#info'><feature var='a'/><feature var='a'/></query></iq>";
        let el: Element = xml.parse().unwrap();
        assert_eq!(read_disco_info(&el), Err(DiscoError::Duplicate));
    }

    #[test]
    fn show_order_is_chat_none_away_xa_dnd() {
        assert!(Show::Chat < Show::Online);
        assert!(Show::Online < Show::Away);
        assert!(Show::Away < Show::Xa);
        assert!(Show::Xa < Show::Dnd);
    }

    #[test]
    fn presence_parsing_rejects_bad_show_and_priority() {
        let bad_show: Element =
            "<presence xmlns='jabber:component:accept'><show>bogus</show></presence>"
                .parse()
                .unwrap();
        assert_eq!(
            Device::from_presence(&bad_show),
            Err(PresenceError::BadShow)
        );
        let bad_prio: Element =
            "<presence xmlns='jabber:component:accept'><priority>300</priority></presence>"
                .parse()
                .unwrap();
        assert_eq!(
            Device::from_presence(&bad_prio),
            Err(PresenceError::BadPriority)
        );
    }

    #[test]
    fn unknown_features_qualify_for_chat_only() {
        let chat = ClassDef::new("chat", vec![], 10, false);
        let audio = ClassDef::new("audio", vec!["urn:xmpp:jingle:1".into()], 5, true);
        let classes = [chat, audio];
        assert_eq!(classes_of(&classes, &Features::Unknown), 0b01);
        let jingle = Features::Known(Arc::new(["urn:xmpp:jingle:1".to_owned()].into()));
        assert_eq!(classes_of(&classes, &jingle), 0b11);
    }
}
