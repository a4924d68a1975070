//! The component alone, against a load generator that plays the XMPP
//! server's side of XEP-0114 on loopback (issue 7, part 1), and the floor:
//! the same stanzas through the XML stack alone (part 2), in the same run.
//!
//! `cargo bench --bench component -- [--owners O] [--devices D]
//! [--watchers W] [--changes N] [--latency-owners O2] [--latency-rate R]`
//!
//! 1. Starts the release binary with a generated config (O owners, open
//!    subscriptions, rate limits off: one generator account sends for
//!    many people) and accepts its connection, checking the handshake.
//! 2. Sets everything up through the protocol: each owner's account
//!    answers the component's `subscribe`, D devices per owner send
//!    presence with XEP-0115 caps (the component asks disco#info once per
//!    `ver`; the generator answers with features that hash to it), and W
//!    watchers per owner subscribe. RSS is read from /proc after each step.
//! 3. Streams churn as fast as the component reads it: first changes no
//!    watcher can see (a device that is not the best one changes its
//!    status), then changes every watcher sees (the best device's status).
//! 4. A second, smaller run (default coalescing: each owner changes less
//!    often than once per window, so every change goes out at once)
//!    measures the latency from a device stanza written to the first
//!    watcher stanza read, at half the fan-out rate the component
//!    sustained, or at R changes a second.
//! 5. The floor: the component's own connection code (`connection::connect`)
//!    reading the same presence bytes into elements, and building,
//!    serialising and writing presences, with no core behind it. It runs
//!    first and again right after the invisible churn: this VM's speed
//!    drifts within a run.
//!
//! It prints one table (`key value` lines between `== component` and
//! `== end`), which `scripts/bench` turns into ratios. Never a timed test.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_xmpp::xmlstream::Timeouts;
use unified_presence::connection;
use unified_presence::core::stanza;

mod common;
use common::*;

const DOMAIN: &str = "unified.bench";
const SECRET: &str = "bench-secret";
const STREAM_ID: &str = "bench-stream-1";
const HTTP_TOKEN: &str = "bench-metrics-token-0123456789";
/// Consecutive changes to one owner in the visible churn.
const BURST: usize = 4;
/// Classes a device with [`FEATURES`] is in (chat, audio, video).
const CLASSES_PER_DEVICE: usize = 3;
const RESOURCES: &[&str] = &["phone", "laptop", "tablet", "desk", "watch", "car"];

#[derive(Clone)]
struct Args {
    owners: usize,
    devices: usize,
    watchers: usize,
    changes: usize,
    latency_owners: usize,
    /// Changes a second in the latency phase; 0: half the fan-out rate.
    latency_rate: usize,
    bin: PathBuf,
}

fn args() -> Args {
    let flags = numeric_flags();
    let get = |k: &str, default: usize| flags.get(k).copied().unwrap_or(default).max(1);
    Args {
        owners: get("owners", 10_000),
        devices: get("devices", 3).clamp(2, RESOURCES.len()),
        watchers: get("watchers", 20),
        changes: get("changes", 200_000),
        latency_owners: get("latency-owners", 2000),
        latency_rate: flags.get("latency-rate").copied().unwrap_or(0),
        bin: PathBuf::from(env!("CARGO_BIN_EXE_unified-presence")),
    }
}

fn account(o: usize) -> String {
    format!("o{o}@bench")
}

fn owner(o: usize) -> String {
    format!("alice{o}@{DOMAIN}")
}

fn watcher(o: usize, w: usize) -> String {
    format!("w{w}.{o}@watch")
}

/// A device presence as a client's server would forward it (~260 bytes).
fn device_presence(o: usize, d: usize, show: &str, status: &str, ver: &str) -> String {
    format!(
        "<presence xmlns='jabber:component:accept' from='{}/{}' to='{}'><show>{show}</show><status>{status}</status><priority>{}</priority><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{NODE}' ver='{ver}'/></presence>",
        account(o),
        RESOURCES[d],
        owner(o),
        10 - d as i32,
    )
}

/// Device `d`'s resting show: the first device is the best one.
fn show_of(d: usize) -> &'static str {
    match d {
        0 => "chat",
        1 => "away",
        _ => "xa",
    }
}

// ---- the fake server -----------------------------------------------------

