//! Through a real Prosody, against Prosody's native path (issue 7,
//! part 3). `cargo bench --bench prosody -- [--watchers W] [--rounds N]`
//!
//! Alice's three devices and W watchers are real c2s clients of a fresh
//! loopback Prosody (scripts/prosody_local.py, Nagle off as in
//! scripts/bench_calls.py), driven by this process over raw sockets (SASL
//! PLAIN, bind, presence), fast enough not to be the limit. The same
//! churn runs twice, each time on a fresh Prosody:
//!
//! - **component**: watchers subscribe to `alice@unified.localhost`; her
//!   account approved the component's subscription;
//! - **native**: watchers subscribe to `alice@localhost`; her phone
//!   approved each of them.
//!
//! The churn is a round of six device changes of which one is what a
//! contact would notice: the phone (her best device) changes its status;
//! the laptop and the tablet go away/xa and back, the laptop re-sends its
//! presence unchanged, the tablet changes its status, the phone changes its
//! priority. Natively every change reaches every watcher; through the
//! component only what changes a class presence does.
//!
//! Two phases per path: paced (4 rounds/s, so that every status change of
//! the phone falls in its own coalescing window) for the latency from the
//! phone's write to the first watcher's read; then a flood (as fast as the
//! server takes it) for stanzas delivered and CPU seconds of the component
//! and of Prosody for the same work. Prints `key value` lines between
//! `== prosody` and `== end`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

mod common;
use common::*;

const HOST: &str = "localhost";
const DOMAIN: &str = "unified.localhost";
const SECRET: &str = "bench-prosody";
const CLIENT: &str = "jabber:client";
/// What the tablet says of itself: a chat-only client.
const CHAT_ONLY: &[&str] = &["http://jabber.org/protocol/disco#info", "urn:xmpp:receipts"];

struct Args {
    watchers: usize,
    rounds: usize,
    bin: PathBuf,
}

