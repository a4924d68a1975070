//! Coverage-guided fuzzing of the core's stanza entry point.
//!
//! Each input line is one stanza (in the component namespace), `+N`,
//! which lets N milliseconds pass, or `!restart`: the core is rebuilt from
//! exactly what it asked the store to keep, as after a restart. After every step: no panic, every
//! stanza out is addressed and comes from our domain, the privacy guard
//! had nothing to stop (a drop means some path built a leak), and every
//! IQ request addressed to us got at most one answer so far.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minidom::Element;
use unified_presence::config::Config;
use unified_presence::core::{Core, CoreConfig, Stored, Time};

const D: &str = "unified.localhost";

fn config() -> CoreConfig {
    // The property test's configuration (small limits).
    Config::from_toml(include_str!("../../tests/entry_point.toml"))
        .expect("fuzz config")
        .core_config(7)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut kept = Stored::default();
    let mut core = Core::new(config(), kept.clone());
    let mut now = Time(1_700_000_000_000);
    core.handle_connected(now);
    while core.poll_transmit().is_some() {}
    for line in text.lines().take(64) {
        if line == "!restart" {
            core = Core::new(config(), kept.clone());
            now = now.plus_ms(1_000);
            core.handle_connected(now);
        } else if let Some(ms) = line.strip_prefix('+') {
            now = now.plus_ms(ms.parse::<u64>().unwrap_or(0).min(3_600_000));
            core.handle_timeout(now);
        } else {
            let wrapped = format!("<w xmlns='jabber:component:accept'>{line}</w>");
            let Ok(w) = wrapped.parse::<Element>() else {
                continue;
            };
            for stanza in w.children() {
                core.handle_stanza(now, stanza.clone());
            }
        }
        while let Some(op) = core.poll_store() {
            kept.apply(op);
        }
        while let Some(out) = core.poll_transmit() {
            // The domain part of `from` is ours: `D`, `D/res` (an answer
            // to an IQ sent to such a full JID), `x@D`, `x@D/res`.
            let from = out.attr("from").unwrap_or_default();
            let bare = from.split('/').next().unwrap_or_default();
            assert!(
                bare.rsplit('@').next() == Some(D),
                "not from our domain: {out:?}"
            );
            assert!(out.attr("to").is_some(), "unaddressed: {out:?}");
        }
        assert_eq!(
            core.guard_drops(),
            0,
            "the privacy guard had to stop a stanza"
        );
        let size = core.footprint();
        assert!(
            size.calls <= 4 && size.devices <= 4 && size.watchers <= 3,
            "{size:?}"
        );
    }
});
