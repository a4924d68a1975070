//! Core scenarios, one test per rule, no network. Every emitted stanza is
//! checked for a `to`, a `from` on our domain and leaks (`Harness::drain`).

use std::collections::BTreeSet;

use minidom::Element;

use super::devices::ClassDef;
use super::*;
use crate::config::default_classes;

const D: &str = "unified.localhost";
const JINGLE_AUDIO: &[&str] = &[
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:rtp:1",
    "urn:xmpp:jingle:apps:rtp:audio",
    "urn:xmpp:jingle:transports:ice-udp:1",
];

struct Harness {
    core: Core,
    now: Time,
    ops: Vec<StoreOp>,
}

fn config(policy: SubscriptionPolicy) -> CoreConfig {
    CoreConfig {
        domain: D.into(),
        caps_node: "https://unified-presence.org/caps".into(),
        classes: default_classes()
            .iter()
            .map(|c| ClassDef::new(&c.name, c.features.clone(), c.priority, c.jmi))
            .collect(),
        owners: vec![OwnerConfig {
            name: "alice".into(),
            accounts: vec![BareJid::new("alice@localhost").unwrap()],
            subscription: policy,
            allow: vec![],
            blocked: vec!["spam@evil.example".into()],
        }],
        coalesce_ms: 100,
        settle_ms: 500,
        iq_timeout_ms: 30_000,
        limits: Limits {
            devices_per_owner: 8,
            watchers_per_owner: 100,
            pending_iqs: 100,
        },
        seed: 7,
    }
}

/// Words that must never reach a watcher in these scenarios.
const SECRETS: &[&str] = &[
    "alice@localhost",
    "phone",
    "laptop",
    "tablet",
    "https://conversations.im",
    "https://dino.im",
];

impl Harness {
    fn new(policy: SubscriptionPolicy) -> Harness {
        Harness::with(config(policy), Stored::default())
    }

    fn with(cfg: CoreConfig, stored: Stored) -> Harness {
        let mut h = Harness {
            core: Core::new(cfg, stored),
            now: Time(1_700_000_000_000),
            ops: vec![],
        };
        h.core.handle_connected(h.now);
        h.drain();
        h.advance(1000);
        h
    }

    /// Takes all outputs, checking each: addressed, from our domain, and
    /// no secret towards anyone but Alice's own account.
    fn drain(&mut self) -> Vec<Element> {
        while let Some(op) = self.core.poll_store() {
            self.ops.push(op);
        }
        let mut out = vec![];
        while let Some(el) = self.core.poll_transmit() {
            let to = el.attr("to").expect("every stanza has a to");
            let from = Jid::new(el.attr("from").expect("every stanza has a from")).unwrap();
            assert_eq!(from.domain().as_str(), D, "from on our domain");
            if !to.starts_with("alice@localhost") {
                let mut xml = Vec::new();
                el.write_to(&mut xml).unwrap();
                let xml = String::from_utf8(xml).unwrap();
                let body = xml.replace(&format!("to=\"{to}\""), "");
                for s in SECRETS {
                    assert!(!body.contains(s), "leak of {s} in {xml}");
                }
            }
            out.push(el);
        }
        assert_eq!(
            self.core.guard_drops(),
            0,
            "the privacy guard had to drop a stanza"
        );
        out
    }

    fn input(&mut self, xml: &str) -> Vec<Element> {
        let el: Element = xml.parse().expect("test xml");
        self.core.handle_stanza(self.now, el);
        self.drain()
    }

    fn advance(&mut self, ms: u64) -> Vec<Element> {
        self.now = self.now.plus_ms(ms);
        let mut out = self.drain();
        while let Some(t) = self.core.poll_timeout() {
            if t > self.now {
                break;
            }
            self.core.handle_timeout(self.now);
            out.extend(self.drain());
        }
        out
    }

