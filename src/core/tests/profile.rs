//! DESIGN.md section 11: her name and face, mirrored from her account.

use super::*;
use crate::core::profile::{AVATAR_DATA, AVATAR_METADATA, NICK, PUBSUB, PUBSUB_EVENT, VCARD};
use base64::Engine;
use sha1::Digest;

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn png_hash() -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(PNG)
        .unwrap();
    sha1::Sha1::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Her card as her server keeps it: it names her account and a device.
fn her_card() -> String {
    format!(
        "<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>Alice</NICKNAME>\
         <JABBERID>alice@localhost</JABBERID><EMAIL><USERID>alice@localhost</USERID></EMAIL>\
         <DESC>usually on ph0ne-q7</DESC><NOTE>my old lapt0p-x2</NOTE>\
         <PHOTO><TYPE>image/png</TYPE><BINVAL>{PNG}</BINVAL></PHOTO></vCard>"
    )
}

fn vcard_query(out: &[Element]) -> Option<&Element> {
    out.iter()
        .find(|e| e.name() == "iq" && e.has_child("vCard", VCARD))
}

fn ask(h: &mut Harness, from: &str, payload: &str) -> Element {
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='get' id='p1' from='{from}' to='alice@{D}'>{payload}</iq>"
    ));
    assert_eq!(out.len(), 1, "{out:?}");
    out.into_iter().next().unwrap()
}

/// As [`ask`], without the harness's leak check: for a text that is not
/// a secret yet.
fn unchecked_ask(h: &mut Harness, from: &str, payload: &str) -> Element {
    let iq: Element = format!(
        "<iq xmlns='jabber:component:accept' type='get' id='p0' from='{from}' to='alice@{D}'>{payload}</iq>"
    )
    .parse()
    .unwrap();
    h.core.handle_stanza(h.now, iq);
    h.core.poll_transmit().expect("an answer")
}

/// Alice's phone announces a photo; her account answers our request
/// with her card. Returns what that answer sent.
fn alice_with_a_photo() -> (Harness, Vec<Element>) {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    h.subscribe_bob();
    let update = format!(
        "<x xmlns='vcard-temp:x:update'><photo>{}</photo></x>",
        png_hash()
    );
    let out = h.device("ph0ne-q7", &update);
    let q = vcard_query(&out).expect("her card is asked for").clone();
    assert_eq!(q.attr("to"), Some("alice@localhost"));
    assert_eq!(q.attr("from"), Some(format!("alice@{D}").as_str()));
    // Her other devices announce the same hash: asked once.
    let again = h.device("tablet", &update);
    assert!(vcard_query(&again).is_none(), "{again:?}");
    let mut out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='alice@localhost' to='alice@{D}'>{}</iq>",
        q.attr("id").unwrap(),
        her_card()
    ));
    out.extend(h.advance(1000));
    (h, out)
}

#[test]
fn watchers_get_her_card_without_her_account_or_devices() {
    let (mut h, _) = alice_with_a_photo();
    // (Before her laptop is a device, its name is no secret: not Bob's
    // to check here.)
    let r = unchecked_ask(&mut h, BOB, "<vCard xmlns='vcard-temp'/>");
    assert_eq!(r.attr("type"), Some("result"));
    let card = r.get_child("vCard", VCARD).expect("her card");
    assert_eq!(card.get_child("FN", VCARD).unwrap().text(), "Alice Liddell");
    assert_eq!(
        card.get_child("JABBERID", VCARD).unwrap().text(),
        format!("alice@{D}")
    );
    assert!(
        card.get_child("EMAIL", VCARD).is_none(),
        "names her account"
    );
    assert!(card.get_child("DESC", VCARD).is_none(), "names her phone");
    let binval = card
        .get_child("PHOTO", VCARD)
        .and_then(|p| p.get_child("BINVAL", VCARD))
        .unwrap()
        .text();
    assert_eq!(binval, PNG);
    assert_eq!(
        card.get_child("NOTE", VCARD).map(|n| n.text()).as_deref(),
        Some("my old lapt0p-x2")
    );
    // A device that comes online later is not named either.
    h.device("lapt0p-x2", "");
    let r = ask(&mut h, BOB, "<vCard xmlns='vcard-temp'/>");
    let card = r.get_child("vCard", VCARD).expect("her card");
    assert!(card.get_child("NOTE", VCARD).is_none(), "{}", xml(&r));
    assert!(card.get_child("FN", VCARD).is_some());
    // Anyone may read a card, as from a server; not someone she blocked.
    let r = ask(&mut h, "eve@evil.example/x", "<vCard xmlns='vcard-temp'/>");
    assert_eq!(r.attr("type"), Some("result"));
    command(&mut h, PHONE, "block eve@evil.example");
    let r = ask(&mut h, "eve@evil.example/x", "<vCard xmlns='vcard-temp'/>");
    assert_eq!(error_condition(&r), Some("service-unavailable"));
}

