//! Issue 16: SOCKS5 file transfers (XEP-0260) meet at the component's own
//! streamhost, both ways, each end negotiating with us under the JIDs it
//! knows.

use super::*;
use crate::core::jingle::JINGLE;
use crate::core::{dst_addr, StreamhostAddr, StreamhostOp};

const S5B: &str = "urn:xmpp:jingle:transports:s5b:1";
const FT: &[&str] = &[
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:file-transfer:5",
    "urn:xmpp:jingle:transports:s5b:1",
    "urn:xmpp:jingle:transports:ibb:1",
];

/// Alice's phone and laptop take files; Bob watches; our streamhost is
/// at files.unified.localhost:7625.
fn alice_with_streamhost() -> Harness {
    let mut cfg = config(SubscriptionPolicy::Open);
    cfg.owners[0].candidates = CandidatePolicy::RelayOnly;
    cfg.streamhost = Some(StreamhostAddr {
        host: "files.unified.localhost".into(),
        port: 7625,
    });
    let mut h = Harness::with(cfg, Stored::default());
    h.subscribe_bob();
    for res in ["phone", "laptop"] {
        let out = h.device(res, &caps_for("https://dino.im", FT));
        // The second device's caps are known from the first.
        if let Some(q) = out.iter().find(|e| e.name() == "iq").cloned() {
            h.answer_disco(&q, FT);
        }
    }
    h.advance(200);
    h
}

/// A file offer's content with `candidates` in its SOCKS5 transport.
fn offer(candidates: &str) -> String {
    format!(
        "<content creator='initiator' name='f' senders='initiator'><description xmlns='urn:xmpp:jingle:apps:file-transfer:5'><file><name>a</name><size>3</size></file></description>\
         <transport xmlns='{S5B}' sid='T1' mode='tcp' dstaddr='972b7bf47291ca609517f67f86b5081086052dad'>{candidates}</transport></content>"
    )
}

/// Her device's own candidates: a direct one (her address, her device)
/// and a mediated one of her server's proxy.
fn her_candidates() -> String {
    format!(
        "<candidate cid='c1' host='192.0.2.44' jid='{PHONE}' port='5086' priority='8257636' type='direct'/>\
         <candidate cid='c2' host='proxy.localhost' jid='proxy.localhost' port='7777' priority='655360' type='proxy'/>"
    )
}

fn his_candidates() -> String {
    format!("<candidate cid='b1' host='198.51.100.7' jid='{BOB}' port='6000' priority='8257636' type='direct'/>")
}

/// The one SOCKS5 transport of a Jingle IQ.
fn transport(iq: &Element) -> &Element {
    iq.get_child("jingle", JINGLE)
        .and_then(|j| j.get_child("content", JINGLE))
        .and_then(|c| c.get_child("transport", S5B))
        .expect("a SOCKS5 transport")
}

/// Our candidate in `iq`: the only one, ours, and its cid.
fn our_candidate(iq: &Element) -> String {
    let t = transport(iq);
    let candidates: Vec<&Element> = t.children().filter(|c| c.name() == "candidate").collect();
    assert_eq!(candidates.len(), 1, "{}", xml(iq));
    let c = candidates[0];
    assert_eq!(
        (
            c.attr("jid"),
            c.attr("host"),
            c.attr("port"),
            c.attr("type")
        ),
        (
            Some(D),
            Some("files.unified.localhost"),
            Some("7625"),
            Some("proxy")
        ),
        "{}",
        xml(iq)
    );
    c.attr("cid").unwrap().to_owned()
}

fn s5b_info(from: &str, to: &str, id: &str, sid: &str, inner: &str) -> String {
    jingle_from(
        from,
        to,
        id,
        "transport-info",
        sid,
        &format!("<content creator='initiator' name='f'><transport xmlns='{S5B}' sid='T1'>{inner}</transport></content>"),
    )
}

/// The SOCKS5 child (`candidate-error`, `activated`, ...) of each
/// transport-info in `out` to `to`, with its cid.
fn infos_to(out: &[Element], to: &str) -> Vec<(String, Option<String>)> {
    out.iter()
        .filter(|e| e.attr("to") == Some(to))
        .filter_map(|e| e.get_child("jingle", JINGLE))
        .filter(|j| j.attr("action") == Some("transport-info"))
        .filter_map(|j| j.get_child("content", JINGLE))
        .filter_map(|c| c.get_child("transport", S5B))
        .filter_map(|t| t.children().next())
        .map(|c| (c.name().to_owned(), c.attr("cid").map(str::to_owned)))
        .collect()
}

