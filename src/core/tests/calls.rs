//! Calls (DESIGN.md section 5): JMI and plain Jingle forking, endings, relay-only candidates, receipts.

use super::*;

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

/// Issue 16: she calls Bob from her phone, through his proxy JID. He gets
/// the call from her class resource, she hears him from his proxy full
/// JID, the whole session is relayed with roles mapped, her classes show
/// busy meanwhile, and nothing he receives names her device or account.
#[test]
fn she_calls_out_from_her_virtual_jid() {
    let mut h = alice_with_two_phones(CandidatePolicy::RelayOnly);
    let proxy = format!(r"bob\40localhost@{D}");
    let shown = format!("{proxy}/pc");
    // Everything the component sends, for the check at the end.
    let mut seen: Vec<Element> = vec![];
    macro_rules! step {
        ($e:expr) => {{
            let out = $e;
            seen.extend(out.iter().cloned());
            out
        }};
    }
    let out = step!(h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' id='m1' from='{PHONE}' to='{proxy}'>\
         <propose xmlns='urn:xmpp:jingle-message:0' id='out1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>"
    )));
    let to_him: Vec<&Element> = out
        .iter()
        .filter(|e| e.attr("to") == Some("bob@localhost"))
        .collect();
    assert_eq!(to_him.len(), 1, "{out:?}");
    assert_eq!(to_him[0].attr("from"), Some(AUDIO));
    assert_eq!(
        jmi_of(to_him[0]).and_then(|j| j.attr("id")),
        Some("out1"),
        "the propose id passes unchanged"
    );
    // His device rings, then proceeds: she hears both from his proxy JID.
    let jmi_from_him = |h: &mut Harness, name: &str| {
        h.input(&format!(
            "<message xmlns='jabber:component:accept' type='chat' from='{BOB}' to='{AUDIO}'><{name} xmlns='urn:xmpp:jingle-message:0' id='out1'/></message>"
        ))
    };
    let out = step!(jmi_from_him(&mut h, "ringing"));
    assert!(out.iter().any(|e| e.attr("to") == Some(PHONE)
        && e.attr("from") == Some(shown.as_str())
        && jmi_of(e).is_some_and(|j| j.name() == "ringing")));
    let out = step!(jmi_from_him(&mut h, "proceed"));
    assert!(out.iter().any(|e| e.attr("to") == Some(PHONE)
        && e.attr("from") == Some(shown.as_str())
        && jmi_of(e).is_some_and(|j| j.name() == "proceed")));
    assert!(
        h.core.calls.in_call(OwnerId::nth(0)),
        "her classes show busy"
    );
    // Her session-initiate to his proxy full JID reaches his device from
    // her class resource, her role mapped, her addresses withheld.
    let out = step!(h.input(&jingle_from(
        PHONE,
        &shown,
        "j1",
        "session-initiate",
        "out1",
        CONTENT
    )));
    let init = out
        .iter()
        .find(|e| e.attr("to") == Some(BOB) && e.name() == "iq")
        .expect("relayed to his device");
    assert_eq!(init.attr("from"), Some(AUDIO));
    let j = init.get_child("jingle", jingle::JINGLE).unwrap();
    assert_eq!(j.attr("initiator"), Some(AUDIO));
    assert_eq!(j.attr("sid"), Some("out1"));
    assert_eq!(
        candidate_types(init).0,
        ["relay"],
        "relay-only: her host candidate stays home"
    );
    // His answer to that IQ reaches her device.
    let id = init.attr("id").unwrap().to_owned();
    let out = step!(h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{id}' from='{BOB}' to='{AUDIO}'/>"
    )));
    assert!(out.iter().any(|e| e.attr("to") == Some(PHONE)
        && e.attr("id") == Some("j1")
        && e.attr("type") == Some("result")));
    // His accept reaches her device from his proxy full JID, roles mapped.
    let out = step!(h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='set' id='a1' from='{BOB}' to='{AUDIO}'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='out1' initiator='{AUDIO}' responder='{BOB}'>{CONTENT}</jingle></iq>"
    )));
    let accept = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE) && e.name() == "iq")
        .expect("his accept, relayed");
    assert_eq!(accept.attr("from"), Some(shown.as_str()));
    let j = accept.get_child("jingle", jingle::JINGLE).unwrap();
    assert_eq!(j.attr("initiator"), Some(PHONE));
    assert_eq!(j.attr("responder"), Some(shown.as_str()));
    // She hangs up: he hears it, and the call is over.
    let out = step!(h.input(&jingle_from(
        PHONE,
        &shown,
        "j2",
        "session-terminate",
        "out1",
        "<reason><success/></reason>"
    )));
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some(BOB) && e.name() == "iq"));
    assert_eq!(h.core.calls.len(), 0);
    assert!(!h.core.calls.in_call(OwnerId::nth(0)));
    // Nothing he got named her phone or her account (the guard would have
    // dropped it, and the harness's oracle checks every step too).
    let to_bob: Vec<&Element> = seen
        .iter()
        .filter(|e| e.attr("to").is_some_and(|t| t.starts_with("bob@localhost")))
        .collect();
    assert_eq!(
        to_bob.len(),
        3,
        "propose, session-initiate, terminate: {to_bob:?}"
    );
    for e in to_bob {
        let text = xml(e);
        assert!(
            !text.contains("alice@localhost") && !text.contains("phone"),
            "{text}"
        );
    }
}

