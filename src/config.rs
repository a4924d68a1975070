//! `component.toml` -> [`Config`].
//!
//! Unknown keys are refused (a typo must not silently fall back to a
//! default); every default is a function; every error names the key and
//! how to fix it. [`Config::from_toml`] needs no file, so tests parse every
//! sample config.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::Weekday;
use jid::{BareJid, Jid};
use serde::{Deserialize, Deserializer};

use crate::core::devices::ClassDef;
use crate::core::rules::{parse_day, parse_window, CallerMatch, NoAnswer, RingMode, Rule};
use crate::core::{
    CandidatePolicy, CoreConfig, Limits, OwnerConfig, Registration, SubscriptionPolicy,
};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A value that parses but cannot work.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key, as written in the file.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// Parses TOML text into a [`Config`]: a value of the wrong type or
/// shape is refused with its key (`owners[0].timezone`) and line.
fn parse(text: &str) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        if key.is_empty() || key == "." {
            return ConfigError::Toml(inner);
        }
        let line = inner
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        match line {
            Some(line) => invalid(key, format!("line {line}: {}", inner.message())),
            None => invalid(key, inner.message()),
        }
    })
}

/// A value parsed by `parse`, refused with what was `wanted`.
fn parsed<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: impl Fn(&str) -> Option<T>,
    wanted: &str,
) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not {wanted}")))
}

/// Each of a list, as [`parsed`].
fn each_parsed<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: impl Fn(&str) -> Option<T>,
    wanted: &str,
) -> Result<Vec<T>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|text| {
            parse(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not {wanted}")))
        })
        .collect()
}

fn time_zone<'de, D: Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
    parsed(
        d,
        |t| t.parse().ok(),
        "an IANA time zone like \"Europe/Berlin\"",
    )
}

fn callers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CallerMatch>, D::Error> {
    each_parsed(
        d,
        CallerMatch::parse,
        "a JID, a domain, \"watchers\" or \"anyone\"",
    )
}

fn days<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Weekday>, D::Error> {
    each_parsed(d, parse_day, "a weekday (mon ... sun)")
}

fn window<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(u16, u16)>, D::Error> {
    parsed(d, parse_window, "HH:MM-HH:MM").map(Some)
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The whole `component.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: how to reach the XMPP server.
    pub server: Server,
    /// `[store]`: where state lives.
    pub store: Store,
    /// `[presence]`: aggregation tuning.
    #[serde(default)]
    pub presence: Presence,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[log]`.
    #[serde(default)]
    pub log: Log,
    /// `[calls]`.
    #[serde(default)]
    pub calls: Calls,
    /// `[registration]`.
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// `[[classes]]`: replaces the default four classes when present.
    #[serde(default = "default_classes")]
    pub classes: Vec<ClassConfig>,
    /// `[[owners]]`: provisioned owners.
    #[serde(default)]
    pub owners: Vec<Owner>,
    /// Accounts that may act for any owner (`as <owner> <command>`).
    #[serde(default)]
    pub admins: Vec<BareJid>,
    /// `[http]`: the admin listener (metrics, health, status); off when
    /// absent.
    #[serde(default)]
    pub http: Option<Http>,
    /// `[[views]]`: views every owner may use (DESIGN.md section 13).
    #[serde(default)]
    pub views: Vec<ViewConfig>,
    /// `[streamhost]`: our own SOCKS5 streamhost for file transfers; off
    /// when absent (SOCKS5 offers then fall back in-band).
    #[serde(default)]
    pub streamhost: Option<StreamhostConfig>,
}

/// `[streamhost]`: where file transfers through a virtual JID meet
/// (XEP-0065). Both ends connect here; neither learns the other's
/// address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamhostConfig {
    /// Where to listen, like `"0.0.0.0:7625"`.
    pub listen: SocketAddr,
    /// What clients are told to connect to: a name or address they
    /// reach. The listen address when absent (which must then not be
    /// `0.0.0.0` or `::`).
    #[serde(default)]
    pub host: Option<String>,
    /// The port clients are told, when a NAT or forward maps another one
    /// to `listen`; the listen port when absent.
    #[serde(default)]
    pub port: Option<u16>,
}

impl StreamhostConfig {
    /// What clients are told.
    pub fn address(&self) -> crate::core::StreamhostAddr {
        crate::core::StreamhostAddr {
            host: self
                .host
                .clone()
                .unwrap_or_else(|| self.listen.ip().to_string()),
            port: self.port.unwrap_or(self.listen.port()),
        }
    }
}