/// The hashes the streamhost was told to expect, by bridge.
fn expected(h: &Harness) -> Vec<(u64, Vec<String>)> {
    h.streamhost
        .iter()
        .filter_map(|op| match op {
            StreamhostOp::Expect { bridge, hashes } => Some((*bridge, hashes.clone())),
            StreamhostOp::Forget { .. } => None,
        })
        .collect()
}

/// She sends Bob a file over SOCKS5. He gets her offer with our
/// streamhost as its only candidate, hashed with the JIDs he knows
/// (her class resource, his device); she gets his accept the same way
/// with hers (his proxy full JID, her device). Their own candidates
/// reach nobody; both hear candidate-error from us after the accept;
/// their candidate-used stays with us; once both said it, each hears
/// `activated` for the candidate it used. The streamhost was told both
/// hashes under one bridge.
#[test]
fn her_socks5_offer_meets_him_at_our_streamhost() {
    let mut h = alice_with_streamhost();
    let shown = format!(r"bob\40localhost@{D}/pc");
    let files = format!("alice@{D}/files");
    let out = h.input(&jingle_from(
        PHONE,
        &shown,
        "f1",
        "session-initiate",
        "F1",
        &offer(&her_candidates()),
    ));
    let at_him = out
        .iter()
        .find(|e| e.attr("to") == Some(BOB))
        .expect("her offer at his device");
    assert_eq!(at_him.attr("from"), Some(files.as_str()));
    let his_cid = our_candidate(at_him);
    let his_hash = dst_addr("T1", &files, BOB);
    assert_eq!(transport(at_him).attr("dstaddr"), Some(his_hash.as_str()));
    let text = xml(at_him);
    assert!(
        !text.contains("192.0.2.44") && !text.contains("proxy.localhost"),
        "{text}"
    );
    let id = at_him.attr("id").unwrap().to_owned();
    h.input(&format!(
        "<iq xmlns='jabber:component:accept' type='result' id='{id}' from='{BOB}' to='{files}'/>"
    ));

    // His accept, with a candidate of his own.
    let accept =
        offer(&his_candidates()).replace(" dstaddr='972b7bf47291ca609517f67f86b5081086052dad'", "");
    let out = h.input(&jingle_from(
        BOB,
        &files,
        "b1",
        "session-accept",
        "F1",
        &accept,
    ));
    let at_her = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE) && xml(e).contains("session-accept"))
        .expect("his accept at her phone");
    assert_eq!(at_her.attr("from"), Some(shown.as_str()));
    let her_cid = our_candidate(at_her);
    let her_hash = dst_addr("T1", &shown, PHONE);
    assert_eq!(transport(at_her).attr("dstaddr"), Some(her_hash.as_str()));
    assert!(
        !xml(at_her).contains("198.51.100.7"),
        "his address stays his"
    );
    // Both hear, after the accept, that their own candidates failed us.
    assert_eq!(
        infos_to(&out, PHONE),
        vec![("candidate-error".into(), None)]
    );
    assert_eq!(infos_to(&out, BOB), vec![("candidate-error".into(), None)]);
    let accept_at = out.iter().position(|e| std::ptr::eq(e, at_her)).unwrap();
    let error_at = out
        .iter()
        .position(|e| e.attr("to") == Some(PHONE) && xml(e).contains("candidate-error"))
        .unwrap();
    assert!(accept_at < error_at, "the accept comes first");
    let bridges = expected(&h);
    assert_eq!(bridges.len(), 2, "{bridges:?}");
    assert_eq!(bridges[0].0, bridges[1].0, "one bridge");
    assert!(bridges[0].1.contains(&his_hash) && bridges[1].1.contains(&her_hash));

    // He connected: his candidate-used is ours to hear, not hers.
    let out = h.input(&s5b_info(
        BOB,
        &files,
        "b2",
        "F1",
        &format!("<candidate-used cid='{his_cid}'/>"),
    ));
    assert_eq!(out.len(), 1, "only the answer to him: {out:?}");
    assert_eq!(
        (out[0].attr("to"), out[0].attr("type")),
        (Some(BOB), Some("result"))
    );
    // She connected too: both are told the stream is live.
    let out = h.input(&s5b_info(
        PHONE,
        &shown,
        "f2",
        "F1",
        &format!("<candidate-used cid='{her_cid}'/>"),
    ));
    assert_eq!(
        infos_to(&out, PHONE),
        vec![("activated".into(), Some(her_cid))]
    );
    assert_eq!(
        infos_to(&out, BOB),
        vec![("activated".into(), Some(his_cid))]
    );
    assert!(out
        .iter()
        .any(|e| e.attr("to") == Some(PHONE) && e.attr("id") == Some("f2")));
}

