//! Phones that sleep, and legs that are reached (DESIGN.md section 12).

use super::*;

const ACCOUNT: &str = "alice@localhost";
const WORK: &str = "alice@work.example";
const DESK: &str = "alice@work.example/desk";

/// Alice with two accounts whose servers push (XEP-0357): her phone on
/// `alice@localhost` is known by its record and asleep; Bob watches.
fn alice_with_phone_asleep(rules: Vec<rules::Rule>) -> Harness {
    let mut cfg = config(SubscriptionPolicy::Open);
    cfg.owners[0].rules = rules;
    cfg.owners[0].accounts.push(BareJid::new(WORK).unwrap());
    let approved = AccountState {
        approved: true,
        ..AccountState::default()
    };
    let hour_ago = 1_700_000_000_000 - 3_600_000;
    let stored = Stored {
        accounts: vec![
            ("alice".into(), BareJid::new(ACCOUNT).unwrap(), approved),
            ("alice".into(), BareJid::new(WORK).unwrap(), approved),
        ],
        devices: vec![(
            "alice".into(),
            FullJid::new(PHONE).unwrap(),
            DeviceRecord {
                first_seen: hour_ago,
                last_seen: hour_ago,
                label: None,
                caps_node: Some("https://conversations.im".into()),
                no_push: false,
            },
        )],
        ..Stored::default()
    };
    let mut h = Harness::with(cfg, stored);
    let out = h.restart();
    let asked: Vec<Element> = out
        .iter()
        .filter(|e| e.name() == "iq" && e.has_child("query", ns::DISCO_INFO))
        .cloned()
        .collect();
    let to: BTreeSet<&str> = asked.iter().filter_map(|q| q.attr("to")).collect();
    assert_eq!(to, BTreeSet::from([ACCOUNT, WORK]), "each account is asked");
    for q in &asked {
        h.answer_disco(q, &["urn:xmpp:push:0"]);
    }
    h.subscribe_bob();
    h.advance(1_000);
    h
}

/// The propose her account got (her server keeps it for the phone).
fn to_account<'a>(out: &'a [Element], account: &str) -> Option<&'a Element> {
    out.iter()
        .find(|e| e.attr("to") == Some(account) && jmi_of(e).is_some_and(|j| j.name() == "propose"))
}

fn desk_online(h: &mut Harness) {
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' from='{DESK}' to='alice@{D}'>{}</presence>",
        caps_for("https://dino.im", JINGLE_AUDIO)
    ));
    let q = out.iter().find(|e| e.name() == "iq").unwrap().clone();
    h.answer_disco(&q, JINGLE_AUDIO);
    h.advance(200);
}

#[test]
fn a_call_wakes_her_phone_asleep_through_her_account_and_connects() {
    let mut h = alice_with_phone_asleep(vec![]);
    assert!(command(&mut h, DESK, "devices").contains("Asleep, woken by your server's push"));
    let out = propose(&mut h, "S1");
    assert!(to_bob_jmi(&out, "reject").is_empty(), "not busy: {out:?}");
    let stored = to_account(&out, ACCOUNT).expect("a propose to her account");
    // Kept offline and pushed; a receipt asked for; no carbon-blocking
    // hints (there is nobody online to copy to).
    assert!(stored.has_child("store", jingle::HINTS));
    assert!(stored.has_child("request", jingle::RECEIPTS));
    assert!(!stored.has_child("no-copy", jingle::HINTS));
    let proxy = stored.attr("from").unwrap().to_owned();
    let leg = jmi_of(stored).unwrap().attr("id").unwrap().to_owned();
    let msg_id = stored.attr("id").unwrap().to_owned();
    assert!(
        to_account(&out, WORK).is_none(),
        "nothing of hers sleeps there"
    );
    // Her phone wakes (a push), comes online, and gets the stored propose:
    // its receipt is the caller's, and it rings.
    h.advance(4_000);
    h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' from='{PHONE}' to='{proxy}'><received xmlns='urn:xmpp:receipts' id='{msg_id}'/></message>"
    ));
    let receipts: Vec<_> = to_bob(&out)
        .into_iter()
        .filter(|e| e.has_child("received", jingle::RECEIPTS))
        .collect();
    assert_eq!(receipts.len(), 1, "{out:?}");
    assert_eq!(
        receipts[0]
            .get_child("received", jingle::RECEIPTS)
            .unwrap()
            .attr("id"),
        Some("m-S1"),
        "his own message id"
    );
    let out = from_device(&mut h, PHONE, &proxy, "ringing", &leg, "");
    assert_eq!(to_bob_jmi(&out, "ringing").len(), 1);
    let view = h.core.admin_view(h.now, 10);
    assert_eq!((view.calls[0].legs, view.calls[0].reached), (1, 1));
    assert_eq!(view.calls[0].first_ring_secs, Some(4.0));
    let out = from_device(&mut h, PHONE, &proxy, "proceed", &leg, "");
    let proceed = to_bob_jmi(&out, "proceed");
    assert_eq!(proceed.len(), 1);
    assert_eq!(proceed[0].attr("from"), Some(AUDIO));
    // Her account's propose is not retracted: the phone took it.
    assert!(
        !out.iter().any(|e| e.attr("to") == Some(ACCOUNT)),
        "{out:?}"
    );
    // Bob's session-initiate reaches the phone that woke.
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "j1",
        "session-initiate",
        "S1",
        CONTENT,
    ));
    assert!(
        out.iter()
            .any(|e| e.attr("to") == Some(PHONE) && e.name() == "iq"),
        "{out:?}"
    );
    let events: Vec<Event> = std::iter::from_fn(|| h.core.poll_event()).collect();
    assert!(
        events.contains(&Event::CallReached { ms: 4_000 }),
        "{events:?}"
    );
}

