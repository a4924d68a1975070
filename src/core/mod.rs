//! The sans-IO protocol core.
//!
//! [`Core`] owns every owner's live devices, watchers and published class
//! presences. Drive it like str0m or quinn-proto: feed it inputs
//! ([`Core::handle_connected`], [`Core::handle_stanza`],
//! [`Core::handle_timeout`], [`Core::handle_shutdown`]), then drain its
//! outputs until empty: first [`Core::poll_store`] (write those and flush
//! before anything else goes out: what we acknowledge is durable first),
//! then [`Core::poll_transmit`]; then sleep until [`Core::poll_timeout`].
//!
//! It never awaits, opens a socket, reads a clock or a global RNG: time is
//! an input and ids come from a seeded generator. Every stanza it emits
//! passes the privacy guard ([`address::Secrets::leak_in`]).

pub mod address;
mod adhoc;
pub mod admin;
mod calls;
mod chat;
pub mod commands;
pub mod devices;
mod disco;
pub mod jingle;
mod limits;
mod linking;
pub mod omemo;
#[doc(hidden)]
pub mod oracle;
mod outbox;
mod owners;
pub mod presence;
pub mod profile;
mod push;
pub mod router;
pub mod rules;
pub mod stanza;
mod timers;
mod undo;
pub mod views;
mod watchers;
mod watchlist;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, trace, warn};

pub use self::calls::s5b::{dst_addr, StreamhostOp};
pub use self::calls::CallOutcome;
pub use self::outbox::Transmit;
pub use self::owners::OwnerId;

use self::owners::{Owner, Owners};

use self::address::Secrets;
use self::devices::ClassDef;
use self::router::Target;
use self::stanza::{error_reply, ns, ErrorType};

/// Senders whose rate is tracked at once (see [`limits::RateLimiter`]).
const RATE_BUCKETS: usize = 65_536;

/// Stanzas queued before [`Core::handle_timeout`] stops publishing more
/// owners and leaves the rest due for its next call.
const PUBLISH_BATCH: usize = 2_048;

/// The core's clock, in milliseconds, given by the shell with every
/// input: monotonic (an NTP step moves no deadline), and starting near
/// wall-clock time since the Unix epoch. What needs the wall clock (her
/// rules' days and hours, device records) adds the offset the shell last
/// gave ([`Core::set_wall_clock`]); tests leave it at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// `self` plus `ms` milliseconds.
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
}

/// Who may become a watcher without the owner's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionPolicy {
    /// Forward the request to the owner, who approves or denies it.
    #[default]
    Ask,
    /// Approve everyone.
    Open,
}

/// Which ICE candidates of the owner's devices reach the other party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CandidatePolicy {
    /// Pass every candidate through.
    #[default]
    Direct,
    /// Strip `host` and `srflx` candidates: the caller never learns a
    /// device's IP address (DESIGN.md section 5).
    RelayOnly,
}

/// One provisioned owner.
#[derive(Debug, Clone)]
pub struct OwnerConfig {
    /// Localpart of the virtual JID.
    pub name: String,
    /// Linked real accounts.
    pub accounts: Vec<BareJid>,
    /// Subscription policy.
    pub subscription: SubscriptionPolicy,
    /// JIDs or domains approved without asking.
    pub allow: Vec<String>,
    /// JIDs or domains that get nothing.
    pub blocked: Vec<String>,
    /// ICE candidate policy for her calls.
    pub candidates: CandidatePolicy,
    /// Her ring rules, first match wins.
    pub rules: Vec<rules::Rule>,
    /// Her time zone, for the rules' days and hours.
    pub timezone: chrono_tz::Tz,
}

/// Who may register a virtual JID for herself (DESIGN.md section 8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Registration {
    /// Only the owners the admin provisions.
    #[default]
    Closed,
    /// Any account.
    Open,
    /// Accounts on these domains.
    Domains(Vec<String>),
}

/// The settings an owner changes herself (`privacy`, `name`), as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerSettings {
    /// Who may watch without asking her.
    pub subscription: SubscriptionPolicy,
    /// Which ICE candidates of her devices reach callers.
    pub candidates: CandidatePolicy,
    /// Whether her OMEMO keys are served on her virtual JID (and her
    /// contacts' on their proxy JIDs), so that chats with her can be
    /// end-to-end encrypted. On unless she turned it off.
    #[serde(default = "on")]
    pub omemo: bool,
    /// The name her contacts see, set by her (`name`); `None`: her
    /// account's own.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Her views and who is in which (DESIGN.md section 13).
    #[serde(default)]
    pub views: views::Views,
}

fn on() -> bool {
    true
}

/// An owner who registered herself, as the store keeps her.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredOwner {
    /// Her real accounts.
    pub accounts: Vec<BareJid>,
}

/// Limits that keep one owner or sender from exhausting the component.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Live devices per owner; presence from more is ignored.
    pub devices_per_owner: usize,
    /// Watchers (pending or approved) per owner.
    pub watchers_per_owner: usize,
    /// IQs we wait for at once (caps lookups).
    pub pending_iqs: usize,
    /// Stanzas a second per sending account; 0 = unlimited.
    pub stanzas_per_sec: u64,
    /// Stanzas a sending account may send at once.
    pub stanza_burst: u64,
    /// Largest stanza acted on, in bytes.
    pub stanza_bytes: usize,
    /// Live calls over all owners.
    pub concurrent_calls: usize,
    /// Live calls per caller account.
    pub calls_per_caller: usize,
}

/// How much state the core holds: every figure is bounded by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Footprint {
    /// Owners (provisioned and registered).
    pub owners: usize,
    /// Live devices, over all owners.
    pub devices: usize,
    /// Most live devices of one owner.
    pub max_devices_per_owner: usize,
    /// Watcher edges (pending and approved), over all owners; her own
    /// accounts watching her are not counted.
    pub watchers: usize,
    /// Most watchers of one owner.
    pub max_watchers_per_owner: usize,
    /// Live calls.
    pub calls: usize,
    /// IQs we wait for.
    pub pending_iqs: usize,
    /// Senders with a rate bucket.
    pub rate_buckets: usize,
    /// Open ad-hoc command sessions.
    pub adhoc_sessions: usize,
}

