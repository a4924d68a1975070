//! Views (DESIGN.md section 13): each watcher sees what she chooses.

use super::*;

const CAROL: &str = "carol@localhost";

fn to_carol(out: &[Element]) -> Vec<&Element> {
    out.iter()
        .filter(|e| e.attr("to").is_some_and(|t| t.starts_with(CAROL)))
        .collect()
}

/// Alice's phone (audio, video; away, "Lunch") and laptop (chat, away);
/// Bob and Carol watch her.
fn alice_watched_by_bob_and_carol() -> Harness {
    let mut h = alice_with_phone_and_laptop();
    h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='subscribe' from='{CAROL}' to='alice@{D}'/>"
    ));
    h.device(
        "phone",
        &format!(
            "<show>away</show><status>Lunch</status>{}",
            caps_for("https://conversations.im", &{
                let mut v = JINGLE_AUDIO.to_vec();
                v.push("urn:xmpp:jingle:apps:rtp:video");
                v
            })
        ),
    );
    h.advance(1_000);
    h
}

/// What `who` has of Alice now, as a user would say it, class by class
/// (the latest presence from each of her resources).
fn seen(out: &[&Element]) -> BTreeMap<String, String> {
    out.iter()
        .filter(|e| e.name() == "presence")
        .map(|e| {
            (
                e.attr("from").unwrap().to_owned(),
                crate::core::views::describe_presence(e),
            )
        })
        .collect()
}

fn probe(h: &mut Harness, who: &str) -> Vec<Element> {
    h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='probe' from='{who}/pc' to='alice@{D}'/>"
    ))
}

#[test]
fn each_detail_level_shows_what_it_says_and_moving_sends_the_difference() {
    let mut h = alice_watched_by_bob_and_carol();
    let reply = command(
        &mut h,
        PHONE,
        "view add colleagues audio show, chat presence",
    );
    assert!(
        reply.starts_with("View colleagues: audio show, chat presence."),
        "{reply}"
    );
    // Defining a view moves nobody.
    let out = command_out(&mut h, PHONE, &format!("view {CAROL} colleagues"));
    // Carol hears exactly the difference: audio loses its text, chat its
    // show, video goes; Bob hears nothing.
    assert!(to_bob(&out).is_empty(), "{out:?}");
    let carol = seen(&to_carol(&out));
    assert_eq!(
        carol,
        BTreeMap::from([
            (
                format!("alice@{D}/audio"),
                format!("alice@{D}/audio: available, away")
            ),
            (
                format!("alice@{D}/chat"),
                format!("alice@{D}/chat: available")
            ),
            (
                format!("alice@{D}/video"),
                format!("alice@{D}/video: unavailable")
            ),
        ])
    );
    // What each has now, asked by probe.
    let bob = seen(&to_bob(&probe(&mut h, "bob@localhost")));
    assert_eq!(
        bob[&format!("alice@{D}/audio")],
        format!("alice@{D}/audio: available, away (\"Lunch\")")
    );
    assert_eq!(bob.len(), 3, "chat, audio, video: {bob:?}");
    let carol = seen(&to_carol(&probe(&mut h, CAROL)));
    assert_eq!(carol.len(), 2, "chat and audio only: {carol:?}");
    // A device change reaches each view as that view shows it.
    let out = h.device(
        "phone",
        &format!(
            "<show>dnd</show><status>Meeting</status>{}",
            caps_for("https://conversations.im", &{
                let mut v = JINGLE_AUDIO.to_vec();
                v.push("urn:xmpp:jingle:apps:rtp:video");
                v
            })
        ),
    );
    let mut out = out;
    out.extend(h.advance(1_000));
    let carol = seen(&to_carol(&out));
    assert_eq!(
        carol,
        BTreeMap::from([(
            format!("alice@{D}/audio"),
            format!("alice@{D}/audio: available, do not disturb")
        )]),
        "no video, no status text for Carol"
    );
    let bob = seen(&to_bob(&out));
    assert_eq!(
        bob[&format!("alice@{D}/audio")],
        format!("alice@{D}/audio: available, do not disturb (\"Meeting\")")
    );
    // Back to everything: she gets back what she may see again.
    let out = command_out(&mut h, PHONE, &format!("view {CAROL} default"));
    let carol = seen(&to_carol(&out));
    assert_eq!(carol.len(), 3, "{carol:?}");
    assert!(carol[&format!("alice@{D}/video")].contains("do not disturb (\"Meeting\")"));
    assert!(to_bob(&out).is_empty());
    // Nothing for everyone else by default, a domain's view for Carol.
    let out = command_out(&mut h, PHONE, "view default nothing");
    assert_eq!(
        seen(&to_bob(&out))
            .values()
            .filter(|v| v.ends_with("unavailable"))
            .count(),
        3
    );
    assert_eq!(seen(&to_carol(&out)).len(), 3);
    let out = command_out(&mut h, PHONE, "view localhost reachable");
    let carol = seen(&to_carol(&out));
    assert_eq!(carol.len(), 3, "{carol:?}");
    assert!(
        carol.values().all(|v| v.ends_with(": available")),
        "{carol:?}"
    );
}