#[test]
fn nobody_answers_and_the_stored_propose_is_taken_back_with_a_note() {
    let rule = rules::Rule {
        on_no_answer: rules::NoAnswer::Message,
        ..rules::Rule::default_rule(30_000)
    };
    let mut h = alice_with_phone_asleep(vec![rule]);
    let out = propose(&mut h, "S1");
    let leg = jmi_of(to_account(&out, ACCOUNT).unwrap())
        .unwrap()
        .attr("id")
        .unwrap()
        .to_owned();
    let out = h.advance(31_000);
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1);
    // The retract is kept offline behind the propose: a phone that wakes
    // later gets both and does not ring for a call that is over.
    let retract = out
        .iter()
        .find(|e| e.attr("to") == Some(ACCOUNT) && jmi_of(e).is_some_and(|j| j.name() == "retract"))
        .expect("the stored propose is retracted");
    assert_eq!(jmi_of(retract).unwrap().attr("id"), Some(leg.as_str()));
    assert!(retract.has_child("store", jingle::HINTS));
    let note = out
        .iter()
        .find(|e| e.attr("to") == Some(ACCOUNT) && e.has_child("body", ns::COMPONENT))
        .expect("a missed-call note");
    let text = note.get_child("body", ns::COMPONENT).unwrap().text();
    assert!(
        text.starts_with("Missed audio call from bob@localhost."),
        "{text}"
    );
    assert!(text.contains("will not ring for it"), "{text}");
    // She said the phone is not to be woken: now it is as if offline.
    assert!(command(&mut h, DESK, "push phone off").contains("only while it is online"));
    let out = propose(&mut h, "S2");
    assert!(to_account(&out, ACCOUNT).is_none());
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1, "busy");
    assert!(command(&mut h, DESK, "devices").contains("push off"));
    // It holds over a restart.
    h.restart();
    assert!(to_account(&propose(&mut h, "S3"), ACCOUNT).is_none());
}

