//! The optional admin listener (`[http] bind`, off by default): Prometheus
//! text metrics at `/metrics`, `/healthz` for load balancers and service
//! managers, and a status page at `/status` (`/status.json` for scripts).
//!
//! `/metrics` and `/status` name owners, accounts and device resources, so
//! they answer only requests carrying `Authorization: Bearer <admin_token>`,
//! or from loopback when the admin set `trust_loopback` (and no proxy
//! header says the request was relayed); everyone else gets 403 and
//! nothing more. `/healthz` says only `ok` or why not.
//!
//! The core belongs to the runtime task: handlers ask it for an
//! [`AdminView`] over a channel ([`AdminRequest`]), and counters the
//! runtime bumps per stanza are atomics (prometheus-client's `Counter`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use minidom::Element;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::Secret;
use crate::core::admin::AdminView;
use crate::core::{CallOutcome, Event};

/// Stanza kinds, as metric labels.
const KINDS: [&str; 4] = ["message", "presence", "iq", "other"];

fn kind_index(name: &str) -> usize {
    match name {
        "message" => 0,
        "presence" => 1,
        "iq" => 2,
        _ => 3,
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// Everything counted, shared by the runtime (which counts) and the
/// listener (which reads).
pub struct Metrics {
    registry: Registry,
    stanzas_in: [Counter; 4],
    stanzas_out: [Counter; 4],
    errors_sent: Counter,
    calls: [Counter; 6],
    first_ring_seconds: Histogram,
    /// Call legs rung, reached, answered.
    legs: [Counter; 3],
    ring_seconds: Histogram,
    reconnects: Counter,
    store_write_seconds: Histogram,
    connected: Gauge,
    store_ok: AtomicBool,
    is_connected: AtomicBool,
    owners: Gauge,
    devices: Gauge,
    watchers: Gauge,
    live_calls: Gauge,
    guard_drops: Gauge,
    heap: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("unified_presence");
        let by_kind = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<Labels, Counter>::default();
            registry.register(name, help, family.clone());
            KINDS.map(|k| family.get_or_create(&vec![("kind", k)]).clone())
        };
        let stanzas_in = by_kind(
            &mut registry,
            "stanzas_received",
            "Stanzas received from the server, by kind",
        );
        let stanzas_out = by_kind(
            &mut registry,
            "stanzas_sent",
            "Stanzas sent to the server, by kind",
        );
        let errors_sent = Counter::default();
        registry.register(
            "errors_sent",
            "Error stanzas sent (RFC 6120 8.3)",
            errors_sent.clone(),
        );
        let calls_family = Family::<Labels, Counter>::default();
        registry.register(
            "calls",
            "Calls ended (or refused before ringing), by outcome",
            calls_family.clone(),
        );
        let calls = CallOutcome::ALL.map(|o| {
            calls_family
                .get_or_create(&vec![("outcome", o.as_str())])
                .clone()
        });
        let ring_seconds = Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0]);
        registry.register(
            "ring_seconds",
            "How long answered calls rang before a device answered",
            ring_seconds.clone(),
        );
        let first_ring_seconds = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]);
        registry.register(
            "first_ring_seconds",
            "How long after the caller asked a device of hers first showed it got the call \
             (its receipt or ringing)",
            first_ring_seconds.clone(),
        );
        let legs_family = Family::<Labels, Counter>::default();
        registry.register(
            "call_legs",
            "Legs of ended calls: rung (a device, or her account for devices asleep), \
             reached (the device showed it got the call), answered",
            legs_family.clone(),
        );
        let legs = ["rung", "reached", "answered"]
            .map(|s| legs_family.get_or_create(&vec![("state", s)]).clone());
        let reconnects = Counter::default();
        registry.register(
            "reconnects",
            "Connections to the server after the first one",
            reconnects.clone(),
        );
        let store_write_seconds =
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5]);
        registry.register(
            "store_write_seconds",
            "Time to write (and flush, when acknowledged) one input's store changes",
            store_write_seconds.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let connected = gauge(
            &mut registry,
            "connected",
            "1 while the component is connected to the server",
        );
        let owners = gauge(&mut registry, "owners", "Owners (virtual JIDs)");
        let devices = gauge(&mut registry, "devices", "Owners' devices online");
        let watchers = gauge(&mut registry, "watchers", "Watchers and pending requests");
        let live_calls = gauge(&mut registry, "live_calls", "Calls ringing or answered now");
        let guard_drops = gauge(
            &mut registry,
            "privacy_guard_drops",
            "Stanzas the privacy guard refused to send (each one a bug to report)",
        );
        let heap = gauge(
            &mut registry,
            "heap_bytes",
            "Heap memory in use: what the allocator handed out and has not had back, \
             its own overhead included (glibc only). Resident memory is this plus what \
             the allocator keeps for reuse, code and stacks",
        );
        Metrics {
            registry,
            stanzas_in,
            stanzas_out,
            errors_sent,
            calls,
            ring_seconds,
            first_ring_seconds,
            legs,
            reconnects,
            store_write_seconds,
            connected,
            store_ok: AtomicBool::new(true),
            is_connected: AtomicBool::new(false),
            owners,
            devices,
            watchers,
            live_calls,
            guard_drops,
            heap,
        }
    }

    /// A stanza came in.
    pub fn received(&self, el: &Element) {
        self.stanzas_in[kind_index(el.name())].inc();
    }

    /// A stanza went out.
    pub fn sent(&self, el: &Element) {
        self.sent_each(el, 1);
    }

    /// `el` went out `n` times (to as many recipients).
    pub fn sent_each(&self, el: &Element, n: usize) {
        let n = n as u64;
        self.stanzas_out[kind_index(el.name())].inc_by(n);
        if el.attr("type") == Some("error") {
            self.errors_sent.inc_by(n);
        }
    }

    /// Something the core reported.
    pub fn event(&self, e: Event) {
        match e {
            Event::CallEnded(outcome) => {
                let i = CallOutcome::ALL
                    .iter()
                    .position(|o| *o == outcome)
                    .unwrap_or(0);
                self.calls[i].inc();
            }
            Event::CallAnswered { ring_ms } => self.ring_seconds.observe(ring_ms as f64 / 1000.0),
            Event::CallReached { ms } => self.first_ring_seconds.observe(ms as f64 / 1000.0),
            Event::CallLegs {
                rung,
                reached,
                answered,
            } => {
                self.legs[0].inc_by(u64::from(rung));
                self.legs[1].inc_by(u64::from(reached));
                self.legs[2].inc_by(u64::from(answered));
            }
        }
    }

    /// One input's store changes took this long.
    pub fn store_write(&self, took: Duration, ok: bool) {
        self.store_write_seconds.observe(took.as_secs_f64());
        self.store_ok.store(ok, Ordering::Relaxed);
    }

    /// The stream to the server came up (`again`: not the first time) or
    /// went down.
    pub fn connection(&self, up: bool, again: bool) {
        self.connected.set(i64::from(up));
        self.is_connected.store(up, Ordering::Relaxed);
        if up && again {
            self.reconnects.inc();
        }
    }

    fn set_view(&self, v: &AdminView) {
        let f = &v.footprint;
        self.owners.set(v.owners_total as i64);
        self.devices.set(f.devices as i64);
        self.watchers.set(f.watchers as i64);
        self.live_calls.set(f.calls as i64);
        self.guard_drops.set(v.guard_drops as i64);
        if let Some(bytes) = heap_in_use() {
            self.heap.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Bytes of heap in use, by glibc's own count: an exact figure where
/// resident memory moves with what the allocator keeps for reuse.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Option<u64> {
    // SAFETY: `mallinfo2` (glibc 2.33 and later) takes no arguments,
    // reads the allocator's counters under the allocator's own locks and
    // returns them by value.
    let m = unsafe { libc::mallinfo2() };
    // In use from the arenas, and in blocks mapped on their own.
    u64::try_from(m.uordblks.saturating_add(m.hblkhd)).ok()
}

/// Other allocators do not say (the gauge stays 0).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<u64> {
    None
}