/// He cannot reach our streamhost: his candidate-error stays with us, she
/// (who connected) hears proxy-error, and her fallback to in-band
/// bytestreams reaches him as before; the streamhost forgets the bridge.
#[test]
fn when_one_end_cannot_reach_us_the_other_hears_proxy_error_and_they_go_in_band() {
    let mut h = alice_with_streamhost();
    let shown = format!(r"bob\40localhost@{D}/pc");
    let files = format!("alice@{D}/files");
    h.input(&jingle_from(
        PHONE,
        &shown,
        "f1",
        "session-initiate",
        "F1",
        &offer(&her_candidates()),
    ));
    let out = h.input(&jingle_from(
        BOB,
        &files,
        "b1",
        "session-accept",
        "F1",
        &offer(""),
    ));
    let at_her = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE) && xml(e).contains("session-accept"))
        .expect("his accept");
    let her_cid = our_candidate(at_her);
    let out = h.input(&s5b_info(
        PHONE,
        &shown,
        "f2",
        "F1",
        &format!("<candidate-used cid='{her_cid}'/>"),
    ));
    assert!(
        infos_to(&out, PHONE).is_empty(),
        "nothing until he says: {out:?}"
    );
    let out = h.input(&s5b_info(BOB, &files, "b2", "F1", "<candidate-error/>"));
    assert_eq!(infos_to(&out, PHONE), vec![("proxy-error".into(), None)]);
    assert!(infos_to(&out, BOB).is_empty(), "{out:?}");
    assert!(h
        .streamhost
        .iter()
        .any(|op| matches!(op, StreamhostOp::Forget { .. })));
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

/// Bob's SOCKS5 offer to her files class is forked: each of her devices
/// gets our candidate hashed for its own leg; the one that accepts is
/// bridged to him, who gets our candidate hashed with the class resource
/// he called, and both are activated.
#[test]
fn his_socks5_offer_to_her_files_class_is_bridged_to_the_device_that_accepts() {
    let mut h = alice_with_streamhost();
    let files = format!("alice@{D}/files");
    let laptop = "alice@localhost/laptop";
    let out = h.input(&jingle_from(
        BOB,
        &files,
        "b1",
        "session-initiate",
        "BF",
        &offer(&his_candidates()),
    ));
    let at_phone = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE) && xml(e).contains("session-initiate"))
        .expect("the offer at her phone");
    let at_laptop = out
        .iter()
        .find(|e| e.attr("to") == Some(laptop) && xml(e).contains("session-initiate"))
        .expect("the offer at her laptop");
    let proxy = at_phone.attr("from").unwrap().to_owned();
    assert!(!xml(at_phone).contains("198.51.100.7"));
    let phone_cid = our_candidate(at_phone);
    our_candidate(at_laptop);
    assert_eq!(
        transport(at_phone).attr("dstaddr"),
        Some(dst_addr("T1", &proxy, PHONE).as_str())
    );
    let leg = at_phone
        .get_child("jingle", JINGLE)
        .and_then(|j| j.attr("sid"))
        .unwrap()
        .to_owned();
    let out = h.input(&jingle_from(
        PHONE,
        &proxy,
        "p1",
        "session-accept",
        &leg,
        &offer(&her_candidates()),
    ));
    let at_him = out
        .iter()
        .find(|e| e.attr("to") == Some(BOB) && xml(e).contains("session-accept"))
        .expect("her accept at Bob");
    let his_cid = our_candidate(at_him);
    assert_eq!(
        transport(at_him).attr("dstaddr"),
        Some(dst_addr("T1", &files, BOB).as_str())
    );
    assert_eq!(infos_to(&out, BOB), vec![("candidate-error".into(), None)]);
    assert_eq!(
        infos_to(&out, PHONE),
        vec![("candidate-error".into(), None)]
    );
    h.input(&s5b_info(
        PHONE,
        &proxy,
        "p2",
        &leg,
        &format!("<candidate-used cid='{phone_cid}'/>"),
    ));
    let out = h.input(&s5b_info(
        BOB,
        &files,
        "b2",
        "BF",
        &format!("<candidate-used cid='{his_cid}'/>"),
    ));
    assert_eq!(
        infos_to(&out, BOB),
        vec![("activated".into(), Some(his_cid))]
    );
    assert_eq!(
        infos_to(&out, PHONE),
        vec![("activated".into(), Some(phone_cid))]
    );
    // Her phone's activated names its own leg's session.
    let to_phone = out
        .iter()
        .find(|e| e.attr("to") == Some(PHONE) && xml(e).contains("activated"))
        .unwrap();
    assert_eq!(
        to_phone
            .get_child("jingle", JINGLE)
            .and_then(|j| j.attr("sid")),
        Some(leg.as_str())
    );
}
