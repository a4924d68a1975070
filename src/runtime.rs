//! One task owns the core: it `select!`s over the server stream, the
//! core's next timeout and shutdown, applies the core's store changes
//! (flushed before anything they acknowledge is sent), and reconnects with
//! backoff (1, 2, 4 ... 64 s) when the stream is lost.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_xmpp::xmlstream::{ReadError, Timeouts};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::connection::{self, stream_error_condition, Stream};
use crate::core::stanza::{self, element, ns};
use crate::core::{Core, Time};
use crate::http::{self, AdminRequest, Metrics};
use crate::store::{Store, StoreError};

/// Why the component stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed: nothing more can be acknowledged safely.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `[http] bind` cannot be listened on.
    #[error("http.bind {bind}: {source} (is another process listening there? pick another port)")]
    Http {
        /// The address.
        bind: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What the shell around the core holds besides the store: the counters
/// and the admin listener's questions.
struct Shell {
    metrics: Arc<Metrics>,
    admin: tokio::sync::mpsc::Receiver<AdminRequest>,
}

impl Shell {
    fn answer(&self, core: &Core, req: AdminRequest) {
        match req {
            AdminRequest::View { limit, reply } => {
                let _ = reply.send(core.admin_view(now(), limit));
            }
        }
    }
}

/// Failed writes of bookkeeping (see [`drain`]), for rate-limited logs.
static BOOKKEEPING_FAILURES: AtomicU64 = AtomicU64::new(0);

const MAX_BACKOFF: Duration = Duration::from_secs(64);

/// Wall-clock ms since the Unix epoch.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When the process started, on both clocks.
static EPOCH: std::sync::OnceLock<(Instant, u64)> = std::sync::OnceLock::new();

fn epoch() -> (Instant, u64) {
    *EPOCH.get_or_init(|| (Instant::now(), wall_ms()))
}

/// The core's clock: monotonic, so that an NTP step moves no deadline,
/// and starting at the wall clock's reading when the process started.
fn now() -> Time {
    let (start, wall) = epoch();
    Time(wall + start.elapsed().as_millis() as u64)
}

/// Tells `core` what the wall clock reads now (its rules' days and hours,
/// its device records); the deadlines stay on the monotonic clock.
fn tell_wall_clock(core: &mut Core) {
    core.set_wall_clock(now(), wall_ms());
}

fn instant_of(t: Time) -> Instant {
    let (start, wall) = epoch();
    start + Duration::from_millis(t.0.saturating_sub(wall))
}

/// How a connected session ended.
enum Ended {
    Shutdown,
    Lost(String),
    /// The store refused an acknowledged change: reopen it and rebuild
    /// the core from what it holds, on the same stream.
    StoreFailed,
}

impl From<DrainError> for Ended {
    fn from(e: DrainError) -> Ended {
        match e {
            DrainError::Store => Ended::StoreFailed,
            DrainError::Stream(reason) => Ended::Lost(reason),
        }
    }
}

/// The store as the runtime holds it. After a failed write it is dropped
/// (sled refuses every write after an I/O error, and a full disk can make
/// reopening fail too); the next change that needs it tries to open it
/// again, at most every [`REOPEN_EVERY`].
struct Disk {
    store: Option<Store>,
    last_try: Option<Instant>,
}

const REOPEN_EVERY: Duration = Duration::from_secs(2);

impl Disk {
    /// Opens the store and builds a core from what it holds.
    fn open(config: &Config) -> Result<(Disk, Core), StoreError> {
        let store = Store::open(&config.store.path)?;
        let core = load(config, &store)?;
        let disk = Disk {
            store: Some(store),
            last_try: None,
        };
        Ok((disk, core))
    }

    /// After a failed write: tries to open the store again and, if it
    /// opens, returns a core rebuilt from what it holds, so that memory
    /// holds exactly what the disk does.
    async fn reopen(&mut self, config: &Config) -> Option<Core> {
        if self.last_try.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return None;
        }
        self.last_try = Some(Instant::now());
        // The old handle's file lock must go first.
        self.store = None;
        let mut wait = Duration::from_millis(20);
        for attempt in 1..=4 {
            match Store::open(&config.store.path).and_then(|s| Ok((load(config, &s)?, s))) {
                Ok((core, store)) => {
                    info!("store reopened; state rebuilt from what it holds");
                    self.store = Some(store);
                    return Some(core);
                }
                Err(e) if attempt < 4 => {
                    debug!(error = %e, attempt, "cannot reopen the store yet");
                    sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    error!(error = %e, "the store cannot be opened: presence and calls go on, every change is refused until it can");
                }
            }
        }
        None
    }
}

