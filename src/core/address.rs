//! Addresses on the component's domain, and the privacy guard.
//!
//! Owns the mapping between remote parties and their proxy JIDs (XEP-0106
//! escaping of a bare JID into the localpart), and [`Secrets`]: the index of
//! everything that must never leave the component towards anyone but the
//! owner's own accounts (DESIGN.md section 1): real bare JIDs, device
//! resource names and device caps nodes. Every stanza the core emits passes
//! [`Secrets::leak_in`]; builders also use [`Secrets::names_secret`] to keep
//! device-provided text (a status message) from carrying a secret at all.
//!
//! One rule for what people write (statuses, message bodies, subjects):
//! her own words pass, and what identifies a device does not. A resource
//! that is an everyday word (`phone`, `Laptop`) names nothing and is no
//! secret; one a client generated or she made unguessable (`lapt0p-x2`,
//! `Conversations.a1B2`) is, as are her real JIDs and caps nodes.

use super::FastMap as HashMap;

use super::OwnerId;
use jid::{BareJid, Jid};
use minidom::Element;

/// XEP-0106 §3.2: the characters escaped in a localpart, with their codes.
const ESCAPES: [(char, &str); 10] = [
    (' ', "20"),
    ('"', "22"),
    ('&', "26"),
    ('\'', "27"),
    ('/', "2f"),
    (':', "3a"),
    ('<', "3c"),
    ('>', "3e"),
    ('@', "40"),
    ('\\', "5c"),
];

fn is_escape_code(s: &str) -> bool {
    // `get`, not indexing: the next two bytes may split a character.
    s.get(..2).is_some_and(|head| {
        ESCAPES
            .iter()
            .any(|(_, code)| head.eq_ignore_ascii_case(code))
    })
}

/// XEP-0106 escaping of a string into a localpart.
pub fn escape_node(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 4);
    for (i, c) in raw.char_indices() {
        // XEP-0106 §4.2: a backslash is escaped only where it would otherwise
        // start an escape sequence.
        if c == '\\' && !is_escape_code(&raw[i + 1..]) {
            out.push(c);
            continue;
        }
        match ESCAPES.iter().find(|(e, _)| *e == c) {
            Some((_, code)) => {
                out.push('\\');
                out.push_str(code);
            }
            None => out.push(c),
        }
    }
    out
}

/// XEP-0106 unescaping of a localpart.
pub fn unescape_node(node: &str) -> String {
    let mut out = String::with_capacity(node.len());
    let mut rest = node;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let decoded = after.get(..2).and_then(|code| {
            ESCAPES
                .iter()
                .find(|(_, c)| c.eq_ignore_ascii_case(code))
                .map(|(ch, _)| *ch)
        });
        match decoded {
            Some(ch) => {
                out.push(ch);
                rest = &after[2..];
            }
            None => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The proxy JID that stands for `remote` on `domain`: `bob\40example.org@D`.
pub fn proxy_jid(remote: &BareJid, domain: &str) -> Option<BareJid> {
    BareJid::new(&format!("{}@{}", escape_node(remote.as_str()), domain)).ok()
}

/// The remote bare JID a proxy localpart stands for, if it is one.
pub fn proxied_remote(node: &str) -> Option<BareJid> {
    let raw = unescape_node(node);
    if !raw.contains('@') {
        return None;
    }
    BareJid::new(&raw).ok()
}

/// What kind of secret a string is, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// An owner's real account (bare JID).
    Account,
    /// A device's resource name.
    Resource,
    /// A device's XEP-0115 caps node.
    CapsNode,
}

/// A secret found in a stanza bound for someone who may not see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// What was found.
    pub kind: SecretKind,
    /// The secret itself (for the log line of the bug that caused it).
    pub secret: String,
}

/// Whether a resource name identifies a device: anything but an everyday
/// word (letters only, all lowercase, all uppercase or capitalised, at most
/// 24 of them). An everyday word is what anyone may write ("on my phone")
/// and tells nothing about which device it is.
pub fn distinctive(resource: &str) -> bool {
    let letters = resource.chars().all(char::is_alphabetic);
    let mut rest = resource.chars().skip(1);
    let cased = resource.chars().all(char::is_lowercase)
        || resource.chars().all(char::is_uppercase)
        || rest.all(char::is_lowercase);
    !(letters && cased && !resource.is_empty() && resource.chars().count() <= 24)
}

