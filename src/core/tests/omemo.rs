//! DESIGN.md section 11: OMEMO keys through the virtual JID, both ways.

use super::*;
use crate::core::omemo::{AXOLOTL, BUNDLES, DEVICELIST};
use crate::core::profile::PUBSUB;

const PROXY_BOB: &str = r"bob\40localhost@unified.localhost";

fn items(node: &str) -> String {
    format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>")
}

fn get(from: &str, to: &str, id: &str, payload: &str) -> String {
    format!("<iq xmlns='jabber:component:accept' type='get' id='{id}' from='{from}' to='{to}'>{payload}</iq>")
}

fn answer(asked: &Element, payload: &str) -> String {
    format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='{}' to='{}'>{payload}</iq>",
        asked.attr("id").unwrap(),
        asked.attr("to").unwrap(),
        asked.attr("from").unwrap()
    )
}

fn list(devices: &str) -> String {
    format!(
        "<pubsub xmlns='{PUBSUB}'><items node='{DEVICELIST}'><item id='current'><list xmlns='{AXOLOTL}'>{devices}</list></item></items></pubsub>"
    )
}

fn alice_online() -> Harness {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    // Her account approves the link: her profile and device list are
    // asked for and followed.
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='subscribed' from='alice@localhost' to='alice@{D}'/>"
    ));
    assert!(out.iter().any(|e| xml(e).contains(DEVICELIST)), "{out:?}");
    h.subscribe_bob();
    h.device("phone", "");
    h.advance(1000);
    h
}

#[test]
fn bob_gets_her_device_list_and_bundles_from_her_account_without_labels() {
    let mut h = alice_online();
    let out = h.input(&get(BOB, &format!("alice@{D}"), "b1", &items(DEVICELIST)));
    assert_eq!(out.len(), 1, "{out:?}");
    let asked = &out[0];
    assert_eq!(asked.attr("to"), Some("alice@localhost"));
    assert_eq!(asked.attr("from"), Some(format!("alice@{D}").as_str()));
    assert!(xml(asked).contains(DEVICELIST));
    let out = h.input(&answer(
        asked,
        &list("<device id='1001' label='Conversations on ph0ne-q7'/><device id='1002'/>"),
    ));
    let got = to_bob(&out);
    assert_eq!(got.len(), 1, "{out:?}");
    let r = got[0];
    assert_eq!(r.attr("id"), Some("b1"));
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(r.attr("from"), Some(format!("alice@{D}").as_str()));
    let text = xml(r);
    assert!(text.contains("1001") && text.contains("1002"), "{text}");
    assert!(!text.contains("label"), "{text}");

    let bundle = format!("{BUNDLES}1001");
    let out = h.input(&get(BOB, &format!("alice@{D}"), "b2", &items(&bundle)));
    let asked = out[0].clone();
    assert_eq!(asked.attr("to"), Some("alice@localhost"));
    let keys = format!(
        "<pubsub xmlns='{PUBSUB}'><items node='{bundle}'><item id='current'><bundle xmlns='{AXOLOTL}'>\
         <signedPreKeyPublic signedPreKeyId='1'>BQx+/key==</signedPreKeyPublic><identityKey>BQid+key==</identityKey>\
         <prekeys><preKeyPublic preKeyId='7'>BQpre+key==</preKeyPublic></prekeys></bundle></item></items></pubsub>"
    );
    let out = h.input(&answer(&asked, &keys));
    let r = to_bob(&out)[0];
    assert_eq!(r.attr("id"), Some("b2"));
    assert!(xml(r).contains("BQpre+key=="));
    // An answer from anyone but her account answers nothing.
    let out = h.input(&get(BOB, &format!("alice@{D}"), "b3", &items(DEVICELIST)));
    let asked = out[0].clone();
    let forged = format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='eve@evil.example' to='alice@{D}'>{}</iq>",
        asked.attr("id").unwrap(),
        list("<device id='666'/>")
    );
    assert!(h.input(&forged).is_empty());
}

#[test]
fn her_device_gets_his_keys_from_his_proxy_jid() {
    let mut h = alice_online();
    let out = h.input(&get(PHONE, PROXY_BOB, "a1", &items(DEVICELIST)));
    assert_eq!(out.len(), 2, "{out:?}");
    // His list's changes will reach her devices too.
    let follow = &out[0];
    assert_eq!(follow.attr("to"), Some("bob@localhost"));
    let sub = follow
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("subscribe", PUBSUB))
        .expect("a subscription");
    assert_eq!(sub.attr("node"), Some(DEVICELIST));
    assert_eq!(sub.attr("jid"), Some(format!("alice@{D}").as_str()));
    let asked = &out[1];
    assert_eq!(asked.attr("to"), Some("bob@localhost"));
    assert_eq!(asked.attr("from"), Some(format!("alice@{D}").as_str()));
    let out = h.input(&answer(asked, &list("<device id='2001'/>")));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].attr("to"), Some(PHONE));
    assert_eq!(out[0].attr("from"), Some(PROXY_BOB));
    assert_eq!(out[0].attr("id"), Some("a1"));
    assert!(xml(&out[0]).contains("2001"));
    // A stranger cannot use a proxy JID to ask anyone anything.
    let out = h.input(&get(
        "eve@evil.example/x",
        PROXY_BOB,
        "e1",
        &items(DEVICELIST),
    ));
    assert_eq!(error_condition(&out[0]), Some("service-unavailable"));
}