struct Server {
    rx: mpsc::UnboundedReceiver<Out>,
    wr: OwnedWriteHalf,
    child: Child,
    pid: u32,
    ver: String,
    /// Stanzas we answered automatically (disco#info, pings), not counted.
    answered: usize,
    /// Where its `/metrics` answer.
    http_port: u16,
}

fn write_config(dir: &Path, owners: usize, port: u16, http_port: u16, coalesce_ms: u64) -> PathBuf {
    let mut s = format!(
        "[server]\naddress = \"127.0.0.1:{port}\"\ndomain = \"{DOMAIN}\"\nsecret = \"{SECRET}\"\n\n\
         [http]\nbind = \"127.0.0.1:{http_port}\"\nadmin_token = \"{HTTP_TOKEN}\"\n\n\
         [store]\npath = \"{}\"\n\n[presence]\ncoalesce_ms = {coalesce_ms}\nsettle_ms = 0\n\n\
         [log]\nlevel = \"warn\"\n\n[limits]\nstanzas_per_sec = 0\nwatchers_per_owner = 100000\npending_iqs = 100000\n\n",
        dir.join("store").display()
    );
    for o in 0..owners {
        s.push_str(&format!(
            "[[owners]]\nname = \"alice{o}\"\naccounts = [\"{}\"]\nsubscription = \"open\"\n\n",
            account(o)
        ));
    }
    let path = dir.join("component.toml");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .expect("write the bench config");
    f.write_all(s.as_bytes()).expect("write the bench config");
    path
}

/// The server's side of XEP-0114 on an accepted socket, up to the
/// component's handshake (not yet answered): the write half, and what is
/// read, on a thread of its own so that latency stamps are taken when
/// bytes arrive, not when this thread gets round to them.
async fn server_side(
    sock: tokio::net::TcpStream,
) -> (OwnedWriteHalf, mpsc::UnboundedReceiver<Out>) {
    sock.set_nodelay(true).expect("nodelay");
    let sock = sock.into_std().expect("std socket");
    let reader = sock.try_clone().expect("clone the socket");
    let (tx, mut rx) = mpsc::unbounded_channel();
    read_on_own_thread(reader, tx);
    let (_rd, mut wr) = tokio::net::TcpStream::from_std(sock)
        .expect("socket")
        .into_split();
    let header = rx.recv().await.expect("stream header");
    assert_eq!(header.name, "stream:header");
    wr.write_all(
        format!("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='{DOMAIN}' id='{STREAM_ID}'>").as_bytes(),
    )
    .await
    .expect("write header");
    let hs = rx.recv().await.expect("handshake");
    assert_eq!(hs.name, "handshake", "the component sends its handshake");
    (wr, rx)
}

impl Server {
    /// Starts the component for `owners` owners and completes XEP-0114.
    async fn start(bin: &Path, dir: &Path, owners: usize, coalesce_ms: u64) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let port = listener.local_addr().expect("port").port();
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port for /metrics")
            .port();
        let config = write_config(dir, owners, port, http_port, coalesce_ms);
        // BENCH_WRAP="valgrind --tool=massif ..." runs the component under
        // a tool (its RSS figures are then the tool's).
        let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(words).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the component");
        let pid = child.id();
        let (sock, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
            .await
            .expect("the component connects within 60 s")
            .expect("accept");
        let (wr, rx) = server_side(sock).await;
        let mut server = Server {
            rx,
            wr,
            child,
            pid,
            ver: ver(),
            answered: 0,
            http_port,
        };
        server.send("<handshake/>").await;
        for _ in 0..connection::SELFCHECKS {
            let out = server.next().await;
            let echo = selfcheck_echo(&out).expect("the component's self-checks come first");
            server.send(&echo).await;
        }
        server
    }

    /// Its heap in use, from its own `/metrics` (`heap_bytes`, glibc's
    /// count): exact where RSS moves with what the allocator keeps.
    fn heap(&self) -> u64 {
        use std::io::Read;
        let mut sock =
            std::net::TcpStream::connect(("127.0.0.1", self.http_port)).expect("/metrics");
        write!(
            sock,
            "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {HTTP_TOKEN}\r\n\r\n"
        )
        .expect("ask /metrics");
        let mut text = String::new();
        sock.read_to_string(&mut text).expect("read /metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("unified_presence_heap_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .expect("heap_bytes in /metrics")
    }

    /// Its heap once quiet: sled frees what its writes replaced through
    /// epochs, a while later, so a reading right after a phase counts
    /// garbage. Read once a second until it stops falling (10 s at most).
    async fn quiet_heap(&self) -> u64 {
        let mut last = self.heap();
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.heap();
            if now + now / 1000 >= last {
                return now.min(last);
            }
            last = now;
        }
        last
    }