/// Index of every owner's secrets. Keys map to the owners (by index) they
/// belong to, with a reference count for resources and nodes that several
/// devices share.
#[derive(Debug, Default)]
pub struct Secrets {
    /// The component's admins: they may read everything of every owner
    /// (as on the status page), e.g. the answer to `as alice devices`.
    admins: Vec<BareJid>,
    /// By the account's bare JID text: looked up for every stanza, from
    /// the text before a full JID's '/', with no `BareJid` built for it.
    accounts: HashMap<String, OwnerId>,
    resources: HashMap<String, HashMap<OwnerId, u32>>,
    nodes: HashMap<String, HashMap<OwnerId, u32>>,
}

fn add_ref(map: &mut HashMap<String, HashMap<OwnerId, u32>>, key: &str, owner: OwnerId) {
    *map.entry(key.to_owned())
        .or_default()
        .entry(owner)
        .or_insert(0) += 1;
}

fn del_ref(map: &mut HashMap<String, HashMap<OwnerId, u32>>, key: &str, owner: OwnerId) {
    if let Some(owners) = map.get_mut(key) {
        if let Some(n) = owners.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                owners.remove(&owner);
            }
        }
        if owners.is_empty() {
            map.remove(key);
        }
    }
}

impl Secrets {
    /// Registers a real account of `owner`.
    pub fn add_account(&mut self, account: BareJid, owner: OwnerId) {
        self.accounts.insert(account.as_str().to_owned(), owner);
    }

    /// Forgets a real account (its owner unregistered).
    pub fn del_account(&mut self, account: &BareJid) {
        self.accounts.remove(account.as_str());
    }

    /// Registers a device of `owner`: its resource and, once known, its
    /// caps node. Every device she ever had stays a secret of hers, across
    /// restarts as before them (DESIGN.md section 1): the records loaded at
    /// start, a device seen for the first time, an owner taken back after
    /// a refused unregistration all come through here.
    pub fn add_device(&mut self, device: &jid::FullJid, caps_node: Option<&str>, owner: OwnerId) {
        self.add_resource(device.resource().as_str(), owner);
        if let Some(node) = caps_node {
            self.add_node(node, owner);
        }
    }

    /// Forgets everything of `owner` (she unregistered): her accounts, and
    /// her devices' resources and caps nodes.
    pub fn forget_owner(&mut self, owner: OwnerId) {
        self.accounts.retain(|_, o| *o != owner);
        for map in [&mut self.resources, &mut self.nodes] {
            map.retain(|_, owners| {
                owners.remove(&owner);
                !owners.is_empty()
            });
        }
    }

    /// Sets who the admins are.
    pub fn set_admins(&mut self, admins: Vec<BareJid>) {
        self.admins = admins;
    }

    /// Registers a device resource of `owner` (if [`distinctive`]).
    pub fn add_resource(&mut self, resource: &str, owner: OwnerId) {
        if distinctive(resource) {
            add_ref(&mut self.resources, resource, owner);
        }
    }

    /// Forgets one device resource of `owner`.
    pub fn del_resource(&mut self, resource: &str, owner: OwnerId) {
        if distinctive(resource) {
            del_ref(&mut self.resources, resource, owner);
        }
    }

    /// Registers a device caps node of `owner`.
    pub fn add_node(&mut self, node: &str, owner: OwnerId) {
        add_ref(&mut self.nodes, node, owner);
    }

    /// Forgets one device caps node of `owner`.
    pub fn del_node(&mut self, node: &str, owner: OwnerId) {
        del_ref(&mut self.nodes, node, owner);
    }

    /// The owner whose real account `jid` is.
    pub fn account_owner(&self, jid: &BareJid) -> Option<OwnerId> {
        self.account_of(jid.as_str())
    }

    /// [`Secrets::account_owner`] for a bare JID's text.
    pub fn account_of(&self, bare: &str) -> Option<OwnerId> {
        self.accounts.get(bare).copied()
    }

    /// The owner whose real account sent from `jid` (bare or full, in
    /// canonical form): [`Secrets::account_owner`] without building the
    /// bare JID.
    pub fn sender_owner(&self, jid: &Jid) -> Option<OwnerId> {
        // The bare JID is the text before the first '/' (RFC 7622 §3.1).
        let bare = jid.as_str().split('/').next().unwrap_or_default();
        self.accounts.get(bare).copied()
    }