#[test]
fn encrypted_messages_pass_untouched_both_ways() {
    let mut h = alice_online();
    let encrypted = format!(
        "<encrypted xmlns='{AXOLOTL}'><header sid='2001'><key rid='1001' prekey='true'>MwohBQ+key==</key><iv>aXY=</iv></header><payload>cGF5bG9hZA==</payload></encrypted>\
         <store xmlns='urn:xmpp:hints'/><encryption xmlns='urn:xmpp:eme:0' namespace='{AXOLOTL}'/>\
         <body>I sent you an OMEMO encrypted message but your client doesn't seem to support that.</body>"
    );
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' id='m1' from='{BOB}' to='alice@{D}'>{encrypted}</message>"
    ));
    let to_her: Vec<&Element> = out
        .iter()
        .filter(|e| e.name() == "message" && e.attr("to") == Some("alice@localhost"))
        .collect();
    assert_eq!(to_her.len(), 1, "{out:?}");
    let got = to_her[0].get_child("encrypted", AXOLOTL).unwrap();
    let sent: Element = format!("<m xmlns='x'>{encrypted}</m>").parse().unwrap();
    assert_eq!(xml(got), xml(sent.get_child("encrypted", AXOLOTL).unwrap()));
    let back = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' id='m2' from='{PHONE}' to='{PROXY_BOB}/pc'>{encrypted}</message>"
    ));
    let to_him = to_bob(&back);
    assert_eq!(to_him.len(), 1, "{back:?}");
    assert_eq!(
        to_him[0].attr("from"),
        Some(format!("alice@{D}/chat").as_str())
    );
    assert_eq!(
        xml(to_him[0].get_child("encrypted", AXOLOTL).unwrap()),
        xml(sent.get_child("encrypted", AXOLOTL).unwrap())
    );
}

#[test]
fn with_encryption_off_no_keys_are_served() {
    let mut h = alice_online();
    let reply = command(&mut h, PHONE, "privacy encryption off");
    assert!(reply.contains("Encryption: off"), "{reply}");
    let out = h.input(&get(BOB, &format!("alice@{D}"), "b1", &items(DEVICELIST)));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(error_condition(&out[0]), Some("item-not-found"));
    let out = h.input(&get(PHONE, PROXY_BOB, "a1", &items(DEVICELIST)));
    assert_eq!(error_condition(&out[0]), Some("service-unavailable"));
    // Kept across a restart.
    h.restart();
    let out = h.input(&get(BOB, &format!("alice@{D}"), "b2", &items(DEVICELIST)));
    assert_eq!(error_condition(&out[0]), Some("item-not-found"));
    command(&mut h, PHONE, "privacy encryption on");
    let out = h.input(&get(BOB, &format!("alice@{D}"), "b3", &items(DEVICELIST)));
    assert_eq!(out[0].attr("to"), Some("alice@localhost"));
}

fn event(from: &str, devices: &str) -> String {
    // As Prosody sends it: the item names the device that published it.
    format!(
        "<message xmlns='jabber:component:accept' type='headline' from='{from}' to='alice@{D}'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='{DEVICELIST}'><item id='current' publisher='{from}/tablet'><list xmlns='{AXOLOTL}'>{devices}</list></item></items></event></message>"
    )
}

#[test]
fn device_list_changes_reach_the_other_side() {
    let mut h = alice_online();
    // She added a device: her server tells her virtual JID (subscribed on
    // connect), and her watchers hear it from alice@D.
    let out = h.input(&event(
        "alice@localhost",
        "<device id='1001'/><device id='1003' label='ph0ne-q7'/>",
    ));
    let got = to_bob(&out);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0].attr("from"), Some(format!("alice@{D}").as_str()));
    assert_eq!(got[0].attr("type"), Some("headline"));
    assert!(xml(got[0]).contains("1003") && !xml(got[0]).contains("label"));
    // Bob's list reaches her only once her devices asked for it.
    let out = h.input(&event("bob@localhost", "<device id='2002'/>"));
    assert!(out.is_empty(), "{out:?}");
    h.input(&get(PHONE, PROXY_BOB, "a1", &items(DEVICELIST)));
    let out = h.input(&event("bob@localhost", "<device id='2002'/>"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].attr("to"), Some("alice@localhost"));
    assert_eq!(out[0].attr("from"), Some(PROXY_BOB));
    assert!(xml(&out[0]).contains("2002"));
    // Anyone else's event is no news.
    assert!(h
        .input(&event("eve@evil.example", "<device id='6'/>"))
        .is_empty());
}

#[test]
fn a_new_watcher_hears_her_devices_as_a_servers_pep_would_tell_him() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='subscribed' from='alice@localhost' to='alice@{D}'/>"
    ));
    let asked = out
        .iter()
        .find(|e| e.attr("type") == Some("get") && xml(e).contains(DEVICELIST))
        .expect("her device list asked for")
        .clone();
    h.input(&answer(
        &asked,
        &list("<device id='1001' label='ph0ne-q7'/>"),
    ));
    let out = h.subscribe_bob();
    let events: Vec<&Element> = to_bob(&out)
        .into_iter()
        .filter(|e| e.name() == "message" && xml(e).contains(DEVICELIST))
        .collect();
    assert_eq!(events.len(), 1, "{out:?}");
    assert_eq!(events[0].attr("from"), Some(format!("alice@{D}").as_str()));
    assert!(xml(events[0]).contains("1001") && !xml(events[0]).contains("label"));
    // A change her server tells is what the next watcher hears.
    h.input(&event(
        "alice@localhost",
        "<device id='1001'/><device id='1002'/>",
    ));
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='subscribe' from='carol@example.net' to='alice@{D}'/>"
    ));
    assert!(
        out.iter()
            .any(|e| e.attr("to") == Some("carol@example.net") && xml(e).contains("1002")),
        "{out:?}"
    );
}
