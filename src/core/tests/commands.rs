//! Commands by chat and ad-hoc (DESIGN.md section 8), self-registration.

use super::*;

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
        restarted.owners.iter().last().map(|o| o.name.as_str()),
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
        Core::new(config(SubscriptionPolicy::Ask), stored).owners[0]
            .watchers
            .blocked,
        vec!["evil.example".to_string()]
    );
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
            candidates: CandidatePolicy::RelayOnly,
            omemo: true,
            display_name: None,
            views: Default::default(),
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
            .ring_plan(Time(utc_2030), OwnerId::nth(0), 1, &bob)
            .steps
            .is_empty(),
        "09:30 in Auckland: busy"
    );
    assert_eq!(
        h.core
            .ring_plan(Time(utc_2030 + 3_600_000), OwnerId::nth(0), 1, &bob)
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
        ("views", "Views"),
        ("preview", "What a contact sees of me"),
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

/// Giving the address up removes her: she is no longer counted or
/// listed, and nothing of hers stays a secret the guard keeps (issue 15:
/// real removal). Taken back by a refusing store, she is back whole.
#[test]
fn an_owner_who_unregisters_is_no_longer_counted_or_kept() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let before = h.core.footprint().owners;
    command(&mut h, "carol@localhost/pc", "register carol");
    h.input(&format!("<presence xmlns='jabber:component:accept' from='carol@localhost/c4r0l-desk' to='carol@{D}'/>"));
    assert_eq!(h.core.footprint().owners, before + 1);
    assert!(h
        .core
        .out
        .secrets
        .names_secret("c4r0l-desk", None)
        .is_some());
    assert!(command(&mut h, "carol@localhost/pc", "unregister confirm").contains("gone"));
    assert_eq!(h.core.footprint().owners, before);
    assert_eq!(h.core.admin_view(h.now, 10).owners.len(), before);
    assert!(h
        .core
        .out
        .secrets
        .names_secret("c4r0l-desk", None)
        .is_none());
    assert!(h
        .core
        .out
        .secrets
        .account_owner(&BareJid::new("carol@localhost").unwrap())
        .is_none());
    // Registering again makes a new owner, with nothing of the old one.
    assert!(command(&mut h, "carol@localhost/pc", "register carol").contains("You are now carol@"));
    assert_eq!(h.core.footprint().owners, before + 1);
}

/// Opens the ad-hoc form `node` as `from` and submits `fields`; the reply's
/// command element.
fn submit_form(h: &mut Harness, from: &str, node: &str, fields: &str) -> Element {
    let r = adhoc(
        h,
        from,
        &format!("<command xmlns='{CMD}' node='{node}' action='execute'/>"),
    );
    let sid = r
        .get_child("command", CMD)
        .and_then(|c| c.attr("sessionid"))
        .expect("a session")
        .to_owned();
    let r = adhoc(h, from, &format!("<command xmlns='{CMD}' node='{node}' sessionid='{sid}' action='complete'><x xmlns='jabber:x:data' type='submit'>{fields}</x></command>"));
    r.get_child("command", CMD).expect("a command").clone()
}

/// Issue 15: a form stands for several commands, applied all or none. One
/// of them refused, the form comes back with why, and nothing changed.
#[test]
fn a_form_applies_all_of_its_commands_or_none() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.subscribe_bob();
    let cmd = submit_form(
        &mut h,
        PHONE,
        "watchers",
        "<field var='approve'><value>bob@localhost</value></field><field var='deny'><value>nobody@localhost</value></field>",
    );
    assert_eq!(cmd.attr("status"), Some("executing"), "{cmd:?}");
    let note = cmd.get_child("note", CMD).expect("a note");
    assert_eq!(note.attr("type"), Some("error"));
    assert!(note.text().contains("nobody@localhost"), "{}", note.text());
    assert_eq!(
        h.core.owners[0]
            .watchers
            .get(&BareJid::new("bob@localhost").unwrap()),
        Some(&WatcherState::Pending),
        "Bob was not approved by a refused form"
    );
    // Both fine: both applied, each said.
    let cmd = submit_form(
        &mut h,
        PHONE,
        "watchers",
        "<field var='approve'><value>bob@localhost</value></field><field var='block'><value>evil.example</value></field>",
    );
    assert_eq!(cmd.attr("status"), Some("completed"), "{cmd:?}");
    let note = cmd.get_child("note", CMD).unwrap().text();
    assert!(
        note.contains("now sees your presence") && note.contains("evil.example is blocked"),
        "{note}"
    );
}

