//! One task owns the core: it `select!`s over the server stream, the
//! core's next timeout and shutdown, applies the core's store changes
//! (flushed before anything they acknowledge is sent), and reconnects with
//! backoff (1, 2, 4 ... 64 s) when the stream is lost.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::store::{Store, StoreError};

/// Why the component stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed: nothing more can be acknowledged safely.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Failed writes of bookkeeping (see [`drain`]), for rate-limited logs.
static BOOKKEEPING_FAILURES: AtomicU64 = AtomicU64::new(0);

const MAX_BACKOFF: Duration = Duration::from_secs(64);

fn now() -> Time {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Time(ms)
}

fn instant_of(t: Time) -> Instant {
    Instant::now() + Duration::from_millis(t.0.saturating_sub(now().0))
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

/// Opens the store and builds a core from what it holds.
fn open(config: &Config) -> Result<(Store, Core), StoreError> {
    let store = Store::open(&config.store.path)?;
    let stored = store.load()?;
    info!(
        watchers = stored.watchers.len(),
        cached_caps = stored.caps.len(),
        owners = config.owners.len(),
        path = %config.store.path.display(),
        "store loaded"
    );
    let core = Core::new(config.core_config(rand::random()), stored);
    Ok((store, core))
}

/// After a failed write: drops the store (sled refuses every write after
/// an I/O error) and opens it again, so that memory holds exactly what the
/// disk does. Retries for a few seconds (the old handle's file lock may
/// take a moment to go), then gives up: the process exits with the error.
async fn reopen(config: &Config, old: Store) -> Result<(Store, Core), StoreError> {
    drop(old);
    let mut wait = Duration::from_millis(50);
    for attempt in 1.. {
        match open(config) {
            Ok(opened) => {
                info!("store reopened; state rebuilt from what it holds");
                return Ok(opened);
            }
            Err(e) if attempt < 8 => {
                warn!(error = %e, attempt, "cannot reopen the store yet");
                sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// Runs the component until `shutdown` completes or the store fails.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let (mut store, mut core) = open(&config)?;
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
        let mut stream = match connected {
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
        backoff = Duration::from_secs(1);
        let ended = loop {
            core.handle_connected(now());
            let ended = match drain(&mut core, &store, &mut stream).await {
                Ok(()) => session(&mut core, &store, &mut stream, &mut shutdown).await,
                Err(e) => e.into(),
            };
            match ended {
                Ended::StoreFailed => (store, core) = reopen(&config, store).await?,
                other => break other,
            }
        };
        match ended {
            Ended::Shutdown => {
                info!("shutting down");
                core.handle_shutdown(now());
                if drain(&mut core, &store, &mut stream).await.is_err() {
                    warn!("could not say goodbye to watchers");
                }
                let _ = stream.shutdown().await;
                store.flush().await?;
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
    store: &Store,
    stream: &mut Stream,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Ended {
    let mut keepalive = 0u64;
    loop {
        let deadline = core.poll_timeout().map(instant_of);
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(el)) => {
                    if let Some(condition) = stream_error_condition(&el) {
                        return Ended::Lost(format!("stream error: {condition}"));
                    }
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
            _ = async { sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                core.handle_timeout(now());
            }
            _ = shutdown.as_mut() => return Ended::Shutdown,
        }
        if let Err(e) = drain(core, store, stream).await {
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
async fn drain(core: &mut Core, store: &Store, stream: &mut Stream) -> Result<(), DrainError> {
    let ops: Vec<_> = std::iter::from_fn(|| core.poll_store()).collect();
    if !ops.is_empty() {
        let acknowledged = ops.iter().any(|op| op.acknowledged());
        let written = match store.commit(&ops) {
            Ok(()) if acknowledged => store.flush().await,
            other => other,
        };
        match written {
            Ok(()) => {}
            Err(e) if acknowledged => {
                error!(error = %e, changes = ops.len(), "store write failed: the requester gets an error, nothing was changed");
                core.handle_store_failure(now());
                send_all(core, stream).await.map_err(DrainError::Stream)?;
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
    send_all(core, stream).await.map_err(DrainError::Stream)
}

async fn send_all(core: &mut Core, stream: &mut Stream) -> Result<(), String> {
    let mut sent = false;
    while let Some(el) = core.poll_transmit() {
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
