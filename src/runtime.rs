//! One task owns the core: it `select!`s over the server stream, the
//! core's next timeout and shutdown, applies the core's store changes
//! (flushed before anything they acknowledge is sent), and reconnects with
//! backoff (1, 2, 4 ... 64 s) when the stream is lost.

use std::future::Future;
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
}

/// Runs the component until `shutdown` completes or the store fails.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let store = Store::open(&config.store.path)?;
    let stored = store.load()?;
    info!(
        watchers = stored.watchers.len(),
        cached_caps = stored.caps.len(),
        owners = config.owners.len(),
        path = %config.store.path.display(),
        "store loaded"
    );
    let mut core = Core::new(config.core_config(rand::random()), stored);
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
        core.handle_connected(now());
        let ended = match drain(&mut core, &store, &mut stream).await {
            Ok(()) => session(&mut core, &store, &mut stream, &mut shutdown).await?,
            Err(e) => Ended::Lost(e),
        };
        match ended {
            Ended::Shutdown => {
                info!("shutting down");
                core.handle_shutdown(now());
                if let Err(e) = drain(&mut core, &store, &mut stream).await {
                    warn!(error = %e, "could not say goodbye to watchers");
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
        }
    }
}

async fn session(
    core: &mut Core,
    store: &Store,
    stream: &mut Stream,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Ended, StoreError> {
    let mut keepalive = 0u64;
    loop {
        let deadline = core.poll_timeout().map(instant_of);
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(el)) => {
                    if let Some(condition) = stream_error_condition(&el) {
                        return Ok(Ended::Lost(format!("stream error: {condition}")));
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
                        return Ok(Ended::Lost(e.to_string()));
                    }
                }
                Some(Err(ReadError::ParseError(e))) => {
                    warn!(error = %e, "dropped an element that failed to parse");
                }
                Some(Err(ReadError::HardError(e))) => return Ok(Ended::Lost(e.to_string())),
                Some(Err(ReadError::StreamFooterReceived)) | None => {
                    return Ok(Ended::Lost("the server closed the stream".into()));
                }
            },
            _ = async { sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                core.handle_timeout(now());
            }
            _ = shutdown.as_mut() => return Ok(Ended::Shutdown),
        }
        if let Err(reason) = drain(core, store, stream).await {
            return Ok(Ended::Lost(reason));
        }
    }
}

/// The single-mutation invariant: after every input, store changes first
/// (flushed), then every stanza, in one write.
async fn drain(core: &mut Core, store: &Store, stream: &mut Stream) -> Result<(), String> {
    let mut wrote = false;
    while let Some(op) = core.poll_store() {
        if let Err(e) = store.apply(&op) {
            error!(error = %e, "store write failed");
            return Err(e.to_string());
        }
        wrote = true;
    }
    if wrote {
        if let Err(e) = store.flush().await {
            error!(error = %e, "store flush failed");
            return Err(e.to_string());
        }
    }
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
