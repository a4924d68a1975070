//! Core scenarios, one test per rule, no network. Every emitted stanza is
//! checked for a `to`, a `from` on our domain and leaks (`Harness::drain`).

use std::collections::{BTreeMap, BTreeSet};

use minidom::Element;

use super::devices::ClassDef;
use super::*;
use crate::config::default_classes;

const D: &str = "unified.localhost";
/// What a phone that takes audio calls announces (Conversations, Dino):
/// Jingle RTP audio over ICE-UDP, and XEP-0353.
const JINGLE_AUDIO: &[&str] = &[
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:rtp:1",
    "urn:xmpp:jingle:apps:rtp:audio",
    "urn:xmpp:jingle:transports:ice-udp:1",
    "urn:xmpp:jingle-message:0",
];

struct Harness {
    core: Core,
    now: Time,
    ops: Vec<StoreOp>,
    /// What the store holds: what the core started with plus every
    /// change it asked for since.
    kept: Stored,
    cfg: CoreConfig,
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
            candidates: CandidatePolicy::Direct,
            rules: vec![],
            timezone: chrono_tz::UTC,
        }],
        coalesce_ms: 100,
        settle_ms: 500,
        iq_timeout_ms: 30_000,
        ring_timeout_ms: 30_000,
        registration: Registration::Domains(vec!["localhost".into()]),
        admins: vec![BareJid::new("root@localhost").unwrap()],
        limits: Limits {
            devices_per_owner: 8,
            watchers_per_owner: 100,
            pending_iqs: 100,
            stanzas_per_sec: 1_000,
            stanza_burst: 1_000,
            stanza_bytes: 64 * 1024,
            concurrent_calls: 100,
            calls_per_caller: 3,
        },
        seed: 7,
    }
}

/// What must never reach anyone but Alice in these scenarios: her
/// account, her devices as resources of a JID, the distinctive resources
/// the scenarios use, and her clients' caps nodes. (Everyday words such as
/// "phone" are hers to write.)
const SECRETS: &[&str] = &[
    "alice@localhost",
    "/phone",
    "/laptop",
    "/tablet",
    "lapt0p-x2",
    "ph0ne-q7",
    "https://conversations.im",
    "https://dino.im",
];

impl Harness {
    fn new(policy: SubscriptionPolicy) -> Harness {
        Harness::with(config(policy), Stored::default())
    }

    fn with(cfg: CoreConfig, stored: Stored) -> Harness {
        let mut h = Harness {
            core: Core::new(cfg.clone(), stored.clone()),
            now: Time(1_700_000_000_000),
            ops: vec![],
            kept: stored,
            cfg,
        };
        h.core.handle_connected(h.now);
        h.drain();
        h.advance(1000);
        h
    }

    /// Stops the core and starts a new one from what the store kept, as
    /// the process does after a restart; the link comes back and settles.
    fn restart(&mut self) -> Vec<Element> {
        self.drain();
        self.core = Core::new(self.cfg.clone(), self.kept.clone());
        self.now = self.now.plus_ms(5_000);
        self.core.handle_connected(self.now);
        let mut out = self.drain();
        out.extend(self.advance(1000));
        out
    }

    /// Takes all outputs, checking each: addressed, from our domain, and
    /// no secret towards anyone but Alice's own account.
    fn drain(&mut self) -> Vec<Element> {
        while let Some(op) = self.core.poll_store() {
            self.kept.apply(op.clone());
            self.ops.push(op);
        }
        let mut out = vec![];
        while let Some(el) = self.core.poll_transmit() {
            let to = el.attr("to").expect("every stanza has a to");
            let from = Jid::new(el.attr("from").expect("every stanza has a from")).unwrap();
            assert_eq!(from.domain().as_str(), D, "from on our domain");
            // Alice's own accounts (the one her scenarios link too) and
            // the admin may read her secrets.
            let hers = ["alice@localhost", "alice@work.example", "root@localhost"];
            if !hers.iter().any(|a| to.starts_with(a)) {
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
        self.core.handle_stanza(self.now, el.clone());
        let out = self.drain();
        // The checks the property test and the fuzz target make too.
        if let Err(e) = oracle::check_step(&self.core, Some(&el), &out) {
            panic!("{e}");
        }
        out
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

/// The stanza as the wire carries it.
fn xml(el: &Element) -> String {
    let mut out = Vec::new();
    el.write_to(&mut out).unwrap();
    String::from_utf8(out).unwrap()
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
            AccountState {
                approved: true,
                ..AccountState::default()
            },
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
        state: Some(AccountState {
            approved: true,
            ..AccountState::default()
        })
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
    // A stale subscription in her roster is cleared first, so that her
    // server asks her instead of answering itself.
    let types: Vec<_> = out.iter().map(|e| e.attr("type")).collect();
    assert_eq!(types, [Some("unsubscribe"), Some("subscribe")]);
    let out = &out[1..];
    assert_eq!(out[0].attr("to"), Some("alice@localhost"));
    assert_eq!(
        out[0].attr("from"),
        Some(r"bob\40localhost@unified.localhost")
    );
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

/// Issue 14, item 5: whatever settles a watcher other than her client's
/// answer (his leaving, a command, a block), her rosters follow: the
/// proxy JID's request or subscription is withdrawn.
#[test]
fn her_roster_follows_every_watcher_change() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.device("phone", "");
    h.advance(200);
    let proxy = format!(r"bob\40localhost@{D}");
    let withdrawn = |out: &[Element]| {
        out.iter().any(|e| {
            e.attr("from") == Some(proxy.as_str())
                && e.attr("to") == Some("alice@localhost")
                && e.attr("type") == Some("unsubscribe")
        })
    };
    // Approved by command: the request her client shows goes away.
    h.subscribe_bob();
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>approve bob@localhost</body></message>"));
    assert!(withdrawn(&out), "{out:?}");
    // He leaves: her roster's subscription from him goes too.
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='unsubscribe' from='bob@localhost' to='alice@{D}'/>"));
    assert!(withdrawn(&out), "{out:?}");
    // He asks again: she is asked again (no stale answer counts).
    let out = h.subscribe_bob();
    assert!(out.iter().any(|e| e.attr("type") == Some("subscribe")));
    // Her client approves, then she blocks him by command.
    h.input(&format!(r"<presence xmlns='jabber:component:accept' type='subscribed' from='alice@localhost' to='{proxy}'/>"));
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>block bob@localhost</body></message>"));
    assert!(withdrawn(&out), "{out:?}");
    // Denied by command while pending.
    command(&mut h, PHONE, "unblock bob@localhost");
    h.subscribe_bob();
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>deny bob@localhost</body></message>"));
    assert!(withdrawn(&out), "{out:?}");
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
fn a_change_after_a_quiet_window_goes_out_at_once_and_churn_after_it_waits() {
    let mut h = alice_with_phone_and_laptop();
    h.advance(1000);
    h.device("phone", "<show>dnd</show>");
    let out = h.advance(0);
    let bob = to_bob(&out);
    let video = from_class(&bob, "video").expect("no wait after a quiet window");
    assert_eq!(show(video).as_deref(), Some("dnd"));
    h.device("phone", "<show>xa</show>");
    let out = h.advance(50);
    assert!(to_bob(&out).is_empty(), "within the window: {out:?}");
    let out = h.advance(60);
    let bob = to_bob(&out);
    let video = from_class(&bob, "video").expect("at the end of the window");
    assert_eq!(show(video).as_deref(), Some("xa"));
}

#[test]
fn churn_watchers_cannot_see_does_not_delay_the_next_change() {
    let mut h = alice_with_phone_and_laptop();
    h.advance(1000);
    h.device("laptop", "<show>xa</show>");
    let out = h.advance(0);
    assert!(to_bob(&out).is_empty(), "the phone still wins: {out:?}");
    h.device("phone", "<show>dnd</show>");
    let out = h.advance(0);
    let bob = to_bob(&out);
    let video = from_class(&bob, "video").expect("no window opened by the invisible change");
    assert_eq!(show(video).as_deref(), Some("dnd"));
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
fn a_status_naming_a_device_is_not_shown_and_she_is_told_once() {
    let mut h = alice_with_phone_and_laptop();
    // Her own words pass, even the word that is also a resource of hers.
    h.device("phone", "<show>chat</show><status>on my phone</status>");
    let out = h.advance(150);
    let chat = from_class(&to_bob(&out), "chat").unwrap().clone();
    assert_eq!(
        chat.get_child("status", ns::COMPONENT).map(Element::text),
        Some("on my phone".into())
    );
    // A status naming a device by a name a client made up does not.
    let out = h.device(
        "lapt0p-x2",
        "<show>chat</show><status>typing on lapt0p-x2 now</status>",
    );
    let told: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("to") == Some("alice@localhost/lapt0p-x2") && e.name() == "message")
        .collect();
    assert_eq!(told.len(), 1, "{out:?}");
    assert!(told[0]
        .get_child("body", ns::COMPONENT)
        .unwrap()
        .text()
        .contains("names one of your devices (lapt0p-x2)"));
    let out = h.advance(150);
    for p in to_bob(&out) {
        assert!(!xml(p).contains("lapt0p-x2"), "{p:?}");
    }
    // Once: the same status again, or from another device, tells nothing.
    h.device(
        "lapt0p-x2",
        "<show>away</show><status>typing on lapt0p-x2 now</status>",
    );
    let out = h.device(
        "lapt0p-x2",
        "<show>chat</show><status>typing on lapt0p-x2 now</status>",
    );
    assert!(out.iter().all(|e| e.name() != "message"), "{out:?}");
    // Naming her account is withheld too.
    let out = h.device(
        "phone",
        "<show>chat</show><status>write to alice@localhost</status>",
    );
    assert!(out
        .iter()
        .any(|e| e.name() == "message" && e.attr("to") == Some(PHONE)));
}

/// Issue 13, hole 7: what she writes to a contact is hers, but a message
/// that names one of her accounts or devices is not relayed; she gets an
/// error that says why. Bob's words to her pass whatever they say.
#[test]
fn a_message_naming_her_account_is_refused_to_her_with_the_reason() {
    let mut h = alice_with_phone_and_laptop();
    let proxy = format!(r"bob\40localhost@{D}");
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='r1' from='{PHONE}' to='{proxy}'><body>my real address is alice@localhost</body></message>"));
    assert!(to_bob(&out).is_empty(), "{out:?}");
    let err = out
        .iter()
        .find(|e| e.attr("type") == Some("error"))
        .expect("an error to her");
    assert_eq!(err.attr("to"), Some(PHONE));
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='r2' from='{PHONE}' to='{proxy}'><body>on my phone, call later</body></message>"));
    assert_eq!(to_bob(&out).len(), 1, "her own words pass: {out:?}");
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='r3' from='bob@localhost/pc' to='alice@{D}'><body>is alice@localhost you?</body></message>"));
    assert!(out.iter().any(|e| e
        .attr("to")
        .is_some_and(|t| t.starts_with("alice@localhost"))));
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
            AccountState {
                approved: true,
                ..AccountState::default()
            },
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

/// Issue 13, hole 1: a device known from before a restart is as secret
/// after it as before.
#[test]
fn a_status_naming_a_device_is_withheld_after_a_restart_too() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    h.subscribe_bob();
    h.device("lapt0p-x2", "");
    h.advance(1000);
    h.restart();
    let out = h.device("lapt0p-x2", "<status>typing on lapt0p-x2 now</status>");
    let mut out = out;
    out.extend(h.advance(1000));
    let bob = to_bob(&out);
    assert!(!bob.is_empty(), "Bob hears her chat presence");
    for p in bob {
        assert!(
            !xml(p).contains("lapt0p-x2"),
            "her device's name reached Bob after a restart: {p:?}"
        );
    }
}

/// XEP-0030 nodes are answered for what they are, and under `ask` an IQ to
/// a class resource tells a stranger no more than presence would.
#[test]
fn disco_nodes_and_class_resources_tell_strangers_nothing() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.device("phone", "");
    h.advance(1000);
    let ask = |h: &mut Harness, from: &str, to: &str, payload: &str| -> Element {
        let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='get' id='q' from='{from}' to='{to}'>{payload}</iq>"));
        assert_eq!(out.len(), 1, "{out:?}");
        out[0].clone()
    };
    let condition = |e: &Element| {
        e.get_child("error", ns::COMPONENT)
            .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS))
            .map(|c| c.name().to_owned())
    };
    let info = |node: &str| {
        format!("<query xmlns='http://jabber.org/protocol/disco#info' node='{node}'/>")
    };
    let items = |node: &str| {
        format!("<query xmlns='http://jabber.org/protocol/disco#items' node='{node}'/>")
    };
    let eve = "eve@evil.example/x";
    let r = ask(
        &mut h,
        eve,
        &format!("alice@{D}"),
        &info("https://conversations.im#abc="),
    );
    assert_eq!(condition(&r).as_deref(), Some("item-not-found"));
    let r = ask(&mut h, eve, D, &items("urn:xmpp:avatar:metadata"));
    assert_eq!(condition(&r).as_deref(), Some("item-not-found"));
    let r = ask(&mut h, eve, D, &info("status"));
    assert_eq!(
        condition(&r).as_deref(),
        Some("item-not-found"),
        "not hers to run"
    );
    let r = ask(&mut h, PHONE, D, &info("status"));
    let q = r
        .get_child("query", ns::DISCO_INFO)
        .expect("a command node");
    assert_eq!(q.attr("node"), Some("status"));
    // Her chat class is online; a stranger cannot tell by asking it.
    for payload in [
        "<ping xmlns='urn:xmpp:ping'/>".to_owned(),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>".to_owned(),
    ] {
        let r = ask(&mut h, eve, &format!("alice@{D}/chat"), &payload);
        assert_eq!(
            condition(&r).as_deref(),
            Some("service-unavailable"),
            "{payload}"
        );
        let r = ask(&mut h, eve, &format!("alice@{D}/files"), &payload);
        assert_eq!(
            condition(&r).as_deref(),
            Some("service-unavailable"),
            "{payload}"
        );
    }
    // A watcher she approved can.
    h.subscribe_bob();
    command(&mut h, PHONE, "approve bob@localhost");
    let r = ask(
        &mut h,
        "bob@localhost/pc",
        &format!("alice@{D}/chat"),
        "<ping xmlns='urn:xmpp:ping'/>",
    );
    assert_eq!(r.attr("type"), Some("result"));
}

#[test]
fn blocked_senders_get_nothing() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='spam@evil.example' to='alice@{D}'/>"));
    assert!(out.is_empty());
    // An IQ must be answered (RFC 6120 §8.2.3): as XEP-0191 §3.5 says
    // for a blocked entity, service-unavailable, and nothing else.
    let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='get' id='1' from='spam@evil.example/x' to='alice@{D}'><ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(error_condition(&out[0]), Some("service-unavailable"));
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
        // A full JID of the domain itself (found by the fuzzer): answered
        // from that address, as RFC 6120 §8.3.1 says.
        (format!("<iq xmlns='jabber:component:accept' id='9' from='bob@localhost/pc' to='{D}/{D}'><query xmlns='x'/></iq>"), "bad-request"),
    ];
    for (xml, condition) in cases {
        let out = h.input(&xml);
        assert_eq!(out.len(), 1, "{xml}");
        assert_eq!(out[0].attr("type"), Some("error"), "{xml}");
        let err = out[0].get_child("error", ns::COMPONENT).unwrap();
        assert!(err.has_child(condition, ns::STANZAS), "{xml} -> {out:?}");
    }
    let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='get' id='10' from='bob@localhost/pc' to='{D}/x'><ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_eq!(out[0].attr("from"), Some(format!("{D}/x").as_str()));
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
    // She is not counted as a watcher of her own, on the status page or
    // in the metrics (issue 20: "watchers 2" with one real watcher).
    h.subscribe_bob();
    assert_eq!(h.core.footprint().watchers, 1);
    let view = h.core.admin_view(h.now, 10);
    assert_eq!((view.owners[0].watchers, view.owners[0].pending), (0, 1));
}

#[test]
fn shutdown_tells_watchers_every_class_went_away() {
    let mut h = alice_with_phone_and_laptop();
    h.core.handle_shutdown(h.now);
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

// ---- Calls (DESIGN.md section 5) ----

const PHONE: &str = "alice@localhost/phone";
const TABLET: &str = "alice@localhost/tablet";
const BOB: &str = "bob@localhost/pc";
const AUDIO: &str = "alice@unified.localhost/audio";

/// Alice's phone and tablet can do audio, her laptop only chat; Bob watches.
fn alice_with_two_phones(policy: CandidatePolicy) -> Harness {
    let mut cfg = config(SubscriptionPolicy::Open);
    cfg.owners[0].candidates = policy;
    let mut h = Harness::with(cfg, Stored::default());
    h.subscribe_bob();
    let out = h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    let q = out.iter().find(|e| e.name() == "iq").unwrap().clone();
    h.answer_disco(&q, JINGLE_AUDIO);
    h.device(
        "tablet",
        &caps_for("https://conversations.im", JINGLE_AUDIO),
    );
    let out = h.device("laptop", "");
    let q = out.iter().find(|e| e.name() == "iq").unwrap().clone();
    h.answer_disco(&q, &[]);
    h.advance(200);
    h
}

fn propose(h: &mut Harness, sid: &str) -> Vec<Element> {
    h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' id='m-{sid}' from='{BOB}' to='alice@{D}'>\
         <propose xmlns='urn:xmpp:jingle-message:0' id='{sid}'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>\
         <request xmlns='urn:xmpp:receipts'/><store xmlns='urn:xmpp:hints'/></message>"
    ))
}