    async fn send(&mut self, s: &str) {
        self.wr.write_all(s.as_bytes()).await.expect("write");
    }

    /// The next element; disco#info queries and pings to a device are
    /// answered here.
    async fn next(&mut self) -> Out {
        loop {
            let out = tokio::time::timeout(Duration::from_secs(120), self.rx.recv())
                .await
                .expect("the component answers within 120 s")
                .expect("the component's stream is open");
            if out.disco_get && out.to.contains("@bench/") {
                let reply = disco_reply(&out, FEATURES, "jabber:component:accept");
                self.send(&reply).await;
                self.answered += 1;
                continue;
            }
            return out;
        }
    }

    /// Waits until the component has read everything sent so far: a ping
    /// to its domain is answered in order.
    async fn sync(&mut self, tag: &str) -> usize {
        self.send(&format!("<iq xmlns='jabber:component:accept' type='get' id='sync-{tag}' from='gen@bench/x' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")).await;
        let mut other = 0;
        loop {
            let out = self.next().await;
            if out.id.as_deref() == Some(&format!("sync-{tag}")) {
                return other;
            }
            other += 1;
        }
    }

    /// SIGTERM, then read the goodbyes (every watcher hears every class
    /// go away) until the component closes the stream.
    async fn stop(mut self) -> usize {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let mut goodbyes = 0;
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while self.rx.recv().await.is_some() {
                goodbyes += 1;
            }
        })
        .await;
        let _ = self.child.wait();
        goodbyes
    }
}

/// With `BENCH_PERF_DIR` set, `perf record` attached to the component for
/// one phase (`DIR/<phase>.data`): profiles of steady churn, not of setup.
/// `BENCH_PERF_PHASES=invisible,fanout` limits it to those phases (the
/// visible phase's record alone is about 11 GB).
struct Profile(Option<Child>);