    fn device(&mut self, res: &str, extra: &str) -> Vec<Element> {
        self.input(&format!(
            "<presence xmlns='jabber:component:accept' from='alice@localhost/{res}' to='alice@{D}'>{extra}</presence>"
        ))
    }

    fn device_gone(&mut self, res: &str) -> Vec<Element> {
        self.input(&format!(
            "<presence xmlns='jabber:component:accept' type='unavailable' from='alice@localhost/{res}' to='alice@{D}'/>"
        ))
    }

    /// Answers the pending disco#info query to `res` with `features`.
    fn answer_disco(&mut self, query: &Element, features: &[&str]) -> Vec<Element> {
        let node = query
            .get_child("query", ns::DISCO_INFO)
            .and_then(|q| q.attr("node"))
            .map(|n| format!(" node='{n}'"))
            .unwrap_or_default();
        let mut feats = format!("<feature var='{}'/>", ns::DISCO_INFO);
        for f in features {
            feats.push_str(&format!("<feature var='{f}'/>"));
        }
        self.input(&format!(
            "<iq xmlns='jabber:component:accept' type='result' id='{}' from='{}' to='{}'><query xmlns='http://jabber.org/protocol/disco#info'{node}><identity category='client' type='phone' name='X'/>{feats}</query></iq>",
            query.attr("id").unwrap(),
            query.attr("to").unwrap(),
            query.attr("from").unwrap()
        ))
    }

    fn subscribe_bob(&mut self) -> Vec<Element> {
        self.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='bob@localhost' to='alice@{D}'/>"))
    }
}

fn caps_for(node: &str, features: &[&str]) -> String {
    let mut set: BTreeSet<String> = features.iter().map(|s| s.to_string()).collect();
    set.insert(ns::DISCO_INFO.into());
    let id = devices::Identity {
        category: "client".into(),
        kind: "phone".into(),
        lang: String::new(),
        name: "X".into(),
    };
    let ver = devices::caps_hash(&devices::verification_string(&[id], &set, &[]));
    format!("<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{node}' ver='{ver}'/>")
}

fn to_bob(out: &[Element]) -> Vec<&Element> {
    out.iter()
        .filter(|e| e.attr("to").is_some_and(|t| t.starts_with("bob@localhost")))
        .collect()
}

fn from_class<'a>(out: &'a [&'a Element], class: &str) -> Option<&'a Element> {
    let from = format!("alice@{D}/{class}");
    out.iter()
        .copied()
        .find(|e| e.attr("from") == Some(from.as_str()))
}

fn show(p: &Element) -> Option<String> {
    p.get_child("show", ns::COMPONENT).map(|s| s.text())
}

/// Alice with a phone (audio+video via caps) and a laptop (no caps, chat
/// only after disco), and Bob approved as a watcher.
fn alice_with_phone_and_laptop() -> Harness {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    h.subscribe_bob();
    let mut video: Vec<&str> = JINGLE_AUDIO.to_vec();
    video.push("urn:xmpp:jingle:apps:rtp:video");
    let out = h.device("phone", &caps_for("https://conversations.im", &video));
    let q = out
        .iter()
        .find(|e| e.name() == "iq")
        .expect("caps query")
        .clone();
    h.answer_disco(&q, &video);
    let out = h.device("laptop", "<show>away</show>");
    let q = out
        .iter()
        .find(|e| e.name() == "iq")
        .expect("direct disco")
        .clone();
    assert!(q
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .attr("node")
        .is_none());
    h.answer_disco(&q, &["urn:xmpp:receipts"]);
    h.advance(200);
    h
}

#[test]
fn connecting_subscribes_to_unlinked_accounts_without_probing_them() {
    let mut core = Core::new(config(SubscriptionPolicy::Ask), Stored::default());
    core.handle_connected(Time(0));
    let out: Vec<Element> = std::iter::from_fn(|| core.poll_transmit()).collect();
    let types: Vec<_> = out
        .iter()
        .map(|e| {
            (
                e.attr("from").unwrap(),
                e.attr("to").unwrap(),
                e.attr("type").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [("alice@unified.localhost", "alice@localhost", "subscribe")]
    );
}

#[test]
fn approved_accounts_are_only_probed_after_restart() {
    let stored = Stored {
        accounts: vec![(
            "alice".into(),
            BareJid::new("alice@localhost").unwrap(),
            AccountState { approved: true },
        )],
        ..Stored::default()
    };
    let mut core = Core::new(config(SubscriptionPolicy::Ask), stored);
    core.handle_connected(Time(0));
    let out: Vec<Element> = std::iter::from_fn(|| core.poll_transmit()).collect();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].attr("type"), Some("probe"));
}

#[test]
fn approval_by_the_account_is_stored_and_followed_by_a_probe() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='alice@localhost' to='alice@{D}'/>"));
    assert!(h.ops.contains(&StoreOp::Account {
        owner: "alice".into(),
        account: BareJid::new("alice@localhost").unwrap(),
        state: AccountState { approved: true }
    }));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].attr("type"), Some("probe"));
}

