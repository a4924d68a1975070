//! Ring rules (DESIGN.md section 6).

use super::*;

#[test]
fn sequential_rules_ring_the_next_device_only_after_the_step_expires() {
    let rule = rules::Rule {
        mode: rules::RingMode::Sequential,
        devices: vec!["tablet".into(), "phone".into()],
        step_ms: 5_000,
        on_no_answer: rules::NoAnswer::Message,
        ..rules::Rule::default_rule(12_000)
    };
    let mut h = alice_with_rules(vec![rule]);
    let first = legs(&propose(&mut h, "S1"));
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        [TABLET],
        "the tablet first"
    );
    assert!(legs(&h.advance(4_000)).is_empty());
    let out = h.advance(1_500);
    let retract = out
        .iter()
        .find(|e| e.attr("to") == Some(TABLET))
        .expect("the tablet stops ringing");
    assert_eq!(jmi_of(retract).unwrap().name(), "retract");
    let second = legs(&out);
    assert_eq!(second.keys().collect::<Vec<_>>(), [PHONE], "then the phone");
    assert_eq!(
        second[PHONE].0, first[TABLET].0,
        "from the same proxy full JID"
    );
    // Nobody answers: the caller is told, and Alice gets a missed-call note.
    let out = h.advance(7_000);
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1);
    let note = out
        .iter()
        .find(|e| e.attr("to") == Some("alice@localhost"))
        .expect("a missed-call note");
    assert_eq!(
        note.get_child("body", ns::COMPONENT).unwrap().text(),
        "Missed audio call from bob@localhost"
    );
    assert_eq!(
        note.attr("from"),
        Some(r"bob\40localhost@unified.localhost")
    );
}

#[test]
fn a_decline_moves_a_sequential_call_on_at_once() {
    let rule = rules::Rule {
        mode: rules::RingMode::Sequential,
        devices: vec!["tablet".into(), "phone".into()],
        ..rules::Rule::default_rule(30_000)
    };
    let mut h = alice_with_rules(vec![rule]);
    let first = legs(&propose(&mut h, "S1"));
    let (proxy, leg) = first[TABLET].clone();
    let out = from_device(&mut h, TABLET, &proxy, "reject", &leg, "");
    assert!(to_bob_jmi(&out, "reject").is_empty());
    assert_eq!(legs(&out).keys().collect::<Vec<_>>(), [PHONE]);
}

#[test]
fn a_reject_rule_makes_the_caller_busy() {
    let rule = rules::Rule {
        callers: vec![rules::CallerMatch::Jid(
            BareJid::new("bob@localhost").unwrap(),
        )],
        reject: true,
        ..rules::Rule::default_rule(30_000)
    };
    let mut h = alice_with_rules(vec![rule]);
    let out = propose(&mut h, "S1");
    assert!(legs(&out).is_empty());
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1);
}