/// What the core needs to know from `component.toml`.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The component domain `D`.
    pub domain: String,
    /// Our XEP-0115 node.
    pub caps_node: String,
    /// The service classes, in bit order.
    pub classes: Vec<ClassDef>,
    /// Provisioned owners.
    pub owners: Vec<OwnerConfig>,
    /// Who may register herself.
    pub registration: Registration,
    /// Accounts that may act for any owner (`as <owner> <command>`).
    pub admins: Vec<BareJid>,
    /// Window in which device churn is coalesced before watchers see it.
    pub coalesce_ms: u64,
    /// After (re)connecting, how long probe answers may take before the
    /// first aggregate is published.
    pub settle_ms: u64,
    /// How long we wait for an IQ answer.
    pub iq_timeout_ms: u64,
    /// How long devices ring before the call is given up.
    pub ring_timeout_ms: u64,
    /// How long a step of sequential or priority ringing waits for a
    /// device to show it got the call (its receipt or ringing) before the
    /// next step rings (DESIGN.md section 12).
    pub ack_timeout_ms: u64,
    /// Domains whose servers push to devices asleep even where they do
    /// not say so to her virtual JID (ejabberd's mod_push tells only the
    /// account itself).
    pub push_domains: Vec<String>,
    /// Our own SOCKS5 streamhost (XEP-0065), where file transfers meet:
    /// what clients are told to connect to. Without it SOCKS5 offers
    /// lose their candidates and fall back in-band.
    pub streamhost: Option<StreamhostAddr>,
    /// The admin's views, which every owner may use besides her own and
    /// the built-in ones (DESIGN.md section 13).
    pub views: Vec<views::View>,
    /// The view of a watcher she put in none: `everything` unless the
    /// admin says otherwise.
    pub default_view: String,
    /// Limits.
    pub limits: Limits,
    /// Seed for stanza ids.
    pub seed: u64,
}

/// Where clients reach our SOCKS5 streamhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamhostAddr {
    /// A host name or address they can reach.
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// A watcher's subscription to a virtual JID (RFC 6121 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatcherState {
    /// Asked; waiting for the owner's decision.
    Pending,
    /// Approved: receives the class presences.
    Subscribed,
}

/// Whether a linked account has approved our subscription to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccountState {
    /// The owner approved `subscribe` from the virtual JID.
    pub approved: bool,
    /// Linked by the owner herself (`link`), not by the admin or at
    /// registration.
    #[serde(default)]
    pub linked_by_owner: bool,
    /// The account itself confirmed the link with the one-time code it was
    /// sent (DESIGN.md section 2). A link made by an older version, where
    /// a subscription approval counted as proof, lacks it and is not
    /// loaded: that approval proved nothing.
    #[serde(default)]
    pub confirmed: bool,
}

/// Her subscription to a contact's presence, made from her virtual JID
/// when her client subscribes to his proxy JID (DESIGN.md section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContactState {
    /// Asked from `alice@D`; he has not answered yet.
    Asked,
    /// He approved: his presence reaches her from his proxy JID.
    Approved,
}

/// The persistent record of a device (DESIGN.md section 2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// First time seen available (ms since epoch).
    pub first_seen: u64,
    /// Last time seen available or going offline (ms since epoch).
    pub last_seen: u64,
    /// A label the owner may set.
    pub label: Option<String>,
    /// The device's XEP-0115 caps node, so that it stays a secret of
    /// hers after a restart, before the device says it again.
    #[serde(default)]
    pub caps_node: Option<String>,
    /// She asked that it not be rung while asleep (`push <device> off`):
    /// calls while it is offline do not go to her account for it.
    #[serde(default)]
    pub no_push: bool,
}

/// A change the shell must make durable before sending what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// A watcher's state, `None` = removed.
    Watcher {
        /// Owner name.
        owner: String,
        /// The watcher.
        watcher: BareJid,
        /// The new state.
        state: Option<WatcherState>,
    },
    /// A linked account's state, `None` = unlinked.
    Account {
        /// Owner name.
        owner: String,
        /// The account.
        account: BareJid,
        /// The new state.
        state: Option<AccountState>,
    },
    /// Her subscription to a contact, `None` = ended.
    Contact {
        /// Owner name.
        owner: String,
        /// His real bare JID.
        contact: BareJid,
        /// The new state.
        state: Option<ContactState>,
    },
    /// A verified caps `ver` and its features.
    Caps {
        /// The verification string (sha-1).
        ver: String,
        /// The features it stands for.
        features: Vec<String>,
    },
    /// A self-registered owner; `None`: she unregistered, and every
    /// record of hers (watchers, accounts, devices, rules) goes too.
    Owner {
        /// Owner name.
        owner: String,
        /// Her record.
        record: Option<RegisteredOwner>,
    },
    /// An owner's own settings, replacing the configured ones.
    Settings {
        /// Owner name.
        owner: String,
        /// The settings.
        settings: OwnerSettings,
    },
    /// The JIDs and domains an owner blocked, replacing what was there.
    Blocked {
        /// Owner name.
        owner: String,
        /// The list.
        blocked: Vec<String>,
    },
    /// An owner's ring rules, replacing what was there.
    Rules {
        /// Owner name.
        owner: String,
        /// The rules, first match wins.
        rules: Vec<rules::Rule>,
    },
    /// A device record.
    Device {
        /// Owner name.
        owner: String,
        /// The device.
        device: FullJid,
        /// The record.
        record: DeviceRecord,
    },
    /// Her profile as served (DESIGN.md section 11): her scrubbed vCard,
    /// `None` = she has none. A cache, relearned on every connect.
    Profile {
        /// Owner name.
        owner: String,
        /// The served `vcard-temp` element, as XML.
        card: Option<String>,
    },
    /// A device came online or went offline: its record's `last_seen`.
    /// Nothing is acknowledged on it, so it is not flushed on its own.
    DeviceSeen {
        /// Owner name.
        owner: String,
        /// The device.
        device: FullJid,
        /// The record.
        record: DeviceRecord,
    },
}

impl StoreOp {
    /// Whether a stanza we send acknowledges this change (a decision, a
    /// setting, a rule): then it is flushed before that stanza goes out,
    /// and if it cannot be written the requester gets an error. Device
    /// sightings and the caps cache are bookkeeping that can be relearned.
    pub fn acknowledged(&self) -> bool {
        !matches!(
            self,
            StoreOp::DeviceSeen { .. } | StoreOp::Caps { .. } | StoreOp::Profile { .. }
        )
    }
}

/// What the store held at start.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// (owner, watcher, state).
    pub watchers: Vec<(String, BareJid, WatcherState)>,
    /// (owner, contact, state): her subscriptions from her virtual JID.
    pub contacts: Vec<(String, BareJid, ContactState)>,
    /// (owner, account, state).
    pub accounts: Vec<(String, BareJid, AccountState)>,
    /// (ver, features).
    pub caps: Vec<(String, Vec<String>)>,
    /// (owner, device, record).
    pub devices: Vec<(String, FullJid, DeviceRecord)>,
    /// (owner, rules) set from her clients; they replace the config's.
    pub rules: Vec<(String, Vec<rules::Rule>)>,
    /// Owners who registered themselves.
    pub owners: Vec<(String, RegisteredOwner)>,
    /// (owner, blocked) set from her clients; they replace the config's.
    pub blocked: Vec<(String, Vec<String>)>,
    /// (owner, settings) set from her clients; they replace the config's.
    pub settings: Vec<(String, OwnerSettings)>,
    /// (owner, served vCard XML): her profile as last mirrored.
    pub profiles: Vec<(String, String)>,
}

