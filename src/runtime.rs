//! One task owns the core. [`run`] is two parts in a loop:
//! `connect_with_backoff` dials the server until a stream is up and
//! verified ours (waiting 1, 2, 4 ... 64 s between failures), and `serve`
//! `select!`s over that stream, the core's next timeout, the admin page
//! and shutdown, applying the core's store changes (flushed before
//! anything they acknowledge is sent) until the stream is lost or the
//! component stops. Both are generic over the byte stream, so tests drive
//! them over `tokio::io::duplex` with paused time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_xmpp::xmlstream::{ReadError, Timeouts};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::connection::{self, stream_error_condition, ConnectError, Stream};
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
    /// `[streamhost] listen` cannot be listened on.
    #[error("streamhost.listen {listen}: {source} (is another process listening there? pick another port)")]
    Streamhost {
        /// The address.
        listen: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
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
    sinks: Sinks,
    admin: tokio::sync::mpsc::Receiver<AdminRequest>,
}

/// Where the core's output goes besides the stream and the store.
#[derive(Clone)]
struct Sinks {
    metrics: Arc<Metrics>,
    streamhost: Option<Arc<crate::streamhost::Streamhost>>,
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

/// The wait before the next attempt to connect: 1 s, doubling to 64 s,
/// back to 1 s once connected.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_secs(1))
    }

    /// This wait; the next one is twice as long.
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        wait
    }

    fn reset(&mut self) {
        self.0 = Duration::from_secs(1);
    }
}

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
#[derive(Debug)]
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
    let streamhost = match &config.streamhost {
        Some(sh) => Some(
            crate::streamhost::listen(sh.listen)
                .await
                .map_err(|source| RunError::Streamhost {
                    listen: sh.listen,
                    source,
                })?
                .0,
        ),
        None => None,
    };
    let mut shell = Shell {
        sinks: Sinks {
            metrics,
            streamhost,
        },
        admin,
    };
    let mut connections = 0u64;
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(config.server.keepalive_secs.max(1)),
        response_timeout: Duration::from_secs(30),
    };
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new();
    let (addr, domain) = (config.server.address, config.server.domain.as_str());
    let secret = config.server.secret.expose();
    let mut dial = || {
        info!(%addr, %domain, "connecting");
        connection::connect(addr, domain, secret, timeouts)
    };
    loop {
        let Some((mut stream, early)) =
            connect_with_backoff(&mut dial, domain, &mut backoff, &mut shutdown).await
        else {
            return Ok(());
        };
        info!(%domain, "connected");
        shell.sinks.metrics.connection(true, connections > 0);
        connections += 1;
        backoff.reset();
        match serve(
            &mut core,
            &mut disk,
            &mut stream,
            &mut shell,
            &config,
            early,
            &mut shutdown,
        )
        .await
        {
            Ended::Shutdown => {
                info!("shutting down");
                core.handle_shutdown(now());
                if drain(&mut core, &mut disk, &mut stream, &shell.sinks)
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
                let wait = backoff.next();
                warn!(%reason, retry_in_secs = wait.as_secs(), "connection lost");
                tokio::select! {
                    _ = sleep(wait) => {}
                    _ = &mut shutdown => return Ok(()),
                }
            }
            Ended::StoreFailed => unreachable!("serve handles it"),
        }
    }
}

