//! Property tests of the core's stanza entry point.
//!
//! 1. Random sequences of presences, subscriptions, messages, IQs and junk
//!    from Alice's devices, Bob, strangers and spoofers, with time passing
//!    and restarts (the core rebuilt from exactly what it asked the store
//!    to keep). After every step: no panic, every stanza out is addressed
//!    and from our domain, nothing to anyone but Alice's own account names
//!    her account, a distinctive device resource or a device caps node
//!    (DESIGN.md section 1; statuses, nicks and bodies quote them), every
//!    IQ request gets exactly one answer, and the state stays within the
//!    configured limits.
//! 2. Relay-only calls: whatever candidates either side sends in whatever
//!    Jingle actions, no address of her device reaches the caller and none
//!    of his reaches her device.
//!
//! The oracles are the test's own: they read the stanzas, not the core's
//! guard. `scripts/fuzz` runs the same entry point under libFuzzer.

use jid::BareJid;
use minidom::Element;
use proptest::prelude::*;
use unified_presence::config::Config;
use unified_presence::core::{
    oracle, AccountState, CandidatePolicy, Core, CoreConfig, StoreOp, Stored, Time, WatcherState,
};

const D: &str = "unified.localhost";
const SECRET_NODE: &str = "https://secret-node.example";

fn config() -> CoreConfig {
    Config::from_toml(include_str!("entry_point.toml"))
        .expect("test config")
        .core_config(1)
}

fn initial() -> Stored {
    // Bob already watches and Carol waits for Alice's answer, so that
    // random device churn reaches a watcher at once.
    let bare = |s: &str| BareJid::new(s).expect("test jid");
    Stored {
        watchers: vec![
            (
                "alice".into(),
                bare("bob@localhost"),
                WatcherState::Subscribed,
            ),
            (
                "alice".into(),
                bare("carol@localhost"),
                WatcherState::Pending,
            ),
        ],
        accounts: vec![(
            "alice".into(),
            bare("alice@localhost"),
            AccountState {
                approved: true,
                ..AccountState::default()
            },
        )],
        ..Stored::default()
    }
}

fn from_strategy() -> impl Strategy<Value = Option<String>> {
    prop::sample::select(vec![
        Some("alice@localhost/phone"),
        Some("alice@localhost/phone"),
        Some("alice@localhost/phone"),
        Some("alice@localhost/laptop"),
        Some("alice@localhost/laptop"),
        Some("alice@localhost/lapt0p-x2"),
        Some("alice@localhost/Conversations.a1B2"),
        Some("alice@localhost"),
        Some("bob@localhost"),
        Some("bob@localhost/pc"),
        Some("eve@evil.example/x"),
        Some("carol@localhost"),
        Some(D),
        Some("x@unified.localhost/y"),
        Some("bad@@jid"),
        None,
    ])
    .prop_map(|s| s.map(str::to_owned))
}

fn to_strategy() -> impl Strategy<Value = Option<String>> {
    prop::sample::select(vec![
        Some(format!("alice@{D}")),
        Some(format!("alice@{D}")),
        Some(format!("alice@{D}")),
        Some(format!("alice@{D}/chat")),
        Some(format!("alice@{D}/audio")),
        Some(format!("alice@{D}/phone")),
        Some(D.to_owned()),
        Some(format!("nobody@{D}")),
        Some(format!(r"bob\40localhost@{D}")),
        // A proxy full JID: where her device sends a call she makes.
        Some(format!(r"bob\40localhost@{D}/pc")),
        Some(format!(r"eve\40evil.example@{D}")),
        Some("elsewhere.example".to_owned()),
        Some(format!("bad@@{D}")),
        None,
    ])
}