/// A question from the listener to the task that owns the core.
#[derive(Debug)]
pub enum AdminRequest {
    /// The status page's data, owners cut at `limit`.
    View {
        /// At most this many owners.
        limit: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<AdminView>,
    },
}

#[derive(Clone)]
struct App {
    metrics: Arc<Metrics>,
    core: mpsc::Sender<AdminRequest>,
    token: Arc<Secret>,
    trust_loopback: bool,
}

impl App {
    async fn view(&self, limit: usize) -> Option<AdminView> {
        let (reply, answer) = oneshot::channel();
        self.core
            .try_send(AdminRequest::View { limit, reply })
            .ok()?;
        tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .ok()?
            .ok()
    }

    /// The admin token (compared in constant time), or, when the admin
    /// chose `trust_loopback`, a loopback peer whose request no proxy
    /// relayed.
    fn allowed(&self, peer: SocketAddr, headers: &HeaderMap) -> bool {
        let relayed = ["forwarded", "x-forwarded-for", "x-real-ip", "via"]
            .iter()
            .any(|h| headers.contains_key(*h));
        if self.trust_loopback && peer.ip().is_loopback() && !relayed {
            return true;
        }
        let want = self.token.expose().as_bytes();
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes);
        match got {
            Some(got) if !want.is_empty() && got.len() == want.len() => {
                got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
            _ => false,
        }
    }
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "send Authorization: Bearer <[http] admin_token>\n",
    )
        .into_response()
}