    /// Whether `text` names a secret of any owner other than `reader` (the
    /// owner whose own account will read it, if any).
    pub fn names_secret(&self, text: &str, reader: Option<OwnerId>) -> Option<Leak> {
        let foreign = |owners: Option<&HashMap<OwnerId, u32>>| {
            owners.is_some_and(|o| o.keys().any(|k| Some(*k) != reader))
        };
        for token in text.split(|c: char| c.is_whitespace() || "<>\"'(),;[]{}".contains(c)) {
            if token.is_empty() {
                continue;
            }
            if token.contains('@') {
                let candidate = token.trim_start_matches("xmpp:");
                if let Ok(jid) = Jid::new(candidate) {
                    let bare = jid.to_bare();
                    if let Some(owner) = self.accounts.get(bare.as_str()) {
                        if Some(*owner) != reader {
                            return Some(Leak {
                                kind: SecretKind::Account,
                                secret: bare.to_string(),
                            });
                        }
                    }
                }
            }
            if foreign(self.resources.get(token)) {
                return Some(Leak {
                    kind: SecretKind::Resource,
                    secret: token.to_owned(),
                });
            }
            // A resource as one label of a name: `lapt0p-x2.local` (an
            // mDNS ICE candidate), or the word ending a sentence.
            if let Some(label) = token
                .split('.')
                .find(|l| !l.is_empty() && l.len() < token.len() && foreign(self.resources.get(*l)))
            {
                return Some(Leak {
                    kind: SecretKind::Resource,
                    secret: label.to_owned(),
                });
            }
            let node = token.split('#').next().unwrap_or(token);
            if foreign(self.nodes.get(node)) {
                return Some(Leak {
                    kind: SecretKind::CapsNode,
                    secret: node.to_owned(),
                });
            }
        }
        None
    }

    /// The privacy guard: the first secret found anywhere in `stanza`
    /// (attributes other than `to`/`from`, and text) that its recipient may
    /// not see. `from` is ours by construction (checked by the caller);
    /// `to` is the recipient's own address.
    pub fn leak_in(&self, stanza: &Element) -> Option<Leak> {
        let to = stanza.attr("to").and_then(|to| Jid::new(to).ok());
        if to
            .as_ref()
            .is_some_and(|to| self.admins.contains(&to.to_bare()))
        {
            return None;
        }
        let reader = to.and_then(|to| self.account_owner(&to.to_bare()));
        self.leak_in_element(stanza, reader, true)
    }

    /// The guard for a stanza whose recipients are many or not known yet:
    /// the first secret of any owner in it (`to`/`from` aside).
    pub fn leak_for_anyone(&self, stanza: &Element) -> Option<Leak> {
        self.leak_in_element(stanza, None, true)
    }