#[test]
fn her_photo_reaches_watchers_as_a_presence_hash_and_pep_events() {
    let (_, out) = alice_with_a_photo();
    let hash = png_hash();
    let bob = to_bob(&out);
    // Every available class again, now with the photo hash.
    let chat = from_class(&bob, "chat").expect("chat again with her photo");
    let photo = chat
        .get_child("x", "vcard-temp:x:update")
        .and_then(|x| x.get_child("photo", "vcard-temp:x:update"))
        .map(|p| p.text());
    assert_eq!(photo, Some(hash.clone()));
    // XEP-0163 events: avatar metadata and nick.
    let events: Vec<&Element> = bob
        .iter()
        .copied()
        .filter(|e| e.name() == "message" && e.attr("type") == Some("headline"))
        .collect();
    let nodes: Vec<&str> = events
        .iter()
        .filter_map(|e| e.get_child("event", PUBSUB_EVENT))
        .filter_map(|e| e.get_child("items", PUBSUB_EVENT))
        .filter_map(|i| i.attr("node"))
        .collect();
    assert_eq!(nodes, [AVATAR_METADATA, NICK]);
    assert!(events
        .iter()
        .all(|e| e.attr("from") == Some(format!("alice@{D}").as_str())));
    assert!(xml(events[0]).contains(&hash));
    assert!(xml(events[1]).contains(">Alice</nick>"));
}

#[test]
fn pep_items_answer_avatar_and_nick_requests() {
    let (mut h, _) = alice_with_a_photo();
    let hash = png_hash();
    let items = |node: &str, id: Option<&str>| {
        let item = id.map(|i| format!("<item id='{i}'/>")).unwrap_or_default();
        format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'>{item}</items></pubsub>")
    };
    let r = ask(&mut h, BOB, &items(AVATAR_METADATA, None));
    let info = r
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("items", PUBSUB))
        .and_then(|i| i.get_child("item", PUBSUB))
        .and_then(|i| i.get_child("metadata", AVATAR_METADATA))
        .and_then(|m| m.get_child("info", AVATAR_METADATA))
        .expect("metadata");
    assert_eq!(info.attr("id"), Some(hash.as_str()));
    assert_eq!(info.attr("type"), Some("image/png"));
    let r = ask(&mut h, BOB, &items(AVATAR_DATA, Some(&hash)));
    assert!(xml(&r).contains(PNG));
    let r = ask(&mut h, BOB, &items(AVATAR_DATA, Some("0000")));
    assert_eq!(error_condition(&r), Some("item-not-found"));
    let r = ask(&mut h, BOB, &items(NICK, None));
    assert!(xml(&r).contains(">Alice</nick>"), "{}", xml(&r));
    let r = ask(&mut h, BOB, &items("urn:xmpp:omemo:2:devices", None));
    assert_eq!(error_condition(&r), Some("item-not-found"));
    // Her bare JID says it has PEP (XEP-0163 §6.1).
    let r = ask(
        &mut h,
        BOB,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(xml(&r).contains("type='pep'"), "{}", xml(&r));
}