impl Profile {
    fn start(pid: u32, phase: &str) -> Profile {
        let Ok(dir) = std::env::var("BENCH_PERF_DIR") else {
            return Profile(None);
        };
        if let Ok(phases) = std::env::var("BENCH_PERF_PHASES") {
            if !phases.split(',').any(|p| p == phase) {
                return Profile(None);
            }
        }
        let out = Path::new(&dir).join(format!("{phase}.data"));
        let child = Command::new("perf")
            .args([
                "record",
                "-q",
                "-e",
                "cpu-clock",
                "--call-graph",
                "dwarf,32768",
                "-p",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        // perf needs a moment to attach.
        std::thread::sleep(Duration::from_millis(300));
        Profile(child)
    }

    fn stop(self) {
        if let Some(mut c) = self.0 {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

// ---- the scenarios -------------------------------------------------------

/// Links every owner's account, brings D devices online per owner and
/// subscribes W watchers to each; returns RSS after each step.
async fn populate(s: &mut Server, a: &Args, owners: usize, t: &mut Table, prefix: &str) {
    populate_steps(s, a, owners, t, prefix).await;
    // The first publish after setup (every class, to every watcher) is
    // not churn: let it pass.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let first_publish = s.sync("settled").await;
    t.put(
        &format!("{prefix}setup_first_publish_stanzas"),
        first_publish,
    );
}

async fn populate_steps(s: &mut Server, a: &Args, owners: usize, t: &mut Table, prefix: &str) {
    // The component asks each account for a subscription on connect.
    let mut asked = 0;
    while asked < owners {
        let out = s.next().await;
        if out.name == "presence" && out.typ.as_deref() == Some("subscribe") {
            asked += 1;
        }
    }
    let configured = rss(s.pid);
    let t0 = Instant::now();
    let mut batch = String::new();
    for o in 0..owners {
        batch.push_str(&format!(
            "<presence xmlns='jabber:component:accept' from='{}' to='{}' type='subscribed'/>",
            account(o),
            owner(o)
        ));
    }
    s.send(&batch).await;
    s.sync("linked").await;
    let link_secs = t0.elapsed().as_secs_f64();
    let base = rss(s.pid);
    let heap_base = s.quiet_heap().await;
    let t1 = Instant::now();
    let ver = s.ver.clone();
    for o in 0..owners {
        let mut batch = String::new();
        for d in 0..a.devices {
            batch.push_str(&device_presence(o, d, show_of(d), "s0", &ver));
        }
        s.send(&batch).await;
    }
    s.sync("devices").await;
    let devices_secs = t1.elapsed().as_secs_f64();
    let after_devices = rss(s.pid);
    let heap_devices = s.quiet_heap().await;
    let t2 = Instant::now();
    let mut sent = 0;
    for o in 0..owners {
        let mut batch = String::new();
        for w in 0..a.watchers {
            batch.push_str(&format!(
                "<presence xmlns='jabber:component:accept' from='{}' to='{}' type='subscribe'/>",
                watcher(o, w),
                owner(o)
            ));
            sent += 1;
        }
        s.send(&batch).await;
    }
    let answers = s.sync("watchers").await;
    let watchers_secs = t2.elapsed().as_secs_f64();
    let after_watchers = rss(s.pid);
    let heap_watchers = s.quiet_heap().await;
    let edges = (owners * a.watchers) as f64;
    let devices = (owners * a.devices) as f64;
    t.put(
        &format!("{prefix}setup_links_per_sec"),
        format!("{:.0}", owners as f64 / link_secs),
    );
    t.put(
        &format!("{prefix}setup_devices_per_sec"),
        format!("{:.0}", devices / devices_secs),
    );
    t.put(
        &format!("{prefix}setup_watchers_per_sec"),
        format!("{:.0}", sent as f64 / watchers_secs),
    );
    t.put(&format!("{prefix}setup_watcher_answers"), answers);
    t.put(&format!("{prefix}rss_configured_kib"), configured.rss_kib);
    t.put(&format!("{prefix}rss_linked_kib"), base.rss_kib);
    t.put(
        &format!("{prefix}rss_after_devices_kib"),
        after_devices.rss_kib,
    );
    t.put(
        &format!("{prefix}rss_after_watchers_kib"),
        after_watchers.rss_kib,
    );
    let per_device = (after_devices.rss_kib.saturating_sub(base.rss_kib) * 1024) as f64 / devices;
    let per_edge =
        (after_watchers.rss_kib.saturating_sub(after_devices.rss_kib) * 1024) as f64 / edges;
    // "Beyond the JIDs themselves": the watcher's JID text.
    let jid_bytes = (0..owners.min(1000))
        .map(|o| watcher(o, a.watchers - 1).len())
        .sum::<usize>() as f64
        / owners.min(1000) as f64;
    t.put(
        &format!("{prefix}bytes_per_device"),
        format!("{per_device:.0}"),
    );
    t.put(
        &format!("{prefix}bytes_per_watcher_edge"),
        format!("{per_edge:.0}"),
    );
    t.put(
        &format!("{prefix}watcher_jid_bytes"),
        format!("{jid_bytes:.0}"),
    );
    // The same from the heap's own count: no page or allocator noise.
    t.put(&format!("{prefix}heap_linked_bytes"), heap_base);
    t.put(
        &format!("{prefix}heap_bytes_per_device"),
        format!(
            "{:.0}",
            heap_devices.saturating_sub(heap_base) as f64 / devices
        ),
    );
    t.put(
        &format!("{prefix}heap_bytes_per_watcher_edge"),
        format!(
            "{:.0}",
            heap_watchers.saturating_sub(heap_devices) as f64 / edges
        ),
    );
}

/// Churn no watcher can see: a device that is not the best changes its
/// status. Returns the rate; asserts nothing went out.
async fn churn_invisible(s: &mut Server, a: &Args, owners: usize, t: &mut Table) {
    let ver = s.ver.clone();
    let mut buf = String::with_capacity(a.changes * 280);
    for i in 0..a.changes {
        let o = i % owners;
        buf.push_str(&device_presence(o, 1, show_of(1), &format!("x{i}"), &ver));
    }
    let pid = s.pid;
    let profile = Profile::start(pid, "invisible");
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    s.send(&buf).await;
    let out = s.sync("invisible").await;
    let secs = t0.elapsed().as_secs_f64();
    profile.stop();
    let cpu = cpu_secs(pid) - cpu0;
    t.put("invisible_changes", a.changes);
    t.put(
        "invisible_per_sec",
        format!("{:.0}", a.changes as f64 / secs),
    );
    t.put("invisible_stanzas_out", out);
    t.put(
        "invisible_cpu_us_per_change",
        format!("{:.2}", cpu * 1e6 / a.changes as f64),
    );
}

/// Churn every watcher sees: the best device's status changes, in
/// bursts, owner after owner. With coalescing, changes to one owner within the
/// window reach watchers once.
async fn churn_visible(
    s: &mut Server,
    a: &Args,
    owners: usize,
    t: &mut Table,
    prefix: &str,
) -> f64 {
    let ver = s.ver.clone();
    let n = a.changes;
    let mut last_seq: HashMap<usize, usize> = HashMap::new();
    let mut buf = String::with_capacity(n * 280);
    for i in 0..n {
        // Bursts of BURST changes to one owner (a device flapping), owner
        // after owner: the first of a burst goes out at once, the rest
        // within the window reach watchers once.
        let o = (i / BURST) % owners;
        buf.push_str(&device_presence(o, 0, show_of(0), &format!("v{i}"), &ver));
        last_seq.insert(o, i);
    }
    // Done when every watcher of every owner has that owner's last status
    // in every class.
    let mut finals: HashMap<String, usize> = last_seq
        .iter()
        .map(|(o, i)| {
            (
                format!("v{i}@{}", owner(*o)),
                a.watchers * CLASSES_PER_DEVICE,
            )
        })
        .collect();
    let pid = s.pid;
    let profile = Profile::start(pid, &format!("{prefix}visible"));
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut out = 0usize;
    let mut first: Option<Instant> = None;
    let mut last = t0;
    // Write and read at once: the component's output must be drained.
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let wr = &mut s.wr;
    let rx = &mut s.rx;
    let write = async {
        wr.write_all(buf.as_bytes()).await.expect("write churn");
        let _ = done_tx;
    };
    let read = async {
        while !finals.is_empty() {
            let Some(o) = rx.recv().await else { break };
            if o.name != "presence" {
                continue;
            }
            out += 1;
            first.get_or_insert(o.at);
            last = o.at;
            let bare = o.from.split('/').next().unwrap_or("");
            if let Some(st) = &o.status {
                let key = format!("{st}@{bare}");
                if let Some(left) = finals.get_mut(&key) {
                    *left -= 1;
                    if *left == 0 {
                        finals.remove(&key);
                    }
                }
            }
        }
    };
    tokio::join!(write, read);
    profile.stop();
    let _ = done_rx.try_recv();
    let secs = (last - t0).as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let naive = (n * a.watchers * CLASSES_PER_DEVICE) as f64;
    t.put(&format!("{prefix}visible_changes"), n);
    t.put(
        &format!("{prefix}visible_changes_per_sec"),
        format!("{:.0}", n as f64 / secs),
    );
    t.put(&format!("{prefix}visible_stanzas_out"), out);
    t.put(
        &format!("{prefix}visible_stanzas_out_per_sec"),
        format!("{:.0}", out as f64 / secs),
    );
    t.put(
        &format!("{prefix}visible_stanzas_per_change"),
        format!("{:.3}", out as f64 / n as f64),
    );
    t.put(
        &format!("{prefix}naive_stanzas_per_change"),
        format!("{:.3}", naive / n as f64),
    );
    t.put(
        &format!("{prefix}visible_cpu_us_per_change"),
        format!("{:.2}", cpu * 1e6 / n as f64),
    );
    n as f64 / secs
}

/// Fan-out alone: one visible change per owner, so that writing watcher
/// stanzas is the work. Returns watcher stanzas written a second.
async fn fanout(s: &mut Server, a: &Args, owners: usize, t: &mut Table) -> f64 {
    let ver = s.ver.clone();
    let mut buf = String::with_capacity(owners * 280);
    for o in 0..owners {
        buf.push_str(&device_presence(o, 0, show_of(0), &format!("f{o}"), &ver));
    }
    let expected = owners * a.watchers * CLASSES_PER_DEVICE;
    let pid = s.pid;
    let profile = Profile::start(pid, "fanout");
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    s.send(&buf).await;
    let mut got = 0usize;
    let mut first: Option<Instant> = None;
    let mut last = t0;
    while got < expected {
        let o = s.next().await;
        if o.name == "presence" && o.status.as_deref().is_some_and(|st| st.starts_with('f')) {
            got += 1;
            first.get_or_insert(o.at);
            last = o.at;
        }
    }
    let cpu = cpu_secs(pid) - cpu0;
    profile.stop();
    let secs = (last - first.unwrap_or(t0)).as_secs_f64().max(1e-6);
    let rate = got as f64 / secs;
    t.put("fanout_stanzas", got);
    t.put("fanout_stanzas_per_sec", format!("{rate:.0}"));
    t.put(
        "fanout_cpu_us_per_stanza",
        format!("{:.2}", cpu * 1e6 / got as f64),
    );
    rate
}

/// Paced visible churn at `rate` changes a second; latency from writing a
/// change to reading the first watcher stanza that carries it.
async fn latency(s: &mut Server, a: &Args, owners: usize, rate: f64, t: &mut Table) {
    let ver = s.ver.clone();
    paced(
        &mut s.wr, &mut s.rx, &ver, a.changes, owners, rate, "latency", t,
    )
    .await;
}

/// Writes device presences at `rate` a second (the status names each)
/// and times each to the first stanza read back with its status: the
/// figures `{key}_p50_ms` and the rest.
#[allow(clippy::too_many_arguments)]
async fn paced(
    wr: &mut OwnedWriteHalf,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    ver: &str,
    start: usize,
    owners: usize,
    rate: f64,
    key: &str,
    t: &mut Table,
) {
    let n = (rate * 3.0).clamp(1000.0, 100_000.0) as usize;
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(n);
    let mut lat: Vec<f64> = Vec::with_capacity(n);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let mut next_send = 0usize;
    // Batches of changes per tick keep timer overhead low; each change is
    // stamped when its bytes were written.
    let tick = Duration::from_micros(500);
    let per_tick = ((rate * tick.as_secs_f64()).ceil() as usize).max(1);
    let mut pending_out = 0usize;
    loop {
        if next_send < n {
            let due = t0 + interval.mul_f64(next_send as f64);
            let now = Instant::now();
            if due <= now {
                let mut batch = String::new();
                let mut keys = Vec::new();
                for _ in 0..per_tick.min(n - next_send) {
                    let i = start + next_send;
                    let o = i % owners;
                    let st = format!("l{i}");
                    batch.push_str(&device_presence(o, 0, show_of(0), &st, ver));
                    keys.push(st);
                    next_send += 1;
                }
                wr.write_all(batch.as_bytes()).await.expect("write");
                let stamp = Instant::now();
                for k in keys {
                    sent_at.insert(k, stamp);
                }
                pending_out += 1;
            }
        }
        let wait = if next_send < n {
            (t0 + interval.mul_f64(next_send as f64)).saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(5)
        };
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(o)) => {
                if let Some(st) = o.status.as_ref().filter(|_| o.name == "presence") {
                    if let Some(at) = sent_at.remove(st) {
                        lat.push((o.at - at).as_secs_f64() * 1000.0);
                    }
                }
            }
            Ok(None) => break,
            Err(_) if next_send >= n => break,
            Err(_) => {}
        }
        if next_send >= n && sent_at.is_empty() {
            break;
        }
    }
    let _ = pending_out;
    lat.sort_by(|x, y| x.total_cmp(y));
    t.put(&format!("{key}_rate_changes_per_sec"), format!("{rate:.0}"));
    t.put(&format!("{key}_samples"), lat.len());
    t.put(&format!("{key}_lost"), sent_at.len());
    t.put(
        &format!("{key}_p50_ms"),
        format!("{:.3}", percentile(&lat, 0.50)),
    );
    t.put(
        &format!("{key}_p99_ms"),
        format!("{:.3}", percentile(&lat, 0.99)),
    );
    t.put(
        &format!("{key}_max_ms"),
        format!("{:.3}", percentile(&lat, 1.0)),
    );
}

/// The latency floor: the component's connection code alone, on a
/// thread of its own, answering each device presence with as many
/// presences as the component writes for it (one per watcher and class,
/// same status), through the stream with one flush; paced and timed as
/// [`latency`] times the component. What this machine's scheduling, the
/// generator's reading and the XML stack cost with no core behind them.
async fn latency_floor(rate: f64, copies: usize, t: &mut Table) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let addr = listener.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let timeouts = Timeouts {
                read_timeout: Duration::from_secs(60),
                response_timeout: Duration::from_secs(30),
            };
            let mut stream = connection::connect(addr, DOMAIN, SECRET_FLOOR, timeouts)
                .await
                .expect("the echo connects");
            while let Some(Ok(el)) = stream.next().await {
                if el.name() != "presence" {
                    continue;
                }
                let status = el
                    .get_child("status", stanza::ns::COMPONENT)
                    .map(|s| s.text())
                    .unwrap_or_default();
                for c in 0..copies {
                    let mut p = stanza::stanza(
                        "presence",
                        "alice@unified.bench/chat",
                        &watcher(0, c),
                        None,
                    );
                    p.append_child(stanza::text_element(
                        "status",
                        stanza::ns::COMPONENT,
                        &status,
                    ));
                    if stream.feed(&p).await.is_err() {
                        return;
                    }
                }
                if SinkExt::<&minidom::Element>::flush(&mut stream)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    });
    let (sock, _) = listener.accept().await.expect("accept");
    let (mut wr, mut rx) = server_side(sock).await;
    wr.write_all(b"<handshake/>").await.expect("w");
    paced(&mut wr, &mut rx, &ver(), 0, 1000, rate, "latency_floor", t).await;
    drop(wr);
    let _ = echo.join();
}

// ---- the floor: the XML stack alone --------------------------------------

/// The component's connection code against a minimal server; then `n`
/// device presences read as elements (the read floor), and `n` presences
/// built, serialised and written with feed + one flush (the write floor).
async fn floor(a: &Args, t: &mut Table, suffix: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let addr = listener.local_addr().expect("addr");
    let n = a.changes;
    let ver = ver();
    let server_ver = ver.clone();
    // Server side on its own thread and runtime, as the generator is.
    let server = std::thread::spawn(move || {
        let ver = server_ver;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (sock, _) = listener.accept().await.expect("accept");
            sock.set_nodelay(true).expect("nodelay");
            let (rd, mut wr) = sock.into_split();
            let (tx, mut rx) = mpsc::unbounded_channel();
            tokio::spawn(read_loop(rd, tx));
            rx.recv().await.expect("header");
            wr.write_all(format!("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='{DOMAIN}' id='{STREAM_ID}'>").as_bytes()).await.expect("w");
            rx.recv().await.expect("handshake");
            wr.write_all(b"<handshake/>").await.expect("w");
            let mut buf = String::with_capacity(n * 280);
            for i in 0..n {
                buf.push_str(&device_presence(i % 1000, 0, "chat", &format!("v{i}"), &ver));
            }
            wr.write_all(buf.as_bytes()).await.expect("w");
            // Then count what the client writes.
            let mut got = 0;
            let mut first = None;
            let mut last = Instant::now();
            while got < n {
                let Some(o) = rx.recv().await else { break };
                if o.name == "presence" {
                    got += 1;
                    first.get_or_insert(o.at);
                    last = o.at;
                }
            }
            (got, first, last)
        })
    });
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(60),
        response_timeout: Duration::from_secs(30),
    };
    let mut stream = connection::connect(addr, DOMAIN, SECRET_FLOOR, timeouts)
        .await
        .expect("the floor connects");
    let t0 = Instant::now();
    // The reading is this thread's alone (the server writes on its own).
    let cpu0 = thread_cpu_secs();
    let mut read = 0;
    while read < n {
        match stream.next().await {
            Some(Ok(el)) => {
                if el.name() == "presence" {
                    read += 1;
                }
            }
            Some(Err(e)) => panic!("floor read: {e}"),
            None => break,
        }
    }
    let read_secs = t0.elapsed().as_secs_f64();
    let read_cpu = thread_cpu_secs() - cpu0;
    let t1 = Instant::now();
    for i in 0..n {
        let mut p = stanza::stanza(
            "presence",
            "alice@unified.bench/chat",
            &watcher(i % 1000, 0),
            None,
        );
        p.append_child(stanza::text_element("show", stanza::ns::COMPONENT, "chat"));
        p.append_child(stanza::text_element(
            "status",
            stanza::ns::COMPONENT,
            &format!("v{i}"),
        ));
        p.append_child(stanza::text_element(
            "priority",
            stanza::ns::COMPONENT,
            "10",
        ));
        p.append_child(stanza::element(
            "c",
            stanza::ns::CAPS,
            &[("hash", "sha-1"), ("node", NODE), ("ver", &ver)],
        ));
        stream.feed(&p).await.expect("feed");
    }
    SinkExt::<&minidom::Element>::flush(&mut stream)
        .await
        .expect("flush");
    let build_secs = t1.elapsed().as_secs_f64();
    let (got, _first, last) = server.join().expect("floor server");
    let write_secs = (last - t1).as_secs_f64().max(build_secs);
    t.put(
        &format!("floor_read{suffix}_per_sec"),
        format!("{:.0}", read as f64 / read_secs),
    );
    t.put(
        &format!("floor_read{suffix}_cpu_us_per_stanza"),
        format!("{:.2}", read_cpu * 1e6 / read.max(1) as f64),
    );
    t.put(
        &format!("floor_write{suffix}_per_sec"),
        format!("{:.0}", got as f64 / write_secs),
    );
}