fn jmi_of(el: &Element) -> Option<&Element> {
    el.children().find(|c| c.has_ns(jingle::JMI))
}

/// The propose each device got: device -> (proxy full JID, leg id).
fn legs(out: &[Element]) -> BTreeMap<String, (String, String)> {
    out.iter()
        .filter(|e| e.name() == "message" && jmi_of(e).is_some_and(|j| j.name() == "propose"))
        .map(|e| {
            (
                e.attr("to").unwrap().to_owned(),
                (
                    e.attr("from").unwrap().to_owned(),
                    jmi_of(e).unwrap().attr("id").unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

fn from_device(
    h: &mut Harness,
    device: &str,
    proxy: &str,
    name: &str,
    leg: &str,
    extra: &str,
) -> Vec<Element> {
    h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' from='{device}' to='{proxy}'><{name} xmlns='urn:xmpp:jingle-message:0' id='{leg}'>{extra}</{name}></message>"
    ))
}

fn to_bob_jmi<'a>(out: &'a [Element], name: &str) -> Vec<&'a Element> {
    out.iter()
        .filter(|e| e.attr("to") == Some(BOB) && jmi_of(e).is_some_and(|j| j.name() == name))
        .collect()
}

fn jingle_from(from: &str, to: &str, id: &str, action: &str, sid: &str, body: &str) -> String {
    format!(
        "<iq xmlns='jabber:component:accept' type='set' id='{id}' from='{from}' to='{to}'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='{action}' sid='{sid}' initiator='{from}'>{body}</jingle></iq>"
    )
}

const CONTENT: &str = "<content creator='initiator' name='0'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'><payload-type id='111' name='opus' clockrate='48000' channels='2'/><extmap-allow-mixed xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0'/></description><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'><candidate component='1' foundation='1' generation='0' id='c1' ip='abcd.local' port='5000' priority='1' protocol='udp' type='host'/><candidate component='1' foundation='3' generation='0' id='c3' ip='198.51.100.9' port='5002' priority='1' protocol='udp' type='relay'/></transport></content>";

#[test]
fn a_propose_rings_each_audio_device_from_one_proxy_jid() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let out = propose(&mut h, "S1");
    let legs = legs(&out);
    assert_eq!(
        legs.keys().collect::<Vec<_>>(),
        [PHONE, TABLET],
        "the chat-only laptop does not ring"
    );
    let proxies: BTreeSet<&str> = legs.values().map(|(p, _)| p.as_str()).collect();
    assert_eq!(proxies.len(), 1, "one proxy full JID for the whole call");
    assert!(proxies
        .iter()
        .next()
        .unwrap()
        .starts_with(r"bob\40localhost@unified.localhost/"));
    let ids: BTreeSet<&str> = legs.values().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 2, "a fresh id per leg");
    assert!(!ids.contains("S1"));
    for m in out.iter().filter(|e| e.attr("to") == Some(PHONE)) {
        assert_eq!(m.attr("type"), Some("chat"));
        assert!(m.has_child("store", jingle::HINTS));
        assert!(m.has_child("no-copy", jingle::HINTS));
        assert!(m.has_child("private", jingle::CARBONS));
        assert!(jmi_of(m).unwrap().has_child("description", jingle::RTP));
    }
    assert!(
        to_bob(&out).is_empty(),
        "no receipt before a device got the call: {out:?}"
    );
}

/// Issue 13, hole 5: the caller's receipt reflects a device that got the
/// call (its own receipt, its ringing or its answer), once, under the
/// caller's id; the other devices' receipts reach nobody.
#[test]
fn the_callers_receipt_comes_from_a_device_that_got_the_call() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let out = propose(&mut h, "S1");
    let msg_id = |to: &str| {
        out.iter()
            .find(|e| e.attr("to") == Some(to) && e.has_child("request", jingle::RECEIPTS))
            .and_then(|e| e.attr("id"))
            .expect("each leg asks its device for a receipt")
            .to_owned()
    };
    let (phone_msg, tablet_msg) = (msg_id(PHONE), msg_id(TABLET));
    let (proxy, _) = legs(&out)[PHONE].clone();
    let receipt = |h: &mut Harness, device: &str, id: &str| {
        h.input(&format!("<message xmlns='jabber:component:accept' from='{device}' to='{proxy}'><received xmlns='urn:xmpp:receipts' id='{id}'/></message>"))
    };
    let out = receipt(&mut h, TABLET, &tablet_msg);
    let bob = to_bob(&out);
    assert_eq!(bob.len(), 1, "{out:?}");
    assert_eq!(bob[0].attr("from"), Some(AUDIO));
    assert_eq!(
        bob[0]
            .get_child("received", jingle::RECEIPTS)
            .and_then(|r| r.attr("id")),
        Some("m-S1")
    );
    assert!(receipt(&mut h, PHONE, &phone_msg).is_empty(), "absorbed");
    assert!(receipt(&mut h, TABLET, &tablet_msg).is_empty(), "absorbed");
    // Another call: ringing comes first, and brings the receipt with it.
    let p2 = propose(&mut h, "S2");
    let legs = legs(&p2);
    let (proxy, leg) = legs[PHONE].clone();
    let out = from_device(&mut h, PHONE, &proxy, "ringing", &leg, "");
    let bob = to_bob(&out);
    assert_eq!(bob.len(), 2, "{out:?}");
    assert!(bob[0].has_child("received", jingle::RECEIPTS));
    assert!(jmi_of(bob[1]).is_some_and(|j| j.name() == "ringing"));
    // Receipts for a call that has ended are absorbed too.
    h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{BOB}' to='alice@{D}'><retract xmlns='urn:xmpp:jingle-message:0' id='S2'/></message>"));
    let late = p2
        .iter()
        .find(|e| e.attr("to") == Some(TABLET) && e.has_child("request", jingle::RECEIPTS))
        .and_then(|e| e.attr("id"))
        .unwrap()
        .to_owned();
    let out = h.input(&format!("<message xmlns='jabber:component:accept' from='{TABLET}' to='{proxy}'><received xmlns='urn:xmpp:receipts' id='{late}'/></message>"));
    assert!(to_bob(&out).is_empty(), "{out:?}");
}

#[test]
fn first_ringing_is_relayed_and_first_proceed_wins() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let legs = legs(&propose(&mut h, "S1"));
    let (proxy, phone_leg) = legs[PHONE].clone();
    let (_, tablet_leg) = legs[TABLET].clone();
    let out = from_device(&mut h, PHONE, &proxy, "ringing", &phone_leg, "");
    assert_eq!(to_bob_jmi(&out, "ringing")[0].attr("from"), Some(AUDIO));
    assert!(to_bob_jmi(
        &from_device(&mut h, TABLET, &proxy, "ringing", &tablet_leg, ""),
        "ringing"
    )
    .is_empty());

    let out = from_device(
        &mut h,
        TABLET,
        &proxy,
        "proceed",
        &tablet_leg,
        "<device xmlns='http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification' id='7'/>",
    );
    let proceed = to_bob_jmi(&out, "proceed");
    assert_eq!(proceed.len(), 1);
    assert_eq!(proceed[0].attr("from"), Some(AUDIO));
    assert_eq!(jmi_of(proceed[0]).unwrap().attr("id"), Some("S1"));
    assert_eq!(
        jmi_of(proceed[0]).unwrap().children().count(),
        0,
        "OMEMO device removed"
    );
    let retract = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE))
        .expect("phone is retracted");
    assert_eq!(
        retract.attr("from"),
        Some(proxy.as_str()),
        "same proxy full JID as its propose"
    );
    assert_eq!(jmi_of(retract).unwrap().name(), "retract");
    assert_eq!(
        jmi_of(retract).unwrap().attr("id"),
        Some(phone_leg.as_str())
    );

    // A late proceed is retracted too, and Bob hears nothing of it.
    let out = from_device(&mut h, PHONE, &proxy, "proceed", &phone_leg, "");
    assert!(to_bob(&out).is_empty());
    assert_eq!(jmi_of(&out[0]).unwrap().name(), "retract");
}

#[test]
fn jingle_is_relayed_both_ways_with_sids_roles_and_ids_mapped() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let legs = legs(&propose(&mut h, "S1"));
    let (proxy, leg) = legs[TABLET].clone();
    from_device(&mut h, TABLET, &proxy, "proceed", &leg, "");

    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "bob-iq-1",
        "session-initiate",
        "S1",
        CONTENT,
    ));
    assert_eq!(out.len(), 1);
    let si = &out[0];
    assert_eq!(si.attr("to"), Some(TABLET));
    assert_eq!(
        si.attr("from"),
        Some(proxy.as_str()),
        "the leg's proxy full JID"
    );
    let j = si.get_child("jingle", jingle::JINGLE).unwrap();
    assert_eq!(j.attr("sid"), Some(leg.as_str()));
    assert_eq!(j.attr("initiator"), Some(proxy.as_str()));
    let original: Element = format!("<jingle xmlns='urn:xmpp:jingle:1'>{CONTENT}</jingle>")
        .parse()
        .unwrap();
    assert_eq!(
        j.get_child("content", jingle::JINGLE),
        original.get_child("content", jingle::JINGLE),
        "payload intact (mDNS candidate, extmap-allow-mixed)"
    );

    // The device's ack goes back to Bob with Bob's id.
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='{TABLET}' to='{proxy}'/>",
        si.attr("id").unwrap()
    ));
    assert_eq!(out[0].attr("to"), Some(BOB));
    assert_eq!(out[0].attr("id"), Some("bob-iq-1"));
    assert_eq!(out[0].attr("from"), Some(AUDIO));

    // session-accept the other way, responder rewritten to the class JID.
    let accept = format!(
        "<iq xmlns='jabber:component:accept' type='set' id='dev-iq-1' from='{TABLET}' to='{proxy}'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='{leg}' initiator='{proxy}' responder='{TABLET}'>{CONTENT}</jingle></iq>"
    );
    let out = h.input(&accept);
    let sa = &out[0];
    assert_eq!(sa.attr("to"), Some(BOB));
    assert_eq!(sa.attr("from"), Some(AUDIO));
    let j = sa.get_child("jingle", jingle::JINGLE).unwrap();
    assert_eq!(
        (j.attr("sid"), j.attr("initiator"), j.attr("responder")),
        (Some("S1"), Some(BOB), Some(AUDIO))
    );
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='{BOB}' to='{AUDIO}'/>",
        sa.attr("id").unwrap()
    ));
    assert_eq!(
        (out[0].attr("to"), out[0].attr("id")),
        (Some(TABLET), Some("dev-iq-1"))
    );

    // An error is mapped back too, with its condition.
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "bob-iq-2",
        "transport-info",
        "S1",
        "",
    ));
    let id = out[0].attr("id").unwrap().to_owned();
    let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='error' id='{id}' from='{TABLET}' to='{proxy}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"));
    assert_eq!(
        (out[0].attr("to"), out[0].attr("id"), out[0].attr("type")),
        (Some(BOB), Some("bob-iq-2"), Some("error"))
    );

    // session-terminate from Bob ends the call and frees its state.
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "bob-iq-3",
        "session-terminate",
        "S1",
        "<reason><success/></reason>",
    ));
    assert_eq!(out[0].attr("to"), Some(TABLET));
    assert_eq!(h.core.calls(), 0);
}

#[test]
fn watchers_see_call_classes_busy_during_a_call_and_back_after() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let legs = legs(&propose(&mut h, "S1"));
    let (proxy, leg) = legs[TABLET].clone();
    from_device(&mut h, TABLET, &proxy, "proceed", &leg, "");
    let out = h.advance(200);
    let bob = to_bob(&out);
    let audio = from_class(&bob, "audio").unwrap();
    assert_eq!(show(audio).as_deref(), Some("dnd"));
    assert_eq!(
        audio.get_child("status", ns::COMPONENT).unwrap().text(),
        "In a call"
    );
    assert!(
        from_class(&bob, "chat").is_none(),
        "chat is not a call class"
    );
    from_device(
        &mut h,
        TABLET,
        &proxy,
        "finish",
        &leg,
        "<reason xmlns='urn:xmpp:jingle:1'><success/></reason>",
    );
    let out = h.advance(200);
    assert_eq!(show(from_class(&to_bob(&out), "audio").unwrap()), None);
}

#[test]
fn the_caller_retracting_while_ringing_retracts_every_leg() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let legs = legs(&propose(&mut h, "S1"));
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{BOB}' to='alice@{D}'><retract xmlns='urn:xmpp:jingle-message:0' id='S1'/></message>"));
    let retracted: BTreeSet<&str> = out
        .iter()
        .filter(|e| jmi_of(e).is_some_and(|j| j.name() == "retract"))
        .map(|e| e.attr("to").unwrap())
        .collect();
    assert_eq!(retracted, [PHONE, TABLET].into());
    for e in &out {
        assert_eq!(e.attr("from"), Some(legs[e.attr("to").unwrap()].0.as_str()));
    }
    assert_eq!(h.core.calls(), 0);
}

#[test]
fn nobody_answering_in_time_rejects_with_timeout_and_retracts_every_leg() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    propose(&mut h, "S1");
    assert!(h.advance(29_000).iter().all(|e| jmi_of(e).is_none()));
    let out = h.advance(1_500);
    let reject = to_bob_jmi(&out, "reject");
    assert_eq!(reject.len(), 1);
    assert!(jmi_of(reject[0])
        .unwrap()
        .get_child("reason", jingle::JINGLE)
        .unwrap()
        .has_child("timeout", jingle::JINGLE));
    assert_eq!(
        out.iter()
            .filter(|e| jmi_of(e).is_some_and(|j| j.name() == "retract"))
            .count(),
        2
    );
    assert_eq!(h.core.calls(), 0);
}

#[test]
fn no_device_or_all_dnd_is_busy_at_once() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    h.device("phone", "<show>dnd</show>");
    h.device("tablet", "<show>dnd</show>");
    let out = propose(&mut h, "S1");
    let reject = to_bob_jmi(&out, "reject");
    assert_eq!(reject.len(), 1);
    assert!(jmi_of(reject[0])
        .unwrap()
        .get_child("reason", jingle::JINGLE)
        .unwrap()
        .has_child("busy", jingle::JINGLE));
    assert!(legs(&out).is_empty());
    assert_eq!(h.core.calls(), 0);
}

#[test]
fn one_decline_keeps_the_others_ringing_and_all_declines_reach_the_caller() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let legs = legs(&propose(&mut h, "S1"));
    let (proxy, phone_leg) = legs[PHONE].clone();
    let (_, tablet_leg) = legs[TABLET].clone();
    let decline = "<reason xmlns='urn:xmpp:jingle:1'><decline/></reason>";
    assert!(to_bob(&from_device(
        &mut h, PHONE, &proxy, "reject", &phone_leg, decline
    ))
    .is_empty());
    assert_eq!(h.core.calls(), 1);
    let out = from_device(&mut h, TABLET, &proxy, "reject", &tablet_leg, decline);
    let reject = to_bob_jmi(&out, "reject");
    assert_eq!(jmi_of(reject[0]).unwrap().attr("id"), Some("S1"));
    assert!(jmi_of(reject[0])
        .unwrap()
        .get_child("reason", jingle::JINGLE)
        .unwrap()
        .has_child("decline", jingle::JINGLE));
    assert_eq!(h.core.calls(), 0);
}

#[test]
fn jingle_errors_follow_xep0166_section_10() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let out = h.input(&jingle_from(BOB, AUDIO, "x1", "transport-info", "nope", ""));
    let err = out[0].get_child("error", ns::COMPONENT).unwrap();
    assert!(err.has_child("item-not-found", ns::STANZAS));
    assert!(err.has_child("unknown-session", jingle::JINGLE_ERRORS));
    propose(&mut h, "S1");
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "x2",
        "session-initiate",
        "S1",
        CONTENT,
    ));
    let err = out[0].get_child("error", ns::COMPONENT).unwrap();
    assert!(
        err.has_child("unexpected-request", ns::STANZAS),
        "session-initiate before proceed"
    );
    assert!(err.has_child("out-of-order", jingle::JINGLE_ERRORS));
}