fn load(config: &Config, store: &Store) -> Result<Core, StoreError> {
    let stored = store.load()?;
    info!(
        watchers = stored.watchers.len(),
        cached_caps = stored.caps.len(),
        owners = config.owners.len(),
        path = %config.store.path.display(),
        "store loaded"
    );
    Ok(Core::new(config.core_config(rand::random()), stored))
}

/// Runs the component until `shutdown` completes or the store fails.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let (mut disk, mut core) = Disk::open(&config)?;
    let metrics = Arc::new(Metrics::new());
    let (admin_tx, admin) = tokio::sync::mpsc::channel(16);
    if let Some(h) = &config.http {
        http::listen(
            h.bind,
            h.admin_token.clone(),
            h.trust_loopback,
            metrics.clone(),
            admin_tx,
        )
        .await
        .map_err(|source| RunError::Http {
            bind: h.bind,
            source,
        })?;
    }
    let mut shell = Shell { metrics, admin };
    let mut connections = 0u64;
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(config.server.keepalive_secs.max(1)),
        response_timeout: Duration::from_secs(30),
    };
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_secs(1);
    loop {
        let addr = config.server.address;
        let domain = &config.server.domain;
        info!(%addr, %domain, "connecting");
        let connected = tokio::select! {
            r = connection::connect(addr, domain, config.server.secret.expose(), timeouts) => r,
            _ = &mut shutdown => return Ok(()),
        };
        let nonce = format!("{:016x}", rand::random::<u64>());
        let connected = match connected {
            Ok(mut s) => {
                let checked = tokio::select! {
                    r = connection::verify_sole(&mut s, domain, &nonce, Duration::from_secs(5)) => r,
                    _ = &mut shutdown => return Ok(()),
                };
                checked.map(|early| (s, early))
            }
            Err(e) => Err(e),
        };
        let (mut stream, early) = match connected {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, retry_in_secs = backoff.as_secs(), "not connected");
                tokio::select! {
                    _ = sleep(backoff) => {}
                    _ = &mut shutdown => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        info!(%domain, "connected");
        shell.metrics.connection(true, connections > 0);
        connections += 1;
        backoff = Duration::from_secs(1);
        let mut fresh = true;
        let mut early = Some(early);
        let ended = loop {
            if fresh {
                tell_wall_clock(&mut core);
                core.handle_connected(now());
            }
            // What arrived during the self-check, in order.
            for el in early.take().into_iter().flatten() {
                shell.metrics.received(&el);
                tell_wall_clock(&mut core);
                core.handle_stanza(now(), el);
            }
            let ended = match drain(&mut core, &mut disk, &mut stream, &shell.metrics).await {
                Ok(()) => {
                    session(&mut core, &mut disk, &mut stream, &mut shell, &mut shutdown).await
                }
                Err(e) => e.into(),
            };
            if !matches!(ended, Ended::StoreFailed) {
                shell.metrics.connection(false, false);
            }
            match ended {
                Ended::StoreFailed => match disk.reopen(&config).await {
                    Some(rebuilt) => {
                        core.end_calls(now());
                        if let Err(e) = send_all(&mut core, &mut stream, &shell.metrics).await {
                            warn!(error = %e, "could not end the calls");
                        }
                        core = rebuilt;
                        fresh = true;
                    }
                    None => fresh = false,
                },
                other => break other,
            }
        };
        match ended {
            Ended::Shutdown => {
                info!("shutting down");
                core.handle_shutdown(now());
                if drain(&mut core, &mut disk, &mut stream, &shell.metrics)
                    .await
                    .is_err()
                {
                    warn!("could not say goodbye to watchers");
                }
                let _ = stream.shutdown().await;
                if let Some(store) = &disk.store {
                    store.flush().await?;
                }
                return Ok(());
            }
            Ended::Lost(reason) => {
                warn!(%reason, retry_in_secs = backoff.as_secs(), "connection lost");
                tokio::select! {
                    _ = sleep(backoff) => {}
                    _ = &mut shutdown => return Ok(()),
                }
            }
            Ended::StoreFailed => unreachable!("handled in the loop above"),
        }
    }
}