/// `[[views]]`: a view every owner may put watchers in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// Its name (`colleagues`).
    pub name: String,
    /// What it shows, as the `view add` command takes it:
    /// `"audio show mon-fri 09:00-18:00, chat presence"`.
    pub shows: String,
}

impl ViewConfig {
    fn to_view(&self, classes: &[&str]) -> Result<crate::core::views::View, String> {
        let words: Vec<String> = self.shows.split_whitespace().map(str::to_owned).collect();
        crate::core::views::View::parse(&self.name, &words, classes)
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Where to listen, like `"127.0.0.1:9480"`.
    pub bind: SocketAddr,
    /// What `/metrics` and `/status` ask for
    /// (`Authorization: Bearer <token>`). Written here (then the file
    /// must not be world-readable) ...
    #[serde(default)]
    pub admin_token: Secret,
    /// ... or read from this file (its first line).
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Lets a loopback peer in without the token. Off by default: behind
    /// a reverse proxy on the same host (nginx, Caddy) every request
    /// comes from loopback, whoever sent it. Even when on, a request
    /// that says it was forwarded (`Forwarded`, `X-Forwarded-For`,
    /// `X-Real-IP`, `Via`) still needs the token.
    #[serde(default)]
    pub trust_loopback: bool,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The server's component port, an IP address and port.
    pub address: SocketAddr,
    /// The component's domain, as in the server's `Component` line.
    pub domain: String,
    /// XEP-0114 shared secret, written here (then the file must not be
    /// readable by every user) ...
    #[serde(default)]
    pub secret: Secret,
    /// ... or read from this file (its first line). The environment
    /// variable [`SECRET_ENV`] overrides both.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Seconds of silence before we check the link with a ping.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
}

/// The environment variable that, when set, holds the component secret.
pub const SECRET_ENV: &str = "UNIFIED_PRESENCE_SECRET";

/// A secret that never appears in `Debug` output (and so in no log).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the handshake.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Refuses a file holding a secret that every local user can read.
fn refuse_world_readable(path: &std::path::Path, key: &str) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            return Err(invalid(
                key,
                format!(
                    "{} holds a secret and every user of this machine can read it (mode {mode:o}): \
                     run `chmod o-rwx {}` (the service's user or group still needs to read it), \
                     or move it to a file of its own (server.secret_file, http.admin_token_file) or, \
                     for the component secret, the {SECRET_ENV} environment variable",
                    path.display(),
                    path.display()
                ),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, key);
    Ok(())
}

fn default_keepalive() -> u64 {
    60
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// Directory of the sled database.
    pub path: PathBuf,
}

/// `[presence]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    /// Device churn within this window reaches watchers as one change.
    #[serde(default = "default_coalesce")]
    pub coalesce_ms: u64,
    /// After connecting, time for devices to answer our probes before the
    /// first presence goes to watchers.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
    /// Our XEP-0115 node.
    #[serde(default = "default_caps_node")]
    pub caps_node: String,
    /// The view of watchers an owner put in none: `everything` (the
    /// default), `reachable`, `nothing`, or one of `[[views]]`.
    #[serde(default = "default_view")]
    pub default_view: String,
}

fn default_view() -> String {
    crate::core::views::EVERYTHING.into()
}