#[test]
fn relay_only_strips_direct_candidates_towards_the_caller() {
    let mut h = alice_with_two_phones(CandidatePolicy::RelayOnly);
    let legs = legs(&propose(&mut h, "S1"));
    let (proxy, leg) = legs[PHONE].clone();
    from_device(&mut h, PHONE, &proxy, "proceed", &leg, "");
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='set' id='d1' from='{PHONE}' to='{proxy}'><jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='{leg}'>{CONTENT}</jingle></iq>"
    ));
    let mut xml = Vec::new();
    out[0].write_to(&mut xml).unwrap();
    let xml = String::from_utf8(xml).unwrap();
    assert!(
        !xml.contains("abcd.local") && !xml.contains("type=\"host\""),
        "{xml}"
    );
    assert!(
        xml.contains("198.51.100.9"),
        "the relay candidate stays: {xml}"
    );
}

/// Every candidate type in a stanza, and whether any relay candidate
/// still carries a real related address.
fn candidate_types(el: &Element) -> (Vec<String>, bool) {
    let mut types = vec![];
    let mut related = false;
    fn walk(el: &Element, types: &mut Vec<String>, related: &mut bool) {
        if el.name() == "candidate" || el.name() == "remote-candidate" {
            types.push(el.attr("type").unwrap_or("remote").to_owned());
            *related |= el.attr("rel-addr").is_some_and(|a| a != "0.0.0.0")
                || el.attr("rel-port").is_some_and(|p| p != "0");
        }
        for c in el.children() {
            walk(c, types, related);
        }
    }
    walk(el, &mut types, &mut related);
    (types, related)
}

/// A transport with a host, a server-reflexive, a peer-reflexive and a
/// relay candidate (related address set), as browsers send them.
const EVERY_CANDIDATE: &str = "<content creator='initiator' name='0'><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>\
    <candidate component='1' foundation='1' generation='0' id='h' ip='192.0.2.10' port='5000' priority='1' protocol='udp' type='host'/>\
    <candidate component='1' foundation='2' generation='0' id='s' ip='203.0.113.10' port='5001' priority='1' protocol='udp' type='srflx' rel-addr='192.0.2.10' rel-port='5000'/>\
    <candidate component='1' foundation='4' generation='0' id='p' ip='192.0.2.11' port='5003' priority='1' protocol='udp' type='prflx'/>\
    <candidate component='1' foundation='3' generation='0' id='r' ip='198.51.100.9' port='5002' priority='1' protocol='udp' type='relay' rel-addr='203.0.113.10' rel-port='5001'/>\
    </transport></content>";
const HOST_ONLY: &str = "<content creator='initiator' name='0'><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>\
    <candidate component='1' foundation='1' generation='0' id='h2' ip='192.0.2.12' port='5009' priority='1' protocol='udp' type='host'/></transport></content>";

/// Issue 13, hole 2 (DESIGN.md section 5): under relay-only no address of
/// either side reaches the other, in any Jingle action, both ways;
/// related addresses are blanked; a transport-info that only carried
/// addresses is answered but not passed on.
#[test]
fn relay_only_keeps_addresses_from_both_sides_in_every_action() {
    let mut h = alice_with_two_phones(CandidatePolicy::RelayOnly);
    let relay_only = |el: &Element| {
        let (types, related) = candidate_types(el);
        types.iter().all(|t| t == "relay") && !related
    };
    // Bob calls with plain Jingle: each leg's session-initiate.
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "si",
        "session-initiate",
        "J1",
        EVERY_CANDIDATE,
    ));
    let inits: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("type") == Some("set"))
        .collect();
    assert_eq!(inits.len(), 2);
    for i in &inits {
        assert!(relay_only(i), "towards her device: {i:?}");
        assert_eq!(candidate_types(i).0, ["relay"]);
    }
    let proxy = inits[0].attr("from").unwrap().to_owned();
    let phone_leg = inits
        .iter()
        .find(|e| e.attr("to") == Some(PHONE))
        .and_then(|e| e.get_child("jingle", jingle::JINGLE))
        .and_then(|j| j.attr("sid"))
        .unwrap()
        .to_owned();
    // Bob's host-only transport-info while ringing: acked, passed on to nobody.
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "t0",
        "transport-info",
        "J1",
        HOST_ONLY,
    ));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].attr("type"), Some("result"));
    // Her phone's host-only transport-info before it answers: held, and
    // never sent on.
    let device_iq = |id: &str, action: &str, body: &str| {
        format!("<iq xmlns='jabber:component:accept' type='set' id='{id}' from='{PHONE}' to='{proxy}'><jingle xmlns='urn:xmpp:jingle:1' action='{action}' sid='{phone_leg}' responder='{PHONE}'>{body}</jingle></iq>")
    };
    h.input(&device_iq("d0", "transport-info", HOST_ONLY));
    // She answers with every kind of candidate: Bob gets her relay only.
    let out = h.input(&device_iq("d1", "session-accept", EVERY_CANDIDATE));
    let accept = to_bob(&out)
        .into_iter()
        .find(|e| e.attr("type") == Some("set"))
        .expect("the accept reaches Bob");
    assert!(relay_only(accept), "{accept:?}");
    assert_eq!(candidate_types(accept).0, ["relay"]);
    assert!(
        !to_bob(&out).iter().any(|e| xml(e).contains("192.0.2.12")),
        "the held host candidate stays held: {out:?}"
    );
    // After the answer, both ways: host-only transport-infos are answered
    // where they came from and go nowhere.
    let out = h.input(&device_iq("d2", "transport-info", HOST_ONLY));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].attr("to"), out[0].attr("type")),
        (Some(PHONE), Some("result"))
    );
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "t1",
        "transport-info",
        "J1",
        HOST_ONLY,
    ));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].attr("to"), out[0].attr("type")),
        (Some(BOB), Some("result"))
    );
    // Mixed ones pass with the relay candidate only, both ways.
    for (out, to) in [
        (
            h.input(&device_iq("d3", "transport-info", EVERY_CANDIDATE)),
            BOB,
        ),
        (
            h.input(&jingle_from(
                BOB,
                AUDIO,
                "t2",
                "transport-info",
                "J1",
                EVERY_CANDIDATE,
            )),
            PHONE,
        ),
    ] {
        let relayed = out
            .iter()
            .find(|e| e.attr("to") == Some(to) && e.attr("type") == Some("set"))
            .expect("relayed");
        assert!(relay_only(relayed), "{relayed:?}");
        assert_eq!(candidate_types(relayed).0, ["relay"]);
    }
    // transport-replace and content-add carry candidates too.
    for action in [
        "transport-replace",
        "transport-accept",
        "content-add",
        "content-accept",
    ] {
        let out = h.input(&device_iq("d4", action, EVERY_CANDIDATE));
        for e in out.iter().filter(|e| e.attr("type") == Some("set")) {
            assert!(relay_only(e), "{action}: {e:?}");
        }
        let out = h.input(&jingle_from(
            BOB,
            AUDIO,
            "t4",
            action,
            "J1",
            EVERY_CANDIDATE,
        ));
        for e in out.iter().filter(|e| e.attr("type") == Some("set")) {
            assert!(relay_only(e), "{action}: {e:?}");
        }
    }
}

/// The same through XEP-0353: the caller's session-initiate after the
/// proceed reaches her device with relay candidates only.
#[test]
fn relay_only_filters_the_callers_candidates_after_a_proceed_too() {
    let mut h = alice_with_two_phones(CandidatePolicy::RelayOnly);
    let legs = legs(&propose(&mut h, "S1"));
    let (proxy, leg) = legs[PHONE].clone();
    let out = from_device(&mut h, PHONE, &proxy, "proceed", &leg, "");
    let face = to_bob_jmi(&out, "proceed")[0]
        .attr("from")
        .unwrap()
        .to_owned();
    let out = h.input(&jingle_from(
        BOB,
        &face,
        "si",
        "session-initiate",
        "S1",
        EVERY_CANDIDATE,
    ));
    let init = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE) && e.attr("type") == Some("set"))
        .expect("relayed to her phone");
    assert_eq!(candidate_types(init).0, ["relay"]);
    assert!(!candidate_types(init).1);
}

/// Issue 13, hole 8: a rule picks the candidate policy per caller;
/// ringing is left to the rules below a rule that only sets it.
#[test]
fn a_rule_can_make_calls_from_non_watchers_relay_only() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    assert!(command(&mut h, PHONE, "rule add from anyone relay-only").contains("relay-only calls"));
    assert!(command(&mut h, PHONE, "rule add from watchers direct").contains("direct calls"));
    command(&mut h, PHONE, "ring sequential tablet phone");
    // Bob watches her: direct, and the ring rule still decides who rings.
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "si",
        "session-initiate",
        "J1",
        EVERY_CANDIDATE,
    ));
    let inits: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("type") == Some("set"))
        .collect();
    assert_eq!(inits.len(), 1, "sequential: the tablet first");
    assert_eq!(inits[0].attr("to"), Some(TABLET));
    assert_eq!(candidate_types(inits[0]).0.len(), 4, "direct for a watcher");
    // Carol does not: relay-only.
    let out = h.input(&jingle_from(
        "carol@example.net/x",
        AUDIO,
        "si2",
        "session-initiate",
        "J2",
        EVERY_CANDIDATE,
    ));
    let inits: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("type") == Some("set"))
        .collect();
    assert_eq!(inits.len(), 1);
    assert_eq!(
        candidate_types(inits[0]).0,
        ["relay"],
        "relay-only for a stranger"
    );
}

#[test]
fn plain_jingle_is_forked_and_the_first_accept_wins() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "si",
        "session-initiate",
        "J1",
        CONTENT,
    ));
    assert_eq!(
        out.iter()
            .filter(|e| e.attr("to") == Some(BOB) && e.attr("type") == Some("result"))
            .count(),
        1,
        "Bob's IQ is acked"
    );
    let inits: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("type") == Some("set"))
        .collect();
    assert_eq!(inits.len(), 2);
    let leg_of = |e: &Element| {
        e.get_child("jingle", jingle::JINGLE)
            .unwrap()
            .attr("sid")
            .unwrap()
            .to_owned()
    };
    let phone = inits.iter().find(|e| e.attr("to") == Some(PHONE)).unwrap();
    let tablet = inits.iter().find(|e| e.attr("to") == Some(TABLET)).unwrap();
    let (phone_leg, tablet_leg, proxy) = (
        leg_of(phone),
        leg_of(tablet),
        phone.attr("from").unwrap().to_owned(),
    );

    // Bob's transport-info is replayed to both ringing legs.
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "ti",
        "transport-info",
        "J1",
        CONTENT,
    ));
    assert_eq!(
        out.iter().filter(|e| e.attr("type") == Some("set")).count(),
        2
    );
    // The tablet's own transport-info is held until it wins.
    let held = format!("<iq xmlns='jabber:component:accept' type='set' id='t1' from='{TABLET}' to='{proxy}'><jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='{tablet_leg}'>{CONTENT}</jingle></iq>");
    assert!(to_bob(&h.input(&held))
        .iter()
        .all(|e| e.attr("type") == Some("result") || e.attr("to") != Some(BOB)));
    assert!(to_bob(&h.input(&held)).is_empty());

    let accept = format!("<iq xmlns='jabber:component:accept' type='set' id='a1' from='{TABLET}' to='{proxy}'><jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='{tablet_leg}' responder='{TABLET}'>{CONTENT}</jingle></iq>");
    let out = h.input(&accept);
    let to_bob_sets: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("to") == Some(BOB) && e.attr("type") == Some("set"))
        .collect();
    let actions: Vec<&str> = to_bob_sets
        .iter()
        .map(|e| {
            e.get_child("jingle", jingle::JINGLE)
                .unwrap()
                .attr("action")
                .unwrap()
        })
        .collect();
    assert_eq!(
        actions,
        ["session-accept", "transport-info", "transport-info"],
        "accept, then what was held"
    );
    let cancel = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE))
        .unwrap()
        .get_child("jingle", jingle::JINGLE)
        .unwrap();
    assert_eq!(
        (cancel.attr("action"), cancel.attr("sid")),
        (Some("session-terminate"), Some(phone_leg.as_str()))
    );
    // Gajim ends a ringing call only on `success` or `decline`.
    let reason = cancel.get_child("reason", jingle::JINGLE).unwrap();
    assert!(
        reason.has_child("success", jingle::JINGLE),
        "{}",
        xml(reason)
    );
    assert_eq!(
        reason.get_child("text", jingle::JINGLE).map(|t| t.text()),
        Some("Answered on another device.".into())
    );
}

#[test]
fn a_video_propose_rings_only_video_devices() {
    let mut h = alice_with_phone_and_laptop();
    h.device("tablet", &caps_for("https://dino.im", JINGLE_AUDIO));
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' from='{BOB}' to='alice@{D}'><propose xmlns='urn:xmpp:jingle-message:0' id='V1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'/></propose></message>"
    ));
    assert_eq!(legs(&out).keys().collect::<Vec<_>>(), [PHONE]);
}

#[test]
fn plain_jingle_terminated_while_ringing_or_timed_out_ends_every_leg() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    h.input(&jingle_from(
        BOB,
        AUDIO,
        "si",
        "session-initiate",
        "J1",
        CONTENT,
    ));
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "st",
        "session-terminate",
        "J1",
        "<reason><cancel/></reason>",
    ));
    let terminated: BTreeSet<&str> = out
        .iter()
        .filter(|e| {
            e.get_child("jingle", jingle::JINGLE)
                .is_some_and(|j| j.attr("action") == Some("session-terminate"))
        })
        .map(|e| e.attr("to").unwrap())
        .collect();
    assert_eq!(terminated, [PHONE, TABLET].into());
    assert_eq!(h.core.calls(), 0);

    h.input(&jingle_from(
        BOB,
        AUDIO,
        "si2",
        "session-initiate",
        "J2",
        CONTENT,
    ));
    let out = h.advance(31_000);
    let to_bob_terms: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("to") == Some(BOB) && e.attr("type") == Some("set"))
        .collect();
    let j = to_bob_terms[0].get_child("jingle", jingle::JINGLE).unwrap();
    assert_eq!(
        (j.attr("action"), j.attr("sid")),
        (Some("session-terminate"), Some("J2"))
    );
    // One session-terminate each, with a condition Gajim takes as the
    // end of the call (it keeps a call open on `timeout`), and the real
    // reason as text; nothing after it.
    assert_eq!(to_bob_terms.len(), 1, "{to_bob_terms:?}");
    let reason = j.get_child("reason", jingle::JINGLE).unwrap();
    assert!(
        reason.has_child("decline", jingle::JINGLE),
        "{}",
        xml(reason)
    );
    assert_eq!(
        reason.get_child("text", jingle::JINGLE).map(|t| t.text()),
        Some("Nobody answered.".into())
    );
    let to_legs: Vec<&Element> = out
        .iter()
        .filter(|e| {
            e.attr("to")
                .is_some_and(|t| t.starts_with("alice@localhost/"))
        })
        .collect();
    assert_eq!(to_legs.len(), 2);
    for leg in to_legs {
        let reason = leg
            .get_child("jingle", jingle::JINGLE)
            .unwrap()
            .get_child("reason", jingle::JINGLE)
            .unwrap();
        assert!(reason.has_child("success", jingle::JINGLE), "{}", xml(leg));
    }
    assert_eq!(h.core.calls(), 0);
    assert!(h.advance(60_000).is_empty());
}

#[test]
fn the_answering_device_going_offline_ends_the_call_for_the_caller() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let legs = legs(&propose(&mut h, "S1"));
    let (proxy, leg) = legs[TABLET].clone();
    from_device(&mut h, TABLET, &proxy, "proceed", &leg, "");
    let out = h.device_gone("tablet");
    assert_eq!(to_bob_jmi(&out, "finish").len(), 1);
    assert_eq!(h.core.calls(), 0);
}

#[test]
fn shutdown_ends_calls_on_every_side() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let legs = legs(&propose(&mut h, "S1"));
    let (proxy, leg) = legs[TABLET].clone();
    from_device(&mut h, TABLET, &proxy, "proceed", &leg, "");
    propose(&mut h, "S2");
    h.core.handle_shutdown(h.now);
    let out = h.drain();
    assert_eq!(
        to_bob_jmi(&out, "finish").len(),
        1,
        "the answered call is finished"
    );
    assert_eq!(
        to_bob_jmi(&out, "reject").len(),
        1,
        "the ringing one is rejected"
    );
    let to_tablet: Vec<&str> = out
        .iter()
        .filter(|e| e.attr("to") == Some(TABLET))
        .filter_map(|e| jmi_of(e))
        .map(|j| j.name())
        .collect();
    assert!(to_tablet.contains(&"finish"));
    assert_eq!(h.core.calls(), 0);
}

// ---- Chat through the virtual JID (DESIGN.md section 7) ----