fn child_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "<show>away</show>".to_owned(),
        "<show>dnd</show>".to_owned(),
        "<show>bogus</show>".to_owned(),
        "<status>on my phone</status>".to_owned(),
        "<status>ask alice@localhost/laptop</status>".to_owned(),
        "<status>lunch</status>".to_owned(),
        "<status>typing on lapt0p-x2 now</status>".to_owned(),
        "<status>Conversations.a1B2</status>".to_owned(),
        "<nick xmlns='http://jabber.org/protocol/nick'>lapt0p-x2</nick>".to_owned(),
        "<body>find me on lapt0p-x2 or alice@localhost</body>".to_owned(),
        "<priority>5</priority>".to_owned(),
        "<priority>999</priority>".to_owned(),
        format!("<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{SECRET_NODE}' ver='abc='/>"),
        format!("<c xmlns='http://jabber.org/protocol/caps' hash='md5' node='{SECRET_NODE}' ver='x'/>"),
        "<idle xmlns='urn:xmpp:idle:1' since='2026-11-24T08:00:00Z'/>".to_owned(),
        "<idle xmlns='urn:xmpp:idle:1' since='yesterday'/>".to_owned(),
        "<delay xmlns='urn:xmpp:delay' stamp='2026-11-24T08:00:00Z'/>".to_owned(),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>".to_owned(),
        format!("<query xmlns='http://jabber.org/protocol/disco#info' node='{SECRET_NODE}#abc='><identity category='client' type='phone'/><feature var='urn:xmpp:jingle:1'/></query>"),
        "<query xmlns='http://jabber.org/protocol/disco#items'/>".to_owned(),
        "<ping xmlns='urn:xmpp:ping'/>".to_owned(),
        "<vCard xmlns='vcard-temp'/>".to_owned(),
        "<body>hello phone</body>".to_owned(),
        "<propose xmlns='urn:xmpp:jingle-message:0' id='s1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>".to_owned(),
        "<x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>a</value></field></x>".to_owned(),
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s1' initiator='bob@localhost/pc'><content creator='initiator' name='0'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'><candidate type='host' ip='10.0.0.1'/></transport></content></jingle>".to_owned(),
        "<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='s1'/>".to_owned(),
        // Her device calling out names itself and its addresses.
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s1' initiator='alice@localhost/phone'><content creator='initiator' name='0'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'><candidate type='host' ip='lapt0p-x2.local'/></transport></content></jingle>".to_owned(),
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s1' responder='alice@localhost/phone'/>".to_owned(),
        // SOCKS5 file transfers (XEP-0260), bridged at our streamhost: her
        // direct candidate names her device and address.
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s1' initiator='alice@localhost/phone'><content creator='initiator' name='f'><description xmlns='urn:xmpp:jingle:apps:file-transfer:5'/><transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='t1' dstaddr='ab'><candidate cid='c1' host='10.0.0.9' jid='alice@localhost/phone' port='5086' type='direct'/></transport></content></jingle>".to_owned(),
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s1'><content creator='initiator' name='f'><transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='t1'><candidate cid='c2' host='10.0.0.9' jid='alice@localhost/phone' port='5086' type='direct'/></transport></content></jingle>".to_owned(),
        "<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='s1'><content creator='initiator' name='f'><transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='t1'><candidate-used cid='c1'/></transport></content></jingle>".to_owned(),
        "<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='s1'><content creator='initiator' name='f'><transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='t1'><candidate-error/></transport></content></jingle>".to_owned(),
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s1'><reason><success/></reason></jingle>".to_owned(),
        "<jingle xmlns='urn:xmpp:jingle:1' sid='s1'/>".to_owned(),
        "<proceed xmlns='urn:xmpp:jingle-message:0' id='s1'/>".to_owned(),
        "<ringing xmlns='urn:xmpp:jingle-message:0' id='s1'/>".to_owned(),
        "<retract xmlns='urn:xmpp:jingle-message:0' id='s1'/>".to_owned(),
        "<finish xmlns='urn:xmpp:jingle-message:0' id='s1'/>".to_owned(),
        "<propose xmlns='urn:xmpp:jingle-message:0'/>".to_owned(),
    ])
}

#[derive(Debug, Clone)]
struct Input {
    kind: &'static str,
    from: Option<String>,
    to: Option<String>,
    typ: Option<&'static str>,
    id: Option<String>,
    children: Vec<String>,
    advance_ms: u64,
}

