//! Flood control, limits, a refusing store and other hostile or broken inputs.

use super::*;

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
            // The proceed was the phone's first sign of life.
            Event::CallReached { ms: 1_500 },
            Event::CallAnswered { ring_ms: 1_500 },
            Event::CallEnded(CallOutcome::Answered),
            // The phone and the tablet rang; the phone got it and answered.
            Event::CallLegs {
                rung: 2,
                reached: 1,
                answered: 1
            }
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
            Event::CallLegs {
                rung: 2,
                reached: 0,
                answered: 0
            },
            Event::CallEnded(CallOutcome::Unanswered),
            Event::CallLegs {
                rung: 2,
                reached: 0,
                answered: 0
            }
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
    // His server does not answer for his card: after a while, she is
    // asked anyway.
    let mut out = h.subscribe_bob();
    assert!(!out.iter().any(|e| e.attr("type") == Some("subscribe")));
    out.extend(h.advance(3_000));
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

    // Her name and her encryption switch, likewise.
    refuse(&mut h, format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>name Someone Else</body></message>"));
    assert_eq!(h.core.owners[0].display_name, None);
    refuse(&mut h, format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>privacy encryption off</body></message>"));
    assert!(h.core.owners[0].omemo);

    let owners = h.core.owners.len();
    refuse(&mut h, format!("<message xmlns='jabber:component:accept' type='chat' from='carol@localhost/pc' to='{D}'><body>register carol</body></message>"));
    assert_eq!(h.core.owners.len(), owners);
    assert!(command(&mut h, "carol@localhost/pc", "register carol").contains("You are now carol@"));
    // Giving the address up, refused, keeps her as she was.
    refuse(&mut h, format!("<message xmlns='jabber:component:accept' type='chat' from='carol@localhost/pc' to='{D}'><body>unregister confirm</body></message>"));
    assert!(command(&mut h, "carol@localhost/pc", "status").contains(&format!("carol@{D}")));
}

/// Found by the fuzzer: a sender whose domain ends in a dot and whose
/// resource has a '/' was answered at `alice@lo//calhost/phone`, an
/// address nobody has. The answer goes to the sender's canonical address.
#[test]
fn a_trailing_dot_sender_with_a_slash_in_its_resource_is_answered() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='get' id='1' from='carol@lo./home/pc' to='{D}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].attr("to"), Some("carol@lo/home/pc"));
}