#[test]
fn open_policy_approves_and_sends_current_presence_per_class() {
    let h = &mut alice_with_phone_and_laptop();
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='probe' from='bob@localhost/pc' to='alice@{D}'/>"));
    let bob = to_bob(&out);
    assert_eq!(bob.len(), 3, "chat, audio, video available; files not");
    assert_eq!(bob[0].attr("to"), Some("bob@localhost/pc"));
    let chat = from_class(&bob, "chat").unwrap();
    assert_eq!(
        show(chat),
        None,
        "phone is online, laptop away: best is online"
    );
    assert!(from_class(&bob, "audio").is_some());
    assert!(from_class(&bob, "files").is_none());
}

#[test]
fn subscription_approval_is_stored_before_subscribed_is_sent() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let out = h.subscribe_bob();
    assert_eq!(
        h.ops.last(),
        Some(&StoreOp::Watcher {
            owner: "alice".into(),
            watcher: BareJid::new("bob@localhost").unwrap(),
            state: Some(WatcherState::Subscribed)
        })
    );
    assert_eq!(out[0].attr("type"), Some("subscribed"));
    assert_eq!(out[0].attr("from"), Some("alice@unified.localhost"));
    // No device yet: one unavailable.
    assert_eq!(out[1].attr("type"), Some("unavailable"));
}

#[test]
fn ask_policy_forwards_from_the_proxy_jid_and_the_owner_decides() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.device("phone", "");
    h.advance(200);
    let out = h.subscribe_bob();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].attr("to"), Some("alice@localhost"));
    assert_eq!(
        out[0].attr("from"),
        Some(r"bob\40localhost@unified.localhost")
    );
    assert_eq!(out[0].attr("type"), Some("subscribe"));
    assert_eq!(
        h.subscribe_bob().len(),
        0,
        "a repeated request is not forwarded again"
    );
    let out = h.input(&format!(r"<presence xmlns='jabber:component:accept' type='subscribed' from='alice@localhost' to='bob\40localhost@{D}'/>"));
    let bob = to_bob(&out);
    assert_eq!(bob[0].attr("type"), Some("subscribed"));
    assert!(from_class(&bob, "chat").is_some());
}

#[test]
fn the_owner_can_deny_a_request() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.subscribe_bob();
    let out = h.input(&format!(r"<presence xmlns='jabber:component:accept' type='unsubscribed' from='alice@localhost/phone' to='bob\40localhost@{D}'/>"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].attr("type"), Some("unsubscribed"));
    assert_eq!(out[0].attr("to"), Some("bob@localhost"));
    let probe = h.input(&format!("<presence xmlns='jabber:component:accept' type='probe' from='bob@localhost' to='alice@{D}'/>"));
    assert_eq!(probe[0].attr("type"), Some("unsubscribed"));
}