async fn session(
    core: &mut Core,
    disk: &mut Disk,
    stream: &mut Stream,
    shell: &mut Shell,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Ended {
    let metrics = shell.metrics.clone();
    let mut foreign_check: Option<String> = None;
    let mut keepalive = 0u64;
    // One timer, moved only when the core's next deadline moves: setting
    // up a fresh one for every stanza showed in profiles.
    let timer = sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Time> = None;
    loop {
        // A timer already due (a publish right after the change that
        // caused it) runs now: tokio would only fire it at its next timer
        // tick, after reading on while input is buffered.
        let t = now();
        let mut deadline = core.poll_timeout();
        if deadline.is_some_and(|due| due <= t) {
            core.handle_timeout(t);
            if let Err(e) = drain(core, disk, stream, &metrics).await {
                return e.into();
            }
            deadline = core.poll_timeout();
        }
        if deadline != armed {
            if let Some(due) = deadline {
                timer.as_mut().reset(instant_of(due));
            }
            armed = deadline;
        }
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(el)) => {
                    if let Some(condition) = stream_error_condition(&el) {
                        return Ended::Lost(format!("stream error: {condition}"));
                    }
                    if let Some(nonce) = connection::selfcheck_nonce(&el) {
                        // Ours came back before we went on; any other is
                        // from a second instance the server let in. Once
                        // per instance's attempt, not per check.
                        if foreign_check.as_deref() != Some(nonce) {
                            error!(domain = core.domain(), "another instance just connected as this domain and the server shares our traffic with it: it disconnects itself once its own self-check fails; if it keeps trying, stop it");
                            foreign_check = Some(nonce.to_owned());
                        }
                        continue;
                    }
                    metrics.received(&el);
                    tell_wall_clock(core);
                    core.handle_stanza(now(), el);
                }
                Some(Err(ReadError::SoftTimeout)) => {
                    // Silence: make the server answer something within the
                    // response timeout, or the read fails hard.
                    keepalive += 1;
                    let domain = core.domain().to_owned();
                    let mut ping = stanza::stanza("iq", &domain, &domain, Some("get"));
                    stanza::set_attr(&mut ping, "id", format!("keepalive-{keepalive}"));
                    ping.append_child(element("ping", ns::PING, &[]));
                    debug!("keepalive");
                    if let Err(e) = stream.send(&ping).await {
                        return Ended::Lost(e.to_string());
                    }
                }
                Some(Err(ReadError::ParseError(e))) => {
                    warn!(error = %e, "dropped an element that failed to parse");
                }
                Some(Err(ReadError::HardError(e))) => return Ended::Lost(e.to_string()),
                Some(Err(ReadError::StreamFooterReceived)) | None => {
                    return Ended::Lost("the server closed the stream".into());
                }
            },
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                tell_wall_clock(core);
                core.handle_timeout(now());
            }
            Some(req) = shell.admin.recv() => {
                shell.answer(core, req);
                continue;
            }
            _ = shutdown.as_mut() => return Ended::Shutdown,
        }
        if let Err(e) = drain(core, disk, stream, &metrics).await {
            return e.into();
        }
    }
}

/// Why a drain stopped.
enum DrainError {
    /// The store refused acknowledged changes: the requester got an error
    /// and nothing acknowledging them was sent.
    Store,
    /// The stream to the server failed.
    Stream(String),
}

/// The single-mutation invariant: after every input, its store changes
/// first, as one transaction, flushed if anything acknowledges them; then
/// every stanza, in one write.
async fn drain(
    core: &mut Core,
    disk: &mut Disk,
    stream: &mut Stream,
    metrics: &Metrics,
) -> Result<(), DrainError> {
    while let Some(e) = core.poll_event() {
        metrics.event(e);
    }
    let ops: Vec<_> = std::iter::from_fn(|| core.poll_store()).collect();
    if !ops.is_empty() {
        let acknowledged = ops.iter().any(|op| op.acknowledged());
        let started = std::time::Instant::now();
        let written = match &disk.store {
            Some(store) => match store.commit(&ops) {
                Ok(()) if acknowledged => store.flush().await,
                other => other,
            },
            None => Err(StoreError::Unavailable),
        };
        metrics.store_write(started.elapsed(), written.is_ok());
        match written {
            Ok(()) => {}
            Err(e) if acknowledged => {
                error!(error = %e, changes = ops.len(), "store write failed: the requester gets an error, nothing was changed");
                core.handle_store_failure();
                send_all(core, stream, metrics)
                    .await
                    .map_err(DrainError::Stream)?;
                disk.store = None;
                return Err(DrainError::Store);
            }
            Err(e) => {
                // Device sightings and cached caps: relearned if lost, and
                // retried by the next change. Logged once in a while.
                let n = BOOKKEEPING_FAILURES.fetch_add(1, Ordering::Relaxed);
                if n % 1000 == 0 {
                    warn!(error = %e, failures = n + 1, "store write of device bookkeeping failed");
                }
            }
        }
    }
    send_all(core, stream, metrics)
        .await
        .map_err(DrainError::Stream)
}

async fn send_all(core: &mut Core, stream: &mut Stream, metrics: &Metrics) -> Result<(), String> {
    let mut sent = false;
    while let Some(el) = core.poll_transmit() {
        metrics.sent(&el);
        stream.feed(&el).await.map_err(|e| e.to_string())?;
        sent = true;
    }
    if sent {
        SinkExt::<&Element>::flush(stream)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