/// The floor's server does not check the handshake; any secret will do.
const SECRET_FLOOR: &str = "floor";

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut t = Table(Vec::new());
    rt.block_on(async {
        eprintln!("floor: the XML stack alone, {} stanzas each way", a.changes);
        floor(&a, &mut t, "").await;

        let dir = tempfile::tempdir().expect("tempdir");
        eprintln!(
            "component alone: {} owners x {} devices x {} watchers, {} changes",
            a.owners, a.devices, a.watchers, a.changes
        );
        // Baseline: the same binary with one owner, linked.
        let empty = tempfile::tempdir().expect("tempdir");
        let mut s = Server::start(&a.bin, empty.path(), 1, 200).await;
        populate(
            &mut s,
            &Args {
                watchers: 1,
                devices: 2,
                ..a.clone()
            },
            1,
            &mut Table(Vec::new()),
            "",
        )
        .await;
        let one_owner = rss(s.pid).rss_kib;
        s.stop().await;
        t.put("rss_one_owner_kib", one_owner);

        let mut s = Server::start(&a.bin, dir.path(), a.owners, 200).await;
        t.put("owners", a.owners);
        t.put("devices_per_owner", a.devices);
        t.put("watchers_per_owner", a.watchers);
        populate(&mut s, &a, a.owners, &mut t, "").await;
        let linked =
            t.0.iter()
                .find(|(k, _)| k == "rss_linked_kib")
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0);
        t.put(
            "bytes_per_owner",
            format!(
                "{:.0}",
                (linked.saturating_sub(one_owner) * 1024) as f64 / a.owners as f64
            ),
        );
        churn_invisible(&mut s, &a, a.owners, &mut t).await;
        t.put("rss_after_invisible_kib", rss(s.pid).rss_kib);
        // The floor again, right after: this VM's speed drifts within a
        // run, so the churn is compared with the floors on both sides.
        floor(&a, &mut t, "_after").await;
        churn_visible(&mut s, &a, a.owners, &mut t, "").await;
        t.put("rss_after_visible_kib", rss(s.pid).rss_kib);
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.sync("after-churn").await;
        let out_rate = fanout(&mut s, &a, a.owners, &mut t).await;
        let r = rss(s.pid);
        t.put("peak_rss_kib", r.hwm_kib);
        t.put("final_rss_kib", r.rss_kib);
        s.stop().await;

        // Latency at half the rate at which every change can reach every
        // watcher (the fan-out rate over the stanzas one change makes).
        let max = match a.latency_rate {
            0 => out_rate / (a.watchers * CLASSES_PER_DEVICE) as f64,
            fixed => 2.0 * fixed as f64,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let lo = a.latency_owners;
        eprintln!(
            "latency: {lo} owners, default coalescing, {:.0} changes/s",
            max / 2.0
        );
        let mut s = Server::start(&a.bin, dir.path(), lo, 200).await;
        populate(&mut s, &a, lo, &mut Table(Vec::new()), "lat_").await;
        latency(&mut s, &a, lo, max / 2.0, &mut t).await;
        s.stop().await;
        eprintln!("latency floor: the XML stack alone, echoing, same rate");
        latency_floor(max / 2.0, a.watchers * CLASSES_PER_DEVICE, &mut t).await;
    });
    println!("== component");
    for (k, v) in &t.0 {
        println!("{k} {v}");
    }
    println!("== end");
}
