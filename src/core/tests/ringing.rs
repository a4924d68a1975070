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

/// Time as quinn and str0m model it: deadlines run on the core's
/// monotonic clock, her rules' days and hours on the wall clock the shell
/// tells it. A wall-clock step (NTP fixing a wrong clock) changes which
/// rule applies, and moves no ring timeout.
#[test]
fn rules_read_the_wall_clock_and_ring_timeouts_the_monotonic_one() {
    let rule = rules::Rule {
        days: vec![chrono::Weekday::Mon],
        reject: true,
        ..rules::Rule::default_rule(30_000)
    };
    let mut h = alice_with_rules(vec![rule]);
    // 2026-12-05 is a Saturday, 2026-12-07 a Monday (UTC, her zone here).
    let saturday = 1_796_472_000_000; // 12:00 UTC
    let monday = saturday + 2 * 86_400_000;
    h.core.set_wall_clock(h.now, saturday);
    assert!(
        !legs(&propose(&mut h, "S1")).is_empty(),
        "Saturday: it rings"
    );
    // NTP steps the wall clock to Monday while it rings: the ring timeout
    // is where it was.
    h.core.set_wall_clock(h.now, monday);
    assert!(to_bob_jmi(&h.advance(29_000), "reject").is_empty());
    assert_eq!(to_bob_jmi(&h.advance(1_500), "reject").len(), 1);
    // The next call is on Monday: her rule refuses it.
    h.core.set_wall_clock(h.now, monday + 31_000);
    let out = propose(&mut h, "S2");
    assert!(legs(&out).is_empty(), "{out:?}");
    assert_eq!(to_bob_jmi(&out, "reject").len(), 1);
}