fn input_strategy() -> impl Strategy<Value = Input> {
    (
        prop::sample::select(vec![
            "presence",
            "presence",
            "iq",
            "iq",
            "message",
            "message",
            "handshake",
            "restart",
            "device",
            "device",
            "device",
        ]),
        from_strategy(),
        to_strategy(),
        prop::sample::select(vec![
            None,
            None,
            None,
            None,
            Some("subscribe"),
            Some("subscribed"),
            Some("unsubscribe"),
            Some("unsubscribed"),
            Some("probe"),
            Some("unavailable"),
            Some("error"),
            Some("get"),
            Some("set"),
            Some("result"),
            Some("chat"),
            Some("bogus"),
        ]),
        prop::option::of("[a-z0-9]{1,6}"),
        prop::collection::vec(child_strategy(), 0..3),
        prop::sample::select(vec![0u64, 0, 10, 100, 40_000]),
    )
        .prop_map(|(kind, from, to, typ, id, children, advance_ms)| {
            if kind == "device" {
                // One of her devices comes online or changes: often, so
                // that sequences of them around restarts are common.
                let n = children.len() + id.as_ref().map_or(0, String::len);
                let device = ["phone", "laptop", "lapt0p-x2", "Conversations.a1B2"][n % 4];
                return Input {
                    kind: "presence",
                    from: Some(format!("alice@localhost/{device}")),
                    to: Some(format!("alice@{D}")),
                    typ: None,
                    id,
                    children,
                    advance_ms,
                };
            }
            Input {
                kind,
                from,
                to,
                typ,
                id,
                children,
                advance_ms,
            }
        })
}

fn xml(input: &Input) -> String {
    let mut attrs = String::new();
    for (k, v) in [("from", &input.from), ("to", &input.to), ("id", &input.id)] {
        if let Some(v) = v {
            attrs.push_str(&format!(" {k}='{v}'"));
        }
    }
    if let Some(t) = input.typ {
        attrs.push_str(&format!(" type='{t}'"));
    }
    format!(
        "<{kind} xmlns='jabber:component:accept'{attrs}>{}</{kind}>",
        input.children.concat(),
        kind = input.kind
    )
}

/// Whether a resource names a device (this test's own reading of the
/// rule: anything but one everyday word, which anyone may write).
fn distinctive(resource: &str) -> bool {
    let word = !resource.is_empty()
        && resource.chars().all(|c| c.is_ascii_alphabetic())
        && (resource.chars().all(|c| c.is_ascii_lowercase())
            || resource.chars().skip(1).all(|c| c.is_ascii_lowercase()));
    !word
}