    fn leak_in_element(&self, el: &Element, reader: Option<OwnerId>, top: bool) -> Option<Leak> {
        for (name, value) in el.attrs().iter().map(|((_, n), v)| (n.as_str(), v)) {
            if top && (name == "to" || name == "from") {
                continue;
            }
            if let Some(leak) = self.names_secret(value, reader) {
                return Some(leak);
            }
        }
        // Enumerated values (`<show>chat</show>`, a priority) are ours.
        // What a person wrote (a status, a body) is checked like anything
        // else: everyday words are no secrets (see [`distinctive`]).
        let unchecked = matches!(el.name(), "show" | "priority");
        if !unchecked {
            for text in el.texts() {
                if let Some(leak) = self.names_secret(text, reader) {
                    return Some(leak);
                }
            }
        }
        el.children()
            .find_map(|child| self.leak_in_element(child, reader, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xep0106_round_trip() {
        let cases = [
            ("bob@example.org", r"bob\40example.org"),
            ("d'artagnan@gascon.fr", r"d\27artagnan\40gascon.fr"),
            (r"c:\net@example.com", r"c\3a\net\40example.com"),
            (r"c:\5commas@x", r"c\3a\5c5commas\40x"),
        ];
        for (raw, escaped) in cases {
            assert_eq!(escape_node(raw), escaped);
            assert_eq!(unescape_node(escaped), raw);
        }
    }

    #[test]
    fn escaping_never_splits_a_character() {
        for raw in ["\\aé@x", "\\é", "é\\", "\\"] {
            assert_eq!(unescape_node(&escape_node(raw)), raw);
        }
    }

    proptest::proptest! {
        #[test]
        fn escaping_round_trips_any_string(raw in "\\PC*") {
            proptest::prop_assert_eq!(unescape_node(&escape_node(&raw)), raw);
        }

        #[test]
        fn the_guard_never_panics(text in "\\PC*") {
            let _ = secrets().names_secret(&text, None);
        }
    }

    #[test]
    fn proxy_jid_round_trip() {
        let bob = BareJid::new("bob@localhost").unwrap();
        let proxy = proxy_jid(&bob, "unified.localhost").unwrap();
        assert_eq!(proxy.as_str(), r"bob\40localhost@unified.localhost");
        assert_eq!(proxied_remote(proxy.node().unwrap().as_str()), Some(bob));
        assert_eq!(proxied_remote("alice"), None);
    }

    #[test]
    fn a_resource_inside_a_host_name_is_found() {
        let s = secrets();
        for text in [
            "lapt0p-x2.local",
            "ring me on lapt0p-x2.",
            "lapt0p-x2.example.org",
        ] {
            let leak = s.names_secret(text, None).expect(text);
            assert_eq!(leak.secret, "lapt0p-x2");
        }
        assert!(s.names_secret("6a83f06c-77b3.local", None).is_none());
        assert!(
            s.names_secret("lapt0p-x2.local", Some(OwnerId::nth(0)))
                .is_none(),
            "hers to read"
        );
    }

    fn secrets() -> Secrets {
        let mut s = Secrets::default();
        s.add_account(BareJid::new("alice@localhost").unwrap(), OwnerId::nth(0));
        s.add_resource("phone", OwnerId::nth(0));
        s.add_resource("lapt0p-x2", OwnerId::nth(0));
        s.add_node("https://conversations.im", OwnerId::nth(0));
        s
    }

    #[test]
    fn everyday_words_are_not_distinctive_resources() {
        for plain in ["phone", "Laptop", "PC", "téléphone", "desktop"] {
            assert!(!distinctive(plain), "{plain}");
        }
        for made in [
            "lapt0p-x2",
            "Conversations.a1B2",
            "gajim.XYZ",
            "dino.2b3c",
            "profanity.EpoQ",
            "pHone",
            "phone2",
            "",
        ] {
            assert!(distinctive(made), "{made}");
        }
    }

    #[test]
    fn guard_finds_each_kind_of_secret() {
        let s = secrets();
        let leaky = [
            "<presence xmlns='jabber:component:accept' to='bob@localhost'><status>alice@localhost/phone</status></presence>",
            "<presence xmlns='jabber:component:accept' to='bob@localhost'><status>typing on lapt0p-x2 now</status></presence>",
            "<message xmlns='jabber:component:accept' to='bob@localhost'><body>reach me at alice@localhost</body></message>",
            "<message xmlns='jabber:component:accept' to='bob@localhost'><body>I am on lapt0p-x2</body></message>",
            "<presence xmlns='jabber:component:accept' to='bob@localhost'><c xmlns='http://jabber.org/protocol/caps' node='https://conversations.im' ver='x'/></presence>",
            "<iq xmlns='jabber:component:accept' to='bob@localhost'><query xmlns='q' node='https://conversations.im#abc'/></iq>",
            "<message xmlns='jabber:component:accept' to='bob@localhost'><x xmlns='jabber:x:oob'><url>xmpp:Alice@LocalHost</url></x></message>",
        ];
        for xml in leaky {
            let el: Element = xml.parse().unwrap();
            assert!(s.leak_in(&el).is_some(), "{xml}");
        }
    }

    #[test]
    fn guard_lets_the_owner_see_her_own_devices_and_others_see_clean_stanzas() {
        let s = secrets();
        let own: Element = "<presence xmlns='jabber:component:accept' to='alice@localhost/laptop'><status>phone</status></presence>".parse().unwrap();
        assert_eq!(s.leak_in(&own), None);
        let clean: Element = "<presence xmlns='jabber:component:accept' from='alice@unified.localhost/chat' to='bob@localhost/phone'><show>away</show><status>Lunch</status></presence>".parse().unwrap();
        assert_eq!(s.leak_in(&clean), None);
        // Her own words: an everyday word that is also a resource of hers.
        let words: Element = "<presence xmlns='jabber:component:accept' to='bob@localhost'><status>on my phone</status></presence>".parse().unwrap();
        assert_eq!(s.leak_in(&words), None);
        // An admin reads everything.
        let mut admin = secrets();
        admin.set_admins(vec![BareJid::new("root@localhost").unwrap()]);
        let report: Element = "<message xmlns='jabber:component:accept' to='root@localhost/x'><body>alice@localhost/lapt0p-x2</body></message>".parse().unwrap();
        assert_eq!(admin.leak_in(&report), None);
        assert!(s.leak_in(&report).is_some());
    }

    #[test]
    fn forgotten_resources_are_no_longer_secret() {
        let mut s = secrets();
        s.add_resource("lapt0p-x2", OwnerId::nth(0));
        s.del_resource("lapt0p-x2", OwnerId::nth(0));
        assert!(s.names_secret("lapt0p-x2", None).is_some());
        s.del_resource("lapt0p-x2", OwnerId::nth(0));
        assert!(s.names_secret("lapt0p-x2", None).is_none());
    }
}