#[test]
fn her_card_is_served_after_a_restart_and_relearned() {
    let (mut h, _) = alice_with_a_photo();
    // Her laptop, named in her card, was a device of hers before the
    // restart: its record makes it a secret after it too.
    h.device("lapt0p-x2", "");
    h.device_gone("lapt0p-x2");
    let out = h.restart();
    // Asked again on connect, and served from the store meanwhile.
    assert!(vcard_query(&out).is_some(), "{out:?}");
    let r = ask(&mut h, BOB, "<vCard xmlns='vcard-temp'/>");
    assert_eq!(r.attr("type"), Some("result"));
    assert!(xml(&r).contains("Alice Liddell"));
    assert!(!xml(&r).contains("NOTE"), "{}", xml(&r));
    // Her presence after the restart carries the hash at once.
    let out = h.device("phone", "");
    let out = [out, h.advance(1000)].concat();
    let chat = from_class(&to_bob(&out), "chat")
        .map(xml)
        .unwrap_or_default();
    assert!(chat.contains(&png_hash()), "{chat}");
}

#[test]
fn without_a_card_nothing_is_invented() {
    let mut h = Harness::new(SubscriptionPolicy::Open);
    h.subscribe_bob();
    let out = h.device(
        "phone",
        "<x xmlns='vcard-temp:x:update'><photo>abc</photo></x>",
    );
    let q = vcard_query(&out).unwrap().clone();
    h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='error' id='{}' from='alice@localhost' to='alice@{D}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        q.attr("id").unwrap()
    ));
    let r = ask(&mut h, BOB, "<vCard xmlns='vcard-temp'/>");
    assert_eq!(error_condition(&r), Some("item-not-found"));
    // An answer from anyone but her account is not her card.
    let out = h.device(
        "phone",
        "<x xmlns='vcard-temp:x:update'><photo>def</photo></x>",
    );
    let q = vcard_query(&out).unwrap().clone();
    h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='eve@evil.example' to='alice@{D}'>{}</iq>",
        q.attr("id").unwrap(),
        her_card()
    ));
    let r = ask(&mut h, BOB, "<vCard xmlns='vcard-temp'/>");
    assert_eq!(error_condition(&r), Some("item-not-found"));
}

#[test]
fn her_requests_from_her_virtual_jid_carry_her_name() {
    let (mut h, _) = alice_with_a_photo();
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>contact add dave@example.org</body></message>"
    ));
    let ask = out
        .iter()
        .find(|e| e.attr("to") == Some("dave@example.org") && e.attr("type") == Some("subscribe"))
        .expect("her request to dave");
    assert_eq!(ask.attr("from"), Some(format!("alice@{D}").as_str()));
    assert_eq!(
        ask.get_child("nick", NICK).map(|n| n.text()).as_deref(),
        Some("Alice")
    );
}

#[test]
fn her_vcard4_is_asked_of_her_account_and_scrubbed() {
    let (mut h, _) = alice_with_a_photo();
    let ask = format!(
        "<iq xmlns='jabber:component:accept' type='get' id='v4' from='{BOB}' to='alice@{D}'><pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:vcard4'/></pubsub></iq>"
    );
    let out = h.input(&ask);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].attr("to"), Some("alice@localhost"));
    let card = "<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>Alice Liddell</text></fn>\
                <impp><uri>xmpp:alice@localhost</uri></impp><note><text>mostly ph0ne-q7</text></note>\
                <url><uri>https://alice.example</uri></url></vcard>";
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='alice@localhost' to='alice@{D}'><pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:vcard4'><item id='current'>{card}</item></items></pubsub></iq>",
        out[0].attr("id").unwrap()
    ));
    let r = to_bob(&out)[0];
    assert_eq!(r.attr("id"), Some("v4"));
    let text = xml(r);
    assert!(
        text.contains("Alice Liddell") && text.contains("https://alice.example"),
        "{text}"
    );
    assert!(!text.contains("impp") && !text.contains("note"), "{text}");
}