fn default_coalesce() -> u64 {
    200
}
fn default_settle() -> u64 {
    1000
}
fn default_caps_node() -> String {
    "https://unified-presence.org/caps".into()
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            coalesce_ms: default_coalesce(),
            settle_ms: default_settle(),
            caps_node: default_caps_node(),
            default_view: default_view(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Live devices per owner.
    #[serde(default = "default_devices")]
    pub devices_per_owner: usize,
    /// Watchers per owner.
    #[serde(default = "default_watchers")]
    pub watchers_per_owner: usize,
    /// IQs awaiting an answer.
    #[serde(default = "default_pending")]
    pub pending_iqs: usize,
    /// Seconds to wait for an IQ answer.
    #[serde(default = "default_iq_timeout")]
    pub iq_timeout_secs: u64,
    /// Stanzas a second one account (all its resources) may send us after
    /// a burst; 0 turns the limit off.
    #[serde(default = "default_rate")]
    pub stanzas_per_sec: u64,
    /// How many stanzas an account may send at once.
    #[serde(default = "default_burst")]
    pub stanza_burst: u64,
    /// Largest stanza we act on, in bytes; larger ones get
    /// `policy-violation`.
    #[serde(default = "default_stanza_bytes")]
    pub stanza_bytes: usize,
    /// Calls ringing or in progress at once, over all owners.
    #[serde(default = "default_calls")]
    pub concurrent_calls: usize,
    /// Calls one caller account may have ringing or in progress at once.
    #[serde(default = "default_calls_per_caller")]
    pub calls_per_caller: usize,
}

fn default_devices() -> usize {
    64
}
fn default_watchers() -> usize {
    10_000
}
fn default_pending() -> usize {
    10_000
}
fn default_iq_timeout() -> u64 {
    30
}
fn default_rate() -> u64 {
    50
}
fn default_burst() -> u64 {
    200
}
fn default_stanza_bytes() -> usize {
    256 * 1024
}
fn default_calls() -> usize {
    1_000
}
fn default_calls_per_caller() -> usize {
    3
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            devices_per_owner: default_devices(),
            watchers_per_owner: default_watchers(),
            pending_iqs: default_pending(),
            iq_timeout_secs: default_iq_timeout(),
            stanzas_per_sec: default_rate(),
            stanza_burst: default_burst(),
            stanza_bytes: default_stanza_bytes(),
            concurrent_calls: default_calls(),
            calls_per_caller: default_calls_per_caller(),
        }
    }
}

/// `[registration]`: who may get a virtual JID by sending "register".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// `closed` (default: only `[[owners]]`), `open`, or `domains`.
    #[serde(default)]
    pub mode: RegistrationMode,
    /// With `mode = "domains"`: the account domains that may register.
    #[serde(default)]
    pub domains: Vec<String>,
}

/// `[registration] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Only provisioned owners.
    #[default]
    Closed,
    /// Anyone.
    Open,
    /// Accounts on `domains`.
    Domains,
}

/// `[calls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calls {
    /// Seconds devices ring before the caller is told nobody answered.
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_secs: u64,
    /// Milliseconds a step of sequential or priority ringing waits for
    /// a device to show it got the call (its receipt or ringing) before
    /// the next step rings.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// Domains whose servers wake devices asleep by push (XEP-0357) even
    /// if they do not list it to her virtual JID: ejabberd's mod_push
    /// answers only the account itself. Prosody's mod_cloud_notify says
    /// so to her contacts, and needs no entry here.
    #[serde(default)]
    pub push_domains: Vec<String>,
}

fn default_ring_timeout() -> u64 {
    30
}

fn default_ack_timeout() -> u64 {
    5_000
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            ring_timeout_secs: default_ring_timeout(),
            ack_timeout_ms: default_ack_timeout(),
            push_domains: vec![],
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// A `tracing` filter (`info`, `unified_presence=debug`); `RUST_LOG`
    /// overrides it.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: default_level(),
        }
    }
}

/// `[[classes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Class name and resource.
    pub name: String,
    /// Features a device must have; empty = every device.
    #[serde(default)]
    pub features: Vec<String>,
    /// Priority of the class presence.
    pub priority: i8,
    /// Calls of this class use XEP-0353.
    #[serde(default)]
    pub jmi: bool,
}

const JINGLE: &str = "urn:xmpp:jingle:1";
const RTP: &str = "urn:xmpp:jingle:apps:rtp:1";
const RTP_AUDIO: &str = "urn:xmpp:jingle:apps:rtp:audio";
const ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";
const RTP_VIDEO: &str = "urn:xmpp:jingle:apps:rtp:video";
const FT5: &str = "urn:xmpp:jingle:apps:file-transfer:5";

/// DESIGN.md section 3, the default mapping. Chat has the highest
/// priority so that bare-JID routing picks it. Every default has one
/// digit: Converse.js 14 picks a contact's status from the resource whose
/// `"{priority}-{timestamp}"` *string* sorts last, so with chat at 10 a
/// browser showed Alice "away" from `/audio` while `/chat` was online.
pub fn default_classes() -> Vec<ClassConfig> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        ClassConfig {
            name: "chat".into(),
            features: vec![],
            priority: 9,
            jmi: false,
        },
        ClassConfig {
            name: "audio".into(),
            features: s(&[JINGLE, RTP, RTP_AUDIO, ICE_UDP]),
            priority: 5,
            jmi: true,
        },
        ClassConfig {
            name: "video".into(),
            features: s(&[JINGLE, RTP, RTP_AUDIO, ICE_UDP, RTP_VIDEO]),
            priority: 4,
            jmi: true,
        },
        ClassConfig {
            name: "files".into(),
            features: s(&[JINGLE, FT5]),
            priority: 1,
            jmi: false,
        },
    ]
}