#[test]
fn presence_of_the_owner_to_a_proxy_jid_goes_nowhere() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.subscribe_bob();
    let out = h.input(&format!(r"<presence xmlns='jabber:component:accept' from='alice@localhost/phone' to='bob\40localhost@{D}'><status>at home</status></presence>"));
    assert!(out.is_empty());
}

#[test]
fn a_probe_from_a_stranger_gets_unsubscribed() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='probe' from='eve@localhost/x' to='alice@{D}'/>"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].attr("type"), Some("unsubscribed"));
    assert_eq!(out[0].attr("to"), Some("eve@localhost/x"));
}

#[test]
fn the_only_video_device_going_offline_changes_video_and_nothing_else() {
    let mut h = alice_with_phone_and_laptop();
    h.device("laptop", "");
    h.advance(200);
    h.device_gone("phone");
    let out = h.advance(200);
    let bob = to_bob(&out);
    assert_eq!(
        bob.len(),
        2,
        "audio and video go; chat stays (laptop): {bob:?}"
    );
    assert_eq!(
        from_class(&bob, "video").unwrap().attr("type"),
        Some("unavailable")
    );
    assert_eq!(
        from_class(&bob, "audio").unwrap().attr("type"),
        Some("unavailable")
    );
}

#[test]
fn churn_that_changes_nothing_sends_nothing() {
    let mut h = alice_with_phone_and_laptop();
    // Laptop changes status and goes xa: the phone still decides chat.
    h.device("laptop", "<show>xa</show><status>gone</status>");
    // A delayed re-send of the phone's presence.
    let mut video: Vec<&str> = JINGLE_AUDIO.to_vec();
    video.push("urn:xmpp:jingle:apps:rtp:video");
    let caps = caps_for("https://conversations.im", &video);
    h.device(
        "phone",
        &format!("{caps}<delay xmlns='urn:xmpp:delay' stamp='2026-11-24T08:00:00Z'/>"),
    );
    let out = h.advance(500);
    assert!(to_bob(&out).is_empty(), "{out:?}");
}

#[test]
fn bursts_are_coalesced_into_one_change() {
    let mut h = alice_with_phone_and_laptop();
    h.device("phone", "<show>away</show>");
    h.device("phone", "<show>dnd</show>");
    h.device("phone", "<show>xa</show>");
    assert!(
        to_bob(&h.drain()).is_empty(),
        "nothing before the window ends"
    );
    let out = h.advance(150);
    let bob = to_bob(&out);
    let video = from_class(&bob, "video").unwrap();
    assert_eq!(show(video).as_deref(), Some("xa"));
    assert_eq!(
        bob.iter()
            .filter(|e| e.attr("from") == video.attr("from"))
            .count(),
        1
    );
}

#[test]
fn best_show_wins_and_idle_needs_every_device_idle() {
    let mut h = alice_with_phone_and_laptop();
    h.device(
        "phone",
        "<show>dnd</show><idle xmlns='urn:xmpp:idle:1' since='2026-11-24T07:00:00Z'/>",
    );
    let out = h.advance(150);
    let bob = to_bob(&out);
    let chat = from_class(&bob, "chat").unwrap();
    assert_eq!(
        show(chat).as_deref(),
        Some("away"),
        "laptop's away beats phone's dnd"
    );
    assert!(
        chat.get_child("idle", ns::IDLE).is_none(),
        "laptop is not idle"
    );
    let video = from_class(&bob, "video").unwrap();
    assert_eq!(show(video).as_deref(), Some("dnd"));
    assert_eq!(
        video.get_child("idle", ns::IDLE).unwrap().attr("since"),
        Some("2026-11-24T07:00:00Z")
    );
}