/// Issue 16: a call she makes that nobody answers is retracted towards
/// him and refused to her device; a plain-Jingle call goes to the device
/// her client named.
#[test]
fn her_unanswered_call_ends_on_both_sides_and_plain_jingle_goes_out_too() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let proxy = format!(r"bob\40localhost@{D}");
    h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' id='m1' from='{PHONE}' to='{proxy}'>\
         <propose xmlns='urn:xmpp:jingle-message:0' id='out2'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>"
    ));
    let out = h.advance(31_000);
    assert!(out.iter().any(|e| e.attr("to") == Some("bob@localhost")
        && jmi_of(e).is_some_and(|j| j.name() == "retract")));
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some(PHONE) && jmi_of(e).is_some_and(|j| j.name() == "reject")));
    assert_eq!(h.core.calls.len(), 0);
    // Plain Jingle: straight to the device her client named.
    let shown = format!("{proxy}/pc");
    let out = h.input(&jingle_from(
        PHONE,
        &shown,
        "j1",
        "session-initiate",
        "plain1",
        CONTENT,
    ));
    let init = out
        .iter()
        .find(|e| e.attr("to") == Some(BOB) && e.name() == "iq")
        .expect("relayed to his device");
    assert_eq!(init.attr("from"), Some(AUDIO));
    assert_eq!(
        init.get_child("jingle", jingle::JINGLE)
            .and_then(|j| j.attr("initiator")),
        Some(AUDIO)
    );
    // Her phone goes offline mid-call: he is told.
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='unavailable' from='{PHONE}' to='alice@{D}'/>"
    ));
    assert!(
        out.iter()
            .any(|e| e.attr("to") == Some(BOB) && e.name() == "iq"),
        "{out:?}"
    );
    assert_eq!(h.core.calls.len(), 0);
}

/// Issue 16 (from the Gajim trial): her client asks a contact's proxy full
/// JID what it can do before it offers a call. The question goes to his
/// device from her virtual JID and his answer comes back; for someone who
/// is not her approved contact it stays unanswerable.
#[test]
fn her_client_learns_what_a_contacts_device_can_do() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let proxy = format!(r"bob\40localhost@{D}");
    let ask = |h: &mut Harness| {
        h.input(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='d1' from='{PHONE}' to='{proxy}/pc'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
    };
    let out = ask(&mut h);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].attr("type"),
        Some("error"),
        "not yet her contact: {out:?}"
    );
    // She subscribes to him; he approves.
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='alice@localhost' to='{proxy}'/>"));
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='bob@localhost' to='alice@{D}'/>"));
    let out = ask(&mut h);
    let q = out
        .iter()
        .find(|e| e.attr("to") == Some(BOB))
        .expect("asked of his device");
    assert_eq!(q.attr("from"), Some(format!("alice@{D}").as_str()));
    let id = q.attr("id").unwrap().to_owned();
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{id}' from='{BOB}' to='alice@{D}'><query xmlns='http://jabber.org/protocol/disco#info'><feature var='urn:xmpp:jingle:apps:rtp:audio'/></query></iq>"
    ));
    let answer = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE))
        .expect("his answer reaches her");
    assert_eq!(answer.attr("id"), Some("d1"));
    assert_eq!(answer.attr("from"), Some(format!("{proxy}/pc").as_str()));
    assert!(xml(answer).contains("urn:xmpp:jingle:apps:rtp:audio"));
}