/// Dials until a stream is up and this instance alone serves `domain`
/// (see [`connection::verify_sole`]), waiting `backoff` between failed
/// attempts; with it, what arrived during the check. `None` when
/// `shutdown` came first.
async fn connect_with_backoff<Io, F, Fut>(
    dial: &mut F,
    domain: &str,
    backoff: &mut Backoff,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<(Stream<Io>, Vec<Element>)>
where
    Io: AsyncRead + AsyncWrite + Unpin,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Stream<Io>, ConnectError>>,
{
    loop {
        let connected = tokio::select! {
            r = dial() => r,
            _ = shutdown.as_mut() => return None,
        };
        let nonce = format!("{:016x}", rand::random::<u64>());
        let checked = match connected {
            Ok(mut s) => {
                let checked = tokio::select! {
                    r = connection::verify_sole(&mut s, domain, &nonce, Duration::from_secs(5)) => r,
                    _ = shutdown.as_mut() => return None,
                };
                checked.map(|early| (s, early))
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok(up) => return Some(up),
            Err(e) => {
                let wait = backoff.next();
                warn!(error = %e, retry_in_secs = wait.as_secs(), "not connected");
                tokio::select! {
                    _ = sleep(wait) => {}
                    _ = shutdown.as_mut() => return None,
                }
            }
        }
    }
}

/// Serves one connected stream until it is lost or `shutdown` comes:
/// the core hears it is connected, then every stanza and timeout. When
/// the store refuses a change, the core is rebuilt from what the store
/// holds (if it reopens) and serving goes on over the same stream.
async fn serve<Io: AsyncRead + AsyncWrite + Unpin>(
    core: &mut Core,
    disk: &mut Disk,
    stream: &mut Stream<Io>,
    shell: &mut Shell,
    config: &Config,
    early: Vec<Element>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Ended {
    let mut fresh = true;
    let mut early = Some(early);
    loop {
        if fresh {
            tell_wall_clock(core);
            core.handle_connected(now());
        }
        // What arrived during the self-check, in order.
        for el in early.take().into_iter().flatten() {
            shell.sinks.metrics.received(&el);
            tell_wall_clock(core);
            core.handle_stanza(now(), el);
        }
        let ended = match drain(core, disk, stream, &shell.sinks).await {
            Ok(()) => session(core, disk, stream, shell, shutdown).await,
            Err(e) => e.into(),
        };
        if !matches!(ended, Ended::StoreFailed) {
            shell.sinks.metrics.connection(false, false);
        }
        match ended {
            Ended::StoreFailed => match disk.reopen(config).await {
                Some(rebuilt) => {
                    core.end_calls(now());
                    if let Err(e) = send_all(core, stream, &shell.sinks).await {
                        warn!(error = %e, "could not end the calls");
                    }
                    *core = rebuilt;
                    fresh = true;
                }
                None => fresh = false,
            },
            other => return other,
        }
    }
}

async fn session<Io: AsyncRead + AsyncWrite + Unpin>(
    core: &mut Core,
    disk: &mut Disk,
    stream: &mut Stream<Io>,
    shell: &mut Shell,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Ended {
    let sinks = shell.sinks.clone();
    let metrics = sinks.metrics.clone();
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
            if let Err(e) = drain(core, disk, stream, &sinks).await {
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
        if let Err(e) = drain(core, disk, stream, &sinks).await {
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
async fn drain<Io: AsyncRead + AsyncWrite + Unpin>(
    core: &mut Core,
    disk: &mut Disk,
    stream: &mut Stream<Io>,
    sinks: &Sinks,
) -> Result<(), DrainError> {
    let metrics = &sinks.metrics;
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
                send_all(core, stream, sinks)
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
    send_all(core, stream, sinks)
        .await
        .map_err(DrainError::Stream)
}

async fn send_all<Io: AsyncRead + AsyncWrite + Unpin>(
    core: &mut Core,
    stream: &mut Stream<Io>,
    sinks: &Sinks,
) -> Result<(), String> {
    // Before the stanzas: a client may connect as soon as it reads the
    // candidate they carry.
    while let Some(op) = core.poll_streamhost() {
        if let Some(host) = &sinks.streamhost {
            host.apply(op);
        }
    }
    crate::fanout::send_all(core, stream, &sinks.metrics).await
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const DOMAIN: &str = "unified.localhost";

    /// The server's end of an in-memory component stream: raw XML text.
    struct FakeServer {
        io: DuplexStream,
        seen: String,
    }

    impl FakeServer {
        /// Answers the component's stream header and handshake (XEP-0114),
        /// as Prosody does.
        async fn accept(io: DuplexStream) -> FakeServer {
            let mut server = FakeServer::greet(io).await;
            server.write("<handshake/>").await;
            server
        }

        /// Reads the component's stream header, answers it with one of
        /// ours (with a stream id) and reads its handshake.
        async fn greet(io: DuplexStream) -> FakeServer {
            let mut server = FakeServer {
                io,
                seen: String::new(),
            };
            server.read_until("stream").await;
            server
                .write(&format!("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='{DOMAIN}'>"))
                .await;
            server.read_until("</handshake>").await;
            server
        }

        async fn write(&mut self, text: &str) {
            self.io.write_all(text.as_bytes()).await.unwrap();
        }

        /// Everything the component sent up to the end of the tag that
        /// holds `needle`.
        async fn read_until(&mut self, needle: &str) -> String {
            loop {
                let end = self.seen.find(needle).and_then(|at| {
                    let after = at + needle.len();
                    if needle.ends_with('>') {
                        return Some(after);
                    }
                    self.seen[after..].find('>').map(|gt| after + gt + 1)
                });
                if let Some(end) = end {
                    let rest = self.seen.split_off(end);
                    return std::mem::replace(&mut self.seen, rest);
                }
                let mut buf = [0u8; 4096];
                let read = tokio::time::timeout(Duration::from_secs(120), self.io.read(&mut buf));
                let Ok(n) = read.await else {
                    panic!("no {needle:?} from the component; it sent {:?}", self.seen);
                };
                let n = n.unwrap();
                assert!(
                    n > 0,
                    "the component closed the stream; it sent {:?}",
                    self.seen
                );
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    }

    /// The start tag of the element that holds `needle`, in `text`.
    fn tag_around<'a>(text: &'a str, needle: &str, name: &str) -> &'a str {
        let at = text.find(needle).expect("the needle");
        let start = text[..at].rfind(&format!("<{name}")).expect("its element");
        let end = start + text[start..].find('>').expect("a whole tag");
        &text[start..=end]
    }

    fn config(dir: &std::path::Path) -> Config {
        Config::from_toml(&format!(
            r#"
            [server]
            address = "127.0.0.1:5347"
            domain = "{DOMAIN}"
            secret = "s3cret"
            keepalive_secs = 30
            [store]
            path = {:?}
            [[owners]]
            name = "alice"
            accounts = ["alice@localhost"]
            "#,
            dir.join("store").display().to_string()
        ))
        .unwrap()
    }

    /// Issue 15: a server that cannot be reached is tried again after 1,
    /// 2, 4 ... s, and a stop ends the waiting at once.
    #[tokio::test(start_paused = true)]
    async fn connecting_waits_longer_after_each_failure_and_stops_on_shutdown() {
        let start = Instant::now();
        let attempts = RefCell::new(vec![]);
        let mut dial = || {
            attempts.borrow_mut().push(start.elapsed().as_secs());
            std::future::ready(Err::<Stream<DuplexStream>, _>(ConnectError::Closed(
                "refused".into(),
            )))
        };
        let shutdown = sleep(Duration::from_millis(7_500));
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new();
        let up = connect_with_backoff(&mut dial, DOMAIN, &mut backoff, &mut shutdown).await;
        assert!(up.is_none());
        assert_eq!(*attempts.borrow(), [0, 1, 3, 7]);
        assert_eq!(start.elapsed(), Duration::from_millis(7_500));
        // The wait cut short was 8 s; then never more than 64 s apart.
        let waits: Vec<u64> = (0..9).map(|_| backoff.next().as_secs()).collect();
        assert_eq!(waits, [16, 32, 64, 64, 64, 64, 64, 64, 64]);
    }

    /// Issue 15: once the handshake is done the component is served
    /// stanza by stanza, keeps a silent stream alive with a ping after
    /// `keepalive_secs`, and stops when told to.
    #[tokio::test(start_paused = true)]
    async fn serving_answers_keeps_the_stream_alive_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (mut disk, mut core) = Disk::open(&config).unwrap();
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let timeouts = Timeouts {
            read_timeout: Duration::from_secs(config.server.keepalive_secs),
            response_timeout: Duration::from_secs(30),
        };
        let (stream, server) = tokio::join!(
            connection::handshake(ours, DOMAIN, "s3cret", timeouts),
            FakeServer::accept(theirs)
        );
        let mut stream = stream.unwrap();
        let mut server = server;
        let (_admin_tx, admin) = tokio::sync::mpsc::channel(1);
        let mut shell = Shell {
            sinks: Sinks {
                metrics: Arc::new(Metrics::new()),
                streamhost: None,
            },
            admin,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        tokio::pin!(shutdown);
        let script = async move {
            // Once connected, her account is asked to link (a fresh store).
            let sent = server.read_until("'subscribe'").await;
            let request = tag_around(&sent, "'subscribe'", "presence");
            assert!(request.contains("to='alice@localhost'"), "{request}");
            server
                .write("<iq xmlns='jabber:component:accept' type='get' id='p1' from='bob@localhost/pc' to='unified.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
                .await;
            let answer = server.read_until("p1").await;
            let tag = tag_around(&answer, "p1", "iq");
            assert!(
                tag.contains("result") && tag.contains("bob@localhost/pc"),
                "{tag}"
            );
            // Then silence: the component pings the server itself.
            let quiet = Instant::now();
            let ping = server.read_until("keepalive-1").await;
            assert!(
                quiet.elapsed() >= Duration::from_secs(30),
                "{:?}",
                quiet.elapsed()
            );
            let ping = tag_around(&ping, "keepalive-1", "iq");
            assert!(
                ping.contains("type='get'") && ping.contains(&format!("to='{DOMAIN}'")),
                "{ping}"
            );
            let _ = stop.send(());
            server
        };
        let (ended, _server) = tokio::join!(
            serve(
                &mut core,
                &mut disk,
                &mut stream,
                &mut shell,
                &config,
                vec![],
                &mut shutdown
            ),
            script
        );
        assert!(matches!(ended, Ended::Shutdown), "{ended:?}");
    }

    /// A wrong secret is told apart from an unreachable server, so the
    /// admin is told which setting to fix.
    #[tokio::test(start_paused = true)]
    async fn a_refused_secret_is_reported_as_such() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let server = async move {
            let mut server = FakeServer::greet(theirs).await;
            server
                .write("<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
                .await;
            server
        };
        let timeouts = Timeouts {
            read_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(30),
        };
        let (refused, _server) = tokio::join!(
            connection::handshake(ours, DOMAIN, "wrong", timeouts),
            server
        );
        let err = refused.err().expect("refused");
        assert!(matches!(err, ConnectError::NotAuthorized { .. }), "{err}");
        assert!(err.to_string().contains("server.secret"), "{err}");
    }
}
