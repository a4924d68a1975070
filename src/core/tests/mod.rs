//! Core scenarios, one test per rule, no network, split by area. Every
//! input is checked by `core::oracle` and every emitted stanza for leaks
//! (`Harness::drain`); the helpers live here, the scenarios in the areas.

use std::collections::{BTreeMap, BTreeSet};

use minidom::Element;

use super::devices::ClassDef;
use super::*;
use crate::config::default_classes;

mod asleep;
mod calls;
mod chat;
mod commands;
mod faults;
mod omemo;
mod presence;
mod profile;
mod ringing;
mod streamhost;
mod views;

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
    /// What the streamhost was told, in order.
    streamhost: Vec<StreamhostOp>,
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
        ack_timeout_ms: 5_000,
        push_domains: vec![],
        views: vec![],
        default_view: crate::core::views::EVERYTHING.into(),
        streamhost: None,
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
            streamhost: vec![],
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
        while let Some(op) = self.core.poll_streamhost() {
            self.streamhost.push(op);
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

const CMD: &str = "http://jabber.org/protocol/commands";

fn adhoc(h: &mut Harness, from: &str, inner: &str) -> Element {
    let out = h.input(&format!("<iq xmlns='jabber:component:accept' type='set' id='c1' from='{from}' to='{D}'>{inner}</iq>"));
    out.into_iter()
        .find(|e| e.attr("id") == Some("c1"))
        .expect("an answer")
}

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
