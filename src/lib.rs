//! # unified-presence
//!
//! An XMPP external component (XEP-0114) that gives each person one virtual
//! address for all of their devices: watchers of `alice@D` see one presence
//! per service class (chat, audio, video, files) and never a device.
//!
//! # Layout
//!
//! - [`config`]: `component.toml` into [`config::Config`]; errors name the key.
//! - [`core`]: the sans-IO protocol core: stanzas and time in, stanzas and
//!   store changes out. No tokio, sled, sockets, clock or global RNG.
//!   - [`core::router`]: the routing table (`to` shape -> handler).
//!   - [`core::address`]: proxy JIDs (XEP-0106) and the privacy guard.
//!   - [`core::devices`]: device presence, caps (XEP-0115), service classes.
//!   - [`core::presence`]: per-class aggregation (a pure function).
//!   - watchers (RFC 6121), linking (accounts and devices), disco (IQs).
//! - [`store`]: the only module that knows sled.
//! - [`connection`]: the XEP-0114 stream: connect, handshake, read, write.
//! - [`http`]: the optional admin listener: metrics, health, status page.
//! - [`runtime`]: one task owns the core: `select!` over the stream, the
//!   core's next timeout and shutdown; reconnects with backoff.
//!
//! # The drive loop
//!
//! ```text
//! loop {
//!     input  -> core.handle_stanza(now, el) | handle_timeout(now) | ...
//!     while let Some(op) = core.poll_store()    { store.apply(op) }  // durable first
//!     store.flush()
//!     while let Some(el) = core.poll_transmit() { stream.send(el) }
//!     sleep until core.poll_timeout()
//! }
//! ```

pub mod config;
#[cfg(feature = "server")]
pub mod connection;
pub mod core;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod runtime;
#[cfg(feature = "server")]
pub mod store;