/// Like `command`, but every stanza of the reply's input.
fn command_out(h: &mut Harness, from: &str, body: &str) -> Vec<Element> {
    h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{from}' to='{D}'><body>{body}</body></message>"))
}

#[test]
fn preview_says_exactly_what_the_watcher_receives() {
    let mut h = alice_watched_by_bob_and_carol();
    command(
        &mut h,
        PHONE,
        "view add colleagues audio show, chat presence",
    );
    command(&mut h, PHONE, "view localhost colleagues");
    command(&mut h, PHONE, "view bob@localhost everything");
    for who in ["bob@localhost", CAROL] {
        let preview = command(&mut h, PHONE, &format!("preview {who}"));
        let received: Vec<String> = probe(&mut h, who)
            .iter()
            .filter(|e| e.name() == "presence")
            .map(|e| format!("• {}", crate::core::views::describe_presence(e)))
            .collect();
        let listed: Vec<String> = preview
            .lines()
            .filter(|l| l.starts_with("• "))
            .map(str::to_owned)
            .collect();
        assert_eq!(listed, received, "{preview}");
    }
    let preview = command(&mut h, PHONE, &format!("preview {CAROL}"));
    assert!(
        preview.starts_with(&format!("{CAROL} is in your view colleagues (by domain).")),
        "{preview}"
    );
    assert!(
        preview.contains("Their video call now would ring: nobody: their view hides it"),
        "{preview}"
    );
    assert!(
        preview.contains("Their audio call now would ring: phone"),
        "{preview}"
    );
    // A stranger: what he would see if he watched.
    let preview = command(&mut h, PHONE, "preview dave@example.net");
    assert!(
        preview.contains("do not watch you; if they did"),
        "{preview}"
    );
}

#[test]
fn a_class_his_view_hides_cannot_be_called_or_asked_unless_a_rule_names_him() {
    let mut h = alice_with_two_phones(CandidatePolicy::Direct);
    command(&mut h, PHONE, "view add chatonly chat");
    command(&mut h, PHONE, "view bob@localhost chatonly");
    let out = propose(&mut h, "S1");
    assert!(legs(&out).is_empty(), "nothing rings: {out:?}");
    let reject = to_bob_jmi(&out, "reject");
    assert_eq!(reject.len(), 1);
    assert!(jmi_of(reject[0])
        .unwrap()
        .get_child("reason", jingle::JINGLE)
        .is_some());
    // Asking the class resource tells him no more than his presence does.
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='get' id='d1' from='{BOB}' to='{AUDIO}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    assert_eq!(error_condition(&out[0]), Some("service-unavailable"));
    // Plain Jingle to the hidden class: declined as busy, nothing rings.
    let out = h.input(&jingle_from(
        BOB,
        AUDIO,
        "j1",
        "session-initiate",
        "J1",
        CONTENT,
    ));
    assert!(!out.iter().any(|e| e.attr("to") == Some(PHONE)), "{out:?}");
    // A rule that names him lets him through.
    command(
        &mut h,
        PHONE,
        "rule add audio from bob@localhost ring parallel",
    );
    let out = propose(&mut h, "S2");
    assert_eq!(legs(&out).len(), 2, "{out:?}");
}

