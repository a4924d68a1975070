//! Chat through the virtual JID (DESIGN.md section 7).

use super::*;

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
    h.core.owners[0].watchers.policy = SubscriptionPolicy::Ask;
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
