//! What the core alone keeps in memory per device and per watcher edge,
//! counted allocation by allocation: no store, no socket, no allocator
//! slack, so the figure is the same on every run. The component bench
//! (benches/component.rs) measures the whole process, sled included,
//! whose deferred frees make its figures move between runs.
//!
//! Then the store's share, as a restart leaves it: the changes the core
//! asked to keep are written to a fresh store (one commit per input, as
//! the runtime does), which is reopened and loaded; what it holds then
//! is counted, with and without the devices and the watchers. A running
//! store holds this plus the garbage its writes leave for sled to free.
//!
//! `cargo bench --bench memory [-- --owners N]` prints `key value` lines:
//! bytes asked of the allocator, and the same rounded as glibc's malloc
//! rounds them on 64-bit Linux (8 bytes of header, 16-byte steps, at
//! least 32), which is what they cost.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use minidom::Element;
use unified_presence::config::Config;
use unified_presence::core::{Core, StoreOp, Stored, Time};
use unified_presence::store::Store;

/// Live bytes asked for, and live bytes as glibc chunks.
static ASKED: AtomicIsize = AtomicIsize::new(0);
static CHUNKS: AtomicIsize = AtomicIsize::new(0);

struct Counting;

fn chunk(size: usize) -> isize {
    ((size + 8).div_ceil(16) * 16).max(32) as isize
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters only add up what it was asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ASKED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ASKED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ASKED.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(new) - chunk(layout.size()), Ordering::Relaxed);
        System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const D: &str = "unified.bench";
const DEVICES: [&str; 3] = ["phone", "laptop", "tablet"];
const WATCHERS: usize = 20;

fn live() -> (isize, isize) {
    (
        ASKED.load(Ordering::Relaxed),
        CHUNKS.load(Ordering::Relaxed),
    )
}

/// The changes of each input, as the runtime commits them; `None` when
/// they are not kept (while the core is measured, they would count).
type Commits = Option<Vec<Vec<StoreOp>>>;

fn drain(core: &mut Core, kept: &mut Commits) {
    let ops: Vec<_> = std::iter::from_fn(|| core.poll_store()).collect();
    if let Some(kept) = kept.as_mut().filter(|_| !ops.is_empty()) {
        kept.push(ops);
    }
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
}

fn input(core: &mut Core, now: Time, xml: &str, kept: &mut Commits) {
    let el: Element = xml.parse().expect("bench xml");
    core.handle_stanza(now, el);
    drain(core, kept);
}

