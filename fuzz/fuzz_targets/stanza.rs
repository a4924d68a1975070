//! Coverage-guided fuzzing of the core's stanza entry point.
//!
//! Each input line is one stanza (in the component namespace), `+N`,
//! which lets N milliseconds pass, or `!restart`: the core is rebuilt from
//! exactly what it asked the store to keep, as after a restart. After every step: no panic, every
//! stanza out is addressed and comes from our domain, the privacy guard
//! had nothing to stop (a drop means some path built a leak), the state
//! is within the configured limits, and every IQ request addressed to us
//! got exactly one answer (`core::oracle`, shared with the tests).
#![no_main]

use libfuzzer_sys::fuzz_target;
use minidom::Element;
use unified_presence::config::Config;
use unified_presence::core::{oracle, Core, CoreConfig, Stored, Time};

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
        let mut sent = Vec::new();
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
            sent = w.children().cloned().collect();
        }
        // One stanza at a time, each checked with what it caused.
        let steps: Vec<Option<Element>> = if sent.is_empty() {
            vec![None]
        } else {
            sent.into_iter().map(Some).collect()
        };
        for input in steps {
            if let Some(stanza) = &input {
                core.handle_stanza(now, stanza.clone());
            }
            while let Some(op) = core.poll_store() {
                kept.apply(op);
            }
            let out: Vec<Element> = std::iter::from_fn(|| core.poll_transmit()).collect();
            // Addressed and from our domain, nothing for the privacy guard
            // to stop, within the configured limits, and an IQ request
            // addressed to us answered exactly once: the checks the
            // scenario and property tests make too.
            if let Err(e) = oracle::check_step(&core, input.as_ref(), &out) {
                panic!("{e}");
            }
        }
    }
});