#[test]
fn class_presence_carries_our_caps_not_the_device_caps() {
    let mut h = alice_with_phone_and_laptop();
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='probe' from='bob@localhost' to='alice@{D}'/>"));
    let bob = to_bob(&out);
    let audio = from_class(&bob, "audio").unwrap();
    let c = audio.get_child("c", ns::CAPS).unwrap();
    assert_eq!(c.attr("node"), Some("https://unified-presence.org/caps"));
    assert_eq!(
        audio.get_child("priority", ns::COMPONENT).unwrap().text(),
        "5"
    );
    // disco#info on the class resource answers exactly that ver's features.
    let node = format!(
        "https://unified-presence.org/caps#{}",
        c.attr("ver").unwrap()
    );
    let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='get' id='d1' from='bob@localhost/pc' to='alice@{D}/audio'><query xmlns='http://jabber.org/protocol/disco#info' node='{node}'/></iq>"));
    assert_eq!(out[0].attr("type"), Some("result"));
    let (features, ver) = devices::read_disco_info(&out[0]).unwrap();
    assert_eq!(ver, c.attr("ver").unwrap());
    assert!(features.contains(devices::JMI));
    assert!(features.contains("urn:xmpp:jingle:apps:rtp:audio"));
    assert!(!features.contains("urn:xmpp:jingle:apps:rtp:video"));
}

#[test]
fn a_status_naming_a_device_is_not_shown() {
    let mut h = alice_with_phone_and_laptop();
    h.device("phone", "<show>chat</show><status>on my phone</status>");
    let out = h.advance(150);
    let bob = to_bob(&out);
    let chat = from_class(&bob, "chat").unwrap();
    assert_eq!(show(chat).as_deref(), Some("chat"));
    assert!(chat.get_child("status", ns::COMPONENT).is_none());
}

#[test]
fn cached_caps_need_no_query_and_survive_restart() {
    let mut h = alice_with_phone_and_laptop();
    let cached: Vec<(String, Vec<String>)> = h
        .ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::Caps { ver, features } => Some((ver.clone(), features.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        cached.len(),
        1,
        "only the verified caps are cached, not the direct disco"
    );
    let mut video: Vec<&str> = JINGLE_AUDIO.to_vec();
    video.push("urn:xmpp:jingle:apps:rtp:video");
    let out = h.device("tablet", &caps_for("https://conversations.im", &video));
    assert!(out.iter().all(|e| e.name() != "iq"), "same ver: no query");
    let mut h2 = Harness::with(
        config(SubscriptionPolicy::Open),
        Stored {
            caps: cached,
            ..Stored::default()
        },
    );
    let out = h2.device("phone", &caps_for("https://conversations.im", &video));
    assert!(
        out.iter().all(|e| e.name() != "iq"),
        "cache loaded from the store"
    );
}

#[test]
fn a_wrong_caps_hash_is_not_cached() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let out = h.device("phone", "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://dino.im' ver='bogus='/>");
    let q = out.iter().find(|e| e.name() == "iq").unwrap().clone();
    h.answer_disco(&q, JINGLE_AUDIO);
    assert!(!h.ops.iter().any(|op| matches!(op, StoreOp::Caps { .. })));
    h.subscribe_bob();
    h.advance(200);
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='probe' from='bob@localhost' to='alice@{D}'/>"));
    assert!(
        from_class(&to_bob(&out), "audio").is_some(),
        "the device's own answer still counts for it"
    );
}

#[test]
fn an_answer_from_someone_else_is_not_an_answer() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let out = h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    let q = out.iter().find(|e| e.name() == "iq").unwrap();
    let forged = format!("<iq xmlns='jabber:component:accept' type='result' id='{}' from='eve@localhost/x' to='alice@{D}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", q.attr("id").unwrap());
    assert!(h.input(&forged).is_empty());
    assert!(!h.ops.iter().any(|op| matches!(op, StoreOp::Caps { .. })));
}