#[test]
fn her_client_sees_her_contacts_name_and_face_through_his_proxy_jid() {
    let (mut h, _) = alice_with_a_photo();
    let proxy = format!(r"bob\40localhost@{D}");
    for (n, payload) in [
        "<vCard xmlns='vcard-temp'/>".to_owned(),
        format!("<pubsub xmlns='{PUBSUB}'><items node='{AVATAR_METADATA}'/></pubsub>"),
        format!("<pubsub xmlns='{PUBSUB}'><items node='{NICK}'/></pubsub>"),
    ]
    .iter()
    .enumerate()
    {
        let out = h.input(&format!(
            "<iq xmlns='jabber:component:accept' type='get' id='c{n}' from='{PHONE}' to='{proxy}'>{payload}</iq>"
        ));
        assert_eq!(out.len(), 1, "{out:?}");
        let asked = &out[0];
        assert_eq!(asked.attr("to"), Some("bob@localhost"), "{payload}");
        assert_eq!(asked.attr("from"), Some(format!("alice@{D}").as_str()));
        let out = h.input(&format!(
            "<iq xmlns='jabber:component:accept' type='result' id='{}' from='bob@localhost' to='alice@{D}'><vCard xmlns='vcard-temp'><FN>Bob Builder</FN></vCard></iq>",
            asked.attr("id").unwrap()
        ));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].attr("to"), Some(PHONE));
        assert_eq!(out[0].attr("from"), Some(proxy.as_str()));
        assert_eq!(out[0].attr("id"), Some(format!("c{n}").as_str()));
        assert!(xml(&out[0]).contains("Bob Builder"));
    }
    // Nobody else may use his proxy JID to read him, nor ask him anything
    // else through it.
    let r = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='get' id='e1' from='eve@evil.example/x' to='{proxy}'><vCard xmlns='vcard-temp'/></iq>"
    ));
    assert_eq!(error_condition(&r[0]), Some("service-unavailable"));
    let r = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='get' id='e2' from='{PHONE}' to='{proxy}'><pubsub xmlns='{PUBSUB}'><items node='storage:bookmarks'/></pubsub></iq>"
    ));
    assert_eq!(error_condition(&r[0]), Some("service-unavailable"));
}

#[test]
fn a_new_watcher_hears_her_avatar_and_nick_at_once() {
    let (mut h, _) = alice_with_a_photo();
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='subscribe' from='carol@example.net' to='alice@{D}'/>"
    ));
    let nodes: Vec<&str> = out
        .iter()
        .filter(|e| e.attr("to") == Some("carol@example.net") && e.name() == "message")
        .filter_map(|e| e.get_child("event", PUBSUB_EVENT))
        .filter_map(|e| e.get_child("items", PUBSUB_EVENT))
        .filter_map(|i| i.attr("node"))
        .collect();
    assert_eq!(nodes, [AVATAR_METADATA, NICK], "{out:?}");
}

#[test]
fn a_change_of_her_nick_on_her_account_is_relearned() {
    let (mut h, _) = alice_with_a_photo();
    // Her server tells her virtual JID (subscribed to the node) that her
    // nick changed: her card is asked for again.
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='headline' from='alice@localhost' to='alice@{D}'><event xmlns='{PUBSUB_EVENT}'><items node='{NICK}'><item id='current' publisher='alice@localhost/ph0ne-q7'><nick xmlns='{NICK}'>Ally</nick></item></items></event></message>"
    ));
    let q = vcard_query(&out).expect("her card asked again").clone();
    let card = her_card().replace("<NICKNAME>Alice</NICKNAME>", "<NICKNAME>Ally</NICKNAME>");
    let mut out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='alice@localhost' to='alice@{D}'>{card}</iq>",
        q.attr("id").unwrap()
    ));
    out.extend(h.advance(1000));
    let nick = to_bob(&out)
        .into_iter()
        .find(|e| xml(e).contains(NICK))
        .map(xml)
        .unwrap_or_default();
    assert!(nick.contains(">Ally</nick>"), "{out:?}");
    // The same event from anyone else asks nothing.
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='headline' from='eve@evil.example' to='alice@{D}'><event xmlns='{PUBSUB_EVENT}'><items node='{NICK}'/></event></message>"
    ));
    assert!(vcard_query(&out).is_none());
}