#[test]
fn views_by_the_hour_follow_her_clock_across_midnight() {
    let mut cfg = config(SubscriptionPolicy::Open);
    cfg.owners[0].timezone = chrono_tz::Europe::Berlin;
    let mut h = Harness::with(cfg, Stored::default());
    h.subscribe_bob();
    h.device("laptop", "");
    h.advance(1_000);
    // 2026-12-07 is a Monday; 20:30 UTC is 21:30 in Berlin (CET).
    let monday_2130_berlin = 1_796_675_400_000;
    h.core.set_wall_clock(h.now, monday_2130_berlin);
    command(&mut h, PHONE, "view add night chat mon 22:00-06:00");
    let out = command_out(&mut h, PHONE, "view bob@localhost night");
    assert_eq!(
        seen(&to_bob(&out)),
        BTreeMap::from([(
            format!("alice@{D}/chat"),
            format!("alice@{D}/chat: unavailable")
        )]),
        "before 22:00 her chat is hidden"
    );
    // At 22:00 her time it appears, by the clock alone.
    let out = h.advance(29 * 60_000);
    assert!(to_bob(&out).is_empty(), "{out:?}");
    let out = h.advance(60_000 + 1_000);
    assert_eq!(
        seen(&to_bob(&out)),
        BTreeMap::from([(
            format!("alice@{D}/chat"),
            format!("alice@{D}/chat: available")
        )])
    );
    // Past midnight it is still Monday's window, until 06:00.
    let out = h.advance(7 * 3_600_000 + 58 * 60_000);
    assert!(to_bob(&out).is_empty(), "{out:?}");
    let out = h.advance(2 * 60_000);
    assert_eq!(
        seen(&to_bob(&out)),
        BTreeMap::from([(
            format!("alice@{D}/chat"),
            format!("alice@{D}/chat: unavailable")
        )])
    );
    // Tuesday night: not in the view.
    assert!(to_bob(&h.advance(17 * 3_600_000)).is_empty());
}

#[test]
fn views_are_stored_blocked_sees_nothing_and_bad_ones_are_refused() {
    let mut h = alice_watched_by_bob_and_carol();
    command(&mut h, PHONE, "view add colleagues audio show");
    command(&mut h, PHONE, &format!("view {CAROL} colleagues"));
    h.restart();
    let out = h.device("phone", &caps_for("https://conversations.im", JINGLE_AUDIO));
    if let Some(q) = out.iter().find(|e| e.name() == "iq").cloned() {
        h.answer_disco(&q, JINGLE_AUDIO);
    }
    h.advance(1_000);
    let carol = seen(&to_carol(&probe(&mut h, CAROL)));
    assert_eq!(
        carol,
        BTreeMap::from([(
            format!("alice@{D}/audio"),
            format!("alice@{D}/audio: available")
        )]),
        "kept over a restart"
    );
    let views = command(&mut h, PHONE, "views");
    assert!(views.contains("• colleagues: audio show"), "{views}");
    assert!(views.contains(&format!("• {CAROL}: colleagues")), "{views}");
    // Her own account sees everything whatever the default.
    command(&mut h, PHONE, "view default nothing");
    assert!(command(&mut h, PHONE, "preview alice@localhost").contains("sees everything"));
    assert!(command(&mut h, PHONE, "preview spam@evil.example").contains("blocked"));
    for (bad, why) in [
        ("view add everything chat", "built-in"),
        ("view add x loud", "Start with a class"),
        ("view bob@localhost nosuch", "There is no view"),
        ("view del everything", "built in"),
        ("view del nosuch", "You have no view"),
    ] {
        let reply = command(&mut h, PHONE, bad);
        assert!(reply.contains(why), "{bad}: {reply}");
    }
    // Removing a view sends its watchers to the default.
    let out = command_out(&mut h, PHONE, "view del colleagues");
    assert_eq!(
        seen(&to_carol(&out)),
        BTreeMap::from([(
            format!("alice@{D}/audio"),
            format!("alice@{D}/audio: unavailable")
        )])
    );
}