async fn healthz(State(app): State<App>) -> Response {
    let connected = app.metrics.is_connected.load(Ordering::Relaxed);
    let store = app.metrics.store_ok.load(Ordering::Relaxed);
    match (connected, store) {
        (true, true) => (StatusCode::OK, "ok\n").into_response(),
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the XMPP server (see the log)\n",
        )
            .into_response(),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the store refuses writes (see the log)\n",
        )
            .into_response(),
    }
}

async fn metrics_text(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !app.allowed(peer, &headers) {
        return forbidden();
    }
    if let Some(v) = app.view(0).await {
        app.metrics.set_view(&v);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct Page {
    limit: Option<usize>,
}

/// `/status` and `/status.json`: the same view, as HTML or JSON.
async fn status(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(page): Query<Page>,
    json: bool,
) -> Response {
    if !app.allowed(peer, &headers) {
        return forbidden();
    }
    let Some(v) = app.view(page.limit.unwrap_or(500)).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the core is busy reconnecting\n",
        )
            .into_response();
    };
    if json {
        (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&v).unwrap_or_default(),
        )
            .into_response()
    } else {
        let connected = app.metrics.is_connected.load(Ordering::Relaxed);
        Html(status_page(&v, connected)).into_response()
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The status page: plain HTML, no scripts, nothing loaded from elsewhere.
pub fn status_page(v: &AdminView, connected: bool) -> String {
    use std::fmt::Write as _;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>unified-presence: {d}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}</style></head><body>\
         <h1>unified-presence on {d}</h1><p>{conn}. {o} owners, {dev} devices online, {w} watchers or requests waiting, {c} live calls, \
         {g} stanzas refused by the privacy guard.</p>",
        d = esc(&v.domain),
        conn = if connected { "Connected to the server" } else { "<strong>Not connected to the server</strong>" },
        o = v.owners_total,
        dev = v.footprint.devices,
        w = v.footprint.watchers,
        c = v.calls.len(),
        g = v.guard_drops,
    );
    h.push_str("<h2>Live calls</h2>");
    if v.calls.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table><tr><th>owner</th><th>class</th><th>caller</th><th>state</th><th>rung</th><th>reached</th><th>first ring</th><th>seconds</th></tr>");
        for c in &v.calls {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.owner),
                esc(&c.class),
                esc(&c.caller),
                c.state,
                c.legs,
                c.reached,
                c.first_ring_secs
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s")),
                c.secs
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h2>Owners ({} of {})</h2>",
        v.owners.len(),
        v.owners_total
    );
    h.push_str("<table><tr><th>address</th><th>accounts</th><th>watchers (waiting)</th><th>what watchers see</th><th>devices: classes</th></tr>");
    for o in &v.owners {
        let accounts: Vec<String> = o
            .accounts
            .iter()
            .map(|(a, ok)| format!("{}{}", esc(a), if *ok { "" } else { " (not approved yet)" }))
            .collect();
        let classes: Vec<String> = o
            .classes
            .iter()
            .map(|(c, s)| format!("{}: {}", esc(c), esc(s)))
            .collect();
        let devices: Vec<String> = o
            .devices
            .iter()
            .map(|d| {
                format!(
                    "{} ({}): {}",
                    esc(&d.resource),
                    esc(&d.show),
                    esc(&d.classes.join(", "))
                )
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td></tr>",
            esc(&o.address),
            accounts.join("<br>"),
            o.watchers,
            o.pending,
            classes.join("<br>"),
            if devices.is_empty() {
                "none online".to_owned()
            } else {
                devices.join("<br>")
            },
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// Binds `bind` now (so that a taken port fails the start, with the
/// reason) and serves until the runtime ends.
pub async fn listen(
    bind: SocketAddr,
    token: Secret,
    trust_loopback: bool,
    metrics: Arc<Metrics>,
    core: mpsc::Sender<AdminRequest>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    if token.expose().is_empty() && !trust_loopback {
        warn!(%bind, "http: no admin_token and trust_loopback off: /metrics and /status answer nobody, only /healthz");
    }
    info!(%bind, trust_loopback, "http: /metrics, /healthz, /status");
    let app = App {
        metrics,
        core,
        token: Arc::new(token),
        trust_loopback,
    };
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route(
            "/status",
            get(|app, peer, headers, page| status(app, peer, headers, page, false)),
        )
        .route(
            "/status.json",
            get(|app, peer, headers, page| status(app, peer, headers, page, true)),
        )
        .with_state(app);
    tokio::spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
        if let Err(e) = served {
            warn!(error = %e, "http listener stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_may_read_unless_loopback_is_trusted() {
        let (tx, _rx) = mpsc::channel(1);
        let app = App {
            metrics: Arc::new(Metrics::new()),
            core: tx,
            token: Arc::new(Secret::new("s3cret-token-0123")),
            trust_loopback: false,
        };
        let mut headers = HeaderMap::new();
        let remote: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        // The default: loopback is nobody in particular (a reverse proxy
        // on the same host relays everyone from there).
        assert!(!app.allowed(local, &headers));
        assert!(!app.allowed("[::1]:40000".parse().unwrap(), &headers));
        assert!(!app.allowed(remote, &headers));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer s3cret-token-0124".parse().unwrap(),
        );
        assert!(!app.allowed(remote, &headers));
        assert!(!app.allowed(local, &headers));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer s3cret-token-0123".parse().unwrap(),
        );
        assert!(app.allowed(remote, &headers));
        assert!(app.allowed(local, &headers));
        // Trusted loopback, when the admin says so, unless relayed.
        let trusting = App {
            trust_loopback: true,
            ..app.clone()
        };
        let bare = HeaderMap::new();
        assert!(trusting.allowed(local, &bare));
        assert!(!trusting.allowed(remote, &bare));
        for relay in ["forwarded", "x-forwarded-for", "x-real-ip", "via"] {
            let mut h = HeaderMap::new();
            h.insert(relay, "192.0.2.7".parse().unwrap());
            assert!(!trusting.allowed(local, &h), "{relay}");
        }
        // Without a token configured, no header opens it.
        let open = App {
            token: Arc::new(Secret::default()),
            ..app
        };
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(!open.allowed(remote, &headers));
        assert!(!open.allowed(local, &headers));
    }

    #[test]
    fn counts_show_up_in_the_text_format() {
        let m = Metrics::new();
        let iq: Element = "<iq xmlns='jabber:component:accept' type='error' id='1'/>"
            .parse()
            .unwrap();
        m.received(&iq);
        m.sent(&iq);
        m.event(Event::CallEnded(CallOutcome::Declined));
        m.event(Event::CallAnswered { ring_ms: 1500 });
        m.event(Event::CallReached { ms: 400 });
        m.event(Event::CallLegs {
            rung: 3,
            reached: 2,
            answered: 1,
        });
        let text = m.render();
        for line in [
            "unified_presence_call_legs_total{state=\"rung\"} 3",
            "unified_presence_call_legs_total{state=\"reached\"} 2",
            "unified_presence_call_legs_total{state=\"answered\"} 1",
            "unified_presence_first_ring_seconds_sum 0.4",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("unified_presence_stanzas_received_total{kind=\"iq\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("unified_presence_errors_sent_total 1"),
            "{text}"
        );
        assert!(
            text.contains("unified_presence_calls_total{outcome=\"declined\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("unified_presence_ring_seconds_sum 1.5"),
            "{text}"
        );
    }

    #[test]
    fn the_status_page_escapes_what_devices_chose() {
        let v = AdminView {
            domain: "u.example".into(),
            owners: vec![crate::core::admin::OwnerView {
                address: "alice@u.example".into(),
                accounts: vec![("alice@example.org".into(), true)],
                watchers: 1,
                pending: 0,
                classes: vec![("chat".into(), "online".into())],
                devices: vec![crate::core::admin::DeviceView {
                    resource: "<script>x</script>".into(),
                    show: "online".into(),
                    classes: vec!["chat".into()],
                }],
            }],
            owners_total: 1,
            calls: vec![],
            footprint: Default::default(),
            guard_drops: 0,
        };
        let page = status_page(&v, true);
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt; (online): chat"));
        assert!(!page.contains("<script>"));
    }
}