#[test]
fn a_message_to_the_virtual_jid_reaches_her_accounts_from_the_proxy_jid() {
    let mut h = alice_with_phone_and_laptop();
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' id='m1' from='{BOB}' to='alice@{D}'>\
         <body>hello phone</body><request xmlns='urn:xmpp:receipts'/><active xmlns='http://jabber.org/protocol/chatstates'/>\
         <origin-id xmlns='urn:xmpp:sid:0' id='o1'/><store xmlns='urn:xmpp:hints'/></message>"
    ));
    assert_eq!(out.len(), 1);
    let m = &out[0];
    assert_eq!(
        m.attr("to"),
        Some("alice@localhost"),
        "her server delivers, carbons, stores offline"
    );
    assert_eq!(
        m.attr("from"),
        Some(r"bob\40localhost@unified.localhost/pc"),
        "a proxy full JID per resource of his"
    );
    assert_eq!((m.attr("type"), m.attr("id")), (Some("chat"), Some("m1")));
    assert_eq!(
        m.get_child("body", ns::COMPONENT).unwrap().text(),
        "hello phone"
    );
    for (name, ns) in [
        ("request", jingle::RECEIPTS),
        ("active", "http://jabber.org/protocol/chatstates"),
        ("origin-id", "urn:xmpp:sid:0"),
        ("store", jingle::HINTS),
    ] {
        assert!(m.has_child(name, ns), "{name} passes through");
    }
}

#[test]
fn her_reply_to_the_proxy_jid_reaches_the_sender_from_the_chat_resource() {
    let mut h = alice_with_phone_and_laptop();
    let out = h.input(&format!(
        r"<message xmlns='jabber:component:accept' type='chat' id='r1' from='{PHONE}' to='bob\40localhost@{D}'>\
         <body>on my phone, call me</body><replace xmlns='urn:xmpp:message-correct:0' id='r0'/>\
         <received xmlns='urn:xmpp:receipts' id='m1'/><stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='x'/></message>"
    ));
    assert_eq!(out.len(), 1, "{out:?}");
    let m = &out[0];
    assert_eq!(
        (m.attr("from"), m.attr("to")),
        (Some("alice@unified.localhost/chat"), Some("bob@localhost"))
    );
    assert_eq!(
        m.get_child("body", ns::COMPONENT).unwrap().text(),
        "on my phone, call me"
    );
    assert!(m.has_child("replace", "urn:xmpp:message-correct:0"));
    assert!(m.has_child("received", jingle::RECEIPTS));
    assert!(
        !m.has_child("stanza-id", "urn:xmpp:sid:0"),
        "her server's stamp about her account is dropped"
    );
}

/// Issue 14: her reply to the proxy full JID reaches that resource of his,
/// and receipts, markers, corrections, retractions and replies keep the
/// ids they refer to, both ways.
#[test]
fn a_conversation_keeps_its_resource_and_its_ids_both_ways() {
    let mut h = alice_with_phone_and_laptop();
    let proxy = format!(r"bob\40localhost@{D}/pc");
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='b1' from='{BOB}' to='alice@{D}'><body>hi</body><request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/></message>"));
    assert_eq!(out[0].attr("from"), Some(proxy.as_str()));
    let reply = |h: &mut Harness, id: &str, payload: &str| {
        let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='{id}' from='{PHONE}' to='{proxy}'>{payload}</message>"));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].attr("to"), Some(BOB), "the resource she answers");
        assert_eq!(
            out[0].attr("from"),
            Some(AUDIO.replace("audio", "chat").as_str())
        );
        assert_eq!(out[0].attr("id"), Some(id));
        out[0].clone()
    };
    for (id, payload, name, ns_) in [
        (
            "a1",
            "<received xmlns='urn:xmpp:receipts' id='b1'/>",
            "received",
            "urn:xmpp:receipts",
        ),
        (
            "a2",
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='b1'/>",
            "displayed",
            "urn:xmpp:chat-markers:0",
        ),
        (
            "a3",
            "<body>hey!</body><replace xmlns='urn:xmpp:message-correct:0' id='a0'/>",
            "replace",
            "urn:xmpp:message-correct:0",
        ),
        (
            "a4",
            "<retract xmlns='urn:xmpp:message-retract:1' id='a3'/>",
            "retract",
            "urn:xmpp:message-retract:1",
        ),
        (
            "a5",
            "<body>yes</body><reply xmlns='urn:xmpp:reply:0' to='bob@localhost/pc' id='b1'/>",
            "reply",
            "urn:xmpp:reply:0",
        ),
        (
            "a6",
            "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
            "composing",
            "http://jabber.org/protocol/chatstates",
        ),
    ] {
        let m = reply(&mut h, id, payload);
        let child = m.get_child(name, ns_).expect("passes through");
        if let Some(r) = child.attr("id") {
            assert!(
                ["b1", "a0", "a3"].contains(&r),
                "the id it refers to is kept"
            );
        }
    }
    // The chat class says it takes all that, and answers pings.
    let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='get' id='d' from='{BOB}' to='alice@{D}/chat'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    let features: Vec<&str> = out[0]
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in devices::CHAT_RELAYED.iter().chain([&"urn:xmpp:ping"]) {
        assert!(features.contains(f), "{f} in {features:?}");
    }
}

/// Issue 14 and DESIGN.md section 10: between owners each sees only the
/// other's virtual JID, both ways.
#[test]
fn owners_write_to_each_other_by_virtual_jid_only() {
    let mut h = alice_with_phone_and_laptop();
    command(&mut h, "carol@localhost/pc", "register carol");
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='c1' from='carol@localhost/pc' to='alice@{D}'><body>hi Alice</body><request xmlns='urn:xmpp:receipts'/></message>"));
    let to_alice: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("to") == Some("alice@localhost"))
        .collect();
    assert_eq!(to_alice.len(), 1, "{out:?}");
    assert_eq!(
        to_alice[0].attr("from"),
        Some(format!("carol@{D}/chat").as_str())
    );
    assert!(!xml(to_alice[0]).contains("carol@localhost"));
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='a1' from='{PHONE}' to='carol@{D}/chat'><body>hi Carol</body><received xmlns='urn:xmpp:receipts' id='c1'/></message>"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].attr("to"), Some("carol@localhost"));
    assert_eq!(
        out[0].attr("from"),
        Some(format!("alice@{D}/chat").as_str())
    );
    assert!(!xml(&out[0]).contains("alice@localhost"));
    // To her bare virtual JID too.
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='a2' from='{PHONE}' to='carol@{D}'><body>there?</body></message>"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].attr("to"), Some("carol@localhost"));
}

/// DESIGN.md section 10: when Carol (an owner) watches or calls Alice,
/// Alice's devices see carol@D, never Carol's account, and Alice's answers
/// to carol@D decide.
#[test]
fn owners_watch_and_call_each_other_by_virtual_jid() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    command(&mut h, "carol@localhost/pc", "register carol");
    h.core.owners[0].policy = SubscriptionPolicy::Ask;
    let carol_d = format!("carol@{D}");
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='carol@localhost' to='alice@{D}'/>"));
    let asks: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("to") == Some("alice@localhost") && e.attr("type") == Some("subscribe"))
        .collect();
    assert_eq!(asks.len(), 1, "{out:?}");
    assert_eq!(asks[0].attr("from"), Some(carol_d.as_str()));
    for e in &out {
        assert!(
            !xml(e).contains("carol@localhost") || e.attr("to") == Some("carol@localhost"),
            "{e:?}"
        );
    }
    // Alice's client approves carol@D: Carol's account is her watcher.
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='alice@localhost' to='{carol_d}'/>"));
    assert!(
        out.iter().any(
            |e| e.attr("to") == Some("carol@localhost") && e.attr("type") == Some("subscribed")
        ),
        "{out:?}"
    );
    assert_eq!(
        h.core.owners[0]
            .watchers
            .get(&BareJid::new("carol@localhost").unwrap()),
        Some(&WatcherState::Subscribed)
    );
    // Carol calls: Alice's phones ring from carol@D/<token>.
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' id='m' from='carol@localhost/pc' to='alice@{D}'>\
         <propose xmlns='urn:xmpp:jingle-message:0' id='K1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>"
    ));
    let legs = legs(&out);
    let (proxy, leg) = legs[PHONE].clone();
    assert!(proxy.starts_with(&format!("{carol_d}/")), "{proxy}");
    for e in &out {
        assert!(
            !xml(e).contains("carol@localhost")
                || e.attr("to")
                    .is_some_and(|t| t.starts_with("carol@localhost")),
            "{e:?}"
        );
    }
    // The phone answers the leg at carol@D/<token>: Carol gets the proceed.
    let out = from_device(&mut h, PHONE, &proxy, "proceed", &leg, "");
    let proceed = out
        .iter()
        .find(|e| {
            e.attr("to") == Some("carol@localhost/pc")
                && jmi_of(e).is_some_and(|j| j.name() == "proceed")
        })
        .expect("proceed reaches Carol");
    assert_eq!(proceed.attr("from"), Some(AUDIO));
    // Her session-initiate and the phone's answer go through too.
    let out = h.input(&jingle_from(
        "carol@localhost/pc",
        AUDIO,
        "si",
        "session-initiate",
        "K1",
        CONTENT,
    ));
    let si = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE))
        .expect("to the phone");
    assert_eq!(si.attr("from"), Some(proxy.as_str()));
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='{PHONE}' to='{proxy}'/>",
        si.attr("id").unwrap()
    ));
    assert!(
        out.iter()
            .any(|e| e.attr("to") == Some("carol@localhost/pc") && e.attr("id") == Some("si")),
        "{out:?}"
    );
}

/// Issue 14: an error for a relayed message reaches its sender, from the
/// address he wrote to, with its condition (and nothing the far server
/// wrote).
#[test]
fn an_error_for_a_relayed_message_goes_back_to_its_sender() {
    let mut h = alice_with_phone_and_laptop();
    let carol = format!(r"carol\40localhost@{D}");
    h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='x1' from='{PHONE}' to='{carol}'><body>hello?</body></message>"));
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='error' id='x1' from='carol@localhost' to='alice@{D}/chat'><body>hello?</body><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>No such user alice@localhost</text></error></message>"));
    assert_eq!(out.len(), 1, "{out:?}");
    let e = &out[0];
    assert_eq!(
        (e.attr("to"), e.attr("from"), e.attr("type")),
        (Some(PHONE), Some(carol.as_str()), Some("error"))
    );
    let err = e.get_child("error", ns::COMPONENT).unwrap();
    assert!(err.has_child("service-unavailable", ns::STANZAS));
    assert!(!err.has_child("text", ns::STANZAS));
    // Only once, and only from whom it went to.
    let again = h.input(&format!("<message xmlns='jabber:component:accept' type='error' id='x1' from='carol@localhost' to='alice@{D}/chat'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"));
    assert!(again.is_empty());
    // The other way: her server bounces Bob's message.
    h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='b9' from='{BOB}' to='alice@{D}'><body>hi</body></message>"));
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='error' id='b9' from='alice@localhost' to='bob\\40localhost@{D}/pc'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].attr("to"), out[0].attr("from")),
        (Some(BOB), Some(format!("alice@{D}").as_str()))
    );
}

/// Issue 14: ring rules decide calls; chat goes where a chat rule says,
/// else everywhere (her server's way).
#[test]
fn a_ring_rule_does_not_reroute_chat() {
    let mut h = alice_with_phone_and_laptop();
    command(&mut h, PHONE, "ring sequential phone");
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='b1' from='{BOB}' to='alice@{D}'><body>hi</body></message>"));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].attr("to"),
        Some("alice@localhost"),
        "to her account, all devices"
    );
    command(&mut h, PHONE, "rule add chat ring parallel laptop");
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='b2' from='{BOB}' to='alice@{D}'><body>hi</body></message>"));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].attr("to"),
        Some("alice@localhost/laptop"),
        "a chat rule decides chat"
    );
}

#[test]
fn chat_relay_leaves_errors_headlines_groupchat_and_blocked_senders_alone() {
    let mut h = alice_with_phone_and_laptop();
    for typ in ["error", "headline", "groupchat"] {
        let out = h.input(&format!("<message xmlns='jabber:component:accept' type='{typ}' from='{BOB}' to='alice@{D}'><body>x</body></message>"));
        assert!(
            out.iter().all(|e| e.attr("to") != Some("alice@localhost")),
            "{typ}"
        );
    }
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='spam@evil.example/x' to='alice@{D}'><body>x</body></message>"));
    assert!(out.is_empty());
}

#[test]
fn a_reply_that_would_name_her_device_is_refused_not_dropped() {
    let mut h = alice_with_phone_and_laptop();
    let out = h.input(&format!(
        r"<message xmlns='jabber:component:accept' type='chat' id='r2' from='{PHONE}' to='bob\40localhost@{D}'><reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:alice@localhost/phone'/></message>"
    ));
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].attr("to"), out[0].attr("type")),
        (Some(PHONE), Some("error"))
    );
    assert!(out[0]
        .get_child("error", ns::COMPONENT)
        .unwrap()
        .has_child("not-acceptable", ns::STANZAS));
}

// ---- Ring rules (DESIGN.md section 6) ----

fn alice_with_rules(rules: Vec<rules::Rule>) -> Harness {
    let mut cfg = config(SubscriptionPolicy::Open);
    cfg.owners[0].rules = rules;
    let mut h = Harness::with(cfg, Stored::default());
    h.subscribe_bob();
    let out = h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    let q = out.iter().find(|e| e.name() == "iq").unwrap().clone();
    h.answer_disco(&q, JINGLE_AUDIO);
    h.device(
        "tablet",
        &caps_for("https://conversations.im", JINGLE_AUDIO),
    );
    h.advance(200);
    h
}

#[test]
fn sequential_rules_ring_the_next_device_only_after_the_step_expires() {
    let rule = rules::Rule {
        mode: rules::RingMode::Sequential,
        devices: vec!["tablet".into(), "phone".into()],
        step_ms: 5_000,
        on_no_answer: rules::NoAnswer::Message,
        ..rules::Rule::default_rule(12_000)
    };
    let mut h = alice_with_rules(vec![rule]);
    let first = legs(&propose(&mut h, "S1"));
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        [TABLET],
        "the tablet first"
    );
    assert!(legs(&h.advance(4_000)).is_empty());
    let out = h.advance(1_500);
    let retract = out
        .iter()
        .find(|e| e.attr("to") == Some(TABLET))
        .expect("the tablet stops ringing");
    assert_eq!(jmi_of(retract).unwrap().name(), "retract");
    let second = legs(&out);
    assert_eq!(second.keys().collect::<Vec<_>>(), [PHONE], "then the phone");
    assert_eq!(
        second[PHONE].0, first[TABLET].0,
        "from the same proxy full JID"
    );
    // Nobody answers: the caller is told, and Alice gets a missed-call note.
    let out = h.advance(7_000);
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1);
    let note = out
        .iter()
        .find(|e| e.attr("to") == Some("alice@localhost"))
        .expect("a missed-call note");
    assert_eq!(
        note.get_child("body", ns::COMPONENT).unwrap().text(),
        "Missed audio call from bob@localhost"
    );
    assert_eq!(
        note.attr("from"),
        Some(r"bob\40localhost@unified.localhost")
    );
}

#[test]
fn a_decline_moves_a_sequential_call_on_at_once() {
    let rule = rules::Rule {
        mode: rules::RingMode::Sequential,
        devices: vec!["tablet".into(), "phone".into()],
        ..rules::Rule::default_rule(30_000)
    };
    let mut h = alice_with_rules(vec![rule]);
    let first = legs(&propose(&mut h, "S1"));
    let (proxy, leg) = first[TABLET].clone();
    let out = from_device(&mut h, TABLET, &proxy, "reject", &leg, "");
    assert!(to_bob_jmi(&out, "reject").is_empty());
    assert_eq!(legs(&out).keys().collect::<Vec<_>>(), [PHONE]);
}

#[test]
fn a_reject_rule_makes_the_caller_busy() {
    let rule = rules::Rule {
        callers: vec![rules::CallerMatch::Jid(
            BareJid::new("bob@localhost").unwrap(),
        )],
        reject: true,
        ..rules::Rule::default_rule(30_000)
    };
    let mut h = alice_with_rules(vec![rule]);
    let out = propose(&mut h, "S1");
    assert!(legs(&out).is_empty());
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1);
}

// ---- Chat commands (DESIGN.md section 8) ----

fn command(h: &mut Harness, from: &str, body: &str) -> String {
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{from}' to='{D}'><body>{body}</body></message>"));
    let reply = out
        .iter()
        .find(|e| e.attr("to") == Some(from) && e.name() == "message")
        .expect("a reply");
    assert_eq!(reply.attr("from"), Some(D));
    if reply.attr("type") == Some("error") {
        // Someone else's data: forbidden, with the explanation as text.
        let error = reply.get_child("error", ns::COMPONENT).unwrap();
        assert!(error.has_child("forbidden", ns::STANZAS));
        return error.get_child("text", ns::STANZAS).unwrap().text();
    }
    reply.get_child("body", ns::COMPONENT).unwrap().text()
}

