//! The core alone, in process: no socket, no XML text, no store. What one
//! input costs `Core::handle_stanza` (and the drain after it), and what
//! publishing one change to 20 watchers costs, at 1,000 owners with 3
//! devices and 20 watchers each; and, at 10,000 owners, what publishing
//! costs when each owner's 20 watchers are in 3 views rather than 1.
//! `cargo bench --bench core`; the socket benches (benches/component.rs)
//! measure the same paths with the stream.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use jid::BareJid;
use minidom::Element;
use unified_presence::config::Config;
use unified_presence::core::views::{View, Views};
use unified_presence::core::{
    CandidatePolicy, Core, OwnerSettings, Stored, SubscriptionPolicy, Time, WatcherState,
};

const OWNERS: usize = 1_000;
const WATCHERS: usize = 20;
const D: &str = "unified.localhost";

fn presence(owner: usize, device: &str, show: &str, status: &str) -> Element {
    format!(
        "<presence xmlns='jabber:component:accept' from='o{owner}@localhost/{device}' to='o{owner}@{D}'>\
         <show>{show}</show><status>{status}</status><priority>1</priority></presence>"
    )
    .parse()
    .expect("bench xml")
}

fn drain(core: &mut Core) -> usize {
    while core.poll_store().is_some() {}
    std::iter::from_fn(|| core.poll_transmit()).count()
}

/// `owners` owners, each with a phone (chat), a laptop (away) and a tablet
/// (xa) online and 20 approved watchers; everything published. With
/// `views`, each owner's watchers are in three views: 7 in `colleagues`
/// (audio show, chat presence), 7 in `reachable`, the rest in the
/// default `everything`.
fn core(owners: usize, views: bool) -> (Core, Time) {
    let mut toml = format!(
        "[server]\naddress = \"127.0.0.1:5347\"\ndomain = \"{D}\"\nsecret = \"s\"\n\
         [store]\npath = \"/nonexistent\"\n[presence]\ncoalesce_ms = 200\nsettle_ms = 0\n\
         [limits]\nstanzas_per_sec = 0\n"
    );
    for i in 0..owners {
        toml.push_str(&format!(
            "[[owners]]\nname = \"o{i}\"\naccounts = [\"o{i}@localhost\"]\n"
        ));
    }
    let cfg = Config::from_toml(&toml)
        .expect("bench config")
        .core_config(7);
    let mut stored = Stored::default();
    let classes = ["chat", "audio", "video", "files"];
    let words: Vec<String> = "audio show, chat presence"
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for i in 0..owners {
        for w in 0..WATCHERS {
            let watcher = BareJid::new(&format!("w{w}@remote.example")).expect("jid");
            stored
                .watchers
                .push((format!("o{i}"), watcher, WatcherState::Subscribed));
        }
        if views {
            let members = (0..14)
                .map(|w| {
                    let view = if w < 7 { "colleagues" } else { "reachable" };
                    (format!("w{w}@remote.example"), view.to_owned())
                })
                .collect();
            let defined = vec![View::parse("colleagues", &words, &classes).expect("view")];
            stored.settings.push((
                format!("o{i}"),
                OwnerSettings {
                    subscription: SubscriptionPolicy::Ask,
                    candidates: CandidatePolicy::Direct,
                    omemo: true,
                    display_name: None,
                    views: Views {
                        defined,
                        members,
                        default: None,
                    },
                },
            ));
        }
    }
    let mut core = Core::new(cfg, stored);
    let mut now = Time(1_700_000_000_000);
    core.handle_connected(now);
    drain(&mut core);
    for i in 0..owners {
        for (device, show) in [("phone", "chat"), ("laptop", "away"), ("tablet", "xa")] {
            core.handle_stanza(now, presence(i, device, show, "here"));
            drain(&mut core);
        }
    }
    now = now.plus_ms(1_000);
    while core.poll_timeout().is_some_and(|t| t <= now) {
        core.handle_timeout(now);
        drain(&mut core);
    }
    (core, now)
}

/// One visible change of owner `n % owners` (her best device's status),
/// published after the coalescing window: the stanzas sent.
fn visible_change(core: &mut Core, now: &mut Time, n: usize, owners: usize) -> usize {
    let status = if n % 2 == 0 { "at home" } else { "at work" };
    *now = now.plus_ms(1_000);
    core.handle_stanza(*now, presence(n % owners, "phone", "chat", status));
    let mut out = drain(core);
    let later = now.plus_ms(200);
    while core.poll_timeout().is_some_and(|t| t <= later) {
        core.handle_timeout(later);
        out += drain(core);
    }
    out
}

/// Publishing at 10,000 owners, watchers in one view or in three.
fn views(c: &mut Criterion) {
    const MANY: usize = 10_000;
    for (views, name) in [
        (false, "publish at 10k owners: 20 watchers in 1 view"),
        (true, "publish at 10k owners: 20 watchers in 3 views"),
    ] {
        let (mut core, mut now) = core(MANY, views);
        // Checked once: with views, chat reaches the 7 in `colleagues`
        // without its show (so its status change is theirs too: chat's
        // presence alone, unchanged, is not sent), the 6 in `everything`;
        // the 7 in `reachable` hear nothing of a status.
        let out = visible_change(&mut core, &mut now, 0, MANY);
        assert_eq!(out, if views { 6 } else { WATCHERS }, "{name}");
        let mut n = 1usize;
        c.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    n
                },
                |n| black_box(visible_change(&mut core, &mut now, n, MANY)),
                BatchSize::SmallInput,
            )
        });
    }
}

fn bench(c: &mut Criterion) {
    let (mut core, mut now) = core(OWNERS, false);
    // What the two benches measure, checked once: nothing out for an
    // invisible change, one stanza per watcher for a visible one.
    core.handle_stanza(now, presence(0, "laptop", "away", "elsewhere"));
    assert_eq!(drain(&mut core), 0, "an invisible change sends nothing");
    now = now.plus_ms(1_000);
    core.handle_stanza(now, presence(0, "phone", "chat", "checking"));
    let mut out = drain(&mut core);
    now = now.plus_ms(200);
    while core.poll_timeout().is_some_and(|t| t <= now) {
        core.handle_timeout(now);
        out += drain(&mut core);
    }
    assert_eq!(out, WATCHERS, "a visible change reaches every watcher once");
    let mut n = 0usize;
    // A device that is not the best one changes its status: watchers see
    // nothing, so nothing goes out.
    c.bench_function("handle_stanza: invisible change (1k owners)", |b| {
        b.iter_batched(
            || {
                n += 1;
                presence(
                    n % OWNERS,
                    "laptop",
                    "away",
                    if n % 2 == 0 { "a" } else { "b" },
                )
            },
            |p| {
                core.handle_stanza(now, p);
                black_box(drain(&mut core))
            },
            BatchSize::SmallInput,
        )
    });
    // Her best device changes: after the coalescing window, 20 watchers
    // hear the chat class.
    c.bench_function("publish: one visible change to 20 watchers", |b| {
        b.iter_batched(
            || {
                n += 1;
                let status = if n % 2 == 0 { "at home" } else { "at work" };
                presence(n % OWNERS, "phone", "chat", status)
            },
            |p| {
                now = now.plus_ms(1_000);
                core.handle_stanza(now, p);
                let mut out = drain(&mut core);
                let later = now.plus_ms(200);
                while core.poll_timeout().is_some_and(|t| t <= later) {
                    core.handle_timeout(later);
                    out += drain(&mut core);
                }
                black_box(out)
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench, views);
criterion_main!(benches);