#[test]
fn a_device_waking_after_another_answered_is_told_the_call_is_taken() {
    let mut h = alice_with_phone_asleep(vec![]);
    desk_online(&mut h);
    // Her desk (online, other account) and her phone (asleep) ring at once.
    let out = propose(&mut h, "S1");
    let rung = legs(&out);
    assert_eq!(
        rung.keys().map(String::as_str).collect::<Vec<_>>(),
        [ACCOUNT, DESK]
    );
    let (proxy, desk_leg) = rung[DESK].clone();
    let phone_leg = rung[ACCOUNT].1.clone();
    let out = from_device(&mut h, DESK, &proxy, "proceed", &desk_leg, "");
    assert_eq!(to_bob_jmi(&out, "proceed").len(), 1);
    // Her account's propose is taken back, kept offline for the phone.
    let retract = out
        .iter()
        .find(|e| e.attr("to") == Some(ACCOUNT))
        .expect("a retract to her account");
    assert_eq!(jmi_of(retract).unwrap().name(), "retract");
    assert!(retract.has_child("store", jingle::HINTS));
    // The phone wakes anyway (the push was on its way) and rings: it is
    // told at once, and Bob hears nothing of it.
    h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    let out = from_device(&mut h, PHONE, &proxy, "ringing", &phone_leg, "");
    assert!(to_bob(&out).is_empty(), "{out:?}");
    let told = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE))
        .expect("the phone is told");
    assert_eq!(jmi_of(told).unwrap().name(), "retract");
    let out = from_device(&mut h, PHONE, &proxy, "proceed", &phone_leg, "");
    assert!(to_bob(&out).is_empty(), "{out:?}");
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some(PHONE) && jmi_of(e).is_some_and(|j| j.name() == "retract")));
}

#[test]
fn a_second_device_of_the_account_waking_after_the_first_answered_is_retracted_alone() {
    let mut h = alice_with_phone_asleep(vec![]);
    let out = propose(&mut h, "S1");
    let stored = to_account(&out, ACCOUNT).unwrap();
    let proxy = stored.attr("from").unwrap().to_owned();
    let leg = jmi_of(stored).unwrap().attr("id").unwrap().to_owned();
    h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    h.device(
        "tablet",
        &caps_for("https://conversations.im", JINGLE_AUDIO),
    );
    from_device(&mut h, TABLET, &proxy, "ringing", &leg, "");
    let out = from_device(&mut h, PHONE, &proxy, "proceed", &leg, "");
    assert_eq!(to_bob_jmi(&out, "proceed").len(), 1);
    // The tablet, which rang too, stops; the phone, in the call, and her
    // account (which would reach the phone) are not told to.
    let retracts: Vec<&str> = out
        .iter()
        .filter(|e| jmi_of(e).is_some_and(|j| j.name() == "retract"))
        .filter_map(|e| e.attr("to"))
        .collect();
    assert_eq!(retracts, [TABLET]);
    // The tablet declining now changes nothing for the call.
    let out = from_device(&mut h, TABLET, &proxy, "reject", &leg, "");
    assert!(to_bob(&out).is_empty(), "{out:?}");
}

#[test]
fn declining_on_the_phone_that_woke_ends_the_call() {
    let mut h = alice_with_phone_asleep(vec![]);
    let out = propose(&mut h, "S1");
    let stored = to_account(&out, ACCOUNT).unwrap();
    let proxy = stored.attr("from").unwrap().to_owned();
    let leg = jmi_of(stored).unwrap().attr("id").unwrap().to_owned();
    h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    let out = from_device(&mut h, PHONE, &proxy, "reject", &leg, "");
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1, "{out:?}");
}

#[test]
fn an_account_with_a_device_online_or_a_server_that_does_not_push_is_not_rung() {
    // A device of the same account online: a propose to the account
    // would ring it, not the phone; the device online rings alone.
    let mut h = alice_with_phone_asleep(vec![]);
    let out = h.device(
        "tablet",
        &caps_for("https://conversations.im", JINGLE_AUDIO),
    );
    let q = out.iter().find(|e| e.name() == "iq").unwrap().clone();
    h.answer_disco(&q, JINGLE_AUDIO);
    h.advance(200);
    let out = propose(&mut h, "S1");
    assert_eq!(legs(&out).keys().collect::<Vec<_>>(), [TABLET]);
    assert!(command(&mut h, DESK, "devices").contains("Offline, not rung"));
    // Her server stops saying it pushes: nothing is rung through it.
    let mut h = alice_with_phone_asleep(vec![]);
    let out = h.restart();
    for q in out
        .iter()
        .filter(|e| e.name() == "iq" && e.has_child("query", ns::DISCO_INFO))
    {
        h.answer_disco(q, &[]);
    }
    let out = propose(&mut h, "S2");
    assert!(to_account(&out, ACCOUNT).is_none());
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1, "busy");
    // A plain Jingle call never goes to her account: her server would
    // answer the session-initiate itself.
    let mut h = alice_with_phone_asleep(vec![]);
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "j1",
        "session-initiate",
        "J1",
        CONTENT,
    ));
    assert!(
        !out.iter().any(|e| e.attr("to") == Some(ACCOUNT)),
        "{out:?}"
    );
}