#[test]
fn status_and_devices_tell_the_owner_what_watchers_see_and_what_rings() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let status = command(&mut h, PHONE, "status");
    assert!(status.contains("• chat: online"), "{status}");
    assert!(
        status.contains("• audio: online; a call now rings: phone + tablet"),
        "{status}"
    );
    assert!(status.contains("• files: unavailable"), "{status}");
    let devices = command(&mut h, PHONE, "devices");
    assert!(
        devices.contains("alice@localhost/tablet: online, priority 0, can chat, audio"),
        "{devices}"
    );
    assert!(
        devices.contains("alice@localhost/laptop: online, priority 0, can chat ("),
        "{devices}"
    );
}

#[test]
fn only_her_own_accounts_may_use_her_commands() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let reply = command(&mut h, "eve@evil.example/x", "status");
    assert!(reply.starts_with("You have no unified address"), "{reply}");
    assert!(!reply.contains("phone"));
}

#[test]
fn approve_and_deny_by_command_are_stored_and_answered() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.subscribe_bob();
    assert!(command(&mut h, PHONE, "watchers").contains("Waiting for your answer: bob@localhost"));
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>approve bob@localhost</body></message>"));
    assert!(h.ops.contains(&StoreOp::Watcher {
        owner: "alice".into(),
        watcher: BareJid::new("bob@localhost").unwrap(),
        state: Some(WatcherState::Subscribed)
    }));
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some("bob@localhost") && e.attr("type") == Some("subscribed")));
    assert!(command(&mut h, PHONE, "watchers").contains("Watching you: bob@localhost"));
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>deny bob@localhost</body></message>"));
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some("bob@localhost") && e.attr("type") == Some("unsubscribed")));
    assert!(h.ops.contains(&StoreOp::Watcher {
        owner: "alice".into(),
        watcher: BareJid::new("bob@localhost").unwrap(),
        state: None
    }));
    let reply = command(&mut h, PHONE, "dance");
    assert!(reply.contains("Send \"help\""), "{reply}");
}

#[test]
fn ring_and_dnd_commands_change_the_rules_and_store_them_first() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let reply = command(&mut h, PHONE, "ring sequential tablet phone");
    assert!(reply.contains("tablet, then phone, 10 s each"), "{reply}");
    assert!(
        matches!(h.ops.last(), Some(StoreOp::Rules { rules, .. }) if rules.len() == 1 && rules[0].mode == rules::RingMode::Sequential)
    );
    assert_eq!(
        legs(&propose(&mut h, "S1")).keys().collect::<Vec<_>>(),
        [TABLET]
    );
    h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{BOB}' to='alice@{D}'><retract xmlns='urn:xmpp:jingle-message:0' id='S1'/></message>"));

    assert!(command(&mut h, PHONE, "dnd audio on").contains("on for audio calls"));
    let out = propose(&mut h, "S2");
    assert!(legs(&out).is_empty());
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1, "busy at once");
    let rules = command(&mut h, PHONE, "rules");
    assert!(rules.contains("1. audio calls -> busy"), "{rules}");
    assert!(
        rules.contains("2. any call -> tablet, then phone"),
        "{rules}"
    );
    assert!(command(&mut h, PHONE, "dnd audio off").contains("off"));
    assert_eq!(
        legs(&propose(&mut h, "S3")).keys().collect::<Vec<_>>(),
        [TABLET]
    );
    assert!(command(&mut h, PHONE, "dnd fax on").starts_with("There is no class \"fax\""));
}

#[test]
fn stored_rules_replace_the_configured_ones_after_restart() {
    let rule = rules::Rule {
        mode: rules::RingMode::Sequential,
        devices: vec!["phone".into()],
        ..rules::Rule::default_rule(9_000)
    };
    let stored = Stored {
        rules: vec![("alice".into(), vec![rule.clone()])],
        ..Stored::default()
    };
    let mut cfg = config(SubscriptionPolicy::Open);
    cfg.owners[0].rules = vec![rules::Rule {
        reject: true,
        ..rules::Rule::default_rule(1)
    }];
    let core = Core::new(cfg, stored);
    assert_eq!(core.owners[0].rules, vec![rule]);
}

#[test]
fn label_names_a_device_in_its_stored_record() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    assert!(command(&mut h, PHONE, "label tablet Kitchen tablet").contains("labelled"));
    assert!(
        matches!(h.ops.last(), Some(StoreOp::Device { record, .. }) if record.label.as_deref() == Some("Kitchen tablet"))
    );
    assert!(command(&mut h, PHONE, "label fridge x").starts_with("You have no device"));
}

// ---- Self-registration (DESIGN.md sections 2 and 8) ----

#[test]
fn register_by_chat_links_the_account_and_unregister_leaves_nothing() {
    let mut h = alice_with_phone_and_laptop();
    let reply = command(&mut h, "eve@evil.example/x", "register");
    assert!(reply.starts_with("Registration is closed"), "{reply}");
    assert!(command(&mut h, "carol@localhost/pc", "register alice").contains("is taken"));
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='carol@localhost/pc' to='{D}'><body>register</body></message>"));
    assert!(out
        .iter()
        .any(|e| e.attr("from") == Some("carol@unified.localhost")
            && e.attr("to") == Some("carol@localhost")
            && e.attr("type") == Some("subscribe")));
    let record = RegisteredOwner {
        accounts: vec![BareJid::new("carol@localhost").unwrap()],
    };
    assert!(h.ops.contains(&StoreOp::Owner {
        owner: "carol".into(),
        record: Some(record.clone())
    }));

    // Carol approves, her device shows up, Bob watches her.
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='carol@localhost' to='carol@{D}'/>"));
    h.input(&format!(
        "<presence xmlns='jabber:component:accept' from='carol@localhost/desk' to='carol@{D}'/>"
    ));
    h.advance(200);
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='bob@localhost' to='carol@{D}'/>"));
    let out = h.input(&format!(r"<presence xmlns='jabber:component:accept' type='subscribed' from='carol@localhost' to='bob\40localhost@{D}'/>"));
    assert!(out
        .iter()
        .any(|e| e.attr("from") == Some("carol@unified.localhost/chat")));
    assert!(command(&mut h, "carol@localhost/desk", "status").contains("carol@unified.localhost"));

    // A restart keeps her.
    let stored = Stored {
        owners: vec![("carol".into(), record)],
        ..Stored::default()
    };
    let restarted = Core::new(config(SubscriptionPolicy::Ask), stored);
    assert_eq!(
        restarted.owners.last().map(|o| o.name.as_str()),
        Some("carol")
    );

    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='carol@localhost/desk' to='{D}'><body>unregister confirm</body></message>"));
    let to_bob: Vec<Option<&str>> = out
        .iter()
        .filter(|e| e.attr("to") == Some("bob@localhost"))
        .map(|e| e.attr("type"))
        .collect();
    assert_eq!(
        to_bob.last(),
        Some(&Some("unsubscribed")),
        "Bob is told: {to_bob:?}"
    );
    assert!(to_bob.contains(&Some("unavailable")));
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some("carol@localhost") && e.attr("type") == Some("unsubscribe")));
    assert!(h.ops.contains(&StoreOp::Owner {
        owner: "carol".into(),
        record: None
    }));
    let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='get' id='p' from='bob@localhost/pc' to='carol@{D}'><ping xmlns='urn:xmpp:ping'/></iq>"));
    assert!(
        out[0]
            .get_child("error", ns::COMPONENT)
            .unwrap()
            .has_child("service-unavailable", ns::STANZAS),
        "carol@D is nobody now"
    );
    assert!(command(&mut h, "carol@localhost/desk", "status")
        .starts_with("You have no unified address"));
    assert!(command(&mut h, PHONE, "unregister confirm").contains("set up by the admin"));
}

/// The code the component sent `account` to confirm a link.
fn link_code(out: &[Element], account: &str) -> String {
    let body = out
        .iter()
        .find(|e| e.name() == "message" && e.attr("to") == Some(account))
        .and_then(|m| m.get_child("body", ns::COMPONENT))
        .map(Element::text)
        .expect("a message with the code");
    body.split("link confirm ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a code")
        .to_owned()
}

/// Issue 13, hole 6 (DESIGN.md section 2): an account is linked only when
/// it sends back the one-time code it was sent; either side can undo it.
#[test]
fn link_needs_the_code_from_the_account_itself_and_unlink_undoes_it() {
    let mut h = alice_with_phone_and_laptop();
    let work = "alice@work.example";
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>link {work}</body></message>"));
    // The account gets a message from the domain with a code, and no
    // contact request that could be approved by mistake.
    assert!(
        !out.iter()
            .any(|e| e.name() == "presence" && e.attr("to") == Some(work)),
        "{out:?}"
    );
    let code = link_code(&out, work);
    let reply = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE))
        .unwrap()
        .get_child("body", ns::COMPONENT)
        .unwrap()
        .text();
    assert!(reply.contains("one-time code"), "{reply}");
    assert!(command(&mut h, PHONE, &format!("link x@{D}")).contains("Not linked"));
    assert!(command(&mut h, PHONE, "link alice@localhost").contains("already"));
    // Approving a subscription proves nothing.
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='{work}' to='alice@{D}'/>"));
    assert!(command(&mut h, "alice@work.example/desk", "status")
        .starts_with("You have no unified address"));
    // Someone else cannot use the code, a wrong one does not work.
    assert!(command(
        &mut h,
        "eve@evil.example/x",
        &format!("link confirm {code}")
    )
    .starts_with("No link waits"));
    assert!(
        command(&mut h, "alice@work.example/desk", "link confirm WRONGWRONG")
            .contains("not the code")
    );
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='alice@work.example/desk' to='{D}'><body>link confirm {code}</body></message>"));
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some(work) && e.attr("type") == Some("subscribe")));
    assert!(
        out.iter().any(|e| e.attr("to") == Some("alice@localhost")
            && e.get_child("body", ns::COMPONENT)
                .is_some_and(|b| b.text().contains("is now linked"))),
        "her other accounts hear of it: {out:?}"
    );
    let linked = AccountState {
        approved: false,
        linked_by_owner: true,
        confirmed: true,
    };
    assert!(h.ops.contains(&StoreOp::Account {
        owner: "alice".into(),
        account: BareJid::new(work).unwrap(),
        state: Some(linked)
    }));
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='{work}' to='alice@{D}'/>"));
    h.input(&format!(
        "<presence xmlns='jabber:component:accept' from='alice@work.example/desk' to='alice@{D}'/>"
    ));
    assert!(
        command(&mut h, "alice@work.example/desk", "devices").contains("alice@work.example/desk")
    );
    // A restart keeps it.
    h.restart();
    assert!(command(&mut h, "alice@work.example/desk", "watchers").starts_with("Watching you"));
    // The account unlinks itself: at once, stored, and it can no longer act.
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='alice@work.example/desk' to='{D}'><body>unlink</body></message>"));
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some(work) && e.attr("type") == Some("unsubscribe")));
    // One answer, to the device that asked (no second notice).
    let told: Vec<&Element> = out
        .iter()
        .filter(|e| {
            e.attr("to").is_some_and(|t| t.starts_with(work))
                && e.get_child("body", ns::COMPONENT)
                    .is_some_and(|b| b.text().contains("no longer linked"))
        })
        .collect();
    assert_eq!(told.len(), 1, "{out:?}");
    assert_eq!(told[0].attr("to"), Some("alice@work.example/desk"));
    assert_eq!(
        h.ops.last(),
        Some(&StoreOp::Account {
            owner: "alice".into(),
            account: BareJid::new(work).unwrap(),
            state: None
        })
    );
    assert!(command(&mut h, "alice@work.example/desk", "status")
        .starts_with("You have no unified address"));
    h.restart();
    assert!(command(&mut h, "alice@work.example/desk", "status")
        .starts_with("You have no unified address"));
    // Her last account (here provisioned by the admin) stays.
    assert!(command(&mut h, PHONE, "unlink").contains("set up by the admin"));
}

#[test]
fn an_account_revoking_its_subscription_ends_its_link_at_once() {
    let mut h = alice_with_phone_and_laptop();
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>link alice@work.example</body></message>"));
    let code = link_code(&out, "alice@work.example");
    command(
        &mut h,
        "alice@work.example/desk",
        &format!("link confirm {code}"),
    );
    h.input(&format!(
        "<presence xmlns='jabber:component:accept' from='alice@work.example/desk' to='alice@{D}'/>"
    ));
    assert!(command(&mut h, PHONE, "devices").contains("desk"));
    h.input(&format!("<presence xmlns='jabber:component:accept' type='unsubscribed' from='alice@work.example' to='alice@{D}'/>"));
    assert!(!command(&mut h, PHONE, "devices").contains("desk"));
    assert!(command(&mut h, "alice@work.example/desk", "devices")
        .starts_with("You have no unified address"));
}

/// The hijack of issue 13: Alice names Bob's account, which watches her.
/// Bob approving anything, or doing nothing, links nothing; another
/// owner's account cannot be named at all; and a link stored by an older
/// version (proven by a mere approval) is not trusted after an upgrade.
#[test]
fn nobody_is_linked_by_surprise() {
    let mut h = alice_with_phone_and_laptop();
    command(&mut h, "carol@localhost/pc", "register carol");
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>link bob@localhost</body></message>"));
    let to_bob: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("to") == Some("bob@localhost"))
        .collect();
    assert_eq!(to_bob.len(), 1, "one message, no contact request: {out:?}");
    assert_eq!(to_bob[0].name(), "message");
    for typ in ["subscribed", "subscribe"] {
        h.input(&format!("<presence xmlns='jabber:component:accept' type='{typ}' from='bob@localhost' to='alice@{D}'/>"));
    }
    let devices = command(&mut h, "bob@localhost/pc", "devices");
    assert!(
        devices.starts_with("You have no unified address"),
        "{devices}"
    );
    assert!(!devices.contains("alice@localhost"));
    // Another owner's account: answered like any other (no oracle), and
    // the code cannot take it.
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>link carol@localhost</body></message>"));
    let code = link_code(&out, "carol@localhost");
    assert!(command(
        &mut h,
        "carol@localhost/pc",
        &format!("link confirm {code}")
    )
    .contains("already"));
    assert_eq!(
        h.core
            .out
            .secrets
            .account_owner(&BareJid::new("carol@localhost").unwrap()),
        h.core.by_name.get("carol").copied()
    );
    // An approval-only link from before.
    let legacy = Stored {
        accounts: vec![(
            "alice".into(),
            BareJid::new("bob@localhost").unwrap(),
            AccountState {
                approved: true,
                linked_by_owner: true,
                confirmed: false,
            },
        )],
        ..Stored::default()
    };
    let core = Core::new(config(SubscriptionPolicy::Ask), legacy);
    assert_eq!(
        core.out
            .secrets
            .account_owner(&BareJid::new("bob@localhost").unwrap()),
        None
    );
}

#[test]
fn block_stops_a_watcher_and_everything_else_from_them_and_is_stored() {
    let mut h = alice_with_phone_and_laptop();
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>block bob@localhost</body></message>"));
    assert!(
        out.iter().any(
            |e| e.attr("to") == Some("bob@localhost") && e.attr("type") == Some("unsubscribed")
        ),
        "Bob stops watching"
    );
    assert!(h.ops.contains(&StoreOp::Blocked {
        owner: "alice".into(),
        blocked: vec!["spam@evil.example".into(), "bob@localhost".into()]
    }));
    assert!(h.subscribe_bob().is_empty(), "blocked: nothing at all");
    assert!(propose(&mut h, "S1").is_empty());
    assert!(command(&mut h, PHONE, "unblock bob@localhost").contains("no longer blocked"));
    assert_eq!(h.subscribe_bob()[0].attr("type"), Some("subscribed"));
    let stored = Stored {
        blocked: vec![("alice".into(), vec!["evil.example".into()])],
        ..Stored::default()
    };
    assert_eq!(
        Core::new(config(SubscriptionPolicy::Ask), stored).owners[0].blocked,
        vec!["evil.example".to_string()]
    );
}

// ---- Ad-hoc commands (XEP-0050 + XEP-0004) ----

const CMD: &str = "http://jabber.org/protocol/commands";

fn adhoc(h: &mut Harness, from: &str, inner: &str) -> Element {
    let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='set' id='c1' from='{from}' to='{D}'>{inner}</iq>"));
    out.into_iter()
        .find(|e| e.attr("id") == Some("c1"))
        .expect("an answer")
}