#[test]
fn the_name_she_sets_is_the_one_her_contacts_see() {
    let (mut h, _) = alice_with_a_photo();
    // (Her card's note names her laptop: a secret once it is a device.)
    h.device("lapt0p-x2", "");
    let reply = command(&mut h, PHONE, "name");
    assert!(reply.contains("\"Alice\", your account's name"), "{reply}");
    // Her watchers hear it as her nick at once.
    let out = h.input(&format!(
        "<message xmlns='jabber:component:accept' type='chat' from='{PHONE}' to='{D}'><body>name Alice L.</body></message>"
    ));
    let heard = to_bob(&out)
        .into_iter()
        .find(|e| xml(e).contains(NICK))
        .map(xml)
        .unwrap_or_default();
    assert!(heard.contains(">Alice L.</nick>"), "{out:?}");
    // Her card, her nick item and her requests say it; the rest of her
    // card (her photo) stays.
    let r = ask(&mut h, BOB, "<vCard xmlns='vcard-temp'/>");
    let card = r.get_child("vCard", VCARD).unwrap();
    assert_eq!(card.get_child("FN", VCARD).unwrap().text(), "Alice L.");
    assert!(card.get_child("PHOTO", VCARD).is_some());
    let r = ask(
        &mut h,
        BOB,
        &format!("<pubsub xmlns='{PUBSUB}'><items node='{NICK}'/></pubsub>"),
    );
    assert!(xml(&r).contains(">Alice L.</nick>"));
    // Kept across a restart, and reset to her account's.
    h.restart();
    let r = ask(&mut h, BOB, "<vCard xmlns='vcard-temp'/>");
    assert!(xml(&r).contains("Alice L."), "{}", xml(&r));
    let reply = command(&mut h, PHONE, "name reset");
    assert!(reply.contains("your account's name"), "{reply}");
    let r = ask(&mut h, BOB, "<vCard xmlns='vcard-temp'/>");
    assert!(xml(&r).contains("Alice Liddell"), "{}", xml(&r));
    // A name that names her account or a device is refused.
    let reply = command(&mut h, PHONE, "name alice@localhost");
    assert!(reply.contains("never see"), "{reply}");
    let reply = command(&mut h, PHONE, "name ph0ne-q7");
    assert!(reply.contains("never see"), "{reply}");
}

#[test]
fn a_request_held_for_his_name_goes_out_on_a_reconnect_too() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.device("phone", "");
    h.advance(200);
    let out = h.subscribe_bob();
    assert!(vcard_query(&out).is_some());
    assert!(!out.iter().any(|e| e.attr("type") == Some("subscribe")));
    h.core.handle_connected(h.now);
    let out = h.drain();
    let ask = out
        .iter()
        .find(|e| e.attr("type") == Some("subscribe") && e.attr("to") == Some("alice@localhost"))
        .expect("his request, not lost with the stream");
    assert_eq!(
        ask.get_child("nick", NICK).map(|n| n.text()).as_deref(),
        Some("bob@localhost")
    );
    // A card whose name names her device is not shown as his.
    let out = h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='subscribe' from='carol@example.net' to='alice@{D}'/>"
    ));
    let q = vcard_query(&out).unwrap().clone();
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='carol@example.net' to='alice@{D}'><vCard xmlns='vcard-temp'><FN>alice@localhost</FN></vCard></iq>",
        q.attr("id").unwrap()
    ));
    let ask = out
        .iter()
        .find(|e| e.attr("type") == Some("subscribe"))
        .unwrap();
    assert_eq!(
        ask.get_child("nick", NICK).map(|n| n.text()).as_deref(),
        Some("carol@example.net"),
        "his address, not a name that is her account"
    );
}

#[test]
fn a_request_withdrawn_while_his_name_is_asked_for_is_never_shown() {
    let mut h = Harness::new(SubscriptionPolicy::Ask);
    h.device("phone", "");
    h.advance(200);
    let out = h.subscribe_bob();
    let q = vcard_query(&out).unwrap().clone();
    h.input(&format!(
        "<presence xmlns='jabber:component:accept' type='unsubscribe' from='bob@localhost' to='alice@{D}'/>"
    ));
    let out = h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{}' from='bob@localhost' to='alice@{D}'><vCard xmlns='vcard-temp'><FN>Bob</FN></vCard></iq>",
        q.attr("id").unwrap()
    ));
    assert!(
        !out.iter().any(|e| e.attr("type") == Some("subscribe")),
        "{out:?}"
    );
}