#[test]
fn unsubscribe_removes_the_watcher_and_says_unavailable() {
    let mut h = alice_with_phone_and_laptop();
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='unsubscribe' from='bob@localhost' to='alice@{D}'/>"));
    assert!(h.ops.contains(&StoreOp::Watcher {
        owner: "alice".into(),
        watcher: BareJid::new("bob@localhost").unwrap(),
        state: None
    }));
    let bob = to_bob(&out);
    assert_eq!(bob.len(), 3);
    assert!(bob.iter().all(|p| p.attr("type") == Some("unavailable")));
    h.device("phone", "<show>dnd</show>");
    assert!(to_bob(&h.advance(200)).is_empty(), "no longer a watcher");
}

#[test]
fn restart_keeps_watchers_and_re_announces_after_settling() {
    let stored = Stored {
        watchers: vec![(
            "alice".into(),
            BareJid::new("bob@localhost").unwrap(),
            WatcherState::Subscribed,
        )],
        accounts: vec![(
            "alice".into(),
            BareJid::new("alice@localhost").unwrap(),
            AccountState { approved: true },
        )],
        ..Stored::default()
    };
    let mut core = Core::new(config(SubscriptionPolicy::Ask), stored);
    core.handle_connected(Time(0));
    while core.poll_transmit().is_some() {}
    let el: Element = format!(
        "<presence xmlns='jabber:component:accept' from='alice@localhost/laptop' to='alice@{D}'/>"
    )
    .parse()
    .unwrap();
    core.handle_stanza(Time(50), el);
    core.handle_timeout(Time(200));
    let early: Vec<Element> = std::iter::from_fn(|| core.poll_transmit()).collect();
    assert!(
        to_bob(&early).is_empty(),
        "nothing to watchers before the settle time"
    );
    core.handle_timeout(Time(500));
    let out: Vec<Element> = std::iter::from_fn(|| core.poll_transmit()).collect();
    // Every class is announced once: chat available, the rest unavailable
    // (correcting whatever Bob saw before the restart).
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|e| e.attr("to") == Some("bob@localhost")));
    assert_eq!(out.iter().filter(|e| e.attr("type").is_none()).count(), 1);
}

#[test]
fn blocked_senders_get_nothing() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='spam@evil.example' to='alice@{D}'/>"));
    assert!(out.is_empty());
    let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='get' id='1' from='spam@evil.example/x' to='alice@{D}'><ping xmlns='urn:xmpp:ping'/></iq>"));
    assert!(out.is_empty());
}

#[test]
fn unknown_virtual_jids_and_unserved_iqs_get_rfc6120_errors() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let cases = [
        (format!("<iq xmlns='jabber:component:accept' type='get' id='1' from='bob@localhost/pc' to='nobody@{D}'><ping xmlns='urn:xmpp:ping'/></iq>"), "service-unavailable"),
        (format!("<message xmlns='jabber:component:accept' type='chat' id='2' from='bob@localhost/pc' to='nobody@{D}'><body>hi</body></message>"), "service-unavailable"),
        (format!("<iq xmlns='jabber:component:accept' type='get' id='3' from='bob@localhost/pc' to='alice@{D}'><vCard xmlns='vcard-temp'/></iq>"), "service-unavailable"),
        (format!("<iq xmlns='jabber:component:accept' type='set' id='4' from='bob@localhost/pc' to='{D}'><query xmlns='jabber:iq:register'/></iq>"), "service-unavailable"),
        (format!("<iq xmlns='jabber:component:accept' type='get' id='5' from='bob@localhost/pc' to='alice@{D}/video'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"), "service-unavailable"),
        (format!("<iq xmlns='jabber:component:accept' type='get' id='6' from='bob@localhost/pc' to='{D}'/>"), "bad-request"),
        (format!("<iq xmlns='jabber:component:accept' type='get' id='7' from='bob@localhost/pc' to='{D}'><a xmlns='x'/><b xmlns='y'/></iq>"), "bad-request"),
        (format!("<iq xmlns='jabber:component:accept' type='bogus' id='8' from='bob@localhost/pc' to='{D}'><a xmlns='x'/></iq>"), "bad-request"),
        (format!("<presence xmlns='jabber:component:accept' from='alice@localhost/phone' to='alice@{D}'><show>bogus</show></presence>"), "bad-request"),
        (format!("<presence xmlns='jabber:component:accept' type='weird' from='bob@localhost' to='alice@{D}'/>"), "bad-request"),
        (format!("<message xmlns='jabber:component:accept' from='bob@localhost/pc' to='bad@@{D}'><body>x</body></message>"), "jid-malformed"),
    ];
    for (xml, condition) in cases {
        let out = h.input(&xml);
        assert_eq!(out.len(), 1, "{xml}");
        assert_eq!(out[0].attr("type"), Some("error"), "{xml}");
        let err = out[0].get_child("error", ns::COMPONENT).unwrap();
        assert!(err.has_child(condition, ns::STANZAS), "{xml} -> {out:?}");
    }
}