#[test]
fn adhoc_lists_commands_by_who_asks_and_runs_a_multi_stage_form() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.subscribe_bob();
    let items = h.input(&format!("<iq xmlns='jabber:component:accept' type='get' id='i' from='{PHONE}' to='{D}'><query xmlns='http://jabber.org/protocol/disco#items' node='{CMD}'/></iq>"));
    let nodes: Vec<&str> = items[0]
        .get_child("query", ns::DISCO_ITEMS)
        .unwrap()
        .children()
        .filter_map(|i| i.attr("node"))
        .collect();
    assert!(nodes.contains(&"watchers") && nodes.contains(&"ring") && !nodes.contains(&"register"));

    // Stage 1: the watchers form lists Bob as waiting.
    let r = adhoc(
        &mut h,
        PHONE,
        &format!("<command xmlns='{CMD}' node='watchers' action='execute'/>"),
    );
    let cmd = r.get_child("command", CMD).unwrap();
    assert_eq!(cmd.attr("status"), Some("executing"));
    let sid = cmd.attr("sessionid").unwrap().to_owned();
    let x = cmd.get_child("x", ns::DATA).unwrap();
    assert!(x.children().any(|f| f.attr("var") == Some("approve")
        && f.children().any(|o| o
            .get_child("value", ns::DATA)
            .is_some_and(|v| v.text() == "bob@localhost"))));
    // Stage 2: approve him.
    let r = adhoc(&mut h, PHONE, &format!("<command xmlns='{CMD}' node='watchers' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='approve'><value>bob@localhost</value></field></x></command>"));
    let cmd = r.get_child("command", CMD).unwrap();
    assert_eq!(cmd.attr("status"), Some("completed"));
    assert!(cmd
        .get_child("note", CMD)
        .unwrap()
        .text()
        .contains("now sees your presence"));
    assert!(h.ops.contains(&StoreOp::Watcher {
        owner: "alice".into(),
        watcher: BareJid::new("bob@localhost").unwrap(),
        state: Some(WatcherState::Subscribed)
    }));
    // The session is used up.
    let r = adhoc(&mut h, PHONE, &format!("<command xmlns='{CMD}' node='watchers' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'/></command>"));
    assert!(r
        .get_child("error", ns::COMPONENT)
        .unwrap()
        .has_child("bad-sessionid", CMD));
}

#[test]
fn adhoc_refuses_strangers_owner_commands_and_lets_them_register() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    let r = adhoc(
        &mut h,
        "eve@evil.example/x",
        &format!("<command xmlns='{CMD}' node='watchers' action='execute'/>"),
    );
    assert!(r
        .get_child("error", ns::COMPONENT)
        .unwrap()
        .has_child("forbidden", ns::STANZAS));
    let r = adhoc(
        &mut h,
        "carol@localhost/pc",
        &format!("<command xmlns='{CMD}' node='register' action='execute'/>"),
    );
    let sid = r
        .get_child("command", CMD)
        .unwrap()
        .attr("sessionid")
        .unwrap()
        .to_owned();
    let r = adhoc(&mut h, "carol@localhost/pc", &format!("<command xmlns='{CMD}' node='register' sessionid='{sid}'><x xmlns='jabber:x:data' type='submit'><field var='name'><value>caro</value></field></x></command>"));
    assert!(r
        .get_child("command", CMD)
        .unwrap()
        .get_child("note", CMD)
        .unwrap()
        .text()
        .starts_with("You are now caro@unified.localhost"));
    // Cancel works, and a status is one stage.
    let r = adhoc(
        &mut h,
        "carol@localhost/pc",
        &format!("<command xmlns='{CMD}' node='status' action='execute'/>"),
    );
    assert_eq!(
        r.get_child("command", CMD).unwrap().attr("status"),
        Some("completed")
    );
    let r = adhoc(
        &mut h,
        "carol@localhost/pc",
        &format!("<command xmlns='{CMD}' node='ring' action='execute'/>"),
    );
    let sid = r
        .get_child("command", CMD)
        .unwrap()
        .attr("sessionid")
        .unwrap()
        .to_owned();
    let r = adhoc(
        &mut h,
        "carol@localhost/pc",
        &format!("<command xmlns='{CMD}' node='ring' sessionid='{sid}' action='cancel'/>"),
    );
    assert_eq!(
        r.get_child("command", CMD).unwrap().attr("status"),
        Some("canceled")
    );
}

/// Issue 13, hole 4: an ad-hoc session is its requester's alone. Nobody
/// else (a stranger, a watcher, another owner, even her other device) can
/// cancel it, step it or learn it exists, and a refused attempt leaves it
/// open for her.
#[test]
fn adhoc_sessions_belong_to_their_requester_alone() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.subscribe_bob();
    command(&mut h, "carol@localhost/pc", "register carol");
    let open = |h: &mut Harness, node: &str| {
        let r = adhoc(
            h,
            PHONE,
            &format!("<command xmlns='{CMD}' node='{node}' action='execute'/>"),
        );
        r.get_child("command", CMD)
            .unwrap()
            .attr("sessionid")
            .unwrap()
            .to_owned()
    };
    let sid = open(&mut h, "watchers");
    let others = [
        "eve@evil.example/x",     // a stranger
        "bob@localhost/pc",       // her watcher
        "carol@localhost/pc",     // another owner
        "alice@localhost/laptop", // her own other device
    ];
    for who in others {
        for (node, action) in [
            ("watchers", "cancel"),
            ("register", "cancel"),
            ("watchers", "complete"),
            ("register", "complete"),
            ("ring", "cancel"),
        ] {
            let r = adhoc(&mut h, who, &format!("<command xmlns='{CMD}' node='{node}' sessionid='{sid}' action='{action}'><x xmlns='jabber:x:data' type='submit'><field var='deny'><value>bob@localhost</value></field></x></command>"));
            assert_eq!(
                r.attr("type"),
                Some("error"),
                "{who} {node} {action}: {r:?}"
            );
            let err = r.get_child("error", ns::COMPONENT).unwrap();
            assert!(
                err.has_child("bad-sessionid", CMD)
                    || err.has_child("forbidden", ns::STANZAS)
                    || err.has_child("item-not-found", ns::STANZAS),
                "{who} {node} {action}: {r:?}"
            );
        }
    }
    assert_eq!(
        h.core.owners[0]
            .watchers
            .get(&BareJid::new("bob@localhost").unwrap()),
        Some(&WatcherState::Pending),
        "nobody else decided for her"
    );
    // Her session is still hers to finish.
    let r = adhoc(&mut h, PHONE, &format!("<command xmlns='{CMD}' node='watchers' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='approve'><value>bob@localhost</value></field></x></command>"));
    assert_eq!(
        r.get_child("command", CMD).unwrap().attr("status"),
        Some("completed"),
        "{r:?}"
    );
    // And only she can cancel one.
    let sid = open(&mut h, "ring");
    let r = adhoc(
        &mut h,
        PHONE,
        &format!("<command xmlns='{CMD}' node='ring' sessionid='{sid}' action='cancel'/>"),
    );
    assert_eq!(
        r.get_child("command", CMD).unwrap().attr("status"),
        Some("canceled")
    );
}

/// Issue 13, hole 4: every chat command and every ad-hoc node acts only
/// on the data of the owner whose linked account asks. A stranger and a
/// watcher get `forbidden`; another owner acts on her own address only;
/// nobody learns or changes anything of Alice's.
#[test]
fn no_command_reaches_another_persons_data() {
    let mut h = alice_with_phone_and_laptop();
    command(&mut h, PHONE, "rule add from evil.example busy");
    command(&mut h, "carol@localhost/pc", "register carol");
    let before = format!("{:?}", h.core.owners[0]);
    let commands = [
        "status",
        "devices",
        "watchers",
        "approve bob@localhost",
        "deny bob@localhost",
        "ring sequential phone",
        "dnd all on",
        "dnd audio off",
        "rules",
        "rule add busy",
        "rule del 1",
        "label phone Mine",
        "link bob@localhost",
        "unlink alice@localhost",
        "unlink",
        "block bob@localhost",
        "unblock spam@evil.example",
        "privacy calls relay-only",
        "privacy watchers open",
        "privacy",
        "unregister",
        "as alice status",
        "link confirm AAAAAAAA",
    ];
    for who in [
        "eve@evil.example/x",
        "bob@localhost/pc",
        "carol@localhost/pc",
    ] {
        for cmd in commands {
            let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='c' from='{who}' to='{D}'><body>{cmd}</body></message>"));
            for e in &out {
                let text = xml(e);
                assert!(
                    !text.contains("alice@localhost")
                        && !text.contains("evil.example busy")
                        && !text.contains("/phone"),
                    "{who} {cmd:?} learned Alice's data: {text}"
                );
                if e.attr("to")
                    .is_some_and(|t| t.starts_with("alice@localhost"))
                {
                    assert_eq!(
                        e.name(),
                        "presence",
                        "{who} {cmd:?} made us write to Alice: {text}"
                    );
                }
            }
            if who != "carol@localhost/pc" && cmd != "link confirm AAAAAAAA" {
                let reply = out
                    .iter()
                    .find(|e| e.attr("to") == Some(who))
                    .expect("an answer");
                assert_eq!(
                    reply.attr("type"),
                    Some("error"),
                    "{who} {cmd:?}: {reply:?}"
                );
                assert!(reply
                    .get_child("error", ns::COMPONENT)
                    .is_some_and(|e| e.has_child("forbidden", ns::STANZAS)));
            }
        }
        for node in [
            "status",
            "devices",
            "watchers",
            "ring",
            "rules",
            "dnd",
            "privacy",
            "link",
            "unlink",
            "unregister",
        ] {
            let r = adhoc(
                &mut h,
                who,
                &format!("<command xmlns='{CMD}' node='{node}' action='execute'/>"),
            );
            let text = xml(&r);
            assert!(
                !text.contains("alice@localhost") && !text.contains("evil.example busy"),
                "{who} {node}: {text}"
            );
            if who != "carol@localhost/pc" {
                assert!(
                    r.get_child("error", ns::COMPONENT)
                        .is_some_and(|e| e.has_child("forbidden", ns::STANZAS)),
                    "{who} {node}: {text}"
                );
            }
        }
    }
    // Carol's own changes touched Carol only; Alice is as she was, but for
    // when her devices were last seen.
    let after = format!("{:?}", h.core.owners[0]);
    let strip = |s: &str| s.split("records").next().unwrap_or_default().to_owned();
    assert_eq!(strip(&before), strip(&after));
    assert_eq!(h.core.owners[0].rules.len(), 1);
    assert!(h.core.by_name.contains_key("alice"));
}

/// Issue 14, items 4 and 8: what a newcomer types gets a useful answer.
#[test]
fn commands_say_what_is_wrong_and_what_to_type() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    // dnd all off clears every do-not-disturb.
    command(&mut h, PHONE, "dnd audio on");
    let status = command(&mut h, PHONE, "status");
    assert!(status.contains("do not disturb is on"), "{status}");
    assert!(command(&mut h, PHONE, "dnd all off").contains("off for all calls"));
    assert!(
        command(&mut h, PHONE, "rules").starts_with("No rules"),
        "{}",
        command(&mut h, PHONE, "rules")
    );
    // A device she does not have is refused, with the ones she has.
    let reply = command(&mut h, PHONE, "ring sequential phone ghost");
    assert!(
        reply.contains("no device \"ghost\"") && reply.contains("phone"),
        "{reply}"
    );
    assert!(h.core.owners[0].rules.is_empty(), "nothing changed");
    // Missing arguments: what to type.
    for (cmd, hint) in [
        ("dnd", "dnd all on"),
        ("ring", "ring sequential phone laptop"),
        ("approve", "approve bob@example.org"),
        ("label phone", "label phone My Pixel"),
        ("rule", "rule add"),
    ] {
        let reply = command(&mut h, PHONE, cmd);
        assert!(reply.contains(hint), "{cmd}: {reply}");
    }
    // Unregister asks first.
    command(&mut h, "carol@localhost/pc", "register carol");
    let reply = command(&mut h, "carol@localhost/pc", "unregister");
    assert!(reply.contains("unregister confirm"), "{reply}");
    assert!(h.core.by_name.contains_key("carol"), "still there");
    assert!(command(&mut h, "carol@localhost/pc", "unregister confirm").contains("gone"));
    // A rule says where it went.
    command(&mut h, PHONE, "rule add from evil.example busy");
    let reply = command(&mut h, PHONE, "rule add video busy");
    assert!(
        reply.starts_with("Added as rule 1 of 2") && reply.contains("checked first"),
        "{reply}"
    );
}

#[test]
fn rule_add_and_del_edit_the_ordered_list() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let reply = command(&mut h, PHONE, "rule add audio from bob@localhost mon-fri 09:00-17:00 ring sequential tablet phone step 15 message");
    assert!(reply.starts_with("Added as rule 1: audio calls, from bob@localhost, on Mon, Tue, Wed, Thu, Fri, 09:00-17:00 -> tablet, then phone, 15 s each"), "{reply}");
    let Some(StoreOp::Rules { rules, .. }) = h.ops.last() else {
        panic!("stored")
    };
    assert_eq!(rules[0].on_no_answer, rules::NoAnswer::Message);
    assert!(
        command(&mut h, PHONE, "rule add from evil.example 22:00-07:00 busy")
            .starts_with("Added as rule 1")
    );
    assert!(command(&mut h, PHONE, "rule add audio").contains("say what happens"));
    assert!(command(&mut h, PHONE, "rule add fax busy").contains("I do not know \"fax\""));
    assert!(command(&mut h, PHONE, "rule del 1").contains("removed"));
    assert!(command(&mut h, PHONE, "rules")
        .starts_with("Your rules, first match wins:\n  1. audio calls, from bob@localhost"));
    assert!(command(&mut h, PHONE, "rule del 9").starts_with("There is no rule 9"));
    // A stranger cannot.
    assert!(command(&mut h, "eve@evil.example/x", "rule add busy")
        .starts_with("You have no unified address"));
}

#[test]
fn privacy_changes_are_stored_and_take_effect() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    assert!(command(&mut h, PHONE, "privacy calls relay-only").contains("Calls: relay-only"));
    assert!(h.ops.contains(&StoreOp::Settings {
        owner: "alice".into(),
        settings: OwnerSettings {
            subscription: SubscriptionPolicy::Open,
            candidates: CandidatePolicy::RelayOnly
        }
    }));
    assert_eq!(h.core.owners[0].candidates, CandidatePolicy::RelayOnly);
    assert!(command(&mut h, PHONE, "privacy watchers ask").contains("Watchers: ask"));
    assert!(command(&mut h, PHONE, "privacy calls maybe").starts_with("Send"));
}

#[test]
fn an_admin_acts_for_an_owner_and_nobody_else_may() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    assert!(
        command(&mut h, "root@localhost/console", "as alice devices")
            .contains("alice@localhost/tablet")
    );
    assert!(
        command(&mut h, "root@localhost/console", "as nobody status")
            .starts_with("There is no owner")
    );
    assert!(command(&mut h, "eve@evil.example/x", "as alice devices")
        .starts_with("You have no unified address"));
}

#[test]
fn rule_windows_use_the_owners_time_zone() {
    // 2026-11-24 20:30 UTC is 09:30 the next day in Auckland (UTC+13).
    let rule = rules::Rule {
        window: rules::parse_window("09:00-10:00"),
        reject: true,
        ..rules::Rule::default_rule(30_000)
    };
    let mut cfg = config(SubscriptionPolicy::Open);
    cfg.owners[0].rules = vec![rule];
    cfg.owners[0].timezone = chrono_tz::Pacific::Auckland;
    let mut h = Harness::with(cfg, Stored::default());
    let out = h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    let q = out.iter().find(|e| e.name() == "iq").unwrap().clone();
    h.answer_disco(&q, JINGLE_AUDIO);
    let bob = BareJid::new("bob@localhost").unwrap();
    let utc_2030 = chrono::DateTime::parse_from_rfc3339("2026-11-24T20:30:00Z")
        .unwrap()
        .timestamp_millis() as u64;
    assert!(
        h.core
            .ring_plan(Time(utc_2030), 0, 1, &bob)
            .steps
            .is_empty(),
        "09:30 in Auckland: busy"
    );
    assert_eq!(
        h.core
            .ring_plan(Time(utc_2030 + 3_600_000), 0, 1, &bob)
            .steps
            .len(),
        1,
        "10:30 there: the phone rings"
    );
}

#[test]
fn a_chat_rule_naming_devices_delivers_only_to_those_online() {
    let rule = rules::Rule {
        classes: vec!["chat".into()],
        devices: vec!["laptop".into()],
        ..rules::Rule::default_rule(30_000)
    };
    let mut h = alice_with_phone_and_laptop();
    h.core.owners[0].rules = vec![rule];
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='m1' from='{BOB}' to='alice@{D}'><body>hi</body></message>"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].attr("to"), Some("alice@localhost/laptop"));
    assert!(
        out[0].has_child("private", jingle::CARBONS) && out[0].has_child("no-copy", jingle::HINTS)
    );
    // With the named device offline, her server takes it (offline storage).
    h.device_gone("laptop");
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' id='m2' from='{BOB}' to='alice@{D}'><body>hi</body></message>"));
    assert_eq!(out[0].attr("to"), Some("alice@localhost"));
}

// ---- Flood control (issue 5) ----