/// Issue 16: a file she sends over an in-band bytestream: once her offer
/// went to his device, the stream's IQs pass both ways between the same
/// two ends; a stream that belongs to no session goes nowhere.
#[test]
fn her_file_streams_in_band_through_the_session() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let shown = format!(r"bob\40localhost@{D}/pc");
    let files = format!("alice@{D}/files");
    let ibb = |from: &str, to: &str, id: &str, inner: &str| {
        format!("<iq xmlns='jabber:component:accept' type='set' id='{id}' from='{from}' to='{to}'>{inner}</iq>")
    };
    let open = "<open xmlns='http://jabber.org/protocol/ibb' sid='IBB1' block-size='4096'/>";
    let out = h.input(&ibb(PHONE, &shown, "o0", open));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].attr("type"), Some("error"), "no session yet");
    let offer = "<content creator='initiator' name='f'><description xmlns='urn:xmpp:jingle:apps:file-transfer:5'><file><name>a</name></file></description><transport xmlns='urn:xmpp:jingle:transports:ibb:1' sid='IBB1' block-size='4096'/></content>";
    let out = h.input(&jingle_from(
        PHONE,
        &shown,
        "f1",
        "session-initiate",
        "F1",
        offer,
    ));
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some(BOB) && e.attr("from") == Some(files.as_str())));
    let out = h.input(&ibb(PHONE, &shown, "o1", open));
    let relayed = out
        .iter()
        .find(|e| e.attr("to") == Some(BOB))
        .expect("the open, at his device");
    assert_eq!(relayed.attr("from"), Some(files.as_str()));
    let id = relayed.attr("id").unwrap().to_owned();
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{id}' from='{BOB}' to='{files}'/>"
    ));
    assert!(out.iter().any(|e| e.attr("to") == Some(PHONE)
        && e.attr("id") == Some("o1")
        && e.attr("from") == Some(shown.as_str())));
    // His side of the stream comes back to her device.
    let out = h.input(&ibb(
        BOB,
        &files,
        "c1",
        "<close xmlns='http://jabber.org/protocol/ibb' sid='IBB1'/>",
    ));
    let back = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE))
        .expect("his close, at her device");
    assert_eq!(back.attr("from"), Some(shown.as_str()));
}

/// Issue 16: calls she makes count against the per-caller limit (3 here),
/// so a device cannot fill the core with proposals; the fourth is busy.
#[test]
fn her_calls_out_are_limited_like_any_callers() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let proxy = format!(r"bob\40localhost@{D}");
    for n in 0..4 {
        let out = h.input(&format!(
            "<message xmlns='jabber:component:accept' type='chat' id='m{n}' from='{PHONE}' to='{proxy}'>\
             <propose xmlns='urn:xmpp:jingle-message:0' id='lim{n}'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>"
        ));
        let to_bob = out.iter().any(|e| e.attr("to") == Some("bob@localhost"));
        let busy = out.iter().any(|e| {
            e.attr("to") == Some(PHONE) && jmi_of(e).is_some_and(|j| j.name() == "reject")
        });
        assert_eq!((to_bob, busy), (n < 3, n == 3), "call {n}: {out:?}");
    }
    assert_eq!(h.core.calls.len(), 3);
}