fn args() -> Args {
    let flags = numeric_flags();
    let get = |k: &str, default: usize| flags.get(k).copied().unwrap_or(default).max(1);
    Args {
        watchers: get("watchers", 50),
        rounds: get("rounds", 1000),
        bin: PathBuf::from(env!("CARGO_BIN_EXE_unified-presence")),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// ---- Prosody and the component -------------------------------------------

struct Prosody {
    wrapper: Child,
    pid: u32,
    c2s: u16,
    component: u16,
}

impl Prosody {
    /// A fresh Prosody in `dir` with `users` (password "pw"), written as
    /// its internal_plain account files (prosodyctl takes ~0.5 s a user).
    fn start(root: &Path, dir: &Path, users: &[String]) -> Prosody {
        let accounts = dir.join("data").join(HOST).join("accounts");
        std::fs::create_dir_all(&accounts).expect("data dir");
        for u in users {
            std::fs::write(
                accounts.join(format!("{u}.dat")),
                "return {\n\t[\"password\"] = \"pw\";\n};\n",
            )
            .expect("account file");
        }
        let (c2s, component) = (free_port(), free_port());
        let mut wrapper = Command::new("python3")
            .arg(root.join("scripts/prosody_local.py"))
            .arg("--dir")
            .arg(dir)
            .args(["--c2s-port", &c2s.to_string()])
            .args(["--component-port", &component.to_string()])
            .args(["--domain", DOMAIN, "--secret", SECRET, "--level", "warn"])
            .args(["--extra", "network_settings = { nagle = false }"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start scripts/prosody_local.py");
        let mut line = String::new();
        use std::io::BufRead as _;
        let out = wrapper.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("prosody's pid");
        let pid = line
            .trim()
            .parse()
            .expect("prosody_local.py prints prosody's pid");
        Prosody {
            wrapper,
            pid,
            c2s,
            component,
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let _ = self.wrapper.wait();
    }
}

fn start_component(bin: &Path, dir: &Path, prosody: &Prosody) -> Child {
    let config = dir.join("component.toml");
    let text = format!(
        "[server]\naddress = \"127.0.0.1:{}\"\ndomain = \"{DOMAIN}\"\nsecret = \"{SECRET}\"\n\n\
         [store]\npath = \"{}\"\n\n[log]\nlevel = \"warn\"\n\n\
         # One generator account plays all of Alice's churn: no rate limit.\n\
         [limits]\nstanzas_per_sec = 0\n\n\
         [[owners]]\nname = \"alice\"\naccounts = [\"alice@{HOST}\"]\nsubscription = \"open\"\n",
        prosody.component,
        dir.join("store").display()
    );
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&config)
            .expect("component config");
        f.write_all(text.as_bytes()).expect("component config");
    }
    Command::new(bin)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the component")
}

// ---- raw c2s clients ------------------------------------------------------

/// A logged-in client: bytes out, elements in (disco#info answered).
struct C2s {
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl C2s {
    fn send(&self, s: String) {
        let _ = self.tx.send(s.into_bytes());
    }
}

async fn next_named(rx: &mut mpsc::UnboundedReceiver<Out>, name: &str) -> Out {
    loop {
        let out = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no <{name}/> within 20 s"))
            .expect("stream open");
        if out.name == name {
            return out;
        }
    }
}

/// Logs `user`/`resource` in (RFC 6120: SASL PLAIN, restart, bind) and
/// hands every later element to `events` tagged with `tag`.
async fn login(
    port: u16,
    user: &str,
    resource: &str,
    features: &'static [&'static str],
    tag: usize,
    events: mpsc::UnboundedSender<(usize, Out)>,
) -> C2s {
    let sock = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("c2s connect");
    sock.set_nodelay(true).expect("nodelay");
    let (rd, mut wr) = sock.into_split();
    let (raw_tx, mut raw) = mpsc::unbounded_channel();
    tokio::spawn(read_loop(rd, raw_tx));
    let header = format!("<?xml version='1.0'?><stream:stream to='{HOST}' xmlns='{CLIENT}' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    wr.write_all(header.as_bytes()).await.expect("w");
    next_named(&mut raw, "stream:features").await;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pw"));
    wr.write_all(
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")
            .as_bytes(),
    )
    .await
    .expect("w");
    next_named(&mut raw, "success").await;
    wr.write_all(header.as_bytes()).await.expect("w");
    next_named(&mut raw, "stream:features").await;
    wr.write_all(format!("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>").as_bytes()).await.expect("w");
    next_named(&mut raw, "iq").await;
    let (tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let replies = tx.clone();
    tokio::spawn(async move {
        while let Some(out) = raw.recv().await {
            if out.disco_get {
                let _ = replies.send(disco_reply(&out, features, CLIENT).into_bytes());
            } else if events.send((tag, out)).is_err() {
                return;
            }
        }
    });
    C2s { tx }
}

// ---- the churn --------------------------------------------------------------

struct Alice {
    phone: C2s,
    laptop: C2s,
    tablet: C2s,
    ver: String,
}

impl Alice {
    fn presence(&self, show: Option<&str>, status: &str, priority: i8, caps: bool) -> String {
        let show = show
            .map(|s| format!("<show>{s}</show>"))
            .unwrap_or_default();
        let caps = if caps {
            format!(
                "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{NODE}' ver='{}'/>",
                self.ver
            )
        } else {
            String::new()
        };
        format!("<presence>{show}<status>{status}</status><priority>{priority}</priority>{caps}</presence>")
    }

    fn online(&self) {
        self.phone
            .send(self.presence(Some("chat"), "p-start", 10, true));
        self.laptop
            .send(self.presence(Some("away"), "l-start", 5, true));
        self.tablet
            .send(self.presence(Some("xa"), "t-start", 0, false));
    }

    /// Change `k` (0..6) of round `r`; returns the phone status it set,
    /// for the one change a watcher notices.
    fn change(&self, r: usize, k: usize) -> Option<String> {
        let odd = r % 2 == 1;
        match k {
            0 => {
                let st = format!("p{r}");
                self.phone.send(self.presence(Some("chat"), &st, 10, true));
                Some(st)
            }
            1 => {
                let show = if odd { "xa" } else { "away" };
                self.laptop
                    .send(self.presence(Some(show), "l-start", 5, true));
                None
            }
            2 => {
                let show = if odd { "away" } else { "xa" };
                self.tablet
                    .send(self.presence(Some(show), "t-start", 0, false));
                None
            }
            3 => {
                let show = if odd { "xa" } else { "away" };
                self.laptop
                    .send(self.presence(Some(show), "l-start", 5, true));
                None
            }
            4 => {
                let show = if odd { "away" } else { "xa" };
                self.tablet
                    .send(self.presence(Some(show), &format!("t{r}"), 0, false));
                None
            }
            _ => {
                let prio = if odd { 9 } else { 10 };
                self.phone
                    .send(self.presence(Some("chat"), &format!("p{r}"), prio, true));
                None
            }
        }
    }
}

const CHANGES_PER_ROUND: usize = 6;

struct Phase {
    changes: usize,
    delivered: usize,
    latencies: Vec<f64>,
    secs: f64,
    prosody_cpu: f64,
    component_cpu: f64,
}

/// Runs `rounds` rounds at `per_sec` rounds a second (0: as fast as it
/// goes), then waits for the watchers to go quiet.
async fn churn(
    alice: &Alice,
    events: &mut mpsc::UnboundedReceiver<(usize, Out)>,
    from: &str,
    rounds: usize,
    first_round: usize,
    per_sec: f64,
    pids: (u32, Option<u32>),
) -> Phase {
    // Drain what is left from setup.
    while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_millis(300), async {
        Ok::<_, ()>(events.recv().await)
    })
    .await
    {}
    let cpu = |pid: Option<u32>| pid.map_or(0.0, cpu_secs);
    let (p0, c0) = (cpu_secs(pids.0), cpu(pids.1));
    let t0 = Instant::now();
    let mut sent: std::collections::HashMap<String, Instant> = Default::default();
    let mut latencies = Vec::new();
    let mut delivered = 0usize;
    let mut last_in = t0;
    let mut r = 0;
    let mut count = |o: &Out, sent: &mut std::collections::HashMap<String, Instant>| {
        if o.name == "presence" && o.from.starts_with(from) {
            delivered += 1;
            last_in = o.at;
            if let Some(at) = o.status.as_ref().and_then(|s| sent.remove(s)) {
                latencies.push((o.at - at).as_secs_f64() * 1000.0);
            }
        }
    };
    while r < rounds {
        if per_sec > 0.0 {
            let due = t0 + Duration::from_secs_f64(r as f64 / per_sec);
            while Instant::now() < due {
                let wait = due.saturating_duration_since(Instant::now());
                if let Ok(Some((_, o))) = tokio::time::timeout(wait, events.recv()).await {
                    count(&o, &mut sent);
                }
            }
        }
        for k in 0..CHANGES_PER_ROUND {
            if let Some(st) = alice.change(first_round + r, k) {
                sent.insert(st, Instant::now());
            }
        }
        r += 1;
        // Read what is there without waiting, so the flood does not
        // pile up in this process.
        while let Ok((_, o)) = events.try_recv() {
            count(&o, &mut sent);
        }
    }
    let sent_all = Instant::now();
    while let Ok(Some((_, o))) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        count(&o, &mut sent);
    }
    let secs = (last_in.max(sent_all) - t0).as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    Phase {
        changes: rounds * CHANGES_PER_ROUND,
        delivered,
        latencies,
        secs,
        prosody_cpu: cpu_secs(pids.0) - p0,
        component_cpu: cpu(pids.1) - c0,
    }
}

fn report(t: &mut Table, path: &str, paced: &Phase, flood: &Phase) {
    t.put(
        &format!("{path}_paced_delivered_per_change"),
        format!("{:.3}", paced.delivered as f64 / paced.changes as f64),
    );
    t.put(
        &format!("{path}_paced_latency_samples"),
        paced.latencies.len(),
    );
    t.put(
        &format!("{path}_paced_latency_p50_ms"),
        format!("{:.3}", percentile(&paced.latencies, 0.5)),
    );
    t.put(
        &format!("{path}_paced_latency_p99_ms"),
        format!("{:.3}", percentile(&paced.latencies, 0.99)),
    );
    t.put(&format!("{path}_flood_changes"), flood.changes);
    t.put(
        &format!("{path}_flood_changes_per_sec"),
        format!("{:.0}", flood.changes as f64 / flood.secs),
    );
    t.put(
        &format!("{path}_flood_delivered_per_change"),
        format!("{:.3}", flood.delivered as f64 / flood.changes as f64),
    );
    t.put(
        &format!("{path}_flood_delivered_per_sec"),
        format!("{:.0}", flood.delivered as f64 / flood.secs),
    );
    t.put(
        &format!("{path}_flood_prosody_cpu_s"),
        format!("{:.2}", flood.prosody_cpu),
    );
    t.put(
        &format!("{path}_flood_prosody_cpu_share"),
        format!("{:.2}", flood.prosody_cpu / flood.secs),
    );
    t.put(
        &format!("{path}_flood_component_cpu_s"),
        format!("{:.2}", flood.component_cpu),
    );
    t.put(
        &format!("{path}_flood_component_cpu_share"),
        format!("{:.2}", flood.component_cpu / flood.secs),
    );
}

/// One path end to end: `via_component` picks the address watchers use.
async fn run_path(a: &Args, root: &Path, via_component: bool, t: &mut Table) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut users = vec!["alice".to_owned()];
    users.extend((0..a.watchers).map(|w| format!("w{w}")));
    let prosody = Prosody::start(root, &dir.path().join("prosody"), &users);
    let component = via_component.then(|| start_component(&a.bin, dir.path(), &prosody));
    let (dev_tx, mut dev_rx) = mpsc::unbounded_channel();
    let port = prosody.c2s;
    let alice = Alice {
        phone: login(port, "alice", "phone", FEATURES, 0, dev_tx.clone()).await,
        laptop: login(port, "alice", "laptop", FEATURES, 1, dev_tx.clone()).await,
        tablet: login(port, "alice", "tablet", CHAT_ONLY, 2, dev_tx.clone()).await,
        ver: ver(),
    };
    alice.online();
    let target = if via_component {
        format!("alice@{DOMAIN}")
    } else {
        format!("alice@{HOST}")
    };
    if via_component {
        // Her account approves the component's request (the link).
        loop {
            let (_, o) = tokio::time::timeout(Duration::from_secs(30), dev_rx.recv())
                .await
                .expect("the component asks alice within 30 s")
                .expect("open");
            if o.name == "presence" && o.typ.as_deref() == Some("subscribe") && o.from == target {
                alice
                    .phone
                    .send(format!("<presence to='{target}' type='subscribed'/>"));
                break;
            }
        }
    }
    let (w_tx, mut w_rx) = mpsc::unbounded_channel();
    let mut watchers = Vec::new();
    for w in 0..a.watchers {
        let c = login(port, &format!("w{w}"), "pc", CHAT_ONLY, w, w_tx.clone()).await;
        c.send("<presence/>".into());
        c.send(format!("<presence to='{target}' type='subscribe'/>"));
        watchers.push(c);
    }
    // Natively her phone approves each watcher; the component approves
    // by itself (subscription = "open").
    let ready_from = if via_component {
        format!("{target}/audio")
    } else {
        format!("{target}/phone")
    };
    let mut ready = vec![false; a.watchers];
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.iter().any(|r| !r) {
        assert!(
            Instant::now() < deadline,
            "watchers did not all see alice within 60 s"
        );
        tokio::select! {
            Some((_, o)) = dev_rx.recv() => {
                if !via_component && o.name == "presence" && o.typ.as_deref() == Some("subscribe") {
                    let who = o.from.split('/').next().unwrap_or_default().to_owned();
                    alice.phone.send(format!("<presence to='{who}' type='subscribed'/>"));
                }
            }
            Some((w, o)) = w_rx.recv() => {
                if o.name == "presence" && o.typ.is_none() && o.from == ready_from {
                    ready[w] = true;
                }
            }
        }
    }
    // Devices' events are not needed any more, but must be read.
    tokio::spawn(async move { while dev_rx.recv().await.is_some() {} });
    let pids = (prosody.pid, component.as_ref().map(Child::id));
    let path = if via_component { "component" } else { "native" };
    eprintln!("{path}: {} watchers ready; paced churn", a.watchers);
    let paced_rounds = 40;
    let paced = churn(&alice, &mut w_rx, &target, paced_rounds, 0, 4.0, pids).await;
    eprintln!("{path}: flood of {} rounds", a.rounds);
    let flood = churn(
        &alice,
        &mut w_rx,
        &target,
        a.rounds,
        paced_rounds,
        0.0,
        pids,
    )
    .await;
    report(t, path, &paced, &flood);
    drop(watchers);
    if let Some(mut c) = component {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let _ = c.wait();
    }
    prosody.stop();
}

fn main() {
    let a = args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut t = Table(Vec::new());
    t.put("watchers", a.watchers);
    t.put("changes_per_round", CHANGES_PER_ROUND);
    rt.block_on(async {
        run_path(&a, &root, true, &mut t).await;
        run_path(&a, &root, false, &mut t).await;
    });
    println!("== prosody");
    for (k, v) in &t.0 {
        println!("{k} {v}");
    }
    println!("== end");
}