fn error_condition(el: &Element) -> Option<&str> {
    let err = el.get_child("error", ns::COMPONENT)?;
    err.children()
        .find(|c| c.has_ns(ns::STANZAS) && c.name() != "text")
        .map(|c| c.name())
}

fn limited(per_sec: u64, burst: u64) -> Harness {
    let mut cfg = config(SubscriptionPolicy::Ask);
    cfg.limits.stanzas_per_sec = per_sec;
    cfg.limits.stanza_burst = burst;
    Harness::with(cfg, Stored::default())
}

#[test]
fn a_flooding_sender_is_refused_while_others_get_through() {
    let mut h = limited(10, 20);
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='bob@localhost' to='alice@{D}'/>"));
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='alice@localhost' to='bob\\40localhost@{D}'/>"));
    let mut refused_iqs = 0;
    let mut answered = 0;
    for n in 0..10_000 {
        let out = h.input(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='q{n}' from='eve@evil.example/x' to='{D}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ));
        assert_eq!(out.len(), 1, "every IQ is answered exactly once");
        match error_condition(&out[0]) {
            Some("resource-constraint") => refused_iqs += 1,
            None => answered += 1,
            other => panic!("unexpected {other:?}"),
        }
        h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='eve@evil.example' to='alice@{D}'/>"));
    }
    assert!(answered <= 20, "only the burst is served: {answered}");
    assert!(refused_iqs >= 9_980);
    let f = h.core.footprint();
    assert!(f.watchers <= 2 && f.rate_buckets <= 3, "{f:?}");
    // Alice's devices still reach Bob at once.
    h.device("phone", "<show>dnd</show>");
    let out = h.advance(200);
    let bob = to_bob(&out);
    assert!(from_class(&bob, "chat").is_some(), "{out:?}");
}

#[test]
fn an_oversized_stanza_gets_policy_violation() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    let big = "x".repeat(70 * 1024);
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' id='m1' from='bob@localhost/pc' to='alice@{D}'><body>{big}</body></message>"
    ));
    assert_eq!(out.len(), 1);
    assert_eq!(error_condition(&out[0]), Some("policy-violation"));
    assert_eq!(out[0].attr("id"), Some("m1"));
}

#[test]
fn a_caller_may_ring_only_a_few_calls_at_once() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    for sid in ["S1", "S2", "S3"] {
        assert_eq!(legs(&propose(&mut h, sid)).len(), 2, "{sid} rings");
    }
    let out = propose(&mut h, "S4");
    assert!(
        legs(&out).is_empty(),
        "a fourth call from Bob rings nothing"
    );
    let reject = to_bob_jmi(&out, "reject");
    assert_eq!(reject.len(), 1, "{out:?}");
    assert!(jmi_of(reject[0])
        .unwrap()
        .get_child("reason", jingle::JINGLE)
        .is_some_and(|r| r.has_child("busy", jingle::JINGLE)));
    assert_eq!(h.core.calls(), 3);
}

#[test]
fn the_total_of_live_calls_is_bounded() {
    let mut cfg = config(SubscriptionPolicy::Open);
    cfg.limits.concurrent_calls = 2;
    let mut h = Harness::with(cfg, Stored::default());
    let out = h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    let q = out.iter().find(|e| e.name() == "iq").unwrap().clone();
    h.answer_disco(&q, JINGLE_AUDIO);
    h.advance(200);
    for n in 0..5 {
        h.input(&format!(
            "<message xmlns='jabber:component:accept' type='chat' from='caller{n}@localhost/x' to='alice@{D}'>\
             <propose xmlns='urn:xmpp:jingle-message:0' id='c{n}'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>"
        ));
    }
    assert_eq!(h.core.calls(), 2);
}

#[test]
fn addresses_are_answered_in_canonical_form() {
    // RFC 7622: `UNIFIED.localhost.` is our domain; the reply must name it
    // exactly as configured, or the server refuses our stream.
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    for to in [
        "nobody@UNIFIED.Localhost",
        "nobody@unified.localhost.",
        "NoBody@Unified.localhost./x",
    ] {
        let out = h.input(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='1' from='Bob@LocalHost./pc' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        assert_eq!(out.len(), 1, "{to}");
        let from = out[0].attr("from").unwrap();
        assert!(from.starts_with("nobody@unified.localhost"), "{from}");
        assert!(!from.contains("localhost."), "{from}");
        assert_eq!(out[0].attr("to"), Some("bob@localhost/pc"));
    }
}

#[test]
fn a_change_the_store_refuses_is_answered_with_an_error_and_not_acknowledged() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let el: Element = format!("<presence xmlns='jabber:component:accept' type='subscribe' id='s1' from='bob@localhost' to='alice@{D}'/>").parse().unwrap();
    h.core.handle_stanza(h.now, el);
    // The shell could not write what the core asked for.
    let ops: Vec<StoreOp> = std::iter::from_fn(|| h.core.poll_store()).collect();
    assert!(ops.iter().any(StoreOp::acknowledged), "{ops:?}");
    h.core.handle_store_failure();
    let out = h.drain();
    assert_eq!(out.len(), 1, "only the error goes out: {out:?}");
    assert_eq!(out[0].attr("to"), Some("bob@localhost"));
    assert_eq!(out[0].attr("type"), Some("error"));
    assert_eq!(error_condition(&out[0]), Some("internal-server-error"));
    // Device bookkeeping alone is not a change anyone was told about.
    h.device("phone", "");
    let seen = h
        .ops
        .iter()
        .find(|op| matches!(op, StoreOp::DeviceSeen { .. }));
    assert!(seen.is_some_and(|op| !op.acknowledged()), "{:?}", h.ops);
}

#[test]
fn call_outcomes_and_ring_time_are_reported_for_metrics() {
    let events = |h: &mut Harness| std::iter::from_fn(|| h.core.poll_event()).collect::<Vec<_>>();
    // Answered after 1.5 s of ringing, then finished by the caller.
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let legs = legs(&propose(&mut h, "S1"));
    let (proxy, phone_leg) = legs[PHONE].clone();
    h.advance(1_500);
    from_device(&mut h, PHONE, &proxy, "proceed", &phone_leg, "");
    h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{BOB}' to='alice@{D}'><finish xmlns='urn:xmpp:jingle-message:0' id='S1'/></message>"));
    assert_eq!(
        events(&mut h),
        [
            Event::CallAnswered { ring_ms: 1_500 },
            Event::CallEnded(CallOutcome::Answered)
        ]
    );
    // The caller gives up; then nobody answers a second call in time.
    propose(&mut h, "S2");
    h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{BOB}' to='alice@{D}'><retract xmlns='urn:xmpp:jingle-message:0' id='S2'/></message>"));
    propose(&mut h, "S3");
    h.advance(31_000);
    assert_eq!(
        events(&mut h),
        [
            Event::CallEnded(CallOutcome::Cancelled),
            Event::CallEnded(CallOutcome::Unanswered)
        ]
    );
}

#[test]
fn the_admin_view_lists_devices_classes_and_live_calls() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    propose(&mut h, "S1");
    h.advance(2_000);
    let view = h.core.admin_view(h.now, 100);
    assert_eq!(view.owners_total, 1);
    let alice = &view.owners[0];
    assert_eq!(alice.address, format!("alice@{D}"));
    assert_eq!(alice.accounts, [("alice@localhost".to_owned(), true)]);
    assert_eq!(alice.watchers, 1);
    let devices: BTreeMap<_, _> = alice
        .devices
        .iter()
        .map(|d| (d.resource.as_str(), d.classes.join(",")))
        .collect();
    assert_eq!(
        devices,
        [
            ("laptop", "chat".to_owned()),
            ("phone", "chat,audio".to_owned()),
            ("tablet", "chat,audio".to_owned())
        ]
        .into()
    );
    assert!(alice.classes.contains(&("audio".into(), "online".into())));
    assert!(alice
        .classes
        .contains(&("video".into(), "unavailable".into())));
    assert_eq!(view.calls.len(), 1);
    let call = &view.calls[0];
    assert_eq!(
        (
            call.owner.as_str(),
            call.class.as_str(),
            call.caller.as_str(),
            call.state,
            call.legs,
            call.secs
        ),
        ("alice", "audio", "bob@localhost", "ringing", 2, 2)
    );
    assert_eq!(
        h.core.admin_view(h.now, 0).owners.len(),
        0,
        "the limit holds"
    );
}

/// Issue 20, item 7: however a call ends before an answer (every device
/// declines, nobody answers, by JMI or plain Jingle), the caller gets one
/// ending and nothing after it, whatever the devices still send.
#[test]
fn a_call_that_ends_unanswered_tells_the_caller_once() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let is_end = |e: &Element| {
        e.get_child("jingle", jingle::JINGLE)
            .is_some_and(|j| j.attr("action") == Some("session-terminate"))
            || jmi_of(e).is_some_and(|j| j.name() == "reject")
    };
    // Plain Jingle, both devices decline (then one sends more).
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "si",
        "session-initiate",
        "J1",
        CONTENT,
    ));
    let inits: Vec<Element> = out
        .iter()
        .filter(|e| e.attr("type") == Some("set"))
        .cloned()
        .collect();
    let mut to_caller = vec![];
    for i in &inits {
        let sid = i
            .get_child("jingle", jingle::JINGLE)
            .unwrap()
            .attr("sid")
            .unwrap();
        for action in ["session-terminate", "session-info"] {
            let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='set' id='d-{action}-{sid}' from='{}' to='{}'><jingle xmlns='urn:xmpp:jingle:1' action='{action}' sid='{sid}'><reason><decline/></reason></jingle></iq>", i.attr("to").unwrap(), i.attr("from").unwrap()));
            to_caller.extend(to_bob(&out).into_iter().cloned());
        }
    }
    to_caller.extend(to_bob(&h.advance(60_000)).into_iter().cloned());
    assert_eq!(to_caller.len(), 1, "{to_caller:?}");
    assert!(is_end(&to_caller[0]));
    assert!(to_caller[0]
        .get_child("jingle", jingle::JINGLE)
        .and_then(|j| j.get_child("reason", jingle::JINGLE))
        .is_some_and(|r| r.has_child("decline", jingle::JINGLE)));
    // JMI, both reject (one twice).
    let l = legs(&propose(&mut h, "S9"));
    let mut to_caller = vec![];
    for (d, (p, leg)) in l.clone() {
        to_caller.extend(
            to_bob(&from_device(&mut h, &d, &p, "reject", &leg, ""))
                .into_iter()
                .cloned(),
        );
    }
    let (d, (p, leg)) = l.into_iter().next().unwrap();
    to_caller.extend(
        to_bob(&from_device(&mut h, &d, &p, "reject", &leg, ""))
            .into_iter()
            .cloned(),
    );
    assert_eq!(
        to_caller.iter().filter(|e| is_end(e)).count(),
        1,
        "{to_caller:?}"
    );
    // Nobody answers, JMI and Jingle: one ending each.
    for jingle in [false, true] {
        let first = if jingle {
            h.input(&jingle_from(
                BOB,
                AUDIO,
                "si2",
                "session-initiate",
                "J2",
                CONTENT,
            ))
        } else {
            propose(&mut h, "S10")
        };
        let mut all: Vec<Element> = to_bob(&first).into_iter().cloned().collect();
        all.extend(to_bob(&h.advance(31_000)).into_iter().cloned());
        all.extend(to_bob(&h.advance(60_000)).into_iter().cloned());
        assert_eq!(all.iter().filter(|e| is_end(e)).count(), 1, "{all:?}");
    }
}

/// Issue 20, items 2 and 3: the Ringing form shows what rings now (empty
/// devices: all of them), and a refused submission keeps the form open
/// with an error note instead of "completed".
#[test]
fn forms_show_the_truth_and_refusals_keep_the_form_open() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let field_values = |r: &Element, var: &str| -> Vec<String> {
        r.get_child("command", CMD)
            .and_then(|c| c.get_child("x", ns::DATA))
            .map(|x| {
                x.children()
                    .filter(|f| f.attr("var") == Some(var))
                    .flat_map(|f| {
                        f.children()
                            .filter(|v| v.name() == "value")
                            .map(|v| v.text())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let open = |h: &mut Harness, node: &str| {
        adhoc(
            h,
            PHONE,
            &format!("<command xmlns='{CMD}' node='{node}' action='execute'/>"),
        )
    };
    let r = open(&mut h, "ring");
    assert_eq!(field_values(&r, "mode"), ["parallel"]);
    assert!(
        field_values(&r, "devices").is_empty(),
        "all devices: none pinned"
    );
    command(&mut h, PHONE, "ring sequential tablet phone");
    let r = open(&mut h, "ring");
    assert_eq!(field_values(&r, "mode"), ["sequential"]);
    assert_eq!(field_values(&r, "devices"), ["tablet", "phone"]);
    // A bad rule: the form again, the session open, an error note.
    let r = open(&mut h, "rules");
    let sid = r
        .get_child("command", CMD)
        .unwrap()
        .attr("sessionid")
        .unwrap()
        .to_owned();
    let r = adhoc(&mut h, PHONE, &format!("<command xmlns='{CMD}' node='rules' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='add'><value>at noon busy</value></field></x></command>"));
    let c = r.get_child("command", CMD).unwrap();
    assert_eq!(c.attr("status"), Some("executing"), "{r:?}");
    let note = c.get_child("note", CMD).unwrap();
    assert_eq!(note.attr("type"), Some("error"));
    assert!(note.text().starts_with("Not added"), "{}", note.text());
    assert!(c.has_child("x", ns::DATA), "the form to correct");
    // Corrected, in the same session.
    let r = adhoc(&mut h, PHONE, &format!("<command xmlns='{CMD}' node='rules' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='add'><value>from evil.example busy</value></field></x></command>"));
    assert_eq!(
        r.get_child("command", CMD).unwrap().attr("status"),
        Some("completed")
    );
}

/// Issue 20, items 5, 6 and 8: the service answers presence as an online
/// contact; his words go with his request; her own accounts are not her
/// watchers.
#[test]
fn the_service_is_online_his_words_pass_and_she_is_not_her_own_watcher() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='bob@localhost' to='{D}'/>"));
    let types: Vec<_> = out
        .iter()
        .map(|e| (e.attr("from"), e.attr("type")))
        .collect();
    let online = format!("{D}/service");
    assert_eq!(
        types,
        [(Some(D), Some("subscribed")), (Some(online.as_str()), None)],
        "online from a full JID: Gajim shows a contact online only for a resource"
    );
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='probe' from='bob@localhost' to='{D}'/>"
    ));
    assert_eq!(out[0].attr("type"), None, "online");
    // His request's words reach her with it.
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='bob@localhost' to='alice@{D}'><status>Hello, I am bob.</status><nick xmlns='http://jabber.org/protocol/nick'>Bob</nick></presence>"));
    let ask = out
        .iter()
        .find(|e| e.attr("type") == Some("subscribe"))
        .unwrap();
    assert_eq!(
        ask.get_child("status", ns::COMPONENT)
            .map(Element::text)
            .as_deref(),
        Some("Hello, I am bob.")
    );
    assert_eq!(
        ask.get_child("nick", "http://jabber.org/protocol/nick")
            .map(Element::text)
            .as_deref(),
        Some("Bob"),
        "his own nick"
    );
    // Her own account adding her virtual JID: hers, not a watcher.
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='alice@localhost' to='alice@{D}'/>"));
    let list = command(&mut h, PHONE, "watchers");
    assert!(!list.contains("alice@localhost"), "{list}");
    let r = adhoc(
        &mut h,
        PHONE,
        &format!("<command xmlns='{CMD}' node='watchers' action='execute'/>"),
    );
    assert!(
        !xml(r.get_child("command", CMD).unwrap()).contains("alice@localhost"),
        "{r:?}"
    );
}

/// Issue 20, item 4: what she reads works in a proportional font: no
/// columns of spaces in replies, and the Status form is fields, not a
/// centred note.
#[test]
fn replies_and_forms_need_no_monospace_font() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    for cmd in ["help", "status", "rules", "watchers", "privacy"] {
        let reply = command(&mut h, PHONE, cmd);
        assert!(!reply.contains("   "), "{cmd} aligns with spaces:\n{reply}");
    }
    let r = adhoc(
        &mut h,
        PHONE,
        &format!("<command xmlns='{CMD}' node='status' action='execute'/>"),
    );
    let c = r.get_child("command", CMD).unwrap();
    assert_eq!(c.attr("status"), Some("completed"));
    let x = c.get_child("x", ns::DATA).expect("a result form");
    assert_eq!(x.attr("type"), Some("result"));
    let rows: Vec<(String, String)> = x
        .children()
        .filter(|f| f.is("field", ns::DATA))
        .map(|f| {
            (
                f.attr("label").unwrap_or_default().to_owned(),
                f.get_child("value", ns::DATA).unwrap().text(),
            )
        })
        .collect();
    assert!(
        rows.iter()
            .any(|(l, v)| l == "audio" && v.starts_with("online")),
        "one labelled row per class: {rows:?}"
    );
    assert!(!c.has_child("actions", CMD), "nothing left to do");
}