impl Stored {
    /// Applies `op` as the store does, so that a core can be rebuilt, in
    /// tests without a disk, from exactly what it asked to keep (the
    /// store's own tests check that both agree).
    pub fn apply(&mut self, op: StoreOp) {
        fn put<K: PartialEq, V>(v: &mut Vec<(String, K, V)>, o: String, k: K, val: Option<V>) {
            v.retain(|(a, b, _)| !(*a == o && *b == k));
            if let Some(val) = val {
                v.push((o, k, val));
            }
        }
        fn set<V>(v: &mut Vec<(String, V)>, o: String, val: Option<V>) {
            v.retain(|(a, _)| *a != o);
            if let Some(val) = val {
                v.push((o, val));
            }
        }
        match op {
            StoreOp::Watcher {
                owner,
                watcher,
                state,
            } => put(&mut self.watchers, owner, watcher, state),
            StoreOp::Contact {
                owner,
                contact,
                state,
            } => put(&mut self.contacts, owner, contact, state),
            StoreOp::Account {
                owner,
                account,
                state,
            } => put(&mut self.accounts, owner, account, state),
            StoreOp::Caps { ver, features } => {
                self.caps.retain(|(v, _)| *v != ver);
                self.caps.push((ver, features));
            }
            StoreOp::Owner {
                owner,
                record: Some(r),
            } => set(&mut self.owners, owner, Some(r)),
            StoreOp::Owner {
                owner,
                record: None,
            } => {
                self.watchers.retain(|(o, _, _)| *o != owner);
                self.contacts.retain(|(o, _, _)| *o != owner);
                self.accounts.retain(|(o, _, _)| *o != owner);
                self.devices.retain(|(o, _, _)| *o != owner);
                self.rules.retain(|(o, _)| *o != owner);
                self.blocked.retain(|(o, _)| *o != owner);
                self.settings.retain(|(o, _)| *o != owner);
                self.profiles.retain(|(o, _)| *o != owner);
                self.owners.retain(|(o, _)| *o != owner);
            }
            StoreOp::Settings { owner, settings } => set(&mut self.settings, owner, Some(settings)),
            StoreOp::Blocked { owner, blocked } => set(&mut self.blocked, owner, Some(blocked)),
            StoreOp::Rules { owner, rules } => set(&mut self.rules, owner, Some(rules)),
            StoreOp::Profile { owner, card } => set(&mut self.profiles, owner, card),
            StoreOp::Device {
                owner,
                device,
                record,
            }
            | StoreOp::DeviceSeen {
                owner,
                device,
                record,
            } => put(&mut self.devices, owner, device, Some(record)),
        }
    }
}

/// The subscription request from her virtual JID that links an account
/// of hers, with words that say so (clients otherwise show a stock "would
/// like to add you" line).
fn link_request(virtual_jid: &str, account: &BareJid) -> Element {
    let mut p = stanza::stanza("presence", virtual_jid, account.as_str(), Some("subscribe"));
    p.append_child(stanza::text_element(
        "status",
        ns::COMPONENT,
        &format!("Accept to link this account to your address {virtual_jid}: its devices then count there."),
    ));
    p
}

/// `s` parsed and in canonical form (RFC 7622 §3.2: lowercase domain, no
/// final dot). The jid crate lowercases, but keeps a final dot on some
/// inputs and not others, so the string is rebuilt from its parts; the
/// server must see our domain exactly as configured, and watchers one
/// spelling of each address.
fn canonical_jid(s: &str) -> Option<Jid> {
    let j = Jid::new(s).ok()?;
    let domain = j.domain().as_str();
    let text = j.as_str();
    if !domain.ends_with('.') && !text.ends_with('.') && !text.contains("./") {
        return Some(j);
    }
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    let mut out = String::with_capacity(s.len());
    if let Some(node) = j.node() {
        out.push_str(node.as_str());
        out.push('@');
    }
    out.push_str(trimmed);
    // The resource as written (RFC 7622 §3.1: everything after the first
    // '/'): the jid crate's offsets into a domain it shortened can be off
    // by the dot it dropped (the fuzzer found `alice@lo./r` answered as
    // `alice@lo//r`); `Jid::new` below normalises it again.
    if let Some((_, res)) = s.split_once('/') {
        out.push('/');
        out.push_str(res);
    }
    if out == j.as_str() {
        return Some(j);
    }
    Jid::new(&out).ok()
}

use self::watchlist::listed;

/// A map looked up for every stanza, keyed by text a peer may choose:
/// foldhash, seeded per process, in place of SipHash, which was a visible
/// share of the hot path (BENCHMARKS.md).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The settings a self-registered owner starts with (DESIGN.md defaults).
fn registered_owner(name: &str, accounts: Vec<BareJid>) -> OwnerConfig {
    OwnerConfig {
        name: name.to_owned(),
        accounts,
        subscription: SubscriptionPolicy::Ask,
        allow: vec![],
        blocked: vec![],
        candidates: CandidatePolicy::Direct,
        rules: vec![],
        timezone: chrono_tz::UTC,
    }
}

/// What an IQ we sent was for.
#[derive(Debug, Clone)]
enum Purpose {
    /// disco#info to a device; `ver` set when asked with `node#ver`.
    Caps {
        owner: OwnerId,
        device: FullJid,
        ver: Option<String>,
    },
    /// `vcard-temp` of her account, for her profile (DESIGN.md section 11).
    Profile { owner: OwnerId },
    /// disco#info of her account: does her server push to devices
    /// asleep (DESIGN.md section 12)?
    AccountInfo { owner: OwnerId, account: BareJid },
    /// Her account's OMEMO device list, for new watchers.
    KeyList { owner: OwnerId },
    /// A would-be watcher's vCard, for the name his request shows her
    /// (`asks`: his request to each of her accounts, held until then;
    /// `fallback`: the name if his card has none).
    HisName {
        owner: OwnerId,
        watcher: BareJid,
        asks: Vec<Element>,
        fallback: String,
    },
}

#[derive(Debug)]
struct PendingIq {
    to: Jid,
    purpose: Purpose,
}

/// The IQs we wait for, by id, with their deadlines in order and an index
/// of what they ask, so that neither a device's presence (is its caps
/// `ver` asked for already?) nor the next timeout scans them all.
#[derive(Debug, Default)]
struct PendingIqs {
    by_id: HashMap<String, PendingIq>,
    deadlines: timers::Timers<String>,
    /// Caps `ver`s asked for.
    vers: HashMap<String, usize>,
    /// Devices asked without a `ver`.
    devices: HashMap<FullJid, usize>,
}

