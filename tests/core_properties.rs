//! Property test of the core's stanza entry point: random sequences of
//! presences, subscriptions, messages, IQs and junk from Alice's devices,
//! Bob, strangers and spoofers, with time passing. After every step: no
//! panic, every stanza out is addressed and from our domain, nothing to
//! anyone but Alice's own account names her devices (DESIGN.md section 1),
//! every IQ request gets exactly one answer, and the state stays within
//! the configured limits. `scripts/fuzz` runs the same entry point under
//! libFuzzer.

use jid::BareJid;
use minidom::Element;
use proptest::prelude::*;
use unified_presence::config::Config;
use unified_presence::core::{AccountState, Core, StoreOp, Stored, Time, WatcherState};

const D: &str = "unified.localhost";
const SECRET_NODE: &str = "https://secret-node.example";

fn core() -> Core {
    let cfg = Config::from_toml(include_str!("entry_point.toml")).expect("test config");
    // Bob already watches and Carol waits for Alice's answer, so that
    // random device churn reaches a watcher at once.
    let bare = |s: &str| BareJid::new(s).expect("test jid");
    let stored = Stored {
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
    };
    Core::new(cfg.core_config(1), stored)
}

fn from_strategy() -> impl Strategy<Value = Option<String>> {
    prop::sample::select(vec![
        Some("alice@localhost/phone"),
        Some("alice@localhost/phone"),
        Some("alice@localhost/phone"),
        Some("alice@localhost/laptop"),
        Some("alice@localhost/laptop"),
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
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s1' responder='alice@localhost/phone'/>".to_owned(),
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
        prop::sample::select(vec!["presence", "presence", "iq", "message", "handshake"]),
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
        .prop_map(|(kind, from, to, typ, id, children, advance_ms)| Input {
            kind,
            from,
            to,
            typ,
            id,
            children,
            advance_ms,
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

/// What a watcher must never see of Alice: her account, and the resource
/// and caps node of every device that has been online (`devices`).
fn leaks(el: &Element, devices: &[String]) -> Option<String> {
    let to = el.attr("to").unwrap_or_default();
    if to.starts_with("alice@localhost") {
        return None;
    }
    // `to` is the recipient; `from` is ours (or, on an error, the address
    // the sender itself used).
    let mut copy = el.clone();
    copy.attrs_mut().clear();
    // What a person wrote in a message is theirs to send (as in the guard).
    copy.remove_child("body", "jabber:component:accept");
    copy.remove_child("subject", "jabber:component:accept");
    let mut buf = Vec::new();
    copy.write_to(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    std::iter::once("alice@localhost".to_string())
        .chain(devices.iter().cloned())
        .find(|s| text.contains(s.as_str()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn the_core_holds_its_invariants_under_any_input(inputs in prop::collection::vec(input_strategy(), 1..40)) {
        let mut core = core();
        let mut now = Time(1_700_000_000_000);
        let mut devices: Vec<String> = Vec::new();
        core.handle_connected(now);
        while core.poll_transmit().is_some() {}
        for input in &inputs {
            let el: Element = xml(input).parse().expect("generated xml is well-formed");
            core.handle_stanza(now, el);
            now = now.plus_ms(input.advance_ms);
            core.handle_timeout(now);
            while let Some(op) = core.poll_store() {
                if let StoreOp::DeviceSeen { device, .. } = op {
                    devices.push(device.resource().to_string());
                }
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
                let from = el.attr("from").unwrap_or_default();
                // D, D/res, x@D or x@D/res: the domain part is ours.
                let bare = from.split('/').next().unwrap_or_default();
                prop_assert!(bare.rsplit('@').next() == Some(D), "from not ours: {el:?}");
                prop_assert!(el.attr("to").is_some());
                prop_assert_eq!(leaks(el, &devices), None, "{:?} after {}", el, xml(input));
            }
            prop_assert_eq!(core.guard_drops(), 0);
            // State stays within the configured limits, whatever arrives.
            let f = core.footprint();
            prop_assert!(
                f.max_devices_per_owner <= 4 && f.max_watchers_per_owner <= 3 && f.pending_iqs <= 4
                    && f.calls <= 3 && f.rate_buckets <= 16,
                "{:?}", f
            );
            // RFC 6120 §8.2.3: a well-addressed IQ request gets exactly one answer.
            let addressed = input.from.as_deref().is_some_and(|f| jid::Jid::new(f).is_ok() && !f.contains(D))
                && input.to.as_deref().is_some_and(|t| t.ends_with(D) || t.contains(&format!("{D}/")))
                && input.id.is_some();
            if input.kind == "iq" && matches!(input.typ, Some("get") | Some("set")) && addressed {
                let answers = out.iter().filter(|e| e.name() == "iq" && e.attr("id") == input.id.as_deref() && matches!(e.attr("type"), Some("result") | Some("error"))).count();
                prop_assert_eq!(answers, 1, "{}", xml(input));
            }
        }
    }
}