/// `[[owners]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Localpart of the virtual JID.
    pub name: String,
    /// Real accounts (bare JIDs) that are hers.
    pub accounts: Vec<BareJid>,
    /// `ask` (default) or `open`.
    #[serde(default)]
    pub subscription: SubscriptionPolicy,
    /// JIDs or domains approved without asking.
    #[serde(default)]
    pub allow: Vec<String>,
    /// JIDs or domains that get nothing.
    #[serde(default)]
    pub blocked: Vec<String>,
    /// `direct` (default) or `relay-only`: strip the host and
    /// server-reflexive ICE candidates of her devices from calls.
    #[serde(default)]
    pub candidates: CandidatePolicy,
    /// Her IANA time zone (`Europe/Berlin`), for the rules; default UTC.
    #[serde(default, deserialize_with = "time_zone")]
    pub timezone: chrono_tz::Tz,
    /// `[[owners.rules]]`: her ring rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// `[[owners.rules]]` (DESIGN.md section 6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Classes it applies to (`audio`, `video`...); absent = all.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Callers: `bob@example.org`, `example.org`, `watchers`, `anyone`.
    #[serde(default, deserialize_with = "callers")]
    pub callers: Vec<CallerMatch>,
    /// Days: `mon` ... `sun`; absent = every day.
    #[serde(default, deserialize_with = "days")]
    pub days: Vec<Weekday>,
    /// Local time window `HH:MM-HH:MM` (may span midnight), as minutes
    /// since midnight.
    #[serde(default, deserialize_with = "window")]
    pub time: Option<(u16, u16)>,
    /// `parallel` (default), `sequential` or `priority`.
    #[serde(default)]
    pub ring: RingMode,
    /// Devices by resource name, in ringing order; absent = all qualifying.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Skip devices that are dnd or xa (dnd ones are never rung).
    #[serde(default = "default_true")]
    pub skip_busy: bool,
    /// Seconds each step rings (sequential, priority).
    #[serde(default = "default_step")]
    pub step_secs: u64,
    /// Seconds the whole call rings; default `[calls] ring_timeout_secs`.
    pub timeout_secs: Option<u64>,
    /// `reject` (default) or `message`: also leave her a missed-call note.
    #[serde(default)]
    pub on_no_answer: NoAnswer,
    /// Ring nobody (do not disturb for what the rule matches).
    #[serde(default)]
    pub reject: bool,
    /// Device state: only while her most available device shows this
    /// (`chat`, `online`, `away`, `xa`, `dnd`).
    pub when: Option<crate::core::devices::Show>,
    /// `relay-only` or `direct` for the calls it matches; absent = the
    /// owner's `candidates`.
    pub candidates: Option<CandidatePolicy>,
    /// Also ring her devices that are asleep, through her account's push
    /// (default); `false` rings devices online only.
    #[serde(default = "default_true")]
    pub asleep: bool,
}

fn default_true() -> bool {
    true
}
fn default_step() -> u64 {
    10
}

impl RuleConfig {
    /// The rule, ringing `default_timeout_ms` unless it says otherwise.
    fn to_rule(&self, default_timeout_ms: u64) -> Rule {
        Rule {
            classes: self.classes.clone(),
            callers: self.callers.clone(),
            days: self.days.clone(),
            window: self.time,
            when: self.when,
            mode: self.ring,
            devices: self.devices.clone(),
            skip_busy: self.skip_busy,
            step_ms: self.step_secs.max(1).saturating_mul(1000),
            timeout_ms: self
                .timeout_secs
                .map_or(default_timeout_ms, |t| t.saturating_mul(1000)),
            on_no_answer: self.on_no_answer,
            reject: self.reject,
            candidates: self.candidates,
            only_candidates: false,
            asleep: self.asleep,
        }
    }
}

