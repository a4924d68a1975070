//! Chat commands: plain messages to the component domain, for owners on
//! clients without an ad-hoc UI (Conversations, Dino). DESIGN.md section 8.
//!
//! Only an owner's own linked accounts may read or change her data; anyone
//! else is told so. A [`Command`] is parsed from words (or from a form, see
//! the ad-hoc module), checked against her state (`Core::check_command`,
//! which changes nothing) and applied; a refusal is a `Refusal` that
//! each front end words its own way. Commands that change state reuse the
//! core's handlers, so every change is queued for the store before the
//! reply confirms it.

use std::fmt::Write as _;

use jid::{BareJid, Jid};
use minidom::Element;

use super::devices::Show;
use super::rules::{parse_day, parse_window, CallerMatch, NoAnswer, RingMode, Rule};
use super::stanza::{self, ns, text_element, ErrorType};
use super::OwnerId;
use tracing::info;

use super::{
    CandidatePolicy, Core, OwnerSettings, RegisteredOwner, Registration, StoreOp,
    SubscriptionPolicy, Time, WatcherState,
};

// Written to read well in any font: one command per line, its meaning
// after a dash, no columns to align.
const HELP: &str = "Commands (send them to this address):
• status — what your contacts see, class by class, and which devices a call would ring
• devices — your devices online now, and what each can do
• watchers — who watches you, and who waits for your answer
• approve <jid> — let a waiting contact watch you
• deny <jid> — refuse a waiting contact, or stop a watcher
• ring parallel | ring sequential phone laptop | ring priority — how your devices ring when no other rule applies (device names as \"devices\" shows them, in order; none: all)
• dnd audio on, dnd all off — refuse calls of a class, or all calls (callers get busy)
• rules — your rules, first match wins
• rule add <what> <when> <action> — for example: rule add video from bob@example.org mon-fri 09:00-17:00 ring sequential phone laptop step 15; rule add from example.net 22:00-07:00 busy; rule add chat ring parallel laptop (where chat goes). What: a class, from <jid|domain|watchers|anyone>; when: days, HH:MM-HH:MM, when away|xa|dnd; action: busy, ring ..., step <s>, timeout <s>, message, relay-only or direct, awake-only (do not wake devices asleep). A new rule is checked first.
• rule add from anyone relay-only, then rule add from watchers direct — calls from people who watch you go direct, all others through relays (a rule with only relay-only or direct leaves ringing to the rules below it)
• rule del <n> — remove rule n
• privacy — your privacy settings
• privacy calls relay-only | privacy calls direct — relay-only: callers never learn your devices' addresses
• privacy watchers ask | privacy watchers open — ask: you approve each watcher; open: anyone may watch
• privacy encryption on | privacy encryption off — on: contacts can encrypt (OMEMO) to your address, which shows them your OMEMO device ids and public keys
• label <device> <text> — name a device
• views — your views (what each contact sees) and who is in which
• view add <name> <class> [full|show|presence] [days] [HH:MM-HH:MM] ... — for example: view add colleagues audio show mon-fri 09:00-18:00, chat presence (audio with its show only, on weekdays 9 to 6; chat only as available or not). Built in: everything, reachable (every class, available or not), nothing
• view <jid or domain> <view> — put a contact or a whole domain in a view; view <jid or domain> default takes them out; view default <view> — the view of everyone else
• view del <name> — remove a view of yours (its contacts go back to the default)
• preview <jid> — exactly what that contact sees of you now, and who would ring if they called
• push <device> off | push <device> on — whether a call wakes that device while it sleeps (through your server's push, XEP-0357; on by default)
• name <text> | name reset — the name your contacts see for your address (by default your account's own, from its profile)
• contact add <jid> [name] — add a contact from your address: the request from their proxy address appears in your client; accept it, and they are asked for their presence, from your address
• link <account> — add another account of yours: it gets a one-time code from this address
• link confirm <code> — sent from that account, makes it yours
• unlink <account>, or unlink from the account itself — it stops being yours
• block <jid or domain> — they get nothing from your address any more
• unblock <jid or domain>
• unregister — give up your address (it asks first; unregister confirm does it)
• help — this text";

const HELP_STRANGER: &str = "This service gives you one address for all your devices.
• register, or register <name> — get name@this-service for this account (your own name by default)
• link confirm <code> — link this account to an address whose owner sent it a code
• help — this text";

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help`.
    Help,
    /// `status`.
    Status,
    /// `devices`.
    Devices,
    /// `watchers`.
    Watchers,
    /// `approve <jid>`.
    Approve(BareJid),
    /// `deny <jid>`.
    Deny(BareJid),
    /// `ring <mode> [device ...]`.
    Ring(RingMode, Vec<String>),
    /// `dnd <class>|all on|off`.
    Dnd(Option<String>, bool),
    /// `rules`.
    Rules,
    /// `label <device> <text>`.
    Label(String, String),
    /// `push <device> on|off`.
    Push(String, bool),
    /// `views`.
    Views,
    /// `view add <name> <what...>`.
    ViewAdd(String, Vec<String>),
    /// `view del <name>`.
    ViewDel(String),
    /// `view <jid|domain|default> <view|default>`.
    ViewSet(String, String),
    /// `preview <jid>`.
    Preview(BareJid),
    /// `register [name]`.
    Register(Option<String>),
    /// `unregister` (asks first) and `unregister confirm`.
    Unregister(bool),
    /// `link <account>`.
    Link(BareJid),
    /// `link confirm <code>`, from the account being linked.
    LinkConfirm(String),
    /// `unlink [account]`.
    Unlink(Option<BareJid>),
    /// `block <jid|domain>`.
    Block(String),
    /// `rule add ...` (the words after `add`).
    RuleAdd(Vec<String>),
    /// `rule del <n>`.
    RuleDel(usize),
    /// `privacy [calls|watchers <value>]`.
    Privacy(Option<(String, String)>),
    /// `unblock <jid|domain>`.
    Unblock(String),
    /// `contact add <jid> [name]`.
    ContactAdd(BareJid, Option<String>),
    /// `name` (shows it), `name <text>` (sets the name her contacts see),
    /// `name reset` (her account's again): `Some("")` resets.
    Name(Option<String>),
    /// Anything else, with what was not understood.
    Unknown(String),
}

/// The longest name her contacts may see, in characters.
const MAX_NAME: usize = 64;

/// Views of her own, at most.
const MAX_VIEWS: usize = 32;

/// Contacts and domains she puts in views, at most.
const MAX_VIEW_MEMBERS: usize = 1000;

/// Whether `who` names a contact (a bare JID) or a domain.
fn valid_member(who: &str) -> bool {
    match Jid::new(who) {
        Ok(j) => j.resource().is_none() && j.as_str() == who,
        Err(_) => false,
    }
}

/// Her settings as the store keeps them.
fn settings_of(o: &super::owners::Owner) -> OwnerSettings {
    OwnerSettings {
        subscription: o.watchers.policy,
        candidates: o.candidates,
        omemo: o.omemo,
        display_name: o.display_name.clone(),
        views: o.views.clone(),
    }
}

/// Why a command changed nothing. The chat and the ad-hoc forms say it
/// each in their own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// She named a device she does not have (with the ones she has, when
    /// the chat should list them).
    NoDevice { name: String, hers: Option<String> },
    /// The words are no rule, and why.
    BadRule(String),
    /// Anything else, in words that suit both.
    Text(String),
}

impl Refusal {
    /// As a chat reply.
    pub(super) fn chat(self) -> String {
        match self {
            Refusal::NoDevice {
                name,
                hers: Some(hers),
            } => format!(
                "You have no device {name:?}; your devices are {hers}. Send \"devices\" to see them."
            ),
            Refusal::NoDevice { name, hers: None } => {
                format!("You have no device {name:?}; send \"devices\" to see them.")
            }
            Refusal::BadRule(why) => {
                format!("Not added: {why}. Send \"help\" for the rule syntax.")
            }
            Refusal::Text(text) => text,
        }
    }

    /// As the error note of a form shown again (XEP-0050 section 4.4).
    pub(super) fn form(self) -> String {
        match self {
            Refusal::NoDevice {
                name,
                hers: Some(_),
            } => format!("You have no device {name:?}; leave Devices empty to ring every device."),
            Refusal::NoDevice { name, hers: None } => format!("You have no device {name:?}."),
            Refusal::BadRule(why) => format!("Not added: {why}."),
            Refusal::Text(text) => text,
        }
    }
}

/// Parses a message body into a command (case-insensitive verbs).
pub fn parse(body: &str) -> Command {
    let mut words = body.split_whitespace();
    let verb = words.next().unwrap_or_default().to_ascii_lowercase();
    let arg = words.next();
    let jid = || arg.and_then(|a| BareJid::new(a.trim_start_matches("xmpp:")).ok());
    match (verb.as_str(), arg) {
        ("help" | "?", _) => Command::Help,
        ("status", None) => Command::Status,
        ("devices", None) => Command::Devices,
        ("watchers", None) => Command::Watchers,
        ("approve", Some(_)) => jid().map_or_else(
            || Command::Unknown(body.trim().to_owned()),
            Command::Approve,
        ),
        ("deny", Some(_)) => {
            jid().map_or_else(|| Command::Unknown(body.trim().to_owned()), Command::Deny)
        }
        ("ring", Some(mode)) => {
            let mode = match mode.to_ascii_lowercase().as_str() {
                "parallel" | "all" => RingMode::Parallel,
                "sequential" | "sequence" => RingMode::Sequential,
                "priority" => RingMode::Priority,
                _ => return Command::Unknown(body.trim().to_owned()),
            };
            Command::Ring(mode, words.map(str::to_owned).collect())
        }
        ("dnd", Some(class)) => {
            let class = (!class.eq_ignore_ascii_case("all")).then(|| class.to_ascii_lowercase());
            match words.next().map(str::to_ascii_lowercase).as_deref() {
                Some("on") => Command::Dnd(class, true),
                Some("off") => Command::Dnd(class, false),
                _ => Command::Unknown(body.trim().to_owned()),
            }
        }
        ("rules", None) => Command::Rules,
        ("views", None) => Command::Views,
        ("view", Some(a)) if a.eq_ignore_ascii_case("add") => match words.next() {
            Some(name) => Command::ViewAdd(
                name.to_ascii_lowercase(),
                words.map(str::to_owned).collect(),
            ),
            None => Command::Unknown(body.trim().to_owned()),
        },
        ("view", Some(a)) if a.eq_ignore_ascii_case("del") => match (words.next(), words.next()) {
            (Some(name), None) => Command::ViewDel(name.to_ascii_lowercase()),
            _ => Command::Unknown(body.trim().to_owned()),
        },
        ("view", Some(who)) => match (words.next(), words.next()) {
            (Some(view), None) => Command::ViewSet(
                who.trim_start_matches("xmpp:").to_ascii_lowercase(),
                view.to_ascii_lowercase(),
            ),
            _ => Command::Unknown(body.trim().to_owned()),
        },
        ("preview", Some(_)) => jid().map_or_else(
            || Command::Unknown(body.trim().to_owned()),
            Command::Preview,
        ),
        ("register", name) => Command::Register(name.map(str::to_ascii_lowercase)),
        ("unregister", None) => Command::Unregister(false),
        ("unregister", Some(w)) if w.eq_ignore_ascii_case("confirm") => Command::Unregister(true),
        ("rule", Some("add")) => Command::RuleAdd(words.map(str::to_owned).collect()),
        ("rule", Some("del")) => match words.next().and_then(|n| n.parse().ok()) {
            Some(n) => Command::RuleDel(n),
            None => Command::Unknown(body.trim().to_owned()),
        },
        ("privacy", None) => Command::Privacy(None),
        ("privacy", Some(key)) => match words.next() {
            Some(value) => {
                Command::Privacy(Some((key.to_ascii_lowercase(), value.to_ascii_lowercase())))
            }
            None => Command::Unknown(body.trim().to_owned()),
        },
        ("block", Some(who)) => {
            Command::Block(who.trim_start_matches("xmpp:").to_ascii_lowercase())
        }
        ("unblock", Some(who)) => {
            Command::Unblock(who.trim_start_matches("xmpp:").to_ascii_lowercase())
        }
        ("link", Some(w)) if w.eq_ignore_ascii_case("confirm") => match words.next() {
            Some(code) => Command::LinkConfirm(code.to_owned()),
            None => Command::Unknown(body.trim().to_owned()),
        },
        ("name", None) => Command::Name(None),
        ("name", Some(w)) if w.eq_ignore_ascii_case("reset") && words.clone().next().is_none() => {
            Command::Name(Some(String::new()))
        }
        ("name", Some(_)) => Command::Name(Some(
            body.trim()
                .split_once(char::is_whitespace)
                .map_or("", |(_, rest)| rest.trim())
                .to_owned(),
        )),
        ("contact", Some(w)) if w.eq_ignore_ascii_case("add") => {
            let jid = words
                .next()
                .and_then(|j| BareJid::new(j.trim_start_matches("xmpp:")).ok());
            let name: Vec<&str> = words.collect();
            match jid {
                Some(jid) => Command::ContactAdd(jid, (!name.is_empty()).then(|| name.join(" "))),
                None => Command::Unknown(body.trim().to_owned()),
            }
        }
        ("unlink", None) => Command::Unlink(None),
        ("unlink", Some(_)) => jid().map_or_else(
            || Command::Unknown(body.trim().to_owned()),
            |j| Command::Unlink(Some(j)),
        ),
        ("link", Some(_)) => {
            jid().map_or_else(|| Command::Unknown(body.trim().to_owned()), Command::Link)
        }
        ("push", Some(device)) => match words.next().map(str::to_ascii_lowercase).as_deref() {
            Some("on") if words.next().is_none() => Command::Push(device.to_owned(), true),
            Some("off") if words.next().is_none() => Command::Push(device.to_owned(), false),
            _ => Command::Unknown(body.trim().to_owned()),
        },
        ("label", Some(device)) => {
            let text: Vec<&str> = words.collect();
            if text.is_empty() {
                Command::Unknown(body.trim().to_owned())
            } else {
                Command::Label(device.to_owned(), text.join(" "))
            }
        }
        _ => Command::Unknown(body.trim().to_owned()),
    }
}

/// What to type, for a known command typed wrong or without what it needs.
fn usage(text: &str) -> Option<&'static str> {
    let verb = text.split_whitespace().next()?.to_ascii_lowercase();
    Some(match verb.as_str() {
        "approve" => "Say who: \"approve bob@example.org\" (\"watchers\" lists who waits).",
        "deny" => "Say who: \"deny bob@example.org\".",
        "ring" => "Say how: \"ring parallel\", \"ring sequential phone laptop\" or \"ring priority\" (device names from \"devices\").",
        "dnd" => "Say which calls and on or off: \"dnd all on\", \"dnd audio off\".",
        "label" => "Say which device and its name: \"label phone My Pixel\".",
        "push" => "Say which device and on or off: \"push phone off\" (device names from \"devices\").",
        "view" => "\"view add colleagues audio show mon-fri 09:00-18:00, chat presence\", \"view bob@example.org colleagues\", \"view example.org colleagues\", \"view default reachable\" or \"view del colleagues\"; \"views\" lists them.",
        "preview" => "Say who: \"preview bob@example.org\".",
        "link" => "Say which account: \"link alice@work.example\", or from that account \"link confirm <code>\".",
        "unlink" => "Say which account: \"unlink alice@work.example\", or \"unlink\" from the account itself.",
        "block" => "Say who: \"block bob@example.org\" or \"block example.org\".",
        "unblock" => "Say who: \"unblock bob@example.org\".",
        "rule" => "\"rule add <what> <when> <action>\" (e.g. \"rule add from example.net 22:00-07:00 busy\") or \"rule del <n>\".",
        "privacy" => "\"privacy\" shows your settings; \"privacy calls relay-only|direct\", \"privacy watchers ask|open\", \"privacy encryption on|off\" change them.",
        "status" | "devices" | "watchers" | "rules" | "views" => "That command takes nothing after it.",
        "unregister" => "\"unregister\" asks first; \"unregister confirm\" gives up your address.",
        "name" => "\"name\" shows the name your contacts see; \"name Alice Liddell\" sets it; \"name reset\" takes your account's again.",
        "contact" => "Say who: \"contact add bob@example.org\", or with a name: \"contact add bob@example.org Bob\".",
        _ => return None,
    })
}

/// How long ago `ms` was, at wall-clock time `wall` (both ms since the
/// Unix epoch).
fn since(wall: u64, ms: u64) -> String {
    let mins = wall.saturating_sub(ms) / 60_000;
    match mins {
        0 => "just now".into(),
        m if m < 60 => format!("{m} min ago"),
        m if m < 48 * 60 => format!("{} h ago", m / 60),
        m => format!("{} days ago", m / (24 * 60)),
    }
}

impl Core {
    /// A message to the component domain; `false` if it is no command.
    pub(super) fn command_message(&mut self, now: Time, msg: &Element, from: &Jid) -> bool {
        if !matches!(msg.attr("type"), None | Some("chat") | Some("normal")) {
            return false;
        }
        let Some(body) = msg.get_child("body", ns::COMPONENT).map(|b| b.text()) else {
            // Chat states and receipts to the domain need no answer.
            return true;
        };
        // An admin acts for any owner: "as alice status".
        if self.cfg.admins.contains(&from.to_bare()) {
            if let Some(rest) = body.trim().strip_prefix("as ") {
                let (name, cmd) = rest
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((rest.trim(), "help"));
                let reply = match self.by_name.get(name).copied() {
                    Some(i) => self
                        .run_command(now, i, parse(cmd))
                        .unwrap_or_else(|r| r.chat()),
                    None => format!("There is no owner {name:?}."),
                };
                self.reply_text(from, &reply);
                return true;
            }
        }
        let reply = match (
            self.out.secrets.account_owner(&from.to_bare()),
            parse(&body),
        ) {
            (None, Command::Register(name)) => self.register(from.to_bare(), name),
            (None, Command::LinkConfirm(code)) => self.confirm_link(now, &from.to_bare(), &code),
            (None, Command::Help) => HELP_STRANGER.to_owned(),
            (None, _) => {
                // Someone else's data: RFC 6120 forbidden, with a way out.
                let text = "You have no unified address on this service. Send \"register\" to get one, or \"help\".";
                if let Some(e) = stanza::error_reply(msg, ErrorType::Auth, "forbidden", Some(text))
                {
                    self.out.send(e);
                }
                return true;
            }
            // The account unlinking itself: the reply is all it needs.
            (Some(owner), Command::Unlink(None)) => self
                .unlink(now, owner, from.to_bare(), false)
                .unwrap_or_else(|r| r.chat()),
            (Some(owner), Command::Unlink(Some(a))) if a == from.to_bare() => self
                .unlink(now, owner, a, false)
                .unwrap_or_else(|r| r.chat()),
            (Some(owner), cmd) => self
                .run_command(now, owner, cmd)
                .unwrap_or_else(|r| r.chat()),
        };
        self.reply_text(from, &reply);
        true
    }

    /// A command's answer. One that names someone else's secret (an
    /// account of another owner's that the requester typed, say) has it
    /// replaced by "that account": the guard would rightly refuse it, and
    /// the requester would hear nothing at all.
    fn reply_text(&mut self, to: &Jid, text: &str) {
        let build = |core: &mut Core, text: &str| {
            let mut m = stanza::stanza("message", &core.cfg.domain, to.as_str(), Some("chat"));
            stanza::set_attr(&mut m, "id", core.out.next_id());
            m.append_child(text_element("body", ns::COMPONENT, text));
            m
        };
        let mut text = text.to_owned();
        let mut m = build(self, &text);
        for _ in 0..8 {
            let Some(leak) = self.out.secrets.leak_in(&m) else {
                break;
            };
            let masked = text.replace(&leak.secret, "that account");
            text = if masked == text {
                "This answer is not shown: it names someone else's account or device.".to_owned()
            } else {
                masked
            };
            m = build(self, &text);
        }
        self.out.send(m);
    }

    /// Runs `cmd` for owner `i`: checked, then applied. A refusal changed
    /// nothing; each front end says it its own way ([`Refusal::chat`],
    /// [`Refusal::form`]).
    pub(super) fn run_command(
        &mut self,
        now: Time,
        i: OwnerId,
        cmd: Command,
    ) -> Result<String, Refusal> {
        self.check_command(i, &cmd)?;
        self.apply_command(now, i, cmd)
    }

    /// Whether `cmd` would be refused for owner `i` as things are, without
    /// changing anything. Every refusal of the commands a form combines
    /// (approve, deny, block, rules, dnd, privacy, ring, label) is made
    /// here, so that a form applies all of its commands or none.
    pub(super) fn check_command(&self, i: OwnerId, cmd: &Command) -> Result<(), Refusal> {
        let refuse = |text: String| Err(Refusal::Text(text));
        let o = &self.owners[i];
        match cmd {
            Command::ViewAdd(name, words) => {
                let classes: Vec<&str> = self.cfg.classes.iter().map(|c| c.name.as_str()).collect();
                if self.cfg.views.iter().any(|v| v.name == *name) {
                    return refuse(format!(
                        "{name} is a view of this service; pick another name."
                    ));
                }
                if words.is_empty() {
                    return refuse(format!(
                        "Say what it shows: \"view add {name} audio show, chat presence\" (classes: {}).",
                        classes.join(", ")
                    ));
                }
                if o.views.defined(name).is_none() && o.views.defined.len() >= MAX_VIEWS {
                    return refuse(format!("You have {MAX_VIEWS} views already."));
                }
                super::views::View::parse(name, words, &classes)
                    .map(|_| ())
                    .map_err(Refusal::Text)
            }
            Command::ViewDel(name) if o.views.defined(name).is_none() => {
                if self.has_view(i, name) {
                    refuse(format!("{name} is built in; it cannot be removed."))
                } else {
                    refuse(format!("You have no view {name:?}; \"views\" lists them."))
                }
            }
            Command::ViewSet(_, view) if view != "default" && !self.has_view(i, view) => refuse(
                format!("There is no view {view:?}; \"views\" lists them, \"view add\" makes one."),
            ),
            Command::ViewSet(who, view) if who == "default" && view == "default" => {
                refuse("Say which view is the default: \"view default reachable\".".into())
            }
            Command::ViewSet(who, _) if who != "default" && !valid_member(who) => refuse(format!(
                "{who:?} is neither a JID (bob@example.org) nor a domain (example.org)."
            )),
            Command::ViewSet(who, view)
                if who != "default"
                    && view != "default"
                    && !o.views.members.iter().any(|(w, _)| w == who)
                    && o.views.members.len() >= MAX_VIEW_MEMBERS =>
            {
                refuse(format!(
                    "You have {MAX_VIEW_MEMBERS} contacts and domains in views already."
                ))
            }
            Command::Name(Some(name)) if name.chars().count() > MAX_NAME => refuse(format!(
                "That name is longer than {MAX_NAME} characters; clients would cut it."
            )),
            Command::Name(Some(name)) if self.out.secrets.names_secret(name, None).is_some() => {
                refuse("That name names one of your accounts or devices, which your contacts never see.".into())
            }
            Command::Approve(jid) => {
                let named = self.watchers_named(i, jid);
                if named
                    .iter()
                    .any(|w| o.watchers.get(w) == Some(&WatcherState::Pending))
                {
                    Ok(())
                } else if named.iter().any(|w| o.watchers.contains_key(w)) {
                    refuse(format!("{jid} already watches you."))
                } else {
                    refuse(format!("{jid} has not asked to watch you."))
                }
            }
            Command::Deny(jid) => {
                if self
                    .watchers_named(i, jid)
                    .iter()
                    .any(|w| o.watchers.contains_key(w))
                {
                    Ok(())
                } else {
                    refuse(format!(
                        "{jid} neither watches you nor waits for your answer."
                    ))
                }
            }
            Command::Ring(_, devices) => {
                match devices.iter().find(|d| !self.has_device_named(i, d)) {
                    Some(unknown) => Err(Refusal::NoDevice {
                        name: unknown.clone(),
                        hers: Some(self.device_names(i)),
                    }),
                    None => Ok(()),
                }
            }
            Command::Dnd(Some(c), _) if !self.cfg.classes.iter().any(|d| &d.name == c) => {
                let names: Vec<&str> = self.cfg.classes.iter().map(|d| d.name.as_str()).collect();
                refuse(format!(
                    "There is no class {c:?}; the classes are {}.",
                    names.join(", ")
                ))
            }
            Command::Label(device, _) | Command::Push(device, _)
                if !self.has_device_named(i, device) =>
            {
                Err(Refusal::NoDevice {
                    name: device.clone(),
                    hers: None,
                })
            }
            Command::Register(_) => refuse(format!("You already are {}.", o.virtual_jid)),
            Command::Unregister(true) if o.provisioned => refuse(
                "Your address is set up by the admin of this service; ask them to remove it."
                    .into(),
            ),
            Command::RuleAdd(words) => {
                let classes: Vec<String> =
                    self.cfg.classes.iter().map(|c| c.name.clone()).collect();
                parse_rule(words, &classes, self.cfg.ring_timeout_ms)
                    .map(|_| ())
                    .map_err(Refusal::BadRule)
            }
            Command::RuleDel(n) if *n == 0 || *n > o.rules.len() => {
                refuse(format!("There is no rule {n}; send \"rules\" to see them."))
            }
            Command::Privacy(Some((k, v)))
                if !matches!(
                    (k.as_str(), v.as_str()),
                    ("calls", "relay-only" | "direct")
                        | ("watchers", "ask" | "open")
                        | ("encryption", "on" | "off")
                ) =>
            {
                refuse(
                    "Send \"privacy calls relay-only|direct\", \"privacy watchers ask|open\" or \"privacy encryption on|off\"."
                        .into(),
                )
            }
            Command::Block(who) if BareJid::new(who).is_err() => {
                refuse(format!("{who:?} is neither a JID nor a domain."))
            }
            Command::Block(who)
                if o.watchers
                    .blocked
                    .iter()
                    .any(|b| b.eq_ignore_ascii_case(who)) =>
            {
                refuse(format!("{who} is blocked already."))
            }
            Command::Unblock(who)
                if !o
                    .watchers
                    .blocked
                    .iter()
                    .any(|b| b.eq_ignore_ascii_case(who)) =>
            {
                refuse(format!("{who} was not blocked."))
            }
            Command::ContactAdd(jid, _)
                if jid.node().is_none() || jid.domain().as_str() == self.cfg.domain =>
            {
                refuse(format!(
                    "{jid} is not someone's account (user@server, not on this service)."
                ))
            }
            Command::ContactAdd(jid, _) if self.out.secrets.account_owner(jid) == Some(i) => {
                refuse(format!("{jid} is one of your own accounts."))
            }
            Command::LinkConfirm(_) => refuse(format!(
                "This account is linked to {} already.",
                o.virtual_jid
            )),
            // Without an account: the one that asks (see
            // `command_message`), so `None` only comes from an admin.
            Command::Unlink(None) => refuse("Say which account: \"unlink <account>\".".into()),
            Command::Unknown(text) => refuse(match usage(text) {
                Some(line) => format!("{line}\nSend \"help\" for every command."),
                None => format!("I did not understand {text:?}. Send \"help\" for what I can do."),
            }),
            _ => Ok(()),
        }
    }

    /// Applies `cmd`, which [`Core::check_command`] passed. Only `link`,
    /// `unlink` and `unregister`, which no form combines with another,
    /// may still refuse here (having changed nothing).
    fn apply_command(&mut self, now: Time, i: OwnerId, cmd: Command) -> Result<String, Refusal> {
        self.journal_settings(i);
        Ok(match cmd {
            Command::Help => HELP.to_owned(),
            Command::Status => self.status_text(now, i),
            Command::Devices => self.devices_text(now, i),
            Command::Watchers => {
                let o = &self.owners[i];
                // Her own accounts see her as others do; they are not
                // watchers of hers.
                let listed = |state: WatcherState| {
                    let mut v: Vec<String> = o
                        .watchers
                        .iter()
                        .filter(|(j, s)| **s == state && self.out.secrets.account_of(j) != Some(i))
                        .map(|(j, _)| self.shown_watcher(j))
                        .collect();
                    v.sort_unstable();
                    v.dedup();
                    if v.is_empty() {
                        "nobody".to_owned()
                    } else {
                        v.join(", ")
                    }
                };
                format!(
                    "Watching you: {}\nWaiting for your answer: {}",
                    listed(WatcherState::Subscribed),
                    listed(WatcherState::Pending)
                )
            }
            Command::Approve(jid) => {
                let waiting: Vec<BareJid> = self
                    .watchers_named(i, &jid)
                    .into_iter()
                    .filter(|w| self.owners[i].watchers.get(w) == Some(&WatcherState::Pending))
                    .collect();
                for w in waiting {
                    self.approve(i, w.clone());
                    // The request her client still shows is settled.
                    self.withdraw_request(i, &w);
                }
                format!("{jid} now sees your presence.")
            }
            Command::Deny(jid) => {
                let named: Vec<BareJid> = self
                    .watchers_named(i, &jid)
                    .into_iter()
                    .filter(|w| self.owners[i].watchers.contains_key(w))
                    .collect();
                for w in named {
                    self.deny_watcher(i, &w);
                }
                format!("{jid} no longer sees your presence.")
            }
            Command::Ring(mode, devices) => {
                let fallback = Rule {
                    mode,
                    devices,
                    ..Rule::default_rule(self.cfg.ring_timeout_ms)
                };
                let rules = &mut self.owners[i].rules;
                rules.retain(|r| !is_catch_all(r));
                // "ring parallel" with no devices is what happens with no
                // rule at all: no rule is kept for it.
                if fallback != Rule::default_rule(self.cfg.ring_timeout_ms) {
                    rules.push(fallback.clone());
                }
                self.store_rules(i);
                format!(
                    "When no other rule applies, calls now ring: {}.",
                    describe_action(&fallback)
                )
            }
            Command::Dnd(class, on) => {
                let classes: Vec<String> = class.iter().cloned().collect();
                let rules = &mut self.owners[i].rules;
                // "dnd all" replaces every do-not-disturb, per class or not.
                rules.retain(|r| !(is_dnd(r) && (class.is_none() || r.classes == classes)));
                if on {
                    let dnd = Rule {
                        classes: classes.clone(),
                        reject: true,
                        ..Rule::default_rule(self.cfg.ring_timeout_ms)
                    };
                    rules.insert(0, dnd);
                }
                self.store_rules(i);
                let what = class.map_or_else(|| "all calls".to_owned(), |c| format!("{c} calls"));
                if on {
                    format!("Do not disturb is on for {what}: callers get busy.")
                } else {
                    format!("Do not disturb is off for {what}.")
                }
            }
            Command::Rules => self.rules_text(i),
            Command::Views => self.views_text(i),
            Command::ViewAdd(name, words) => {
                let classes: Vec<&str> = self.cfg.classes.iter().map(|c| c.name.as_str()).collect();
                let view = match super::views::View::parse(&name, &words, &classes) {
                    Ok(v) => v,
                    Err(e) => return Err(Refusal::Text(e)),
                };
                let text = view.describe();
                self.regroup(i, Some(&name), |v| {
                    match v.defined.iter_mut().find(|d| d.name == name) {
                        Some(d) => *d = view,
                        None => v.defined.push(view),
                    }
                });
                self.store_settings(i);
                format!(
                    "View {name}: {text}. Put contacts in it with \"view bob@example.org {name}\" or a whole domain with \"view example.org {name}\"."
                )
            }
            Command::ViewDel(name) => {
                self.regroup(i, None, |v| {
                    v.defined.retain(|d| d.name != name);
                    v.members.retain(|(_, view)| *view != name);
                    if v.default.as_deref() == Some(name.as_str()) {
                        v.default = None;
                    }
                });
                self.store_settings(i);
                format!("View {name} removed; its contacts see your default view now.")
            }
            Command::ViewSet(who, view) => {
                let text = if who == "default" {
                    let chosen = view.clone();
                    self.regroup(i, None, |v| v.default = Some(chosen));
                    format!("Contacts in no view now see {view}.")
                } else if view == "default" {
                    let gone = who.clone();
                    self.regroup(i, None, |v| v.members.retain(|(w, _)| *w != gone));
                    format!("{who} sees your default view now.")
                } else {
                    let (member, chosen) = (who.clone(), view.clone());
                    self.regroup(i, None, |v| {
                        match v.members.iter_mut().find(|(w, _)| *w == member) {
                            Some(m) => m.1 = chosen,
                            None => v.members.push((member, chosen)),
                        }
                    });
                    format!("{who} sees your view {view} now.")
                };
                self.store_settings(i);
                text
            }
            Command::Preview(jid) => self.preview_text(i, &jid),
            Command::Push(device, on) => {
                let o = &mut self.owners[i];
                let mut changed = vec![];
                for (jid, record) in o.devices.records.iter_mut() {
                    if jid.resource().as_str() == device {
                        record.no_push = !on;
                        changed.push((jid.clone(), record.clone()));
                    }
                }
                if changed.is_empty() {
                    return Err(Refusal::NoDevice {
                        name: device,
                        hers: None,
                    });
                }
                for (jid, record) in changed {
                    self.out.keep(StoreOp::Device {
                        owner: o.name.clone(),
                        device: jid,
                        record,
                    });
                }
                if on {
                    format!(
                        "{device} is woken for calls while it sleeps, if your server pushes to it."
                    )
                } else {
                    format!("{device} rings only while it is online.")
                }
            }
            Command::Label(device, label) => {
                let o = &mut self.owners[i];
                let Some((jid, record)) = o.devices.label(&device, &label) else {
                    return Err(Refusal::NoDevice {
                        name: device,
                        hers: None,
                    });
                };
                self.out.keep(StoreOp::Device {
                    owner: o.name.clone(),
                    device: jid,
                    record,
                });
                format!("{device} is now labelled {label:?}.")
            }
            Command::Unregister(false) => format!(
                "This gives up {}: your watchers are told, calls end, and every setting, rule and \
                 device name of yours is deleted. To do it, send \"unregister confirm\".",
                self.owners[i].virtual_jid
            ),
            Command::Unregister(true) => self.unregister(now, i)?,
            Command::RuleAdd(words) => {
                let classes: Vec<String> =
                    self.cfg.classes.iter().map(|c| c.name.clone()).collect();
                let rule = parse_rule(&words, &classes, self.cfg.ring_timeout_ms)
                    .map_err(Refusal::BadRule)?;
                let text = format!("{} -> {}", describe_match(&rule), describe_action(&rule));
                self.owners[i].rules.insert(0, rule);
                self.store_rules(i);
                let n = self.owners[i].rules.len();
                if n == 1 {
                    format!("Added as rule 1: {text}.")
                } else {
                    format!(
                        "Added as rule 1 of {n}: {text}. It is checked first; send \"rules\" to see the order."
                    )
                }
            }
            Command::RuleDel(n) => {
                self.owners[i].rules.remove(n - 1);
                self.store_rules(i);
                format!("Rule {n} removed.")
            }
            Command::Privacy(change) => {
                let o = &mut self.owners[i];
                match change.as_ref().map(|(k, v)| (k.as_str(), v.as_str())) {
                    Some(("calls", "relay-only")) => o.candidates = CandidatePolicy::RelayOnly,
                    Some(("calls", "direct")) => o.candidates = CandidatePolicy::Direct,
                    Some(("watchers", "ask")) => o.watchers.policy = SubscriptionPolicy::Ask,
                    Some(("watchers", "open")) => o.watchers.policy = SubscriptionPolicy::Open,
                    Some(("encryption", v)) => o.omemo = v == "on",
                    _ => {}
                }
                let settings = settings_of(o);
                if change.is_some() {
                    self.out.keep(StoreOp::Settings {
                        owner: o.name.clone(),
                        settings: settings.clone(),
                    });
                }
                let calls = match settings.candidates {
                    CandidatePolicy::Direct => {
                        "direct (callers may learn your devices' IP addresses)"
                    }
                    CandidatePolicy::RelayOnly => {
                        "relay-only (callers never learn your devices' IP addresses)"
                    }
                };
                let watchers = match settings.subscription {
                    SubscriptionPolicy::Ask => "ask (you approve each watcher)",
                    SubscriptionPolicy::Open => "open (anyone may watch)",
                };
                let encryption = if settings.omemo {
                    "on (your OMEMO device ids and public keys are served on your address, so that contacts can encrypt to you)"
                } else {
                    "off (contacts' clients cannot encrypt to your address)"
                };
                format!("Calls: {calls}.\nWatchers: {watchers}.\nEncryption: {encryption}.")
            }
            Command::Block(who) => {
                // A blocked watcher stops watching first.
                let watchers: Vec<BareJid> = self.owners[i]
                    .watchers
                    .jids()
                    .filter(|w| super::listed(std::slice::from_ref(&who), w))
                    .collect();
                for w in &watchers {
                    self.deny_watcher(i, w);
                }
                self.owners[i].watchers.blocked.push(who.clone());
                self.store_blocked(i);
                format!("{who} is blocked: nothing from your address reaches them.")
            }
            Command::Unblock(who) => {
                self.owners[i]
                    .watchers
                    .blocked
                    .retain(|b| !b.eq_ignore_ascii_case(&who));
                self.store_blocked(i);
                format!("{who} is no longer blocked.")
            }
            Command::ContactAdd(jid, name) => self.add_contact(i, &jid, name.as_deref()),
            Command::Name(change) => {
                if let Some(name) = change {
                    let o = &mut self.owners[i];
                    o.display_name = (!name.is_empty()).then_some(name);
                    self.out.keep(StoreOp::Settings {
                        owner: o.name.clone(),
                        settings: settings_of(o),
                    });
                    self.name_changed(i);
                }
                let o = &self.owners[i];
                match (&o.display_name, o.profile.nick(None)) {
                    (Some(n), _) => format!("Your contacts see you as \"{n}\" (\"name reset\" takes your account's name again)."),
                    (None, Some(n)) => format!("Your contacts see you as \"{n}\", your account's name (\"name <text>\" sets another)."),
                    (None, None) => "Your account has no name in its profile, so your contacts see your address; \"name <text>\" sets one.".to_owned(),
                }
            }
            Command::Link(account) => self
                .start_link(now, i, account)
                .map_err(|why| Refusal::Text(format!("Not linked: {why}.")))?,
            Command::Unlink(Some(account)) => self.unlink(now, i, account, true)?,
            Command::Register(_)
            | Command::LinkConfirm(_)
            | Command::Unlink(None)
            | Command::Unknown(_) => {
                tracing::error!(?cmd, "bug: applying a command the check refuses");
                return Err(Refusal::Text(HELP.to_owned()));
            }
        })
    }

    /// Owner `i` ends the link of `account` (`tell_account`: the account
    /// is told too, when someone else asked).
    fn unlink(
        &mut self,
        now: Time,
        i: OwnerId,
        account: BareJid,
        tell_account: bool,
    ) -> Result<String, Refusal> {
        let hers = self.owners[i].accounts.iter().any(|(a, _)| *a == account)
            && self.out.secrets.account_owner(&account) == Some(i);
        let refused = if !hers {
            format!("{account} is not linked to your address.")
        } else if self.provisioned_account(i, &account) {
            format!("{account} was set up by the admin of this service; ask them to remove it.")
        } else if self.linked_accounts(i).len() <= 1 {
            format!(
                "{account} is your only account; send \"unregister\" to give up your address instead."
            )
        } else {
            self.unlink_account(now, i, &account, tell_account);
            return Ok(format!(
                "{account} is no longer linked to {}.",
                self.owners[i].virtual_jid
            ));
        };
        Err(Refusal::Text(refused))
    }

    /// DESIGN.md section 2: `account` becomes the owner of `name@D` (her
    /// localpart by default) if the admin's registration policy allows;
    /// the link is proven by her approving our subscription request.
    pub(super) fn register(&mut self, account: BareJid, name: Option<String>) -> String {
        let allowed = match &self.cfg.registration {
            Registration::Closed => false,
            Registration::Open => true,
            Registration::Domains(d) => d.iter().any(|d| d == account.domain().as_str()),
        };
        if !allowed {
            return "Registration is closed here; ask the admin of this service.".into();
        }
        let name =
            name.unwrap_or_else(|| account.node().map(|n| n.to_string()).unwrap_or_default());
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        let Some(virtual_jid) = valid
            .then(|| BareJid::new(&format!("{name}@{}", self.cfg.domain)).ok())
            .flatten()
        else {
            return format!("{name:?} cannot be an address here: use a-z, 0-9, dot, dash or underscore, like \"register alice\".");
        };
        if self.by_name.contains_key(&name) {
            return format!("{virtual_jid} is taken; send \"register <another name>\".");
        }
        let oc = super::registered_owner(&name, vec![account.clone()]);
        let owner = super::Owner::new(&oc, virtual_jid.clone(), self.cfg.classes.len(), false);
        let i = self.owners.push(owner);
        self.by_name.insert(name.clone(), i);
        self.out.secrets.add_account(account.clone(), i);
        self.journal
            .push(super::undo::Undo::Registered { owner: i });
        info!(owner = %name, "registered");
        self.out.keep(StoreOp::Owner {
            owner: name,
            record: Some(RegisteredOwner {
                accounts: vec![account.clone()],
            }),
        });
        self.out
            .send(super::link_request(virtual_jid.as_str(), &account));
        format!(
            "You are now {virtual_jid}. Approve the contact request from {virtual_jid}: that links this account. \
             Then give {virtual_jid} to your contacts. Send \"help\" for what you can do."
        )
    }

    /// Owner `i` gives up her address: calls end, every watcher is told
    /// (unavailable, then unsubscribed), her accounts are unlinked, and
    /// every record of hers leaves the store.
    fn unregister(&mut self, now: Time, i: OwnerId) -> Result<String, Refusal> {
        if self.owners[i].provisioned {
            return Err(Refusal::Text(
                "Your address is set up by the admin of this service; ask them to remove it."
                    .into(),
            ));
        }
        let before = Box::new(self.owners[i].clone());
        self.abort_owner_calls(now, i);
        let virtual_jid = self.owners[i].virtual_jid.clone();
        let watchers: Vec<(BareJid, WatcherState)> = self.owners[i]
            .watchers
            .iter()
            .filter_map(|(j, s)| Some((BareJid::new(j).ok()?, *s)))
            .collect();
        for (w, _) in watchers {
            self.deny_watcher(i, &w);
        }
        let accounts: Vec<BareJid> = self.owners[i]
            .accounts
            .iter()
            .map(|(a, _)| a.clone())
            .collect();
        for a in &accounts {
            for typ in ["unsubscribe", "unsubscribed"] {
                self.out.send(stanza::stanza(
                    "presence",
                    virtual_jid.as_str(),
                    a.as_str(),
                    Some(typ),
                ));
            }
            self.out.secrets.del_account(a);
        }
        let owner = &mut self.owners[i];
        let name = owner.name.clone();
        owner.accounts.clear();
        owner.devices.clear();
        owner.rules.clear();
        owner.watchers.clear();
        self.by_name.remove(&name);
        self.unschedule_publish(i);
        self.journal
            .push(super::undo::Undo::Unregistered { owner: i, before });
        self.owners.remove(i);
        self.out.secrets.forget_owner(i);
        info!(owner = %name, "unregistered");
        self.out.keep(StoreOp::Owner {
            owner: name,
            record: None,
        });
        Ok(format!(
            "{virtual_jid} is gone: your watchers were told, and nothing of yours is kept."
        ))
    }

    /// Owner `i`'s rules, numbered, first match first.
    pub(super) fn rules_text(&self, i: OwnerId) -> String {
        let rules = &self.owners[i].rules;
        if rules.is_empty() {
            return format!(
                "No rules: every device that can take a call rings at once, for {} s.",
                self.cfg.ring_timeout_ms / 1000
            );
        }
        let mut out = String::from("Your rules, first match wins:\n");
        for (n, r) in rules.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {}. {} -> {}",
                n + 1,
                describe_match(r),
                describe_action(r)
            );
        }
        out.trim_end().to_owned()
    }

    fn store_blocked(&mut self, i: OwnerId) {
        let o = &self.owners[i];
        self.out.keep(StoreOp::Blocked {
            owner: o.name.clone(),
            blocked: o.watchers.blocked.clone(),
        });
    }

    /// Who a call of class `c` from `caller` would ring now, in words.
    pub(super) fn ring_words(&self, now: Time, i: OwnerId, c: usize, caller: &BareJid) -> String {
        let plan = self.ring_plan(now, i, c, caller);
        let ring: Vec<String> = plan
            .steps
            .iter()
            .map(|s| {
                s.iter()
                    .map(|d| match d.resource() {
                        Some(r) => r.to_string(),
                        // Her account, for devices asleep.
                        None => format!(
                            "{} (asleep, by push)",
                            asleep_names(self, i, d, self.wall_ms(now))
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join(" + ")
            })
            .collect();
        let Some(def) = self.cfg.classes.get(c) else {
            return "nobody".into();
        };
        let dnd = self.owners[i]
            .rules
            .iter()
            .any(|r| is_dnd(r) && (r.classes.is_empty() || r.classes.contains(&def.name)));
        match (ring.is_empty(), dnd) {
            (true, true) => "nobody (do not disturb is on: callers get busy)".to_owned(),
            (true, false) => "nobody".to_owned(),
            (false, _) => ring.join(", then "),
        }
    }

    fn store_settings(&mut self, i: OwnerId) {
        let o = &self.owners[i];
        self.out.keep(StoreOp::Settings {
            owner: o.name.clone(),
            settings: settings_of(o),
        });
    }

    fn store_rules(&mut self, i: OwnerId) {
        let o = &self.owners[i];
        self.out.keep(StoreOp::Rules {
            owner: o.name.clone(),
            rules: o.rules.clone(),
        });
    }

    pub(super) fn status_text(&self, now: Time, i: OwnerId) -> String {
        let mut out = String::new();
        let o = &self.owners[i];
        let _ = writeln!(out, "Your contacts see {}:", o.virtual_jid);
        for (c, def) in self.cfg.classes.iter().enumerate() {
            let state = match self.aggregate(i, c) {
                None => "unavailable".to_owned(),
                Some(p) => {
                    let show = p.show.words();
                    match p.status {
                        Some(s) => format!("{show} ({s})"),
                        None => show.to_owned(),
                    }
                }
            };
            let _ = write!(out, "• {}: {state}", def.name);
            if def.jmi {
                let anyone = BareJid::new("anyone@example.invalid")
                    .map(|j| self.ring_words(now, i, c, &j))
                    .unwrap_or_default();
                let ring = anyone;
                let _ = write!(out, "; a call now rings: {ring}");
            }
            out.push('\n');
        }
        out.trim_end().to_owned()
    }

    /// Whether owner `i` has (had) a device with resource `name`.
    pub(super) fn has_device_named(&self, i: OwnerId, name: &str) -> bool {
        self.owners[i].devices.has_named(name)
    }

    /// Her device names, for a reply that names one she does not have.
    fn device_names(&self, i: OwnerId) -> String {
        let names = self.owners[i].devices.names();
        if names.is_empty() {
            "none yet".into()
        } else {
            names.join(", ")
        }
    }

    pub(super) fn devices_text(&self, now: Time, i: OwnerId) -> String {
        let o = &self.owners[i];
        let wall = self.wall_ms(now);
        let mut out = String::new();
        if o.devices.live.is_empty() {
            out.push_str("None of your devices is online.\n");
        } else {
            out.push_str("Online now:\n");
        }
        for (jid, d) in o.devices.live.iter() {
            let classes: Vec<&str> = self
                .cfg
                .classes
                .iter()
                .enumerate()
                .filter(|(c, _)| d.classes & (1 << c) != 0)
                .map(|(_, def)| def.name.as_str())
                .collect();
            let record = o.devices.records.get(jid);
            let first = record
                .map(|r| since(wall, r.first_seen))
                .unwrap_or_default();
            let label = record
                .and_then(|r| r.label.as_deref())
                .map(|l| format!(" \"{l}\""))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {jid}{label}: {}, priority {}, can {} (first seen {first})",
                d.show.words(),
                d.priority,
                classes.join(", ")
            );
        }
        // DESIGN.md section 12: the others, asleep (woken by push) or gone.
        let mut offline: Vec<_> = o
            .devices
            .records
            .iter()
            .filter(|(j, _)| o.devices.live.get(j).is_none())
            // An account she unlinked is no longer hers to list.
            .filter(|(j, _)| o.accounts.iter().any(|(a, _)| *a == j.to_bare()))
            .collect();
        offline.sort_by(|a, b| a.0.cmp(b.0));
        let (asleep, gone): (Vec<_>, Vec<_>) = offline.into_iter().partition(|(j, _)| {
            o.reach(j, wall, &self.cfg.push_domains) == super::owners::Reach::Asleep
        });
        let line = |out: &mut String, j: &jid::FullJid, r: &super::DeviceRecord| {
            let label = r
                .label
                .as_deref()
                .map(|l| format!(" \"{l}\""))
                .unwrap_or_default();
            let off = if r.no_push { ", push off" } else { "" };
            let _ = writeln!(
                out,
                "  {j}{label}: last seen {}{off}",
                since(wall, r.last_seen)
            );
        };
        if !asleep.is_empty() {
            out.push_str("Asleep, woken by your server's push when called:\n");
            for (j, r) in asleep {
                line(&mut out, j, r);
            }
        }
        if !gone.is_empty() {
            out.push_str(
                "Offline, not rung (no push on its server, another device of that account is \
                 online, push off, or unused for a month):\n",
            );
            for (j, r) in gone {
                line(&mut out, j, r);
            }
        }
        out.trim_end().to_owned()
    }
}

/// The names of her devices asleep on account `account`, for the status
/// text ("phone" rather than her account's address).
fn asleep_names(core: &Core, i: OwnerId, account: &Jid, wall_ms: u64) -> String {
    let o = &core.owners[i];
    let names: Vec<&str> = o
        .devices
        .records
        .keys()
        .filter(|j| j.to_bare() == account.to_bare())
        .filter(|j| o.reach(j, wall_ms, &core.cfg.push_domains) == super::owners::Reach::Asleep)
        .map(|j| j.resource().as_str())
        .collect();
    let mut names = names;
    names.sort_unstable();
    names.join(" + ")
}

/// Parses the words of `rule add` (see the help text) into a rule.
pub fn parse_rule(
    words: &[String],
    classes: &[String],
    default_timeout_ms: u64,
) -> Result<Rule, String> {
    let mut rule = Rule {
        skip_busy: true,
        ..Rule::default_rule(default_timeout_ms)
    };
    let mut acted = false;
    let mut it = words.iter().map(|w| w.to_ascii_lowercase()).peekable();
    let number = |w: Option<String>, what: &str| -> Result<u64, String> {
        w.and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{what} needs a number of seconds"))
    };
    while let Some(w) = it.next() {
        let days = w
            .split_once('-')
            .and_then(|(a, b)| Some((parse_day(a)?, parse_day(b)?)));
        match w.as_str() {
            c if classes.iter().any(|k| k == c) => rule.classes.push(c.to_owned()),
            "from" => {
                let who = it
                    .next()
                    .ok_or("\"from\" needs a JID, a domain, watchers or anyone")?;
                rule.callers.push(CallerMatch::parse(&who).ok_or_else(|| {
                    format!("{who:?} is not a JID, a domain, watchers or anyone")
                })?);
            }
            "busy" => {
                rule.reject = true;
                acted = true;
            }
            "ring" => {
                rule.mode = match it.next().as_deref() {
                    Some("parallel") => RingMode::Parallel,
                    Some("sequential") => RingMode::Sequential,
                    Some("priority") => RingMode::Priority,
                    _ => return Err("\"ring\" needs parallel, sequential or priority".into()),
                };
                while let Some(d) = it.next_if(|d| {
                    ![
                        "step",
                        "timeout",
                        "message",
                        "relay-only",
                        "direct",
                        "awake-only",
                    ]
                    .contains(&d.as_str())
                }) {
                    rule.devices.push(d);
                }
                acted = true;
            }
            "step" => rule.step_ms = number(it.next(), "step")? * 1000,
            "timeout" => rule.timeout_ms = number(it.next(), "timeout")? * 1000,
            "message" => rule.on_no_answer = NoAnswer::Message,
            // Devices asleep are not woken for what the rule matches.
            "awake-only" => rule.asleep = false,
            // Rings as by default unless the rule says more.
            "relay-only" => rule.candidates = Some(CandidatePolicy::RelayOnly),
            "direct" => rule.candidates = Some(CandidatePolicy::Direct),
            "when" => {
                let state = it.next().unwrap_or_default();
                rule.when = Some(match state.as_str() {
                    "online" | "available" => Show::Online,
                    s => Show::from_xml(s).ok_or_else(|| {
                        format!("\"when\" needs chat, online, away, xa or dnd, not {s:?}")
                    })?,
                });
            }
            _ if parse_day(&w).is_some() => rule.days.extend(parse_day(&w)),
            _ if let Some((first, last)) = days => {
                let mut d = first;
                rule.days.push(d);
                while d != last {
                    d = d.succ();
                    rule.days.push(d);
                }
            }
            _ if parse_window(&w).is_some() => rule.window = parse_window(&w),
            other => return Err(format!("I do not know {other:?}")),
        }
    }
    if !acted {
        if rule.candidates.is_none() {
            return Err(
                "say what happens: \"busy\", \"ring ...\", \"relay-only\" or \"direct\"".into(),
            );
        }
        // Only the candidate policy: ringing is left to the rules below.
        rule.only_candidates = true;
    }
    Ok(rule)
}

/// The rule `ring ...` maintains: no condition at all.
pub(super) fn is_catch_all(r: &Rule) -> bool {
    r.classes.is_empty()
        && r.callers.is_empty()
        && r.days.is_empty()
        && r.window.is_none()
        && r.when.is_none()
        && !r.reject
        && !r.only_candidates
}

/// A rule `dnd ...` maintains: refuse, by class only. A refusal with a
/// condition (a caller, days, hours, `when away`) is a rule of hers that
/// `dnd` leaves alone.
pub(super) fn is_dnd(r: &Rule) -> bool {
    r.reject
        && r.callers.is_empty()
        && r.days.is_empty()
        && r.window.is_none()
        && r.when.is_none()
        && !r.only_candidates
}

fn describe_match(r: &Rule) -> String {
    let mut parts = vec![];
    parts.push(if r.classes.is_empty() {
        "any call".to_owned()
    } else {
        format!("{} calls", r.classes.join("/"))
    });
    if !r.callers.is_empty() {
        let who: Vec<String> = r.callers.iter().cloned().map(String::from).collect();
        parts.push(format!("from {}", who.join(", ")));
    }
    if !r.days.is_empty() {
        let days: Vec<String> = r.days.iter().map(|d| d.to_string()).collect();
        parts.push(format!("on {}", days.join(", ")));
    }
    if let Some(w) = r.when {
        parts.push(format!("while you are {}", w.as_xml().unwrap_or("online")));
    }
    if let Some((a, b)) = r.window {
        parts.push(format!(
            "{:02}:{:02}-{:02}:{:02}",
            a / 60,
            a % 60,
            b / 60,
            b % 60
        ));
    }
    parts.join(", ")
}

fn describe_action(r: &Rule) -> String {
    match r.candidates {
        Some(CandidatePolicy::RelayOnly) if r.only_candidates => return "relay-only calls".into(),
        Some(CandidatePolicy::Direct) if r.only_candidates => return "direct calls".into(),
        _ => {}
    }
    if r.reject {
        return "busy".into();
    }
    let how = match r.mode {
        RingMode::Parallel if r.devices.is_empty() => "every device at once".to_owned(),
        RingMode::Parallel => format!("{} at once", r.devices.join(" + ")),
        RingMode::Sequential if r.devices.is_empty() => {
            format!("every device in turn, {} s each", r.step_ms / 1000)
        }
        RingMode::Sequential => {
            format!("{}, {} s each", r.devices.join(", then "), r.step_ms / 1000)
        }
        RingMode::Priority => format!("by priority, {} s each", r.step_ms / 1000),
    };
    let candidates = match r.candidates {
        None => "",
        Some(CandidatePolicy::RelayOnly) => ", relay-only",
        Some(CandidatePolicy::Direct) => ", direct",
    };
    let awake = if r.asleep { "" } else { ", awake devices only" };
    format!("{how}, {} s in all{candidates}{awake}", r.timeout_ms / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_case_insensitively_and_unknown_ones_are_kept() {
        assert_eq!(parse("Help"), Command::Help);
        assert_eq!(parse("  status "), Command::Status);
        assert_eq!(
            parse("approve xmpp:Bob@Example.org"),
            Command::Approve(BareJid::new("bob@example.org").unwrap())
        );
        assert_eq!(
            parse("deny bob@example.org"),
            Command::Deny(BareJid::new("bob@example.org").unwrap())
        );
        assert_eq!(parse("approve"), Command::Unknown("approve".into()));
        assert_eq!(parse("make coffee"), Command::Unknown("make coffee".into()));
    }
}