#[test]
fn errors_results_and_spoofs_are_never_answered() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let quiet = [
        format!("<iq xmlns='jabber:component:accept' type='error' id='1' from='bob@localhost/pc' to='nobody@{D}'/>"),
        format!("<iq xmlns='jabber:component:accept' type='result' id='2' from='bob@localhost/pc' to='alice@{D}'/>"),
        format!("<message xmlns='jabber:component:accept' type='error' from='bob@localhost/pc' to='alice@{D}'/>"),
        format!("<iq xmlns='jabber:component:accept' type='get' id='3' from='x@{D}' to='alice@{D}'><ping xmlns='urn:xmpp:ping'/></iq>"),
        format!("<iq xmlns='jabber:component:accept' type='get' id='4' to='alice@{D}'><ping xmlns='urn:xmpp:ping'/></iq>"),
        "<iq xmlns='jabber:component:accept' type='get' id='5' from='bob@localhost' to='alice@elsewhere'><ping xmlns='urn:xmpp:ping'/></iq>".to_string(),
        format!("<presence xmlns='jabber:component:accept' from='bob@localhost' to='alice@{D}'/>"),
    ];
    for xml in quiet {
        assert!(h.input(&xml).is_empty(), "{xml}");
    }
}

#[test]
fn domain_answers_disco_ping_and_version() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    for payload in [
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "<ping xmlns='urn:xmpp:ping'/>",
        "<query xmlns='jabber:iq:version'/>",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    ] {
        let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='get' id='q' from='bob@localhost/pc' to='{D}'>{payload}</iq>"));
        assert_eq!(out[0].attr("type"), Some("result"), "{payload}");
        assert_eq!(out[0].attr("id"), Some("q"));
    }
}

#[test]
fn the_owner_may_watch_herself_without_asking() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='alice@localhost' to='alice@{D}'/>"));
    assert_eq!(out[0].attr("type"), Some("subscribed"));
    assert_eq!(out[0].attr("to"), Some("alice@localhost"));
}

#[test]
fn shutdown_tells_watchers_every_class_went_away() {
    let mut h = alice_with_phone_and_laptop();
    h.core.handle_shutdown();
    let out = h.drain();
    let bob = to_bob(&out);
    assert_eq!(bob.len(), 3);
    assert!(bob.iter().all(|p| p.attr("type") == Some("unavailable")));
}

#[test]
fn the_device_limit_holds() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    for i in 0..20 {
        h.device(&format!("d{i}"), "");
    }
    assert_eq!(h.core.owners[0].devices.len(), 8);
}

#[test]
fn a_device_going_offline_and_account_unavailable_clear_devices() {
    let mut h = alice_with_phone_and_laptop();
    h.input(&format!("<presence xmlns='jabber:component:accept' type='unavailable' from='alice@localhost' to='alice@{D}'/>"));
    let out = h.advance(200);
    let bob = to_bob(&out);
    assert_eq!(bob.len(), 3);
    assert!(bob.iter().all(|p| p.attr("type") == Some("unavailable")));
}