impl Config {
    /// Reads and validates a file; the secret comes from
    /// [`SECRET_ENV`] when set, else from `server.secret_file` or the file
    /// itself, which must then not be world-readable.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let cfg = Config::load_file(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a file and settles the secrets, without judging the values
    /// (see [`Config::problems`]): what `--check` starts from.
    pub fn load_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let env = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty());
        let mut cfg = parse(&text)?;
        if !cfg.server.secret.expose().is_empty() {
            refuse_world_readable(path, "server.secret")?;
        }
        if cfg
            .http
            .as_ref()
            .is_some_and(|h| !h.admin_token.expose().is_empty())
        {
            refuse_world_readable(path, "http.admin_token")?;
        }
        cfg.resolve_secret(env)?;
        Ok(cfg)
    }

    /// Parses and validates TOML text (the secret from the text or
    /// `server.secret_file`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut cfg = parse(text)?;
        cfg.resolve_secret(None)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Settles `server.secret` from, in order: `env`, `server.secret_file`,
    /// the config text.
    fn resolve_secret(&mut self, env: Option<String>) -> Result<(), ConfigError> {
        let server = &mut self.server;
        if !server.secret.expose().is_empty() && server.secret_file.is_some() {
            return Err(invalid(
                "server.secret_file",
                "set either server.secret or server.secret_file, not both",
            ));
        }
        if let Some(http) = &mut self.http {
            if let Some(file) = &http.admin_token_file {
                if !http.admin_token.expose().is_empty() {
                    return Err(invalid(
                        "http.admin_token_file",
                        "set either http.admin_token or http.admin_token_file, not both",
                    ));
                }
                refuse_world_readable(file, "http.admin_token_file")?;
                let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                    path: file.clone(),
                    source,
                })?;
                http.admin_token =
                    Secret(text.lines().next().unwrap_or_default().trim().to_owned());
            }
        }
        if let Some(env) = env {
            server.secret = Secret(env);
            return Ok(());
        }
        if let Some(file) = &server.secret_file {
            refuse_world_readable(file, "server.secret_file")?;
            let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            server.secret = Secret(text.lines().next().unwrap_or_default().trim().to_owned());
        }
        Ok(())
    }

    /// Every problem of the configuration, each naming its key and the
    /// fix; empty when it can be used.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        let domain = &self.server.domain;
        match Jid::new(domain) {
            Ok(j) if j.node().is_none() && j.resource().is_none() && j.as_str() == domain => {}
            _ => problems.push(invalid(
                "server.domain",
                format!("{domain:?} is not a lowercase domain name like \"unified.example.org\""),
            )),
        }
        if self.server.secret.expose().is_empty() {
            problems.push(invalid(
                "server.secret",
                format!("is empty: set it (or server.secret_file, or the {SECRET_ENV} environment variable) to the server's secret for this domain (Prosody: component_secret in its Component block; ejabberd: password under hosts of its ejabberd_service listener)"),
            ));
        }
        if self.classes.is_empty() || self.classes.len() > 32 {
            problems.push(invalid("classes", "between 1 and 32 classes are needed"));
        }
        if let Some(sh) = &self.streamhost {
            if sh.host.is_none() && sh.listen.ip().is_unspecified() {
                problems.push(invalid(
                    "streamhost.host",
                    format!("must be set when streamhost.listen is {}: clients need a name or address they can reach, like \"files.example.org\"", sh.listen),
                ));
            }
        }
        let class_names: Vec<&str> = self.classes.iter().map(|c| c.name.as_str()).collect();
        let mut view_names: Vec<String> = crate::core::views::BUILT_IN
            .iter()
            .map(|v| (*v).to_owned())
            .collect();
        for (i, v) in self.views.iter().enumerate() {
            match v.to_view(&class_names) {
                Ok(view) if view_names.contains(&view.name) => problems.push(invalid(
                    format!("views[{i}].name"),
                    format!("{:?} is taken: view names are unique", view.name),
                )),
                Ok(view) => view_names.push(view.name),
                Err(e) => problems.push(invalid(format!("views[{i}]"), e)),
            }
        }
        let default = self.presence.default_view.to_ascii_lowercase();
        if !view_names.contains(&default) {
            problems.push(invalid(
                "presence.default_view",
                format!(
                    "{default:?} is no view: pick one of {}",
                    view_names.join(", ")
                ),
            ));
        }
        let mut names = HashSet::new();
        for (i, c) in self.classes.iter().enumerate() {
            let ok = !c.name.is_empty()
                && c.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
            if !ok || !names.insert(c.name.as_str()) {
                problems.push(invalid(
                    format!("classes[{i}].name"),
                    format!(
                        "{:?} must be unique and made of letters, digits, - or _",
                        c.name
                    ),
                ));
            }
        }
        for a in &self.admins {
            if a.node().is_none() {
                problems.push(invalid(
                    "admins",
                    format!("{a:?} is not an account like \"admin@example.org\""),
                ));
            }
        }
        let mut owners = HashSet::new();
        let mut accounts = HashSet::new();
        for (i, o) in self.owners.iter().enumerate() {
            let ok = !o.name.is_empty()
                && o.name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && BareJid::new(&format!("{}@{domain}", o.name)).is_ok();
            if !ok {
                problems.push(invalid(
                    format!("owners[{i}].name"),
                    format!(
                        "{:?} must be a lowercase localpart (a-z, 0-9, . _ -)",
                        o.name
                    ),
                ));
            }
            if !owners.insert(o.name.as_str()) {
                problems.push(invalid(
                    format!("owners[{i}].name"),
                    format!("{:?} is provisioned twice", o.name),
                ));
            }
            if o.accounts.is_empty() {
                problems.push(invalid(
                    format!("owners[{i}].accounts"),
                    "list at least one real account, like [\"alice@example.org\"]",
                ));
            }
            for jid in &o.accounts {
                let a = jid.as_str();
                if jid.node().is_none() || jid.domain().as_str() == domain {
                    problems.push(invalid(
                        format!("owners[{i}].accounts"),
                        format!("{a:?} must be a real account (user@server), not on {domain}"),
                    ));
                }
                if !accounts.insert(jid.clone()) {
                    problems.push(invalid(
                        format!("owners[{i}].accounts"),
                        format!("{a:?} is linked to two owners"),
                    ));
                }
            }
            for (r, rule) in o.rules.iter().enumerate() {
                for c in &rule.classes {
                    if !self.classes.iter().any(|k| &k.name == c) {
                        problems.push(invalid(
                            format!("owners[{i}].rules[{r}].classes"),
                            format!("{c:?} is not a configured class"),
                        ));
                    }
                }
            }
        }
        problems
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    /// The core's view of this configuration.
    pub fn core_config(&self, seed: u64) -> CoreConfig {
        CoreConfig {
            domain: self.server.domain.clone(),
            caps_node: self.presence.caps_node.clone(),
            classes: self
                .classes
                .iter()
                .map(|c| ClassDef::new(&c.name, c.features.clone(), c.priority, c.jmi))
                .collect(),
            owners: self
                .owners
                .iter()
                .map(|o| OwnerConfig {
                    name: o.name.clone(),
                    accounts: o.accounts.clone(),
                    subscription: o.subscription,
                    allow: o.allow.clone(),
                    blocked: o.blocked.clone(),
                    candidates: o.candidates,
                    timezone: o.timezone,
                    rules: o
                        .rules
                        .iter()
                        .map(|r| r.to_rule(self.calls.ring_timeout_secs.saturating_mul(1000)))
                        .collect(),
                })
                .collect(),
            coalesce_ms: self.presence.coalesce_ms,
            settle_ms: self.presence.settle_ms,
            iq_timeout_ms: self.limits.iq_timeout_secs.saturating_mul(1000),
            ring_timeout_ms: self.calls.ring_timeout_secs.saturating_mul(1000),
            ack_timeout_ms: self.calls.ack_timeout_ms,
            push_domains: self
                .calls
                .push_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            // Checked by `problems`: a view that does not parse is left out.
            views: {
                let classes: Vec<&str> = self.classes.iter().map(|c| c.name.as_str()).collect();
                self.views
                    .iter()
                    .filter_map(|v| v.to_view(&classes).ok())
                    .collect()
            },
            default_view: self.presence.default_view.to_ascii_lowercase(),
            streamhost: self.streamhost.as_ref().map(StreamhostConfig::address),
            admins: self.admins.clone(),
            registration: match self.registration.mode {
                RegistrationMode::Closed => Registration::Closed,
                RegistrationMode::Open => Registration::Open,
                RegistrationMode::Domains => Registration::Domains(
                    self.registration
                        .domains
                        .iter()
                        .map(|d| d.to_ascii_lowercase())
                        .collect(),
                ),
            },
            limits: Limits {
                devices_per_owner: self.limits.devices_per_owner,
                watchers_per_owner: self.limits.watchers_per_owner,
                pending_iqs: self.limits.pending_iqs,
                stanzas_per_sec: self.limits.stanzas_per_sec,
                stanza_burst: self.limits.stanza_burst,
                stanza_bytes: self.limits.stanza_bytes,
                concurrent_calls: self.limits.concurrent_calls,
                calls_per_caller: self.limits.calls_per_caller,
            },
            seed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [server]
        address = "127.0.0.1:5347"
        domain = "unified.localhost"
        secret = "s3cret"
        [store]
        path = "/tmp/x"
        [[owners]]
        name = "alice"
        accounts = ["alice@localhost"]
    "#;

    fn write_mode(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_world_readable_config_with_a_secret_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_mode(dir.path(), "component.toml", MINIMAL, 0o644);
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("chmod o-rwx") && err.contains("secret_file"),
            "{err}"
        );
        assert!(
            !err.contains("s3cret"),
            "the message must not print the secret: {err}"
        );
        // Readable by owner and group only: fine.
        let path = write_mode(dir.path(), "component.toml", MINIMAL, 0o640);
        assert_eq!(
            Config::from_file(&path).unwrap().server.secret.expose(),
            "s3cret"
        );
    }

    #[test]
    fn the_secret_can_live_in_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write_mode(dir.path(), "secret", "from-file\n", 0o600);
        let text = MINIMAL.replace(
            "secret = \"s3cret\"",
            &format!("secret_file = {:?}", secret.display().to_string()),
        );
        // No secret in the config itself: it may be world-readable.
        let path = write_mode(dir.path(), "component.toml", &text, 0o644);
        let cfg = Config::from_file(&path).unwrap();
        assert_eq!(cfg.server.secret.expose(), "from-file");
        assert!(
            !format!("{cfg:?}").contains("from-file"),
            "Debug shows the secret"
        );
        // The secret file itself must not be world-readable.
        write_mode(dir.path(), "secret", "from-file\n", 0o644);
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.starts_with("server.secret_file:"), "{err}");
        // Both at once is ambiguous.
        let both = MINIMAL.replace(
            "secret = \"s3cret\"",
            &format!(
                "secret = \"x\"\nsecret_file = {:?}",
                secret.display().to_string()
            ),
        );
        assert!(Config::from_toml(&both).is_err());
    }

    #[test]
    fn the_sample_config_parses() {
        let text = include_str!("../component.toml");
        let cfg = Config::from_toml(text).unwrap();
        assert_eq!(cfg.owners[0].name, "alice");
    }

    #[test]
    fn the_packaged_config_lacks_only_the_secret() {
        // contrib/component.toml is /etc/unified-presence/component.toml:
        // everything in it must be right except what only the admin knows.
        let text = include_str!("../contrib/component.toml");
        let cfg = parse(text).unwrap();
        let problems: Vec<String> = cfg.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("server.secret: is empty"));
        // Its commented sections are valid once uncommented.
        let uncommented = text
            .replace("# [http]", "[http]")
            .replace("# bind = ", "bind = ")
            .replace("secret = \"\"", "secret = \"x\"");
        let cfg = Config::from_toml(&uncommented).unwrap();
        assert_eq!(
            cfg.http.unwrap().bind,
            "127.0.0.1:9480".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn every_problem_is_listed_not_only_the_first() {
        let text = MINIMAL
            .replace("unified.localhost", "Not A Domain")
            .replace("\"alice@localhost\"", "\"bob\"")
            .replace("name = \"alice\"", "name = \"Alice\"");
        let cfg = parse(&text).unwrap();
        let keys: Vec<String> = cfg
            .problems()
            .iter()
            .map(|p| p.to_string().split(':').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            keys,
            ["server.domain", "owners[0].name", "owners[0].accounts"]
        );
    }

    #[test]
    fn the_admin_token_can_live_in_its_own_file_but_not_in_both() {
        let dir = tempfile::tempdir().unwrap();
        let token = write_mode(dir.path(), "token", "t0ken\n", 0o600);
        let with_file = format!(
            "{MINIMAL}\n[http]\nbind = \"127.0.0.1:9480\"\nadmin_token_file = {:?}\n",
            token.display().to_string()
        );
        let path = write_mode(dir.path(), "component.toml", &with_file, 0o600);
        let cfg = Config::from_file(&path).unwrap();
        assert_eq!(cfg.http.unwrap().admin_token.expose(), "t0ken");
        let both = with_file.replace("admin_token_file", "admin_token = \"x\"\nadmin_token_file");
        let path = write_mode(dir.path(), "component.toml", &both, 0o600);
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.starts_with("http.admin_token_file:"), "{err}");
    }

    #[test]
    fn defaults_give_the_four_classes_and_ask() {
        let cfg = Config::from_toml(MINIMAL).unwrap();
        let names: Vec<_> = cfg.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["chat", "audio", "video", "files"]);
        assert_eq!(cfg.owners[0].subscription, SubscriptionPolicy::Ask);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = MINIMAL.replace("secret = ", "secrett = \"x\"\nsecret = ");
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("secrett"), "{err}");
    }

    #[test]
    fn rules_parse_and_bad_ones_name_their_key() {
        let text = format!(
            "{MINIMAL}\ntimezone = \"Europe/Berlin\"\n[[owners.rules]]\nclasses = [\"audio\"]\nring = \"sequential\"\n\
             devices = [\"phone\", \"laptop\"]\ntime = \"22:00-07:00\"\ndays = [\"sat\", \"sun\"]\non_no_answer = \"message\"\n"
        );
        let cfg = Config::from_toml(&text).unwrap();
        let core = cfg.core_config(0);
        let rule = &core.owners[0].rules[0];
        assert_eq!(rule.mode, RingMode::Sequential);
        assert_eq!(rule.window, Some((22 * 60, 7 * 60)));
        assert_eq!(rule.timeout_ms, 30_000);
        let bad = text.replace("22:00-07:00", "late");
        let err = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(err.starts_with("owners[0].rules[0].time"), "{err}");
        let bad = text.replace("Europe/Berlin", "Mars/Olympus");
        assert!(Config::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("owners[0].timezone"));
    }

    #[test]
    fn an_account_on_our_domain_is_refused() {
        let text = MINIMAL.replace("alice@localhost", "alice@unified.localhost");
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(err.starts_with("owners[0].accounts"), "{err}");
    }

    /// Issue 15: values are parsed into the core's own types as the file
    /// is read, and a bad one is named by its key and line.
    #[test]
    fn a_value_that_does_not_parse_names_its_key_and_line() {
        let cfg = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(cfg.owners[0].timezone, chrono_tz::UTC);
        assert_eq!(cfg.owners[0].accounts[0].as_str(), "alice@localhost");
        let bad = MINIMAL.replace("alice@localhost", "al ice@@localhost");
        let err = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(err.starts_with("owners[0].accounts[0]: line 10:"), "{err}");
        let bad = format!("{MINIMAL}\ntimezone = \"Mars/Olympus\"\n");
        let err = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("owners[0].timezone: line 12:")
                && err.contains("\"Mars/Olympus\" is not an IANA time zone"),
            "{err}"
        );
    }

    /// `[streamhost]`: clients are told the listen address unless `host`
    /// (and `port`) say otherwise; listening on every address without
    /// saying which one clients reach is a problem.
    #[test]
    fn the_streamhost_tells_clients_a_reachable_address() {
        let cfg = Config::from_toml(&format!(
            "{MINIMAL}\n[streamhost]\nlisten = \"127.0.0.1:7625\"\n"
        ))
        .unwrap();
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        let at = cfg.core_config(0).streamhost.unwrap();
        assert_eq!((at.host.as_str(), at.port), ("127.0.0.1", 7625));
        let text = format!("{MINIMAL}\n[streamhost]\nlisten = \"0.0.0.0:7625\"\n");
        let problems: Vec<String> = parse(&text)
            .unwrap()
            .problems()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("streamhost.host: "), "{problems:?}");
        let named = format!("{text}host = \"files.example.org\"\nport = 17625\n");
        let cfg = Config::from_toml(&named).unwrap();
        assert!(cfg.problems().is_empty());
        let at = cfg.core_config(0).streamhost.unwrap();
        assert_eq!((at.host.as_str(), at.port), ("files.example.org", 17625));
    }

    #[test]
    fn admin_views_and_the_default_view_reach_the_core_and_bad_ones_are_listed() {
        let text = format!(
            "[presence]\ndefault_view = \"colleagues\"\n{MINIMAL}\n[[views]]\nname = \"colleagues\"\nshows = \"audio show mon-fri 09:00-18:00, chat presence\"\n"
        );
        let cfg = Config::from_toml(&text).unwrap();
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        let core = cfg.core_config(0);
        assert_eq!(core.default_view, "colleagues");
        assert_eq!(
            core.views[0].describe(),
            "audio show mon,tue,wed,thu,fri 09:00-18:00, chat presence"
        );
        let bad = text.replace("chat presence", "chat loudly");
        let err = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(err.starts_with("views[0]: "), "{err}");
        let taken = text.replace("name = \"colleagues\"", "name = \"nothing\"");
        let err = Config::from_toml(&taken).unwrap_err().to_string();
        assert!(err.starts_with("views[0]: "), "{err}");
        let unknown = text.replace(
            "default_view = \"colleagues\"",
            "default_view = \"friends\"",
        );
        let err = Config::from_toml(&unknown).unwrap_err().to_string();
        assert!(err.starts_with("presence.default_view: "), "{err}");
    }
}