impl PendingIqs {
    fn insert(&mut self, id: String, iq: PendingIq, deadline: Time) {
        if let Purpose::Caps { device, ver, .. } = &iq.purpose {
            match ver {
                Some(v) => *self.vers.entry(v.clone()).or_default() += 1,
                None => *self.devices.entry(device.clone()).or_default() += 1,
            }
        }
        self.deadlines.set(id.clone(), deadline);
        if let Some(old) = self.by_id.insert(id, iq) {
            self.unindex(&old);
        }
    }

    fn unindex(&mut self, iq: &PendingIq) {
        fn down<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: &K) {
            if let Some(n) = m.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(k);
                }
            }
        }
        if let Purpose::Caps { device, ver, .. } = &iq.purpose {
            match ver {
                Some(v) => down(&mut self.vers, v),
                None => down(&mut self.devices, device),
            }
        }
    }

    fn get(&self, id: &str) -> Option<&PendingIq> {
        self.by_id.get(id)
    }

    fn remove(&mut self, id: &str) -> Option<PendingIq> {
        let iq = self.by_id.remove(id)?;
        self.deadlines.cancel(&id.to_owned());
        self.unindex(&iq);
        Some(iq)
    }

    /// Whether a caps query for this `ver` (or, without one, this device)
    /// is already out.
    fn asking(&self, device: &FullJid, ver: Option<&String>) -> bool {
        match ver {
            Some(v) => self.vers.contains_key(v),
            None => self.devices.contains_key(device),
        }
    }

    /// The next IQ whose answer is overdue, removed.
    fn pop_expired(&mut self, now: Time) -> Option<(String, PendingIq)> {
        let id = self.deadlines.pop_due(now)?;
        let iq = self.by_id.remove(&id)?;
        self.unindex(&iq);
        Some((id, iq))
    }

    fn next_deadline(&self) -> Option<Time> {
        self.deadlines.next()
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every request held for a name, taken out.
    fn take_held(&mut self) -> Vec<(OwnerId, BareJid, Vec<Element>, String)> {
        let held: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, p)| matches!(p.purpose, Purpose::HisName { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        held.into_iter()
            .filter_map(|id| match self.remove(&id)?.purpose {
                Purpose::HisName {
                    owner,
                    watcher,
                    asks,
                    fallback,
                } => Some((owner, watcher, asks, fallback)),
                _ => None,
            })
            .collect()
    }

    fn clear(&mut self) {
        *self = PendingIqs::default();
    }
}

/// What happened, for the shell's metrics ([`Core::poll_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A call ended, or was refused before it rang.
    CallEnded(CallOutcome),
    /// A device answered a call after it rang this long.
    CallAnswered {
        /// From the caller's request to the answer.
        ring_ms: u64,
    },
    /// A device of hers first showed that it got a call (its receipt or
    /// ringing), this long after the caller asked.
    CallReached {
        /// From the caller's request to the first device reached.
        ms: u64,
    },
    /// A call that rang ended: how many legs it rang (a device, or her
    /// account for its devices asleep), how many of them got the call,
    /// and whether one answered.
    CallLegs {
        /// Legs rung.
        rung: u32,
        /// Legs that showed they got the call.
        reached: u32,
        /// 1 if a device answered, else 0.
        answered: u32,
    },
}

/// Events a core keeps when nobody drains them.
pub const MAX_EVENTS: usize = 1024;

/// The protocol core. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    owners: Owners,
    by_name: FastMap<String, OwnerId>,
    caps_cache: HashMap<String, Arc<BTreeSet<String>>>,
    pending: PendingIqs,
    calls: calls::Calls,
    adhoc_sessions: adhoc::Sessions,
    /// Chat we relayed recently, for the errors that come back.
    chat_relays: chat::RecentRelays,
    /// Links asked for and not yet confirmed, by account.
    pending_links: HashMap<BareJid, linking::PendingLink>,
    /// What goes out, through the privacy guard it owns.
    out: outbox::Outbox,
    /// Owners whose watchers are due to hear a change, by when.
    dirty: BTreeSet<(Time, OwnerId)>,
    settle_until: Time,
    rate: limits::RateLimiter,
    /// What the sender of the current input gets if the store cannot take
    /// the changes it made (see [`Core::handle_store_failure`]).
    on_store_failure: Option<Element>,
    /// How to take back the acknowledged changes of the current input
    /// should the store refuse them.
    journal: Vec<undo::Undo>,
    /// Wall-clock time minus the core's clock, in ms.
    wall_offset: i64,
    /// The time of the input being handled (views read her local time).
    clock: Time,
    /// `everything`, `reachable` and `nothing` over the configured
    /// classes, in that order.
    built_in_views: Vec<views::View>,
}

impl Core {
    /// A core for `cfg`, loaded with what the store held.
    pub fn new(cfg: CoreConfig, stored: Stored) -> Core {
        let mut secrets = Secrets::default();
        secrets.set_admins(cfg.admins.clone());
        let mut owners = Owners::with_capacity(cfg.owners.len());
        let mut by_name = FastMap::default();
        let registered = stored.owners.into_iter().filter_map(|(name, r)| {
            let taken = cfg.owners.iter().any(|o| o.name == name);
            (!taken).then(|| (registered_owner(&name, r.accounts), false))
        });
        let all = cfg
            .owners
            .iter()
            .map(|o| (o.clone(), true))
            .chain(registered);
        for (oc, provisioned) in all {
            let Ok(virtual_jid) = BareJid::new(&format!("{}@{}", oc.name, cfg.domain)) else {
                warn!(owner = %oc.name, "skipped an owner whose name makes no JID");
                continue;
            };
            let i = owners.next_id();
            for a in &oc.accounts {
                secrets.add_account(a.clone(), i);
            }
            by_name.insert(oc.name.clone(), i);
            owners.push(Owner::new(&oc, virtual_jid, cfg.classes.len(), provisioned));
        }
        for (name, watcher, state) in stored.watchers {
            if let Some(&i) = by_name.get(&name) {
                owners[i].watchers.insert(watcher, state);
            }
        }
        for (name, contact, state) in stored.contacts {
            if let Some(&i) = by_name.get(&name) {
                owners[i].contacts.insert(contact, state);
            }
        }
        for (name, account, state) in stored.accounts {
            let Some(&i) = by_name.get(&name) else {
                continue;
            };
            if let Some(a) = owners[i].accounts.iter_mut().find(|(j, _)| *j == account) {
                a.1 = state;
            } else if state.linked_by_owner
                && state.confirmed
                && secrets.account_owner(&account).is_none()
            {
                // An account she linked herself and that confirmed it; an
                // admin's account removed from the config stays unlinked.
                secrets.add_account(account.clone(), i);
                owners[i].accounts.push((account, state));
            }
        }
        for (name, settings) in stored.settings {
            if let Some(&i) = by_name.get(&name) {
                owners[i].watchers.policy = settings.subscription;
                owners[i].candidates = settings.candidates;
                owners[i].omemo = settings.omemo;
                owners[i].display_name = settings.display_name;
                owners[i].views = settings.views;
            }
        }
        for (name, blocked) in stored.blocked {
            if let Some(&i) = by_name.get(&name) {
                owners[i].watchers.blocked = blocked;
            }
        }
        for (name, rules) in stored.rules {
            if let Some(&i) = by_name.get(&name) {
                owners[i].rules = rules;
            }
        }
        for (name, device, record) in stored.devices {
            if let Some(&i) = by_name.get(&name) {
                owners[i].devices.restore(device, record, &mut secrets, i);
            }
        }
        for (name, card) in stored.profiles {
            let (Some(&i), Ok(card)) = (by_name.get(&name), card.parse::<Element>()) else {
                continue;
            };
            // Scrubbed again: a device learned since may be named in it.
            let jid = owners[i].virtual_jid.to_string();
            owners[i].profile = profile::Profile::from_vcard(&card, &jid, |t| {
                secrets.names_secret(t, None).is_some()
            });
        }
        let caps_cache = stored
            .caps
            .into_iter()
            .map(|(ver, f)| (ver, Arc::new(f.into_iter().collect())))
            .collect();
        let cfg_rate = (cfg.limits.stanzas_per_sec, cfg.limits.stanza_burst);
        Core {
            out: outbox::Outbox::new(cfg.domain.clone(), secrets, cfg.seed),
            built_in_views: {
                let names: Vec<&str> = cfg.classes.iter().map(|c| c.name.as_str()).collect();
                views::BUILT_IN
                    .iter()
                    .filter_map(|v| views::View::built_in(v, &names))
                    .collect()
            },
            clock: Time(0),
            cfg,
            owners,
            by_name,
            caps_cache,
            pending: PendingIqs::default(),
            calls: calls::Calls::default(),
            adhoc_sessions: adhoc::Sessions::default(),
            pending_links: HashMap::new(),
            chat_relays: chat::RecentRelays::default(),
            dirty: BTreeSet::new(),
            settle_until: Time(0),
            on_store_failure: None,
            journal: Vec::new(),
            wall_offset: 0,
            rate: limits::RateLimiter::new(cfg_rate.0, cfg_rate.1, RATE_BUCKETS),
        }
    }

