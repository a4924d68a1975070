//! # unified-presence
//!
//! An XMPP external component (XEP-0114) that gives each person one virtual
//! address for all of their devices: watchers of `alice@D` see one presence
//! per service class (chat, audio, video, files) and never a device.
//!
//! # Layout
//!
//! - [`config`]: `component.toml` into [`config::Config`], read straight
//!   into the core's own types (JIDs, time zones, rule conditions); a value
//!   that does not parse is named by its key and line, and
//!   `Config::problems` lists every check that needs more than one value.
//! - [`core`]: the sans-IO protocol core: stanzas and time in, stanzas and
//!   store changes out. No tokio, sled, sockets, clock or global RNG.
//!   `Core` holds the parts and passes each input to the one it concerns;
//!   a part's fields say what it may touch:
//!   - `Outbox`: what goes out. Every stanza, store change, metrics event
//!     and id leaves through it, past the privacy guard it owns
//!     ([`core::address`]: proxy JIDs (XEP-0106) and the guard's secrets).
//!   - `Owners`: the registry, by typed `OwnerId`. Each `Owner` is made of
//!     parts: `Devices` ([`core::devices`]: live devices and records, the
//!     one place a device becomes a secret), `Watchers` (RFC 6121 state,
//!     policy, allow and block lists, and the decision on a request),
//!     `Publishing` ([`core::presence`]: what her watchers last heard).
//!   - `Calls`: every live call (typed `CallId`, `LegId`), with private
//!     fields; its handlers get a narrow view (time, outbox, owners,
//!     config) and hand back busy changes as events.
//!   - [`core::commands`]: each owner command is parsed, checked (no
//!     change) and applied; the chat and the ad-hoc forms (XEP-0050) are
//!     two renderings of the same commands and refusals.
//!   - [`core::router`]: the routing table (`to` shape -> handler).
//!   - [`core::rules`]: ring rules into a ring plan (a pure function).
//!   - [`core::jingle`]: XEP-0353 and Jingle payloads rewritten between the
//!     caller and her devices (ids, sids, roles, candidates).
//!   - watchers and linking (the handlers behind the parts above), chat
//!     (relay both ways), disco (IQs), timers (deadlines in time order),
//!     undo (taking back what the store refused).
//!   - [`core::oracle`]: the checks every test driver makes after each
//!     input (scenario tests, property tests, fuzz target).
//! - [`store`]: the only module that knows sled.
//! - [`connection`]: the XEP-0114 stream over any byte stream: connect,
//!   handshake, the sole-instance check.
//! - [`fanout`]: writing what the core queued; a class presence for many
//!   watchers is serialised once, and only `to` varies (a side door
//!   under tokio-xmpp's stream, which has none).
//! - [`http`]: the optional admin listener: metrics, health, status page.
//! - [`streamhost`]: the optional SOCKS5 streamhost where the two ends of
//!   a file transfer meet (the core says who may come).
//! - [`runtime`]: one task owns the core: connect with backoff, then serve
//!   (`select!` over the stream, the core's next timeout, the admin page
//!   and shutdown); both tested over an in-memory stream with paused time.
//!
//! # The drive loop
//!
//! What [`runtime`] does with a socket and sled, here with a queue and the
//! store's in-memory mirror (this example is compiled and run by `cargo
//! test`, so it cannot go stale):
//!
//! ```
//! use std::collections::VecDeque;
//! use minidom::Element;
//! use unified_presence::config::Config;
//! use unified_presence::core::{Core, Stored, Time};
//!
//! let config = Config::from_toml(r#"
//!     [server]
//!     address = "127.0.0.1:5347"
//!     domain = "unified.example.org"
//!     secret = "s"
//!     [store]
//!     path = "/var/lib/unified-presence"
//!     [[owners]]
//!     name = "alice"
//!     accounts = ["alice@example.org"]
//!     subscription = "open"
//! "#).expect("a valid config");
//! let mut store = Stored::default(); // sled, in the runtime
//! let mut core = Core::new(config.core_config(7), store.clone());
//! // What the server sends us (the XEP-0114 stream, in the runtime).
//! let mut stream: VecDeque<Element> = VecDeque::from([
//!     "<presence xmlns='jabber:component:accept' type='subscribe' \
//!       from='bob@example.net' to='alice@unified.example.org'/>".parse().unwrap(),
//!     "<presence xmlns='jabber:component:accept' from='alice@example.org/phone' \
//!       to='alice@unified.example.org'/>".parse().unwrap(),
//! ]);
//! let mut sent = Vec::new();
//! let mut now = Time(1_700_000_000_000); // the runtime's clock
//! core.handle_connected(now);
//! loop {
//!     // Durable first: what goes out next may acknowledge these changes.
//!     while let Some(op) = core.poll_store() {
//!         store.apply(op); // then flush, in the runtime
//!     }
//!     while let Some(stanza) = core.poll_transmit() {
//!         sent.push(stanza); // onto the stream
//!     }
//!     // The next input: a stanza, or time reaching the next deadline.
//!     if let Some(stanza) = stream.pop_front() {
//!         core.handle_stanza(now, stanza);
//!     } else if let Some(deadline) = core.poll_timeout() {
//!         now = now.max(deadline);
//!         core.handle_timeout(now);
//!     } else {
//!         break;
//!     }
//! }
//! // Bob was approved (and that is stored), and sees Alice's chat class
//! // online, never her phone.
//! assert_eq!(store.watchers.len(), 1);
//! let to_bob = |s: &&Element| s.attr("to") == Some("bob@example.net");
//! assert!(sent.iter().filter(to_bob).any(|s| s.attr("from") == Some("alice@unified.example.org/chat")));
//! let text = |s: &Element| {
//!     let mut out = Vec::new();
//!     s.write_to(&mut out).map(|_| String::from_utf8_lossy(&out).into_owned())
//! };
//! assert!(sent.iter().filter(to_bob).all(|s| !text(s).unwrap().contains("phone")));
//! ```

pub mod config;
#[cfg(feature = "server")]
pub mod connection;
pub mod core;
#[cfg(feature = "server")]
pub mod fanout;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod runtime;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod streamhost;