#[test]
fn a_named_sleeper_keeps_its_place_in_a_sequential_plan() {
    let rule = rules::Rule {
        mode: rules::RingMode::Sequential,
        devices: vec!["phone".into(), "desk".into()],
        step_ms: 15_000,
        ..rules::Rule::default_rule(40_000)
    };
    let mut h = alice_with_phone_asleep(vec![rule]);
    desk_online(&mut h);
    let status = command(&mut h, DESK, "status");
    assert!(
        status.contains("phone (asleep, by push), then desk"),
        "{status}"
    );
    let out = propose(&mut h, "S1");
    assert!(to_account(&out, ACCOUNT).is_some());
    assert!(!legs(&out).contains_key(DESK));
    // Waking takes time: no ack timeout for her account's step.
    assert!(legs(&h.advance(14_000)).is_empty());
    let out = h.advance(1_500);
    assert!(legs(&out).contains_key(DESK), "then the desk");
}

#[test]
fn a_step_whose_device_never_gets_the_call_gives_way_after_the_ack_timeout() {
    let rule = rules::Rule {
        mode: rules::RingMode::Sequential,
        devices: vec!["tablet".into(), "phone".into()],
        step_ms: 15_000,
        ..rules::Rule::default_rule(60_000)
    };
    // The tablet never shows it got the call: after 5 s the phone rings.
    let mut h = alice_with_rules(vec![rule.clone()]);
    let first = legs(&propose(&mut h, "S1"));
    assert_eq!(first.keys().collect::<Vec<_>>(), [TABLET]);
    assert!(legs(&h.advance(4_900)).is_empty());
    let out = h.advance(200);
    assert_eq!(legs(&out).keys().collect::<Vec<_>>(), [PHONE]);
    let retract = out.iter().find(|e| e.attr("to") == Some(TABLET)).unwrap();
    assert_eq!(jmi_of(retract).unwrap().name(), "retract");
    // The caller heard no receipt or ringing meanwhile: nothing rang.
    assert!(to_bob(&out).is_empty());
    // This time the tablet's receipt comes back: it rings its full step.
    let mut h = alice_with_rules(vec![rule]);
    let out = propose(&mut h, "S2");
    let msg = out.iter().find(|e| e.attr("to") == Some(TABLET)).unwrap();
    let (proxy, id) = (msg.attr("from").unwrap(), msg.attr("id").unwrap());
    h.advance(1_000);
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' from='{TABLET}' to='{proxy}'><received xmlns='urn:xmpp:receipts' id='{id}'/></message>"
    ));
    assert_eq!(to_bob(&out).len(), 1, "his receipt, mapped");
    assert!(legs(&h.advance(13_900)).is_empty(), "no early step");
    assert_eq!(
        legs(&h.advance(200)).keys().collect::<Vec<_>>(),
        [PHONE],
        "after its 15 s"
    );
}

#[test]
fn rules_say_awake_only_and_show_it() {
    let mut h = alice_with_phone_asleep(vec![]);
    let reply = command(
        &mut h,
        DESK,
        "rule add audio from bob@localhost ring parallel awake-only",
    );
    assert!(reply.ends_with("awake devices only."), "{reply}");
    assert!(command(&mut h, DESK, "rules").contains("awake devices only"));
    let out = propose(&mut h, "S1");
    assert!(to_account(&out, ACCOUNT).is_none());
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1);
}

#[test]
fn an_admin_names_the_domains_whose_servers_push_without_saying_so() {
    // ejabberd's mod_push tells only the account itself: her server's
    // answer to her virtual JID lacks the feature.
    let mut h = alice_with_phone_asleep(vec![]);
    let out = h.restart();
    for q in out
        .iter()
        .filter(|e| e.name() == "iq" && e.has_child("query", ns::DISCO_INFO))
    {
        h.answer_disco(q, &[]);
    }
    assert!(to_account(&propose(&mut h, "S1"), ACCOUNT).is_none());
    h.cfg.push_domains = vec!["localhost".into()];
    h.restart();
    let out = propose(&mut h, "S2");
    assert!(to_account(&out, ACCOUNT).is_some(), "{out:?}");
    assert!(to_account(&out, WORK).is_none(), "no device of hers there");
}