    /// The component domain.
    pub fn domain(&self) -> &str {
        &self.cfg.domain
    }

    /// The wall clock reads `wall_ms` (ms since the Unix epoch) when the
    /// core's clock reads `now`. The shell tells it before inputs; only
    /// rules and device records use it, never a deadline.
    pub fn set_wall_clock(&mut self, now: Time, wall_ms: u64) {
        self.clock = now;
        self.wall_offset = (wall_ms as i64).saturating_sub(now.0 as i64);
    }

    /// Wall-clock time at `now`, in ms since the Unix epoch.
    fn wall_ms(&self, now: Time) -> u64 {
        (now.0 as i64).saturating_add(self.wall_offset).max(0) as u64
    }

    /// The limits it keeps to.
    pub fn limits(&self) -> &Limits {
        &self.cfg.limits
    }

    /// The next stanza to send, if any. Drain [`Core::poll_store`] first.
    pub fn poll_transmit(&mut self) -> Option<Element> {
        self.out.poll_transmit()
    }

    /// [`Core::poll_transmit`] a group at a time: a [`Transmit::Each`] is
    /// one stanza for many recipients, which the shell may serialise once.
    /// The two drain the same queue, in the same order.
    pub fn poll_transmit_group(&mut self) -> Option<Transmit> {
        self.out.poll_transmit_group()
    }

    /// The next change to make durable, if any.
    pub fn poll_store(&mut self) -> Option<StoreOp> {
        self.out.poll_store()
    }