/// Live bytes (as glibc chunks) of a store that was written with
/// `commits`, closed, reopened and loaded, as after a restart.
fn store_after_restart(commits: &[&Commits]) -> isize {
    let dir = tempfile::tempdir().expect("bench temp dir");
    {
        let store = Store::open(dir.path()).expect("bench store");
        for ops in commits.iter().copied().flatten().flatten() {
            store.commit(ops).expect("bench store write");
        }
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("bench runtime")
            .block_on(store.flush())
            .expect("bench store flush");
    }
    let before = live().1;
    // sled's flusher lets go of the directory's lock a moment after.
    let store = loop {
        match Store::open(dir.path()) {
            Ok(store) => break store,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    drop(store.load().expect("bench store load"));
    let held = live().1 - before;
    drop(store);
    held
}

/// Sets up `owners` owners through the core: live bytes after linking,
/// after the devices and after the watchers, and (with `keep`) the
/// changes each phase asked to keep.
fn setup(owners: usize, keep: bool) -> ([(isize, isize); 3], [Commits; 3]) {
    let mut toml = format!(
        "[server]\naddress = \"127.0.0.1:5347\"\ndomain = \"{D}\"\nsecret = \"s\"\n\
         [store]\npath = \"/nonexistent\"\n[presence]\ncoalesce_ms = 200\nsettle_ms = 0\n\
         [limits]\nstanzas_per_sec = 0\nwatchers_per_owner = 100000\npending_iqs = 100000\n"
    );
    for o in 0..owners {
        toml.push_str(&format!(
            "[[owners]]\nname = \"alice{o}\"\naccounts = [\"o{o}@bench\"]\nsubscription = \"open\"\n"
        ));
    }
    let cfg = Config::from_toml(&toml)
        .expect("bench config")
        .core_config(7);
    let mut core = Core::new(cfg, Stored::default());
    let mut now = Time(1_700_000_000_000);
    core.handle_connected(now);
    while core.poll_transmit().is_some() {}
    let kept = || keep.then(Vec::new);
    let (mut linking, mut sightings, mut subscriptions) = (kept(), kept(), kept());
    for o in 0..owners {
        input(&mut core, now, &format!(
            "<presence xmlns='jabber:component:accept' from='o{o}@bench' to='alice{o}@{D}' type='subscribed'/>"
        ), &mut linking);
    }
    let settle = |core: &mut Core, now: &mut Time, kept: &mut Commits| {
        *now = now.plus_ms(60_000);
        while core.poll_timeout().is_some_and(|t| t <= *now) {
            core.handle_timeout(*now);
            drain(core, kept);
        }
    };
    settle(&mut core, &mut now, &mut linking);
    let linked = live();
    for o in 0..owners {
        for (d, show) in DEVICES.iter().zip(["chat", "away", "xa"]) {
            input(
                &mut core,
                now,
                &format!(
                "<presence xmlns='jabber:component:accept' from='o{o}@bench/{d}' to='alice{o}@{D}'>\
                 <show>{show}</show><status>s0</status><priority>1</priority></presence>"
            ),
                &mut sightings,
            );
        }
    }
    settle(&mut core, &mut now, &mut sightings);
    let devices = live();
    for o in 0..owners {
        for w in 0..WATCHERS {
            input(&mut core, now, &format!(
                "<presence xmlns='jabber:component:accept' from='w{w}x{o}@remote' to='alice{o}@{D}' type='subscribe'/>"
            ), &mut subscriptions);
        }
    }
    settle(&mut core, &mut now, &mut subscriptions);
    let watchers = live();
    std::hint::black_box(&core);
    (
        [linked, devices, watchers],
        [linking, sightings, subscriptions],
    )
}

fn main() {
    let owners = std::env::args()
        .skip_while(|a| a != "--owners")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000usize);
    let ([linked, devices, watchers], _) = setup(owners, false);
    let per = |a: isize, b: isize, n: usize| (a - b) as f64 / n as f64;
    let n_dev = owners * DEVICES.len();
    let n_edge = owners * WATCHERS;
    let jid = format!("w{}x{}@remote", WATCHERS - 1, owners / 2).len();
    println!("== core memory");
    println!("core_owners {owners}");
    println!(
        "core_bytes_per_device {:.0}",
        per(devices.0, linked.0, n_dev)
    );
    println!(
        "core_chunk_bytes_per_device {:.0}",
        per(devices.1, linked.1, n_dev)
    );
    println!(
        "core_bytes_per_watcher_edge {:.0}",
        per(watchers.0, devices.0, n_edge)
    );
    println!(
        "core_chunk_bytes_per_watcher_edge {:.0}",
        per(watchers.1, devices.1, n_edge)
    );
    println!("core_watcher_jid_bytes {jid}");
    let (_, [linking, sightings, subscriptions]) = setup(owners, true);
    let linked = store_after_restart(&[&linking]);
    let devices = store_after_restart(&[&linking, &sightings]);
    let watchers = store_after_restart(&[&linking, &sightings, &subscriptions]);
    let kept = |c: &Commits| c.iter().flatten().map(Vec::len).sum::<usize>();
    println!(
        "store_writes {} {} {}",
        kept(&linking),
        kept(&sightings),
        kept(&subscriptions)
    );
    println!(
        "store_chunk_bytes_per_device {:.0}",
        per(devices, linked, n_dev)
    );
    println!(
        "store_chunk_bytes_per_watcher_edge {:.0}",
        per(watchers, devices, n_edge)
    );
    println!("== end");
}