/// From the profanity trial: she approves or denies by the address her
/// client shows (a proxy JID, or another owner's virtual JID), and lists
/// show another owner by his virtual JID, never his account.
#[test]
fn approve_and_deny_take_the_address_her_client_shows() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.subscribe_bob();
    let reply = command(&mut h, PHONE, &format!(r"approve bob\40localhost@{D}"));
    assert!(reply.contains("now sees your presence"), "{reply}");
    command(&mut h, "carol@localhost/pc", "register carol");
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='carol@localhost' to='alice@{D}'/>"));
    let list = command(&mut h, PHONE, "watchers");
    assert!(
        list.contains(&format!("Waiting for your answer: carol@{D}")),
        "{list}"
    );
    assert!(
        !list.contains("carol@localhost") && !list.contains("that account"),
        "{list}"
    );
    let reply = command(&mut h, PHONE, &format!("deny carol@{D}"));
    assert!(reply.contains("no longer sees"), "{reply}");
    assert!(!h.core.owners[0]
        .watchers
        .contains_key(&BareJid::new("carol@localhost").unwrap()));
}

/// Issue 16 (first part), DESIGN.md section 10: when her client
/// subscribes back to his proxy JID, the component subscribes from her
/// virtual JID, and his presence reaches her from his proxy JID, per
/// resource, across a restart, until either side ends it.
#[test]
fn she_sees_her_contacts_through_her_virtual_jid() {
    let mut h = alice_with_phone_and_laptop();
    let proxy = format!(r"bob\40localhost@{D}");
    let her = |out: &[Element], typ: Option<&str>| -> Vec<Element> {
        out.iter()
            .filter(|e| {
                e.attr("to") == Some("alice@localhost")
                    && e.name() == "presence"
                    && e.attr("type") == typ
            })
            .cloned()
            .collect()
    };
    // Her client subscribes back.
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='alice@localhost' to='{proxy}'/>"));
    let ask = out
        .iter()
        .find(|e| e.attr("to") == Some("bob@localhost") && e.attr("type") == Some("subscribe"))
        .expect("asked of Bob from her virtual JID");
    assert_eq!(ask.attr("from"), Some(format!("alice@{D}").as_str()));
    assert!(h.ops.contains(&StoreOp::Contact {
        owner: "alice".into(),
        contact: BareJid::new("bob@localhost").unwrap(),
        state: Some(ContactState::Asked)
    }));
    // His presence before he approves reaches nobody.
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' from='bob@localhost/pc' to='alice@{D}'/>"
    ));
    assert!(her(&out, None).is_empty());
    // He approves: her client hears it from his proxy JID.
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='bob@localhost' to='alice@{D}'/>"));
    assert_eq!(
        her(&out, Some("subscribed"))[0].attr("from"),
        Some(proxy.as_str())
    );
    // His presence, per resource, with what he said.
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' from='bob@localhost/pc' to='alice@{D}'><show>away</show><status>lunch</status><nick xmlns='http://jabber.org/protocol/nick'>Bob</nick></presence>"));
    let p = her(&out, None);
    assert_eq!(p.len(), 1, "{out:?}");
    assert_eq!(p[0].attr("from"), Some(format!("{proxy}/pc").as_str()));
    assert_eq!(
        p[0].get_child("show", ns::COMPONENT)
            .map(Element::text)
            .as_deref(),
        Some("away")
    );
    assert!(p[0].has_child("nick", "http://jabber.org/protocol/nick"));
    // After a restart too; her login probe is asked of him.
    h.restart();
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='probe' from='alice@localhost' to='{proxy}'/>"));
    assert!(out.iter().any(|e| e.attr("to") == Some("bob@localhost")
        && e.attr("type") == Some("probe")
        && e.attr("from") == Some(format!("alice@{D}").as_str())));
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='unavailable' from='bob@localhost/pc' to='alice@{D}'/>"));
    assert_eq!(
        her(&out, Some("unavailable"))[0].attr("from"),
        Some(format!("{proxy}/pc").as_str())
    );
    // He revokes: she is told, and his presence no longer reaches her.
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='unsubscribed' from='bob@localhost' to='alice@{D}'/>"));
    assert_eq!(her(&out, Some("unsubscribed")).len(), 1);
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' from='bob@localhost/pc' to='alice@{D}'/>"
    ));
    assert!(her(&out, None).is_empty());
    // Her unsubscribing ends it from her side.
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='alice@localhost' to='{proxy}'/>"));
    let out = h.input(&format!("<presence xmlns='jabber:component:accept' type='unsubscribe' from='alice@localhost' to='{proxy}'/>"));
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some("bob@localhost") && e.attr("type") == Some("unsubscribe")));
}

/// From the Gajim and Dino trial: a request without a nick names him by
/// his address (not the escaped proxy JID); a form shown again after a
/// refusal keeps what she typed; contradictory watcher choices are
/// refused; a propose rings only devices that speak XEP-0353; the link
/// request says what it is.
#[test]
fn what_desktop_clients_showed() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.device("phone", "");
    h.advance(200);
    let out = h.subscribe_bob();
    let ask = out
        .iter()
        .find(|e| e.attr("type") == Some("subscribe"))
        .unwrap();
    assert_eq!(
        ask.get_child("nick", "http://jabber.org/protocol/nick")
            .map(Element::text)
            .as_deref(),
        Some("bob@localhost")
    );
    // Watchers: both approve and deny for one JID is refused.
    let r = adhoc(
        &mut h,
        PHONE,
        &format!("<command xmlns='{CMD}' node='watchers' action='execute'/>"),
    );
    let sid = r
        .get_child("command", CMD)
        .unwrap()
        .attr("sessionid")
        .unwrap()
        .to_owned();
    let r = adhoc(&mut h, PHONE, &format!("<command xmlns='{CMD}' node='watchers' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='approve'><value>bob@localhost</value></field><field var='deny'><value>bob@localhost</value></field></x></command>"));
    let c = r.get_child("command", CMD).unwrap();
    assert_eq!(c.attr("status"), Some("executing"));
    assert_eq!(
        c.get_child("note", CMD).unwrap().attr("type"),
        Some("error")
    );
    assert_eq!(
        h.core.owners[0]
            .watchers
            .get(&BareJid::new("bob@localhost").unwrap()),
        Some(&WatcherState::Pending)
    );
    // Rules: the refused rule stays in the field to be corrected.
    let r = adhoc(
        &mut h,
        PHONE,
        &format!("<command xmlns='{CMD}' node='rules' action='execute'/>"),
    );
    let sid = r
        .get_child("command", CMD)
        .unwrap()
        .attr("sessionid")
        .unwrap()
        .to_owned();
    let r = adhoc(&mut h, PHONE, &format!("<command xmlns='{CMD}' node='rules' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='add'><value>at noon busy</value></field></x></command>"));
    assert!(xml(&r).contains("at noon busy"), "{r:?}");
    // A device without XEP-0353 is not rung by a propose.
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let no_jmi: Vec<&str> = JINGLE_AUDIO
        .iter()
        .copied()
        .filter(|f| !f.contains("jingle-message"))
        .collect();
    let out = h.device("gajim", &caps_for("https://gajim.org", &no_jmi));
    if let Some(q) = out.iter().find(|e| e.name() == "iq") {
        let q = q.clone();
        h.answer_disco(&q, &no_jmi);
    }
    h.advance(200);
    let rung = legs(&propose(&mut h, "S1"));
    assert!(!rung.contains_key("alice@localhost/gajim"), "{rung:?}");
    assert_eq!(rung.len(), 2);
    // The link request says what it is.
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='dave@localhost/pc' to='{D}'><body>register</body></message>"));
    let req = out
        .iter()
        .find(|e| e.attr("type") == Some("subscribe"))
        .unwrap();
    assert!(req
        .get_child("status", ns::COMPONENT)
        .unwrap()
        .text()
        .contains("link this account"));
}

// ---- Found by reading the core (issue 15) ----

/// `ring` replaces only the catch-all and `dnd` only the plain
/// do-not-disturb: a rule of hers with a condition (`when away`) stays.
#[test]
fn ring_and_dnd_keep_her_conditional_rules() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    command(&mut h, PHONE, "rule add when away ring parallel phone");
    command(&mut h, PHONE, "rule add audio when dnd busy");
    command(&mut h, PHONE, "ring sequential phone");
    command(&mut h, PHONE, "dnd audio on");
    command(&mut h, PHONE, "dnd all off");
    let rules = command(&mut h, PHONE, "rules");
    assert!(
        rules.contains("while you are away -> phone at once"),
        "{rules}"
    );
    assert!(
        rules.contains("audio calls, while you are dnd -> busy"),
        "{rules}"
    );
    assert!(rules.contains("any call -> phone, 10 s each"), "{rules}");
    let kept = &h.core.owners[0].rules;
    assert_eq!(
        kept.iter().filter(|r| r.when.is_some()).count(),
        2,
        "{kept:?}"
    );
}

/// The words for "no rules" say the configured ring time.
#[test]
fn no_rules_says_the_configured_ring_time() {
    let mut cfg = config(SubscriptionPolicy::Ask);
    cfg.ring_timeout_ms = 20_000;
    let mut h = Harness::with(cfg, Stored::default());
    let rules = command(&mut h, PHONE, "rules");
    assert!(rules.contains("for 20 s"), "{rules}");
}

/// A JMI element's attributes from a peer are copied with their own
/// names and namespaces; none makes the core fail.
#[test]
fn jmi_copies_qualified_attributes_of_a_peer() {
    let el: Element = "<proceed xmlns='urn:xmpp:jingle-message:0' xmlns:x='urn:example:x' id='a' x:extra='1' xml:lang='en'/>"
        .parse()
        .unwrap();
    let copy = jingle::jmi_copy(&el, "b");
    assert_eq!(copy.attr("id"), Some("b"));
    let qualified: Vec<String> = copy
        .attrs()
        .iter()
        .map(|((n, k), _)| format!("{n:?}:{k}"))
        .collect();
    assert!(
        qualified
            .iter()
            .any(|q| q.contains("urn:example:x") && q.ends_with(":extra")),
        "{qualified:?}"
    );
}

/// What the store refused is not kept in memory either: should the store
/// stay closed (no rebuild from it), Bob refused with an error is no
/// watcher, her rules are as before, and a refused registration leaves
/// the name free.
#[test]
fn a_change_the_store_refuses_is_taken_back_in_memory() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    h.device("phone", "");
    h.advance(1_000);
    let refuse = |h: &mut Harness, xml: String| {
        h.core.handle_stanza(h.now, xml.parse().unwrap());
        let ops: Vec<StoreOp> = std::iter::from_fn(|| h.core.poll_store()).collect();
        assert!(ops.iter().any(StoreOp::acknowledged), "{ops:?}");
        h.core.handle_store_failure();
        h.drain()
    };
    let out = refuse(&mut h, format!("<presence xmlns='jabber:component:accept' type='subscribe' id='s1' from='bob@localhost' to='alice@{D}'/>"));
    assert_eq!(error_condition(&out[0]), Some("internal-server-error"));
    assert!(
        h.core.owners[0].watchers.is_empty(),
        "{:?}",
        h.core.owners[0].watchers
    );
    // Her devices change: Bob hears nothing of it.
    h.device("laptop", "<show>away</show>");
    let out = h.advance(1_000);
    assert!(to_bob(&out).is_empty(), "{out:?}");

    let rules_before = h.core.owners[0].rules.clone();
    let out = refuse(&mut h, format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>dnd all on</body></message>"));
    assert!(
        out.iter()
            .any(|e| error_condition(e) == Some("internal-server-error")),
        "{out:?}"
    );
    assert_eq!(h.core.owners[0].rules, rules_before);

    let owners = h.core.owners.len();
    refuse(&mut h, format!("<message xmlns='jabber:component:accept' type='chat' from='carol@localhost/pc' to='{D}'><body>register carol</body></message>"));
    assert_eq!(h.core.owners.len(), owners);
    assert!(command(&mut h, "carol@localhost/pc", "register carol").contains("You are now carol@"));
    // Giving the address up, refused, keeps her as she was.
    refuse(&mut h, format!("<message xmlns='jabber:component:accept' type='chat' from='carol@localhost/pc' to='{D}'><body>unregister confirm</body></message>"));
    assert!(command(&mut h, "carol@localhost/pc", "status").contains(&format!("carol@{D}")));
}

/// Each ad-hoc command opens its own form: none falls through to another
/// command's (an unknown node once got the unregister form).
#[test]
fn each_adhoc_command_opens_its_own_form() {
    let mut h = alice_with_phone_and_laptop();
    let titles = [
        ("devices", "Devices"),
        ("watchers", "Watchers"),
        ("ring", "Ringing"),
        ("rules", "Ring rules"),
        ("dnd", "Do not disturb"),
        ("privacy", "Privacy"),
        ("link", "Link an account"),
        ("unlink", "Unlink an account"),
        ("unregister", "Unregister"),
    ];
    for (node, title) in titles {
        let r = adhoc(
            &mut h,
            PHONE,
            &format!("<command xmlns='{CMD}' node='{node}' action='execute'/>"),
        );
        let x = r
            .get_child("command", CMD)
            .and_then(|c| c.get_child("x", ns::DATA));
        let got = x
            .and_then(|x| x.get_child("title", ns::DATA))
            .map(|t| t.text());
        assert_eq!(got.as_deref(), Some(title), "{node}: {}", xml(&r));
    }
    for node in ["nonsense", "register"] {
        let r = adhoc(
            &mut h,
            PHONE,
            &format!("<command xmlns='{CMD}' node='{node}' action='execute'/>"),
        );
        assert_eq!(
            error_condition(&r),
            Some("item-not-found"),
            "{node}: {}",
            xml(&r)
        );
    }
}

/// Another owner watching from two of his accounts is one entry, however
/// the watchers happen to be ordered.
#[test]
fn the_watchers_form_lists_another_owner_once() {
    let mut cfg = config(SubscriptionPolicy::Open);
    cfg.owners.push(OwnerConfig {
        name: "bob".into(),
        accounts: vec![
            BareJid::new("bob@localhost").unwrap(),
            BareJid::new("bob@work.example").unwrap(),
        ],
        ..cfg.owners[0].clone()
    });
    let mut h = Harness::with(cfg, Stored::default());
    for w in [
        "bob@localhost",
        "carol@localhost",
        "dave@localhost",
        "bob@work.example",
        "erin@localhost",
    ] {
        h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='{w}' to='alice@{D}'/>"));
    }
    let r = adhoc(
        &mut h,
        PHONE,
        &format!("<command xmlns='{CMD}' node='watchers' action='execute'/>"),
    );
    let x = r
        .get_child("command", CMD)
        .unwrap()
        .get_child("x", ns::DATA)
        .unwrap();
    let remove: Vec<String> = x
        .children()
        .find(|f| f.attr("var") == Some("remove"))
        .unwrap()
        .children()
        .filter_map(|o| o.get_child("value", ns::DATA).map(|v| v.text()))
        .collect();
    assert_eq!(
        remove.iter().filter(|v| **v == format!("bob@{D}")).count(),
        1,
        "{remove:?}"
    );
    assert_eq!(remove.len(), 4, "{remove:?}");
}

/// Issue 20 (Dino calling an owner whose only audio device is Gajim 1.7,
/// which does not speak XEP-0353): the propose is not answered busy; the
/// component proceeds for the device, and the caller's session-initiate is
/// forked to it as plain Jingle.
#[test]
fn a_propose_with_only_plain_jingle_devices_proceeds_and_rings_them() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    h.subscribe_bob();
    let plain: Vec<&str> = JINGLE_AUDIO
        .iter()
        .copied()
        .filter(|f| *f != jingle::JMI)
        .collect();
    let out = h.device("gajim-x1", &caps_for("https://gajim.org", &plain));
    let q = out.iter().find(|e| e.name() == "iq").unwrap().clone();
    h.answer_disco(&q, &plain);
    h.advance(200);
    let out = propose(&mut h, "P1");
    assert!(legs(&out).is_empty(), "no JMI leg: {out:?}");
    let proceed = to_bob_jmi(&out, "proceed");
    assert_eq!(proceed.len(), 1, "{out:?}");
    assert_eq!(proceed[0].attr("from"), Some(AUDIO));
    assert_eq!(jmi_of(proceed[0]).unwrap().attr("id"), Some("P1"));
    assert!(to_bob_jmi(&out, "reject").is_empty());
    // Bob's client then starts the session with the propose's id.
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "si",
        "session-initiate",
        "P1",
        CONTENT,
    ));
    let ring = out
        .iter()
        .find(|e| e.attr("to") == Some("alice@localhost/gajim-x1"))
        .and_then(|e| e.get_child("jingle", jingle::JINGLE))
        .expect("the Gajim device rings");
    assert_eq!(ring.attr("action"), Some("session-initiate"));
    assert_eq!(h.core.calls(), 1);
}