    /// The next thing that happened, for metrics, if any. The shell drains
    /// these after every input, with the stanzas; a core nobody drains
    /// keeps at most [`MAX_EVENTS`] (the oldest are dropped).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.poll_event()
    }

    /// The next thing the SOCKS5 streamhost must do, if any (only with
    /// [`CoreConfig::streamhost`]). Drained with the stanzas: a client
    /// may connect as soon as it reads our candidate.
    pub fn poll_streamhost(&mut self) -> Option<StreamhostOp> {
        self.out.poll_streamhost()
    }

    /// When [`Core::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let iq = self.pending.next_deadline();
        let publish = self.dirty.first().map(|(t, _)| *t);
        [publish, iq, self.calls.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Live calls.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// How much state the core holds now.
    pub fn footprint(&self) -> Footprint {
        let devices = self.owners.iter().map(|o| o.devices.live.len());
        // Her own accounts watching her address are hers, not watchers.
        let watchers = self.owners.iter().map(|o| {
            let own = o
                .accounts
                .iter()
                .filter(|(a, _)| o.watchers.contains_key(a))
                .count();
            o.watchers.len() - own
        });
        Footprint {
            owners: self.owners.len(),
            devices: devices.clone().sum(),
            max_devices_per_owner: devices.max().unwrap_or(0),
            watchers: watchers.clone().sum(),
            max_watchers_per_owner: watchers.max().unwrap_or(0),
            calls: self.calls.len(),
            pending_iqs: self.pending.len(),
            rate_buckets: self.rate.len(),
            adhoc_sessions: self.adhoc_sessions.len(),
        }
    }

    /// Stanzas the privacy guard refused so far (each one a bug).
    pub fn guard_drops(&self) -> u64 {
        self.out.guard_drops()
    }

    /// The stream to the server is up (first time or again): link and probe
    /// every account (DESIGN.md section 2). Live devices are relearned from
    /// the probe answers; what watchers saw stays until it changes.
    pub fn handle_connected(&mut self, now: Time) {
        self.clock = now;
        self.journal.clear();
        self.on_store_failure = None;
        self.settle_until = now.plus_ms(self.cfg.settle_ms);
        // Requests held for a name go out now, named as best we can.
        for (owner, watcher, asks, fallback) in self.pending.take_held() {
            self.send_asks(owner, &watcher, asks, &fallback);
        }
        self.pending.clear();
        for i in self.owners.ids().collect::<Vec<_>>() {
            self.forget_devices(i, None, now);
            self.owners[i].key_peers.clear();
            let from = self.owners[i].virtual_jid.to_string();
            let accounts = self.owners[i].accounts.clone();
            for (account, state) in accounts {
                // Not both: Prosody answers a probe from a JID without a
                // subscription with `unsubscribed`, which cancels the
                // request still pending in her roster. Her approval
                // (`subscribed`) is followed by a probe instead.
                if state.approved {
                    self.out.send(stanza::stanza(
                        "presence",
                        &from,
                        account.as_str(),
                        Some("probe"),
                    ));
                } else {
                    self.out.send(link_request(&from, &account));
                }
            }
            self.fetch_primary_profile(now, i);
            // Only an account that approved her virtual JID answers it.
            let approved: Vec<BareJid> = self.owners[i]
                .accounts
                .iter()
                .filter(|(a, s)| s.approved && self.out.secrets.account_owner(a) == Some(i))
                .map(|(a, _)| a.clone())
                .collect();
            for account in approved {
                self.ask_push(now, i, &account);
            }
            self.mark_dirty(i, now);
        }
    }

    /// Graceful stop: every call ends on every side, and every watcher
    /// learns that every class went away.
    pub fn handle_shutdown(&mut self, now: Time) {
        self.clock = now;
        self.abort_all_calls(now);
        for i in self.owners.ids().collect::<Vec<_>>() {
            let owner = &self.owners[i];
            let mut out = Vec::new();
            for (view, watchers) in self.audience(i) {
                for (c, def) in self.cfg.classes.iter().enumerate() {
                    if !owner.publishing.is_available(&view, c) {
                        continue;
                    }
                    let from = format!("{}/{}", owner.virtual_jid, def.name);
                    for w in &watchers {
                        out.push(stanza::stanza("presence", &from, w, Some("unavailable")));
                    }
                }
            }
            for s in out {
                self.out.send(s);
            }
        }
    }

    /// The store could not take the changes of the last input, so nothing
    /// that acknowledges them may go out: every pending stanza and change
    /// is dropped and the sender gets `internal-server-error` (type
    /// `wait`). The shell then rebuilds the core from the store if it can
    /// (after [`Core::end_calls`]: calls are not in the store).
    pub fn handle_store_failure(&mut self) {
        self.undo_journal();
        self.out.discard();
        if let Some(reply) = self.on_store_failure.take() {
            self.out.send(reply);
        }
    }

    /// Every call ends on every side (before this core is replaced).
    pub fn end_calls(&mut self, now: Time) {
        self.abort_all_calls(now);
    }

    /// Time passed: flush coalesced presence, expire IQs. Publishing stops
    /// after a batch of queued stanzas (2,048); drain, and call again while
    /// [`Core::poll_timeout`] is due.
    pub fn handle_timeout(&mut self, now: Time) {
        self.clock = now;
        // The journal and the error for a refused change are the last
        // input's: the shell drains after each.
        self.journal.clear();
        self.on_store_failure = None;
        while let Some((id, p)) = self.pending.pop_expired(now) {
            debug!(id = %id, to = %p.to, "iq timed out");
            if let Purpose::HisName {
                owner,
                watcher,
                asks,
                fallback,
            } = p.purpose
            {
                self.send_asks(owner, &watcher, asks, &fallback);
            }
        }
        self.call_timeouts(now);
        while let Some(&(at, owner)) = self.dirty.first() {
            // Owners left due stay due: the shell drains what is queued
            // and calls again, so a wave of due owners (after a restart,
            // a burst across many owners) never sits in memory at once.
            if at > now || self.out.queued() >= PUBLISH_BATCH {
                break;
            }
            self.dirty.pop_first();
            self.owners[owner].publishing.due = None;
            // Only what watchers heard opens a window: churn they could
            // not see does not delay the next change they can.
            if self.publish(owner) {
                self.owners[owner].publishing.last_publish = Some(now);
            }
        }
    }

    /// One stanza from the server. Never panics on its content: a stanza we
    /// cannot use gets an RFC 6120 error reply where one is allowed, or is
    /// dropped with a log line.
    pub fn handle_stanza(&mut self, now: Time, mut stanza: Element) {
        self.clock = now;
        self.on_store_failure = None;
        self.journal.clear();
        if !stanza.has_ns(ns::COMPONENT) {
            debug!(name = stanza.name(), ns = %stanza.ns(), "dropped: not a stanza");
            return;
        }
        let kind = stanza.name();
        if !matches!(kind, "presence" | "message" | "iq") {
            debug!(name = kind, "dropped: not a stanza");
            return;
        }
        let header = stanza::Header::read(&stanza);
        let Some(from) = header.from.and_then(canonical_jid) else {
            // RFC 6120 §8.1.2.1: the server stamps `from`; without a usable
            // one there is no one to answer.
            warn!(kind, from = ?header.from, "dropped: missing or malformed from");
            return;
        };
        if from.domain().as_str() == self.cfg.domain {
            // Our own domain as sender: a loop or a spoof. Answering could
            // loop, so drop it.
            debug!(kind, from = %from, "dropped: from our own domain");
            return;
        }
        // Most stanzas are for one of her addresses as we write them
        // (`alice@D`, `alice@D/audio`): routed from the text, with no JID
        // to parse and nothing to normalise.
        let (target, to) = match header.to.and_then(|t| self.owner_address(t)) {
            Some(target) => (target, None),
            None => match header.to.map(|t| canonical_jid(t).ok_or(())) {
                Some(Ok(to)) if to.domain().as_str() == self.cfg.domain => {
                    let target = router::route(
                        &to,
                        |n| self.by_name.get(n).copied(),
                        |r| self.cfg.classes.iter().position(|c| c.name == r),
                    );
                    (target, Some(to))
                }
                Some(Ok(to)) => {
                    debug!(kind, to = %to, "dropped: not for our domain");
                    return;
                }
                Some(Err(_)) => {
                    warn!(kind, from = %from, "malformed to");
                    // The original `to` cannot be our reply's `from` (Prosody
                    // closes the stream on an invalid from): answer from the domain.
                    let mut fixed = stanza.clone();
                    stanza::set_attr(&mut fixed, "to", self.cfg.domain.clone());
                    self.out
                        .reply_error(&fixed, ErrorType::Modify, "jid-malformed");
                    return;
                }
                None => {
                    debug!(kind, from = %from, "dropped: no to");
                    return;
                }
            },
        };
        trace!(kind, from = %from, to = ?header.to, "stanza in");
        // Answers to our own queries are not the sender's to ration.
        let answer = kind == "iq" && matches!(header.typ, Some("result") | Some("error"));
        let (fix_from, fix_to) = (
            header.from != Some(from.as_str()),
            to.as_ref().is_some_and(|to| header.to != Some(to.as_str())),
        );
        // From here on every address is the normalised one (RFC 7622:
        // `UNIFIED.example` is `unified.example`): replies and relays echo
        // attributes, and the server expects our own domain exactly.
        if fix_from {
            stanza::set_attr(&mut stanza, "from", from.as_str());
        }
        if let Some(to) = to.as_ref().filter(|_| fix_to) {
            stanza::set_attr(&mut stanza, "to", to.as_str());
        }
        if !self.admit(now, &stanza, &from, answer) {
            return;
        }
        self.dispatch(now, &stanza, from, target);
        if self.out.keeps_acknowledged() {
            let text = "The service could not save this change (storage error), so nothing changed. Please try again later.";
            self.on_store_failure = error_reply(
                &stanza,
                ErrorType::Wait,
                "internal-server-error",
                Some(text),
            );
        }
    }

    /// The routing-table row of `to` when it is exactly one of our
    /// owners' addresses as we write them: `name@D` or `name@D/class`.
    /// Owner names, our domain and class names are canonical already
    /// (lowercase ASCII, checked by `--check` and at registration), so
    /// such text is its own normal form. `None`: anything else, left to
    /// the full parse.
    fn owner_address(&self, to: &str) -> Option<Target> {
        let (node, rest) = to.split_once('@')?;
        let (domain, resource) = match rest.split_once('/') {
            Some((d, r)) => (d, Some(r)),
            None => (rest, None),
        };
        if domain != self.cfg.domain {
            return None;
        }
        let owner = self.by_name.get(node).copied()?;
        let resource = match resource {
            None => router::Resource::Bare,
            Some(r) => router::Resource::Class(self.cfg.classes.iter().position(|c| c.name == r)?),
        };
        Some(Target::Owner { owner, resource })
    }

    fn dispatch(&mut self, now: Time, stanza: &Element, from: Jid, target: Target) {
        let kind = stanza.name();
        match kind {
            "presence" => self.handle_presence(now, stanza, from, target),
            "iq" => self.handle_iq(now, stanza, from, target),
            _ => {
                let command = target == Target::Domain && self.command_message(now, stanza, &from);
                if !command
                    && !self.chat_error(stanza, &from)
                    && !self
                        .calls
                        .call_receipt(now, &mut self.out, stanza, &from, &target)
                    && !self.call_message(now, stanza, &from, &target)
                    && !self.device_list_event(now, stanza, &from, &target)
                    && !self.chat_message(now, stanza, &from, &target)
                {
                    self.handle_message(stanza, target);
                }
            }
        }
    }

    /// Flood control: the sender's rate and the stanza's size. A refused
    /// IQ request gets an error (it must be answered), and so does the
    /// first refused message of an episode; the rest are dropped, logged
    /// once per episode.
    fn admit(&mut self, now: Time, stanza: &Element, from: &Jid, answer: bool) -> bool {
        if !answer {
            // The bare JID is the text before the first '/' (RFC 7622 §3.1).
            let bare = from.as_str().split('/').next().unwrap_or_default();
            match self.rate.check(bare, now) {
                limits::Verdict::Pass => {}
                limits::Verdict::PassAfter { refused } => {
                    info!(sender = %from.to_bare(), refused, "sender back under its rate limit");
                }
                limits::Verdict::Refuse { first } => {
                    if first {
                        warn!(sender = %from.to_bare(), per_sec = self.cfg.limits.stanzas_per_sec, "sender over its rate limit: refusing its stanzas");
                    }
                    // IQs must be answered; a person's message gets one
                    // error per episode, so that she learns why.
                    if stanza.name() == "iq" || (first && stanza.name() == "message") {
                        let text = "Too many stanzas from your account: slow down.";
                        if let Some(e) =
                            error_reply(stanza, ErrorType::Wait, "resource-constraint", Some(text))
                        {
                            self.out.send(e);
                        }
                    }
                    return false;
                }
            }
        }
        if limits::larger_than(stanza, self.cfg.limits.stanza_bytes) {
            warn!(sender = %from, kind = stanza.name(), max = self.cfg.limits.stanza_bytes, "refused an oversized stanza");
            if !answer {
                self.out
                    .reply_error(stanza, ErrorType::Modify, "policy-violation");
            }
            return false;
        }
        true
    }

    /// Messages neither commands, calls nor chat relay took: RFC 6121
    /// §8.5 treatment.
    fn handle_message(&mut self, stanza: &Element, target: Target) {
        match stanza.attr("type") {
            Some("error") | Some("headline") => {
                trace!(?target, "dropped message");
            }
            _ => self
                .out
                .reply_error(stanza, ErrorType::Cancel, "service-unavailable"),
        }
    }

    /// Owner `owner`'s devices changed. Coalescing with a leading edge:
    /// if her watchers heard nothing for a whole `coalesce_ms`, they hear
    /// this at once (right after the input that caused it); churn within
    /// the window after that reaches them once, at its end. Nothing goes
    /// out before `settle_until` (probe answers after a reconnect).
    fn mark_dirty(&mut self, owner: OwnerId, now: Time) {
        let window_end = self.owners[owner]
            .publishing
            .last_publish
            .map_or(now, |t| t.plus_ms(self.cfg.coalesce_ms));
        self.schedule_publish(owner, window_end.max(now).max(self.settle_until));
    }

    /// Owner `owner`'s watchers hear her class presences at `at` at the
    /// latest.
    fn schedule_publish(&mut self, owner: OwnerId, at: Time) {
        let o = &mut self.owners[owner].publishing;
        match o.due {
            Some(due) if due <= at => return,
            Some(due) => {
                self.dirty.remove(&(due, owner));
            }
            None => {}
        }
        o.due = Some(at);
        self.dirty.insert((at, owner));
    }

    /// Owner `owner` has nothing left to publish (she unregistered).
    fn unschedule_publish(&mut self, owner: OwnerId) {
        if let Some(due) = self.owners[owner].publishing.due.take() {
            self.dirty.remove(&(due, owner));
        }
    }

    /// `now` in owner `i`'s time zone.
    fn local_time(&self, now: Time, i: OwnerId) -> chrono::DateTime<chrono_tz::Tz> {
        local_time(self.wall_ms(now), self.owners[i].timezone)
    }

    /// Who would ring now for a call of `class` from `caller` (see
    /// [`calls::ring_plan`]).
    pub(super) fn ring_plan(
        &self,
        now: Time,
        i: OwnerId,
        class: usize,
        caller: &BareJid,
    ) -> rules::RingPlan {
        calls::ring_plan(&self.owners[i], &self.cfg, self.wall_ms(now), class, caller)
    }

    /// A view of the calls with what their handlers may touch.
    fn calls_cx(&mut self, now: Time) -> (&mut calls::Calls, calls::Ctx<'_>) {
        let wall_ms = self.wall_ms(now);
        let cx = calls::Ctx {
            now,
            wall_ms,
            out: &mut self.out,
            owners: &self.owners,
            cfg: &self.cfg,
            hidden: 0,
        };
        (&mut self.calls, cx)
    }

    /// A message with an XEP-0353 element; `false` if it has none.
    fn call_message(&mut self, now: Time, msg: &Element, from: &Jid, target: &Target) -> bool {
        let hidden = self.hidden_classes(from, target);
        let (calls, mut cx) = self.calls_cx(now);
        cx.hidden = hidden;
        let taken = calls.call_message(&mut cx, msg, from, target);
        self.after_calls(now);
        taken
    }

    /// A Jingle IQ set; `false` if it is not one we route as a call.
    fn call_iq(&mut self, now: Time, iq: &Element, from: &Jid, target: &Target) -> bool {
        let hidden = self.hidden_classes(from, target);
        let (calls, mut cx) = self.calls_cx(now);
        cx.hidden = hidden;
        let taken = calls.call_iq(&mut cx, iq, from, target);
        self.after_calls(now);
        taken
    }

    /// Ring timeouts and expired relays.
    fn call_timeouts(&mut self, now: Time) {
        let (calls, mut cx) = self.calls_cx(now);
        calls.call_timeouts(&mut cx);
        self.after_calls(now);
    }

    /// Every call of owner `i` ends (she unregistered).
    fn abort_owner_calls(&mut self, now: Time, i: OwnerId) {
        let (calls, mut cx) = self.calls_cx(now);
        calls.abort_owner_calls(&mut cx, i);
        self.after_calls(now);
    }

    /// Every call ends (graceful shutdown, or before the core is replaced).
    fn abort_all_calls(&mut self, now: Time) {
        let (calls, mut cx) = self.calls_cx(now);
        calls.abort_all_calls(&mut cx);
        self.after_calls(now);
    }

    /// A device went offline: its leg of any call ends.
    fn call_device_gone(&mut self, now: Time, device: &FullJid) {
        let (calls, mut cx) = self.calls_cx(now);
        calls.call_device_gone(&mut cx, device);
        self.after_calls(now);
    }

    /// Her call classes follow her calls (busy while one is answered).
    fn after_calls(&mut self, now: Time) {
        while let Some(change) = self.calls.poll_busy() {
            match change {
                calls::Busy::Started(i) => self.mark_dirty(i, now),
                calls::Busy::Ended(i) => self.schedule_publish(i, self.settle_until),
            }
        }
    }

    /// Owner `i`'s accounts that are proven hers (provisioned, registered,
    /// or linked and approved): the only ones that get her traffic.
    fn linked_accounts(&self, i: OwnerId) -> Vec<BareJid> {
        self.owners.linked_accounts(i, &self.out.secrets)
    }

    /// Her first proven account whose subscription is approved: the one
    /// whose profile and OMEMO keys are hers to show.
    fn primary_account(&self, i: OwnerId) -> Option<BareJid> {
        self.owners[i]
            .accounts
            .iter()
            .find(|(a, s)| s.approved && self.out.secrets.account_owner(a) == Some(i))
            .map(|(a, _)| a.clone())
    }

    /// Sends an IQ get with `payload` from owner `i`'s virtual JID to
    /// `to`, and waits (at most `timeout_ms`) for its answer, which goes to
    /// `purpose`. `false`, and nothing sent, when too many IQs are out.
    fn ask_from(
        &mut self,
        now: Time,
        i: OwnerId,
        to: &BareJid,
        payload: Element,
        purpose: Purpose,
        timeout_ms: u64,
    ) -> bool {
        if self.pending.len() >= self.cfg.limits.pending_iqs {
            warn!("pending iq limit reached, nothing asked");
            return false;
        }
        let id = self.out.next_id();
        let from = self.owners[i].virtual_jid.to_string();
        let mut iq = stanza::stanza("iq", &from, to.as_str(), Some("get"));
        stanza::set_attr(&mut iq, "id", id.clone());
        iq.append_child(payload);
        self.pending.insert(
            id,
            PendingIq {
                to: Jid::from(to.clone()),
                purpose,
            },
            now.plus_ms(timeout_ms),
        );
        self.out.send(iq);
        true
    }

    /// Publishes to watchers every class whose presence, as their view
    /// shows it, changed; returns whether any did. Each view's presence
    /// is built once and copied to its watchers (DESIGN.md section 13).
    fn publish(&mut self, i: OwnerId) -> bool {
        let states = self.states(i);
        let in_use = self.views_in_use(i);
        let mut out = Vec::new();
        for name in &in_use {
            // Everything shows each class as it is: no copy to make.
            let owned;
            let shown = if name == views::EVERYTHING {
                &states
            } else {
                owned = self.shown_by(i, self.view_named(i, name), &states);
                &owned
            };
            let mut news = vec![];
            for (c, now) in shown.iter().enumerate() {
                let now = now.as_ref();
                let owner = &mut self.owners[i];
                if owner.publishing.update(name, c, now) {
                    debug!(owner = %owner.name, class = %self.cfg.classes[c].name, view = %name, available = now.is_some(), "class presence changed");
                    news.push(c);
                }
            }
            // The view's watchers are listed only if it has news: most
            // device changes change nothing anyone sees.
            let Some((&last, rest)) = news.split_last() else {
                continue;
            };
            let watchers = self.watchers_in(i, name);
            let Some(first) = watchers.first() else {
                continue;
            };
            for &c in rest {
                let p = self.class_presence(i, c, first, shown[c].as_ref());
                out.push((p, watchers.clone()));
            }
            let p = self.class_presence(i, last, first, shown[last].as_ref());
            out.push((p, watchers));
        }
        let in_use: Vec<&str> = in_use.iter().map(String::as_str).collect();
        self.owners[i].publishing.keep_views(&in_use);
        // A view with days or hours changes by the clock alone.
        if let Some(at) = self.next_view_edge(i, &in_use) {
            self.schedule_publish(i, at);
        }
        let changed = !out.is_empty();
        for (presence, watchers) in out {
            self.out.send_to_each(presence, watchers);
        }
        changed
    }

    fn aggregate(&self, i: OwnerId, class: usize) -> Option<presence::ClassPresence> {
        let owner = &self.owners[i];
        let state = presence::aggregate(&owner.devices.live, class, |s| {
            self.out.secrets.names_secret(s, None).is_none()
        });
        // DESIGN.md section 3: in a call through us, call classes are busy.
        match state {
            Some(_) if self.cfg.classes[class].jmi && self.calls.in_call(i) => {
                Some(presence::ClassPresence {
                    show: devices::Show::Dnd,
                    status: Some("In a call".into()),
                    idle_since: None,
                })
            }
            other => other,
        }
    }

    fn class_presence(
        &self,
        i: OwnerId,
        class: usize,
        to: &str,
        state: Option<&presence::ClassPresence>,
    ) -> Element {
        let def = &self.cfg.classes[class];
        let owner = &self.owners[i];
        let from = format!("{}/{}", owner.virtual_jid, def.name);
        let mut p = presence::class_presence(def, &self.cfg.caps_node, &from, to, state);
        if let (Some(_), Some(x)) = (state, owner.profile.presence_update()) {
            p.append_child(x);
        }
        p
    }
}

#[cfg(test)]
mod tests;

/// Wall-clock time `wall_ms` in time zone `tz`.
fn local_time(wall_ms: u64, tz: chrono_tz::Tz) -> chrono::DateTime<chrono_tz::Tz> {
    chrono::DateTime::from_timestamp_millis(wall_ms as i64)
        .unwrap_or_default()
        .with_timezone(&tz)
}