/// Issue 15: the rules form deletes the rule by the number it showed,
/// even when it adds one in the same submission (adding renumbers).
#[test]
fn the_rules_form_deletes_the_rule_it_showed() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    command(&mut h, PHONE, "rule add from one.example busy");
    command(&mut h, PHONE, "rule add from two.example busy");
    // Rule 1 is two.example, rule 2 one.example.
    let cmd = submit_form(
        &mut h,
        PHONE,
        "rules",
        "<field var='add'><value>from three.example busy</value></field><field var='delete'><value>2</value></field>",
    );
    assert_eq!(cmd.attr("status"), Some("completed"), "{cmd:?}");
    let rules = command(&mut h, PHONE, "rules");
    assert!(
        rules.contains("three.example") && rules.contains("two.example"),
        "{rules}"
    );
    assert!(!rules.contains("one.example"), "{rules}");
}

/// Issue 16: she adds a contact from her virtual identity. The proxy JID
/// asks her accounts (named as she said), he is asked from her virtual
/// JID, and once he approves she sees him like any contact.
#[test]
fn contact_add_puts_him_in_her_roster_and_asks_him_from_her_address() {
    let mut h = alice_with_phone_and_laptop();
    let proxy = format!(r"carol\40example.net@{D}");
    let out = h.input(&format!("<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>contact add carol@example.net Carol Smith</body></message>"));
    let ask = out
        .iter()
        .find(|e| e.attr("to") == Some("alice@localhost") && e.attr("type") == Some("subscribe"))
        .expect("a request from his proxy JID to her account");
    assert_eq!(ask.attr("from"), Some(proxy.as_str()));
    assert_eq!(
        ask.get_child("nick", "http://jabber.org/protocol/nick")
            .map(Element::text)
            .as_deref(),
        Some("Carol Smith")
    );
    let to_carol = out
        .iter()
        .find(|e| e.attr("to") == Some("carol@example.net"))
        .expect("Carol is asked");
    assert_eq!(to_carol.attr("type"), Some("subscribe"));
    assert_eq!(to_carol.attr("from"), Some(format!("alice@{D}").as_str()));
    assert!(h.ops.contains(&StoreOp::Contact {
        owner: "alice".into(),
        contact: BareJid::new("carol@example.net").unwrap(),
        state: Some(ContactState::Asked)
    }));
    let reply = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE))
        .and_then(|m| m.get_child("body", ns::COMPONENT))
        .map(Element::text)
        .expect("a reply");
    assert!(reply.contains(&proxy), "{reply}");
    // Her client accepts and subscribes back; Carol approves; her
    // presence reaches Alice from the proxy full JID.
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='alice@localhost' to='{proxy}'/>"));
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribe' from='alice@localhost' to='{proxy}'/>"));
    h.input(&format!("<presence xmlns='jabber:component:accept' type='subscribed' from='carol@example.net' to='alice@{D}'/>"));
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' from='carol@example.net/mobile' to='alice@{D}'/>"
    ));
    assert!(
        out.iter().any(|e| e.attr("to") == Some("alice@localhost")
            && e.attr("from") == Some(format!("{proxy}/mobile").as_str())),
        "{out:?}"
    );
    // What cannot be a contact is refused, and nothing is sent.
    for (cmd, why) in [
        ("contact add alice@localhost", "your own accounts"),
        ("contact add example.net", "not someone's account"),
        (
            &format!("contact add bob@{D}") as &str,
            "not someone's account",
        ),
        ("contact add", "contact add bob@example.org"),
    ] {
        let reply = command(&mut h, PHONE, cmd);
        assert!(reply.contains(why), "{cmd}: {reply}");
    }
}

/// Issue 16: the same through the ad-hoc form.
#[test]
fn the_contact_form_adds_a_contact() {
    let mut h = alice_with_phone_and_laptop();
    let cmd = submit_form(
        &mut h,
        PHONE,
        "contact",
        "<field var='jid'><value>carol@example.net</value></field><field var='name'><value>Carol</value></field>",
    );
    assert_eq!(cmd.attr("status"), Some("completed"), "{cmd:?}");
    assert!(h.core.owners[0]
        .contacts
        .contains_key(&BareJid::new("carol@example.net").unwrap()));
    let cmd = submit_form(
        &mut h,
        PHONE,
        "contact",
        "<field var='jid'><value>alice@localhost</value></field>",
    );
    assert_eq!(
        cmd.attr("status"),
        Some("executing"),
        "refused, the form again"
    );
}