/// Starts ad-hoc command `node` and submits `fields`; the note it ends with.
fn adhoc_form(h: &mut Harness, node: &str, fields: &str) -> String {
    let r = adhoc(
        h,
        PHONE,
        &format!("<command xmlns='{CMD}' node='{node}' action='execute'/>"),
    );
    let sid = r
        .get_child("command", CMD)
        .and_then(|c| c.attr("sessionid"))
        .unwrap()
        .to_owned();
    let r = adhoc(h, PHONE, &format!("<command xmlns='{CMD}' node='{node}' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'>{fields}</x></command>"));
    let cmd = r.get_child("command", CMD).unwrap();
    assert_eq!(cmd.attr("status"), Some("completed"), "{}", xml(&r));
    cmd.get_child("note", CMD)
        .map(|n| n.text())
        .unwrap_or_default()
}

#[test]
fn views_and_preview_work_as_ad_hoc_forms_too() {
    let mut h = alice_watched_by_bob_and_carol();
    let note = adhoc_form(
        &mut h,
        "views",
        &format!(
            "<field var='add'><value>colleagues audio show, chat presence</value></field>\
             <field var='who'><value>{CAROL}</value></field><field var='view'><value>colleagues</value></field>"
        ),
    );
    assert!(
        note.contains("View colleagues: audio show, chat presence."),
        "{note}"
    );
    assert!(
        note.contains(&format!("{CAROL} sees your view colleagues now.")),
        "{note}"
    );
    let chat = command(&mut h, PHONE, &format!("preview {CAROL}"));
    let form = adhoc_form(
        &mut h,
        "preview",
        &format!("<field var='jid'><value>{CAROL}</value></field>"),
    );
    assert_eq!(form, chat, "one command, two front ends");
    // A refused form changes nothing.
    let r = adhoc(
        &mut h,
        PHONE,
        &format!("<command xmlns='{CMD}' node='views' action='execute'/>"),
    );
    let sid = r
        .get_child("command", CMD)
        .unwrap()
        .attr("sessionid")
        .unwrap()
        .to_owned();
    let r = adhoc(&mut h, PHONE, &format!("<command xmlns='{CMD}' node='views' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='add'><value>friends chat</value></field><field var='who'><value>bob@localhost</value></field><field var='view'><value>nosuch</value></field></x></command>"));
    assert!(xml(&r).contains("There is no view"), "{}", xml(&r));
    assert!(!command(&mut h, PHONE, "views").contains("• friends"));
}

#[test]
fn a_view_whose_watchers_all_left_tells_a_newcomer_every_later_change() {
    let mut h = alice_watched_by_bob_and_carol();
    command(&mut h, PHONE, "view add colleagues audio show");
    command(&mut h, PHONE, "view example.net colleagues");
    let sub = |who: &str, kind: &str| {
        format!(
            "<presence xmlns='jabber:component:accept' type='{kind}' from='{who}' to='alice@{D}'/>"
        )
    };
    let audio = |out: &[Element], who: &str| {
        out.iter()
            .filter(|e| e.attr("to").is_some_and(|t| t.starts_with(who)))
            .filter(|e| e.attr("from") == Some(AUDIO))
            .map(crate::core::views::describe_presence)
            .next_back()
    };
    let out = h.input(&sub("dave@example.net", "subscribe"));
    assert_eq!(
        audio(&out, "dave@example.net").as_deref(),
        Some(&*format!("{AUDIO}: available, away"))
    );
    h.input(&sub("dave@example.net", "unsubscribe"));
    let video = {
        let mut v = JINGLE_AUDIO.to_vec();
        v.push("urn:xmpp:jingle:apps:rtp:video");
        v
    };
    h.device(
        "phone",
        &format!(
            "<show>dnd</show>{}",
            caps_for("https://conversations.im", &video)
        ),
    );
    h.advance(1_000);
    let out = h.input(&sub("erin@example.net", "subscribe"));
    assert_eq!(
        audio(&out, "erin@example.net").as_deref(),
        Some(&*format!("{AUDIO}: available, do not disturb"))
    );
    h.device(
        "phone",
        &format!(
            "<show>away</show>{}",
            caps_for("https://conversations.im", &video)
        ),
    );
    let out = h.advance(1_000);
    assert_eq!(
        audio(&out, "erin@example.net").as_deref(),
        Some(&*format!("{AUDIO}: available, away")),
        "she hears the change back"
    );
}