/// Issue 16: a propose of hers whose children name her account still
/// reaches him, without them (like a device's answers to an incoming
/// call), rather than being stopped by the guard.
#[test]
fn her_propose_naming_her_account_goes_out_without_it() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let proxy = format!(r"bob\40localhost@{D}");
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' id='m1' from='{PHONE}' to='{proxy}'>\
         <propose xmlns='urn:xmpp:jingle-message:0' id='n1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>\
         <x xmlns='urn:example:who' jid='alice@localhost'/></propose></message>"
    ));
    let to_him = out
        .iter()
        .find(|e| e.attr("to") == Some("bob@localhost"))
        .expect("the call still reaches him");
    let text = xml(to_him);
    assert!(!text.contains("alice@localhost"), "{text}");
    assert_eq!(jmi_of(to_him).map(Element::name), Some("propose"));
    assert!(
        jmi_of(to_him).is_some_and(|p| p.has_child("description", "urn:xmpp:jingle:apps:rtp:1")),
        "what his client needs to ring stays: {text}"
    );
}

/// Issue 16: a SOCKS5 file offer (XEP-0260) she makes reaches him without
/// her candidates (her device's address and full JID) or the dstaddr hash
/// of her real JID; his candidate-error reaches her, and her fallback to
/// in-band bytestreams (transport-replace) reaches him.
#[test]
fn her_socks5_offer_loses_its_candidates_and_falls_back_in_band() {
    use crate::core::jingle::JINGLE;
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    let shown = format!(r"bob\40localhost@{D}/pc");
    let files = format!("alice@{D}/files");
    let s5b = "urn:xmpp:jingle:transports:s5b:1";
    let offer = format!(
        "<content creator='initiator' name='f'><description xmlns='urn:xmpp:jingle:apps:file-transfer:5'><file><name>a</name></file></description>\
         <transport xmlns='{s5b}' sid='S1' mode='tcp' dstaddr='972b7bf47291ca609517f67f86b5081086052dad'>\
         <candidate cid='c1' host='192.0.2.44' jid='{PHONE}' port='5086' priority='8257636' type='direct'/>\
         <candidate cid='c2' host='proxy.localhost' jid='proxy.localhost' port='7777' priority='655360' type='proxy'/></transport></content>"
    );
    let out = h.input(&jingle_from(
        PHONE,
        &shown,
        "f1",
        "session-initiate",
        "F1",
        &offer,
    ));
    let to_him = out
        .iter()
        .find(|e| e.attr("to") == Some(BOB) && e.attr("from") == Some(files.as_str()))
        .expect("her offer at his device");
    let transport = to_him
        .get_child("jingle", JINGLE)
        .and_then(|j| j.get_child("content", JINGLE))
        .and_then(|c| c.get_child("transport", s5b))
        .expect("the SOCKS5 transport, empty");
    assert_eq!(transport.children().count(), 0, "{}", xml(to_him));
    assert_eq!(transport.attr("dstaddr"), None);
    assert_eq!(transport.attr("sid"), Some("S1"));
    let text = xml(to_him);
    assert!(
        !text.contains("192.0.2.44") && !text.contains("proxy.localhost"),
        "{text}"
    );
    // He can use none: candidate-error goes back to her device.
    let sid = to_him
        .get_child("jingle", JINGLE)
        .unwrap()
        .attr("sid")
        .unwrap()
        .to_owned();
    let out = h.input(&jingle_from(
        BOB,
        &files,
        "e1",
        "transport-info",
        &sid,
        &format!("<content creator='initiator' name='f'><transport xmlns='{s5b}' sid='S1'><candidate-error/></transport></content>"),
    ));
    assert!(
        out.iter()
            .any(|e| e.attr("to") == Some(PHONE) && xml(e).contains("candidate-error")),
        "{out:?}"
    );
    // She falls back to IBB; he gets the transport-replace.
    let out = h.input(&jingle_from(
        PHONE,
        &shown,
        "r1",
        "transport-replace",
        "F1",
        "<content creator='initiator' name='f'><transport xmlns='urn:xmpp:jingle:transports:ibb:1' sid='IBB9' block-size='4096'/></content>",
    ));
    assert!(
        out.iter()
            .any(|e| e.attr("to") == Some(BOB) && xml(e).contains("IBB9")),
        "{out:?}"
    );
}