/// What a watcher must never see of Alice: her account, and the
/// distinctive resource and caps node of every device that has been
/// online (`devices`), before or after a restart, in anything (what she
/// writes included).
fn leaks(el: &Element, devices: &[String]) -> Option<String> {
    let to = el.attr("to").unwrap_or_default();
    if to.starts_with("alice@localhost") {
        return None;
    }
    // `to` is the recipient; `from` is ours (or, on an error, the address
    // the sender itself used).
    let mut copy = el.clone();
    copy.attrs_mut().clear();
    let mut buf = Vec::new();
    copy.write_to(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    std::iter::once("alice@localhost".to_string())
        .chain(devices.iter().filter(|d| distinctive(d)).cloned())
        .find(|s| text.contains(s.as_str()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn the_core_holds_its_invariants_under_any_input(inputs in prop::collection::vec(input_strategy(), 1..40)) {
        let mut kept = initial();
        let mut core = Core::new(config(), kept.clone());
        let mut now = Time(1_700_000_000_000);
        let mut devices: Vec<String> = Vec::new();
        core.handle_connected(now);
        while core.poll_transmit().is_some() {}
        for input in &inputs {
            let sent = if input.kind == "restart" {
                // What the store kept is all a new process knows.
                while let Some(op) = core.poll_store() {
                    kept.apply(op);
                }
                core = Core::new(config(), kept.clone());
                now = now.plus_ms(1_000);
                core.handle_connected(now);
                None
            } else {
                let el: Element = xml(input).parse().expect("generated xml is well-formed");
                core.handle_stanza(now, el.clone());
                Some(el)
            };
            now = now.plus_ms(input.advance_ms);
            core.handle_timeout(now);
            while let Some(op) = core.poll_store() {
                if let StoreOp::DeviceSeen { device, .. } = &op {
                    devices.push(device.resource().to_string());
                }
                kept.apply(op);
            }
            // A caps node is a device's once a device announced it in an
            // available presence the core accepted.
            let accepted = input.kind == "presence"
                && input.typ.is_none()
                && input.from.as_deref().is_some_and(|f| f.starts_with("alice@localhost/"))
                && input.to.as_deref().is_some_and(|t| t.starts_with(&format!("alice@{D}")))
                && !input.children.iter().any(|c| c.contains("bogus") || c.contains("999"));
            if accepted && input.children.iter().any(|c| c.contains(&format!("hash='sha-1' node='{SECRET_NODE}'")) || c.contains(&format!("hash='md5' node='{SECRET_NODE}'"))) {
                devices.push(SECRET_NODE.to_string());
            }
            let out: Vec<Element> = std::iter::from_fn(|| core.poll_transmit()).collect();
            for el in &out {
                prop_assert_eq!(leaks(el, &devices), None, "{:?} after {}", el, xml(input));
            }
            // Addressed and ours, nothing for the guard to stop, within
            // the configured limits, every IQ request answered once: the
            // checks the scenario tests and the fuzz target make too.
            if let Err(e) = oracle::check_step(&core, sent.as_ref(), &out) {
                prop_assert!(false, "{} after {}", e, xml(input));
            }
        }
    }
}

/// The candidates a side sends, chosen by the bits of `mask`: host,
/// server-reflexive (related to the host), peer-reflexive, relay
/// (related to the server-reflexive). `net` tells the sides apart:
/// hers are 192.0.2.77/203.0.113.77/192.0.2.78, his .99/.99/.98.
fn candidates(mask: u8, net: &str, prflx: &str) -> String {
    let c = |id: &str, ip: &str, port: u16, typ: &str, rel: &str| {
        format!("<candidate component='1' foundation='{id}' generation='0' id='{id}' ip='{ip}' network='0' port='{port}' priority='1' protocol='udp' type='{typ}'{rel}/>")
    };
    let mut out = String::new();
    if mask & 1 != 0 {
        out += &c("h", &format!("192.0.2.{net}"), 5000, "host", "");
    }
    if mask & 2 != 0 {
        let rel = format!(" rel-addr='192.0.2.{net}' rel-port='5000'");
        out += &c("s", &format!("203.0.113.{net}"), 5001, "srflx", &rel);
    }
    if mask & 4 != 0 {
        out += &c("p", &format!("192.0.2.{prflx}"), 5003, "prflx", "");
    }
    if mask & 8 != 0 {
        let rel = format!(" rel-addr='203.0.113.{net}' rel-port='5001'");
        out += &c("r", &format!("198.51.100.{net}"), 5002, "relay", &rel);
    }
    out
}

fn jingle_content(cands: &str) -> String {
    format!("<content creator='initiator' name='0'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'><payload-type id='111' name='opus' clockrate='48000' channels='2'/></description><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>{cands}</transport></content>")
}

const HER_PHONE: &str = "alice@localhost/ph0ne-q7";
const CALLER: &str = "bob@localhost/pc";
const HER_ADDRESSES: [&str; 3] = ["192.0.2.77", "203.0.113.77", "192.0.2.78"];
const HIS_ADDRESSES: [&str; 3] = ["192.0.2.99", "203.0.113.99", "192.0.2.98"];

fn wire(el: &Element) -> String {
    let mut buf = Vec::new();
    el.write_to(&mut buf).expect("serialises");
    String::from_utf8_lossy(&buf).into_owned()
}

/// A core where Alice chose relay-only and her phone can take audio calls.
fn relay_only_core(now: Time) -> Core {
    let mut cfg = config();
    cfg.owners[0].candidates = CandidatePolicy::RelayOnly;
    let mut core = Core::new(cfg, initial());
    core.handle_connected(now);
    while core.poll_transmit().is_some() {}
    let online: Element =
        format!("<presence xmlns='jabber:component:accept' from='{HER_PHONE}' to='alice@{D}'/>")
            .parse()
            .expect("xml");
    core.handle_stanza(now, online);
    let query = std::iter::from_fn(|| core.poll_transmit())
        .find(|e| e.name() == "iq")
        .expect("a disco#info query to her phone");
    let features: String = [
        "http://jabber.org/protocol/disco#info",
        "urn:xmpp:jingle:1",
        "urn:xmpp:jingle:apps:rtp:1",
        "urn:xmpp:jingle:apps:rtp:audio",
        "urn:xmpp:jingle:transports:ice-udp:1",
    ]
    .iter()
    .map(|f| format!("<feature var='{f}'/>"))
    .collect();
    let answer: Element = format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='{HER_PHONE}' to='{}'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='client' type='phone'/>{features}</query></iq>",
        query.attr("id").expect("id"),
        query.attr("from").expect("from"),
    )
    .parse()
    .expect("xml");
    core.handle_stanza(now, answer);
    core.handle_timeout(now.plus_ms(100));
    while core.poll_transmit().is_some() {}
    core
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Issue 13, hole 2: under relay-only, a whole call with whatever
    /// candidates either side sends, in every Jingle action that can carry
    /// them, both ways: nothing of hers reaches him, nothing of his
    /// reaches her device, and no transport-info arrives emptied.
    #[test]
    fn relay_only_calls_carry_no_address_either_way(
        offer in 0u8..16,
        answer in 0u8..16,
        steps in prop::collection::vec(
            (
                any::<bool>(),
                prop::sample::select(vec![
                    "transport-info", "transport-info", "transport-info", "transport-replace",
                    "transport-accept", "content-add", "content-accept", "session-info",
                ]),
                0u8..16,
            ),
            0..12,
        ),
    ) {
        let now = Time(1_700_000_000_000);
        let mut core = relay_only_core(now);
        let check = |core: &mut Core| -> Result<Vec<Element>, TestCaseError> {
            let out: Vec<Element> = std::iter::from_fn(|| core.poll_transmit()).collect();
            for el in &out {
                let to = el.attr("to").unwrap_or_default();
                let text = wire(el);
                let forbidden: &[&str] = if to.starts_with("bob@") {
                    &HER_ADDRESSES
                } else if to.starts_with("alice@localhost") {
                    &HIS_ADDRESSES
                } else {
                    &[]
                };
                for a in forbidden {
                    prop_assert!(!text.contains(a), "{a} reached {to}: {text}");
                }
                if text.contains("action=\"transport-info\"") && el.attr("type") == Some("set") {
                    prop_assert!(text.contains("<candidate"), "an emptied transport-info went out: {text}");
                }
            }
            prop_assert_eq!(core.guard_drops(), 0);
            Ok(out)
        };
        let initiate: Element = format!(
            "<iq xmlns='jabber:component:accept' type='set' id='si' from='{CALLER}' to='alice@{D}/audio'><jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='J1' initiator='{CALLER}'>{}</jingle></iq>",
            jingle_content(&candidates(offer, "99", "98"))
        ).parse().expect("xml");
        core.handle_stanza(now, initiate);
        let out = check(&mut core)?;
        let leg = out
            .iter()
            .find(|e| e.attr("to") == Some(HER_PHONE) && e.attr("type") == Some("set"))
            .expect("her phone rings");
        let proxy = leg.attr("from").expect("from").to_owned();
        let leg_sid = leg
            .get_child("jingle", "urn:xmpp:jingle:1")
            .and_then(|j| j.attr("sid"))
            .expect("sid")
            .to_owned();
        let accept: Element = format!(
            "<iq xmlns='jabber:component:accept' type='set' id='sa' from='{HER_PHONE}' to='{proxy}'><jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='{leg_sid}' responder='{HER_PHONE}'>{}</jingle></iq>",
            jingle_content(&candidates(answer, "77", "78"))
        ).parse().expect("xml");
        core.handle_stanza(now, accept);
        check(&mut core)?;
        for (n, (hers, action, mask)) in steps.into_iter().enumerate() {
            let xml = if hers {
                format!(
                    "<iq xmlns='jabber:component:accept' type='set' id='h{n}' from='{HER_PHONE}' to='{proxy}'><jingle xmlns='urn:xmpp:jingle:1' action='{action}' sid='{leg_sid}'>{}</jingle></iq>",
                    jingle_content(&candidates(mask, "77", "78"))
                )
            } else {
                format!(
                    "<iq xmlns='jabber:component:accept' type='set' id='b{n}' from='{CALLER}' to='alice@{D}/audio'><jingle xmlns='urn:xmpp:jingle:1' action='{action}' sid='J1'>{}</jingle></iq>",
                    jingle_content(&candidates(mask, "99", "98"))
                )
            };
            core.handle_stanza(now, xml.parse().expect("xml"));
            let out = check(&mut core)?;
            // Every request is answered, where it came from.
            let from = if hers { HER_PHONE } else { CALLER };
            let id = if hers { format!("h{n}") } else { format!("b{n}") };
            let answered = out.iter().any(|e| e.attr("to") == Some(from) && e.attr("id") == Some(id.as_str()))
                || out.iter().any(|e| e.attr("type") == Some("set"));
            prop_assert!(answered, "{xml} went unanswered and unrelayed: {out:?}");
        }
    }
}
