//! Presence, watchers and linking (DESIGN.md sections 1-4): class presences, subscriptions, caps, restarts, disco.

use super::*;

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
    // Probe, card, her device list (to tell new watchers), the four
    // subscriptions, and whether her server pushes to devices asleep.
    assert_eq!(out.len(), 8, "{out:?}");
    assert!(out[7].has_child("query", ns::DISCO_INFO), "{out:?}");
    assert_eq!(out[0].attr("type"), Some("probe"));
    // And her card, for the profile her contacts see, and the changes of
    // her OMEMO device list and profile.
    assert!(out[1].has_child("vCard", "vcard-temp"), "{out:?}");
    assert_eq!(subscribed_nodes(&out), followed());
}

/// The PEP nodes `out` subscribes her virtual JID to.
fn subscribed_nodes(out: &[Element]) -> BTreeSet<String> {
    out.iter()
        .filter_map(|e| e.get_child("pubsub", "http://jabber.org/protocol/pubsub"))
        .filter_map(|p| p.get_child("subscribe", "http://jabber.org/protocol/pubsub"))
        .filter_map(|s| s.attr("node").map(str::to_owned))
        .collect()
}

/// What her virtual JID follows on her account: her OMEMO device list
/// and what her name and face are made of.
fn followed() -> BTreeSet<String> {
    [
        "eu.siacs.conversations.axolotl.devicelist",
        "http://jabber.org/protocol/nick",
        "urn:xmpp:vcard4",
        "urn:xmpp:avatar:metadata",
    ]
    .map(str::to_owned)
    .into()
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
    // Probe, card, her device list (to tell new watchers), the four
    // subscriptions, and whether her server pushes to devices asleep.
    assert_eq!(out.len(), 8, "{out:?}");
    assert!(out[7].has_child("query", ns::DISCO_INFO), "{out:?}");
    assert_eq!(out[0].attr("type"), Some("probe"));
    assert!(out[1].has_child("vCard", "vcard-temp"), "{out:?}");
    assert_eq!(subscribed_nodes(&out), followed());
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
    // His request named him by nothing: his card is asked for first.
    let types: Vec<_> = out.iter().map(|e| e.attr("type")).collect();
    assert_eq!(types, [Some("unsubscribe"), Some("get")]);
    let card = &out[1];
    assert_eq!(card.attr("to"), Some("bob@localhost"));
    assert!(card.has_child("vCard", "vcard-temp"));
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='bob@localhost' to='alice@{D}'><vCard xmlns='vcard-temp'><FN>Bob Builder</FN></vCard></iq>",
        card.attr("id").unwrap()
    ));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].attr("type"), Some("subscribe"));
    assert_eq!(
        out[0]
            .get_child("nick", "http://jabber.org/protocol/nick")
            .map(|n| n.text())
            .as_deref(),
        Some("Bob Builder"),
        "her client shows the name on his card"
    );
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
    // He asks again: she is asked again (no stale answer counts), once
    // his card had its time to name him.
    let mut out = h.subscribe_bob();
    out.extend(h.advance(3_000));
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
        (format!("<iq xmlns='jabber:component:accept' type='get' id='3' from='bob@localhost/pc' to='alice@{D}'><query xmlns='jabber:iq:last'/></iq>"), "service-unavailable"),
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
    assert_eq!(h.core.owners[0].devices.live.len(), 8);
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
