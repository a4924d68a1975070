//! Ad-hoc commands (XEP-0050) with data forms (XEP-0004) on the component
//! domain, for clients with a UI for them (Gajim, Movim, Psi).
//!
//! Each command is a form whose submission stands for the same
//! [`Command`]s the chat parses ([`Core::form_commands`]), so both front
//! ends share one implementation of every check and change (and its
//! durability): they differ only in how they render a result or a
//! [`Refusal`]. A form's commands are all checked before any applies.
//! Sessions are ours to expire.
//! xmpp-parsers has no XEP-0050 module: the elements are built here.

use std::collections::HashMap;

use jid::{BareJid, Jid};
use minidom::Element;
use tracing::{debug, warn};

use super::commands::{is_dnd, Command, Refusal};
use super::rules::RingMode;
use super::stanza::{self, element, iq_result, ns, text_element, ErrorType};
use super::OwnerId;
use super::{Core, Time, WatcherState};

/// XEP-0050 namespace.
pub(super) const COMMANDS: &str = "http://jabber.org/protocol/commands";
/// How long a form waits for its submission.
const SESSION_MS: u64 = 10 * 60 * 1000;
/// Open forms per requesting account; a new one closes its oldest.
const SESSIONS_PER_ACCOUNT: usize = 8;
/// Open forms over everyone; beyond, `resource-constraint`.
const SESSIONS_MAX: usize = 10_000;

/// An open multi-stage command.
#[derive(Debug, Clone)]
pub(super) struct Session {
    node: String,
    pub(super) requester: Jid,
    expires: Time,
}

/// Open sessions by id.
pub(super) type Sessions = HashMap<String, Session>;

const OWNER_COMMANDS: [(&str, &str); 13] = [
    ("status", "What my contacts see"),
    ("devices", "My devices"),
    ("watchers", "Watchers: approve, deny, remove"),
    ("ring", "How my devices ring"),
    ("rules", "Ring rules"),
    ("dnd", "Do not disturb"),
    ("privacy", "Privacy"),
    ("views", "Views: what each contact sees"),
    ("preview", "What a contact sees of me"),
    ("contact", "Add a contact"),
    ("link", "Link another account"),
    ("unlink", "Unlink an account"),
    ("unregister", "Give up my address"),
];
const STRANGER_COMMANDS: [(&str, &str); 1] = [("register", "Get an address for all my devices")];

fn field(
    var: &str,
    typ: &str,
    label: &str,
    values: &[String],
    options: &[(String, String)],
) -> Element {
    let mut f = element(
        "field",
        ns::DATA,
        &[("var", var), ("type", typ), ("label", label)],
    );
    for v in values {
        f.append_child(text_element("value", ns::DATA, v));
    }
    for (value, label) in options {
        let mut o = element("option", ns::DATA, &[("label", label)]);
        o.append_child(text_element("value", ns::DATA, value));
        f.append_child(o);
    }
    f
}

fn form(title: &str, instructions: &str, fields: Vec<Element>) -> Element {
    let mut x = element("x", ns::DATA, &[("type", "form")]);
    x.append_child(text_element("title", ns::DATA, title));
    x.append_child(text_element("instructions", ns::DATA, instructions));
    for f in fields {
        x.append_child(f);
    }
    x
}

/// Puts what was submitted back into the text fields of `form` (a form
/// shown again after a refusal keeps what the person typed).
fn keep_values(form: &mut Element, submitted: &Element) {
    for f in form.children_mut() {
        let var = f.attr("var").unwrap_or_default().to_owned();
        let typed = values(submitted, &var);
        if typed.is_empty() || !matches!(f.attr("type"), Some("text-single" | "text-multi")) {
            continue;
        }
        f.remove_child("value", ns::DATA);
        while f.remove_child("value", ns::DATA).is_some() {}
        for v in typed {
            f.append_child(text_element("value", ns::DATA, &v));
        }
    }
}

/// The values submitted for `var`.
fn values(x: &Element, var: &str) -> Vec<String> {
    x.children()
        .filter(|f| f.is("field", ns::DATA) && f.attr("var") == Some(var))
        .flat_map(|f| {
            f.children()
                .filter(|v| v.is("value", ns::DATA))
                .map(|v| v.text())
        })
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

impl Core {
    /// disco#items for the commands node: what this requester may run.
    pub(super) fn command_items(&self, from: &Jid) -> Element {
        let mut q = element("query", ns::DISCO_ITEMS, &[("node", COMMANDS)]);
        let list: &[(&str, &str)] = match self.out.secrets.account_owner(&from.to_bare()) {
            Some(_) => &OWNER_COMMANDS,
            None => &STRANGER_COMMANDS,
        };
        for (node, name) in list {
            q.append_child(element(
                "item",
                ns::DISCO_ITEMS,
                &[("jid", &self.cfg.domain), ("node", node), ("name", name)],
            ));
        }
        q
    }

    /// XEP-0050 §2.3: disco#info on a command node this requester may
    /// run (the same list [`Core::command_items`] gives it).
    pub(super) fn command_info(&self, from: &Jid, node: &str) -> Option<Element> {
        let list: &[(&str, &str)] = match self.out.secrets.account_owner(&from.to_bare()) {
            Some(_) => &OWNER_COMMANDS,
            None => &STRANGER_COMMANDS,
        };
        let (node, name) = list.iter().find(|(n, _)| *n == node)?;
        let mut q = element("query", ns::DISCO_INFO, &[("node", node)]);
        q.append_child(element(
            "identity",
            ns::DISCO_INFO,
            &[
                ("category", "automation"),
                ("type", "command-node"),
                ("name", name),
            ],
        ));
        for f in [COMMANDS, ns::DATA] {
            q.append_child(element("feature", ns::DISCO_INFO, &[("var", f)]));
        }
        Some(q)
    }

    /// Makes room for one more session of `from`'s account: closes its
    /// oldest beyond [`SESSIONS_PER_ACCOUNT`]; false when everyone's
    /// sessions are at [`SESSIONS_MAX`].
    fn room_for_session(&mut self, from: &Jid) -> bool {
        let account = from.to_bare();
        let mut own: Vec<(Time, String)> = self
            .adhoc_sessions
            .iter()
            .filter(|(_, s)| s.requester.to_bare() == account)
            .map(|(id, s)| (s.expires, id.clone()))
            .collect();
        if own.len() >= SESSIONS_PER_ACCOUNT {
            own.sort();
            for (_, id) in own.iter().take(own.len() + 1 - SESSIONS_PER_ACCOUNT) {
                self.adhoc_sessions.remove(id);
            }
        }
        self.adhoc_sessions.len() < SESSIONS_MAX
    }

    /// An IQ set with a `<command/>` to the domain.
    pub(super) fn adhoc(&mut self, now: Time, iq: &Element, from: &Jid, cmd: &Element) {
        self.adhoc_sessions.retain(|_, s| s.expires > now);
        let node = cmd.attr("node").unwrap_or_default().to_owned();
        let action = cmd.attr("action").unwrap_or("execute");
        let owner = self.out.secrets.account_owner(&from.to_bare());
        let allowed = match owner {
            Some(_) => OWNER_COMMANDS.iter().any(|(n, _)| *n == node),
            None => STRANGER_COMMANDS.iter().any(|(n, _)| *n == node),
        };
        if !allowed {
            // XEP-0050 §4.6: a command this requester may not run.
            let condition = if owner.is_none() && OWNER_COMMANDS.iter().any(|(n, _)| *n == node) {
                "forbidden"
            } else {
                "item-not-found"
            };
            return self.out.reply_error(iq, ErrorType::Cancel, condition);
        }
        let submitted = cmd
            .get_child("x", ns::DATA)
            .filter(|x| x.attr("type") == Some("submit"));
        match (cmd.attr("sessionid"), action) {
            (Some(sid), action) => {
                // A session is its requester's alone: anyone else (a
                // stranger, a watcher, another owner, her own other
                // device) learns nothing of it and cannot end it, and a
                // refused attempt leaves it as it was.
                let theirs = self
                    .adhoc_sessions
                    .get(sid)
                    .is_some_and(|s| s.node == node && s.requester == *from);
                if !theirs {
                    // XEP-0050 §4.6: an unknown or expired session.
                    if let Some(mut e) =
                        stanza::error_reply(iq, ErrorType::Modify, "bad-request", None)
                    {
                        if let Some(err) = e.get_child_mut("error", ns::COMPONENT) {
                            err.append_child(Element::bare("bad-sessionid", COMMANDS));
                        }
                        self.out.send(e);
                    }
                    return;
                }
                if action == "cancel" {
                    self.adhoc_sessions.remove(sid);
                    return self.command_reply(iq, &node, Some(sid), "canceled", None, None);
                }
                let Some(x) = submitted else {
                    return self.out.reply_error(iq, ErrorType::Modify, "bad-request");
                };
                match self.submit(now, &node, owner, from, x) {
                    // XEP-0050 §4.4: a submission we refuse (which changed
                    // nothing) keeps the session, with the form and an
                    // error note, so that the person can correct it.
                    Err(why) => {
                        if let Some(s) = self.adhoc_sessions.get_mut(sid) {
                            s.expires = now.plus_ms(SESSION_MS);
                        }
                        // The form again, with what she typed in it.
                        let Some(mut form) = self.command_form(now, &node, owner, from) else {
                            return self
                                .out
                                .reply_error(iq, ErrorType::Cancel, "item-not-found");
                        };
                        keep_values(&mut form, x);
                        self.command_reply(
                            iq,
                            &node,
                            Some(sid),
                            "executing",
                            Some((&why.form(), "error")),
                            Some(form),
                        );
                    }
                    Ok(note) => {
                        self.adhoc_sessions.remove(sid);
                        self.command_reply(
                            iq,
                            &node,
                            Some(sid),
                            "completed",
                            Some((&note, "info")),
                            None,
                        );
                    }
                }
            }
            (None, _) => match owner.map(|i| (i, node.as_str())) {
                // Single-stage commands complete at once.
                Some((i, "status")) => {
                    // A result form, one labelled field per class: clients
                    // lay out "label: value" rows in any font, where a note
                    // is centred text and Gajim draws short fixed fields as
                    // headings.
                    let text = self.status_text(now, i);
                    let mut x = element("x", ns::DATA, &[("type", "result")]);
                    x.append_child(text_element("title", ns::DATA, "What my contacts see"));
                    for line in text.lines().filter_map(|l| l.strip_prefix("• ")) {
                        let (class, state) = line.split_once(": ").unwrap_or((line, ""));
                        let mut f = element(
                            "field",
                            ns::DATA,
                            &[("type", "text-single"), ("var", class), ("label", class)],
                        );
                        f.append_child(text_element("value", ns::DATA, state));
                        x.append_child(f);
                    }
                    self.command_reply(iq, &node, None, "completed", None, Some(x));
                }

                _ => {
                    if !self.room_for_session(from) {
                        return self
                            .out
                            .reply_error(iq, ErrorType::Wait, "resource-constraint");
                    }
                    let Some(x) = self.command_form(now, &node, owner, from) else {
                        // XEP-0050 §4.6: no such command.
                        return self
                            .out
                            .reply_error(iq, ErrorType::Cancel, "item-not-found");
                    };
                    let sid = self.out.next_id();
                    self.adhoc_sessions.insert(
                        sid.clone(),
                        Session {
                            node: node.clone(),
                            requester: from.clone(),
                            expires: now.plus_ms(SESSION_MS),
                        },
                    );
                    self.command_reply(iq, &node, Some(&sid), "executing", None, Some(x));
                }
            },
        }
    }

    fn command_reply(
        &mut self,
        iq: &Element,
        node: &str,
        sid: Option<&str>,
        status: &str,
        note: Option<(&str, &str)>,
        x: Option<Element>,
    ) {
        let mut c = element("command", COMMANDS, &[("node", node), ("status", status)]);
        if let Some(s) = sid {
            stanza::set_attr(&mut c, "sessionid", s);
        }
        if let Some(x) = x {
            if status == "executing" {
                let mut actions = element("actions", COMMANDS, &[("execute", "complete")]);
                actions.append_child(Element::bare("complete", COMMANDS));
                c.append_child(actions);
            }
            c.append_child(x);
        }
        if let Some((n, typ)) = note {
            let mut el = text_element("note", COMMANDS, n);
            stanza::set_attr(&mut el, "type", typ);
            c.append_child(el);
        }
        self.out.send(iq_result(iq, Some(c)));
    }

    /// The form of command `node` for this requester; `None` for a node
    /// that has none (the caller answers `item-not-found`).
    fn command_form(
        &self,
        now: Time,
        node: &str,
        owner: Option<OwnerId>,
        from: &Jid,
    ) -> Option<Element> {
        let opts = |v: &[&str]| {
            v.iter()
                .map(|s| (s.to_string(), s.to_string()))
                .collect::<Vec<_>>()
        };
        let form = match (node, owner) {
            ("register", None) => {
                let name = from.node().map(|n| n.to_string()).unwrap_or_default();
                form(
                    "Register",
                    &format!("Your address will be name@{}.", self.cfg.domain),
                    vec![field("name", "text-single", "Name", &[name], &[])],
                )
            }
            ("watchers", Some(i)) => {
                let o = &self.owners[i];
                // Her own accounts see her as others do; they are hers,
                // not watchers to approve, remove or block.
                let others = |j: &&str| self.out.secrets.account_of(j) != Some(i);
                let mut pending: Vec<String> = o
                    .watchers
                    .iter()
                    .filter(|(_, s)| **s == WatcherState::Pending)
                    .map(|(j, _)| j)
                    .filter(others)
                    .map(|j| self.shown_watcher(j))
                    .collect();
                let mut approved: Vec<String> = o
                    .watchers
                    .iter()
                    .filter(|(_, s)| **s == WatcherState::Subscribed)
                    .map(|(j, _)| j)
                    .filter(others)
                    .map(|j| self.shown_watcher(j))
                    .collect();
                // Two accounts of one owner show as one virtual JID.
                pending.sort_unstable();
                pending.dedup();
                approved.sort_unstable();
                approved.dedup();
                let p: Vec<&str> = pending.iter().map(String::as_str).collect();
                let a: Vec<&str> = approved.iter().map(String::as_str).collect();
                let waiting = if p.is_empty() {
                    "Nobody is waiting for your answer.".to_owned()
                } else {
                    format!("Waiting for your answer: {}.", p.join(", "))
                };
                let watching = if a.is_empty() {
                    "Nobody watches you yet.".to_owned()
                } else {
                    format!("Watching you: {}.", a.join(", "))
                };
                form(
                    "Watchers",
                    &format!("{waiting} {watching}\nApprove or deny who asked to watch you; remove or block watchers."),
                    vec![
                        field("approve", "list-multi", "Approve", &[], &opts(&p)),
                        field("deny", "list-multi", "Deny", &[], &opts(&p)),
                        field("remove", "list-multi", "Stop watching me", &[], &opts(&a)),
                        field(
                            "block",
                            "list-multi",
                            "Block",
                            &[],
                            &opts(&[&p[..], &a[..]].concat()),
                        ),
                    ],
                )
            }
            ("ring", Some(i)) => {
                // What rings now when no other rule applies: the form shows
                // that, and a submission changes only what was changed.
                let (mode, devices) = self.owners[i]
                    .rules
                    .iter()
                    .rev()
                    .find(|r| super::commands::is_catch_all(r))
                    .map_or((RingMode::Parallel, vec![]), |r| (r.mode, r.devices.clone()));
                let mode = match mode {
                    RingMode::Parallel => "parallel",
                    RingMode::Sequential => "sequential",
                    RingMode::Priority => "priority",
                };
                let mut yours: Vec<String> = self.owners[i]
                    .devices
                    .records
                    .keys()
                    .map(|d| d.resource().to_string())
                    .collect();
                yours.sort();
                yours.dedup();
                form(
                    "Ringing",
                    &format!(
                        "How your devices ring when no other rule applies. Devices: resource names in order, one per line; empty = every device that can take the call. Yours: {}.",
                        if yours.is_empty() { "none yet".to_owned() } else { yours.join(", ") }
                    ),
                    vec![
                        field("mode", "list-single", "Mode", &[mode.into()], &opts(&["parallel", "sequential", "priority"])),
                        field("devices", "text-multi", "Devices", &devices, &[]),
                    ],
                )
            }
            ("views", Some(i)) => {
                let o = &self.owners[i];
                let mine: Vec<&str> = o.views.defined.iter().map(|v| v.name.as_str()).collect();
                let mut all: Vec<&str> = crate::core::views::BUILT_IN.to_vec();
                all.extend(self.cfg.views.iter().map(|v| v.name.as_str()));
                all.extend(mine.iter().copied());
                let mut choices = vec!["default"];
                choices.extend(all.iter().copied());
                let default = o
                    .views
                    .default
                    .clone()
                    .unwrap_or_else(|| self.cfg.default_view.clone());
                form(
                    "Views",
                    &format!(
                        "{}\nAdd or change a view: its name, then classes, each with full, show or presence, days and hours, e.g. \"colleagues audio show mon-fri 09:00-18:00, chat presence\".",
                        self.views_text(i)
                    ),
                    vec![
                        field("add", "text-single", "Add or change a view", &[], &[]),
                        field("delete", "list-single", "Remove a view", &[], &opts(&mine)),
                        field("who", "text-single", "Put a contact or domain ...", &[], &[]),
                        field("view", "list-single", "... in the view", &[], &opts(&choices)),
                        field("default", "list-single", "Everyone else sees", &[default], &opts(&all)),
                    ],
                )
            }
            ("preview", Some(_)) => form(
                "What a contact sees of me",
                "Whose view of you do you want to see?",
                vec![field("jid", "jid-single", "Contact", &[], &[])],
            ),
            ("dnd", Some(i)) => {
                let on: Vec<String> = self.owners[i]
                    .rules
                    .iter()
                    .filter(|r| is_dnd(r))
                    .flat_map(|r| r.classes.clone())
                    .collect();
                let classes: Vec<&str> = self
                    .cfg
                    .classes
                    .iter()
                    .filter(|c| c.jmi || !c.requires.is_empty())
                    .map(|c| c.name.as_str())
                    .collect();
                form(
                    "Do not disturb",
                    "Calls of the checked classes get busy.",
                    vec![field(
                        "classes",
                        "list-multi",
                        "Classes",
                        &on,
                        &opts(&classes),
                    )],
                )
            }
            ("devices", Some(i)) => {
                let listing = self.devices_text(now, i);
                let mut names: Vec<String> = self.owners[i]
                    .devices
                    .records
                    .keys()
                    .map(|d| d.resource().to_string())
                    .collect();
                names.sort();
                names.dedup();
                let n: Vec<&str> = names.iter().map(String::as_str).collect();
                form(
                    "Devices",
                    &format!("{listing}\nYou may give a device a label."),
                    vec![
                        field("device", "list-single", "Device", &[], &opts(&n)),
                        field("label", "text-single", "Label", &[], &[]),
                    ],
                )
            }
            ("rules", Some(i)) => {
                let listing = self.rules_text(i);
                form(
                    "Ring rules",
                    &format!("{listing}\nAdd a rule (it becomes rule 1), e.g. \"video from bob@example.org mon-fri 09:00-17:00 ring sequential phone laptop\", or remove one by number."),
                    vec![field("add", "text-single", "Add", &[], &[]), field("delete", "text-single", "Remove rule number", &[], &[])],
                )
            }
            ("privacy", Some(i)) => {
                let o = &self.owners[i];
                let calls = match o.candidates {
                    super::CandidatePolicy::Direct => "direct",
                    super::CandidatePolicy::RelayOnly => "relay-only",
                };
                let watchers = match o.watchers.policy {
                    super::SubscriptionPolicy::Ask => "ask",
                    super::SubscriptionPolicy::Open => "open",
                };
                let encryption = if o.omemo { "on" } else { "off" };
                form(
                    "Privacy",
                    "relay-only: callers never learn your devices' IP addresses. ask: you approve each watcher. Encryption on: contacts can encrypt (OMEMO) to your address and see your OMEMO device ids and public keys.",
                    vec![
                        field("calls", "list-single", "Calls", &[calls.into()], &opts(&["direct", "relay-only"])),
                        field("watchers", "list-single", "Watchers", &[watchers.into()], &opts(&["ask", "open"])),
                        field("encryption", "list-single", "Encryption (OMEMO)", &[encryption.into()], &opts(&["on", "off"])),
                    ],
                )
            }
            ("unlink", Some(i)) => {
                let accounts: Vec<(String, String)> = self
                    .linked_accounts(i)
                    .iter()
                    .map(|a| (a.to_string(), a.to_string()))
                    .collect();
                form(
                    "Unlink an account",
                    "It stops being yours at once: its devices no longer count, and it can no longer change anything here.",
                    vec![field("account", "list-single", "Account", &[], &accounts)],
                )
            }
            ("contact", Some(_)) => form(
                "Add a contact",
                "They are asked for their presence from your address, and a request from their address here appears in your client: accept it to add them to your contacts.",
                vec![
                    field("jid", "jid-single", "Address", &[], &[]),
                    field("name", "text-single", "Name (optional)", &[], &[]),
                ],
            ),
            ("link", Some(_)) => form(
                "Link an account",
                "That account is sent a one-time code; it becomes yours once it sends \"link confirm <code>\" back.",
                vec![field("account", "jid-single", "Account", &[], &[])],
            ),
            ("unregister", Some(_)) => form(
                "Unregister",
                "Your address goes away; watchers are told.",
                vec![field(
                    "confirm",
                    "boolean",
                    "Yes, remove my address",
                    &["0".into()],
                    &[],
                )],
            ),
            (node, owner) => {
                warn!(node, ?owner, "no form for this command node");
                return None;
            }
        };
        Some(form)
    }

    /// The commands a submitted form stands for, in the order they apply,
    /// and what to say when there are none; refused when the form
    /// contradicts itself.
    fn form_commands(
        &self,
        node: &str,
        i: OwnerId,
        x: &Element,
    ) -> Result<(Vec<Command>, &'static str), Refusal> {
        let jids = |var: &str| {
            let mut v: Vec<BareJid> = values(x, var)
                .into_iter()
                .filter_map(|v| BareJid::new(&v).ok())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let nothing = "Nothing changed.";
        let commands = match node {
            "watchers" => {
                let yes = jids("approve");
                let mut no = jids("deny");
                no.extend(jids("remove"));
                if let Some(j) = yes.iter().find(|j| no.contains(j)) {
                    return Err(Refusal::Text(format!(
                        "{j} is both approved and refused: choose one."
                    )));
                }
                let block = jids("block")
                    .into_iter()
                    .map(|j| Command::Block(j.to_string()));
                yes.into_iter()
                    .map(Command::Approve)
                    .chain(no.into_iter().map(Command::Deny))
                    .chain(block)
                    .collect()
            }
            "ring" => {
                let mode = match values(x, "mode").first().map(String::as_str) {
                    Some("sequential") => RingMode::Sequential,
                    Some("priority") => RingMode::Priority,
                    _ => RingMode::Parallel,
                };
                let devices = values(x, "devices")
                    .iter()
                    .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .collect();
                vec![Command::Ring(mode, devices)]
            }
            "dnd" => {
                let on = values(x, "classes");
                let rules = &self.owners[i].rules;
                self.cfg
                    .classes
                    .iter()
                    .map(|c| &c.name)
                    .filter(|c| {
                        let has = rules
                            .iter()
                            .any(|r| is_dnd(r) && r.classes == [(*c).clone()]);
                        on.contains(c) != has
                    })
                    .map(|c| Command::Dnd(Some(c.clone()), on.contains(c)))
                    .collect()
            }
            "views" => {
                let o = &self.owners[i];
                let mut commands = vec![];
                if let Some(name) = values(x, "delete").into_iter().find(|v| !v.is_empty()) {
                    commands.push(Command::ViewDel(name));
                }
                if let Some(add) = values(x, "add").into_iter().find(|v| !v.trim().is_empty()) {
                    let mut words = add.split_whitespace().map(str::to_owned);
                    if let Some(name) = words.next() {
                        commands.push(Command::ViewAdd(name.to_ascii_lowercase(), words.collect()));
                    }
                }
                let who = values(x, "who").into_iter().find(|v| !v.trim().is_empty());
                let view = values(x, "view").into_iter().find(|v| !v.is_empty());
                match (who, view) {
                    (Some(who), Some(view)) => commands.push(Command::ViewSet(
                        who.trim().trim_start_matches("xmpp:").to_ascii_lowercase(),
                        view,
                    )),
                    (Some(_), None) => {
                        return Err(Refusal::Text("Say which view the contact goes in.".into()))
                    }
                    _ => {}
                }
                let current = o.views.default.as_deref().unwrap_or(&self.cfg.default_view);
                if let Some(d) = values(x, "default").into_iter().find(|v| !v.is_empty()) {
                    if d != current {
                        commands.push(Command::ViewSet("default".into(), d));
                    }
                }
                commands
            }
            "preview" => match jids("jid").into_iter().next() {
                Some(jid) => vec![Command::Preview(jid)],
                None => return Err(Refusal::Text("No address given.".into())),
            },
            "devices" => match (values(x, "device").pop(), values(x, "label").pop()) {
                (Some(device), Some(label)) => vec![Command::Label(device, label)],
                _ => vec![],
            },
            "rules" => {
                // The numbers are those the form showed: deleting goes
                // before adding, which renumbers.
                let delete = values(x, "delete")
                    .into_iter()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .map(Command::RuleDel);
                let add = values(x, "add").into_iter().next().map(|add| {
                    Command::RuleAdd(add.split_whitespace().map(str::to_owned).collect())
                });
                delete.into_iter().chain(add).collect()
            }
            "privacy" => ["calls", "watchers", "encryption"]
                .into_iter()
                .filter_map(|key| {
                    let v = values(x, key).into_iter().next()?;
                    Some(Command::Privacy(Some((key.to_owned(), v))))
                })
                .collect(),
            "unlink" | "link" => match jids("account").into_iter().next() {
                Some(a) if node == "link" => vec![Command::Link(a)],
                Some(a) => vec![Command::Unlink(Some(a))],
                None => return Err(Refusal::Text("No account given.".into())),
            },
            "contact" => match jids("jid").into_iter().next() {
                Some(jid) => {
                    let name = values(x, "name")
                        .into_iter()
                        .next()
                        .filter(|n| !n.trim().is_empty());
                    vec![Command::ContactAdd(jid, name)]
                }
                None => return Err(Refusal::Text("No address given.".into())),
            },
            "unregister" => match values(x, "confirm").first().map(String::as_str) {
                Some("1") | Some("true") => vec![Command::Unregister(true)],
                _ => return Ok((vec![], "Kept: you did not confirm.")),
            },
            _ => vec![],
        };
        Ok((commands, nothing))
    }

    /// Applies a submitted form, all of it or, refused, none of it.
    fn submit(
        &mut self,
        now: Time,
        node: &str,
        owner: Option<OwnerId>,
        from: &Jid,
        x: &Element,
    ) -> Result<String, Refusal> {
        debug!(node, "ad-hoc submission");
        let Some(i) = owner else {
            if node != "register" {
                return Ok("Nothing to do.".into());
            }
            let name = values(x, "name").into_iter().next();
            return Ok(self.register(from.to_bare(), name.map(|n| n.to_ascii_lowercase())));
        };
        let (commands, if_none) = self.form_commands(node, i, x)?;
        // A view the same form adds may be named by it.
        let added: Vec<&String> = commands
            .iter()
            .filter_map(|c| match c {
                Command::ViewAdd(name, _) => Some(name),
                _ => None,
            })
            .collect();
        for c in &commands {
            match c {
                Command::ViewSet(who, view) if added.contains(&view) => self.check_command(
                    i,
                    &Command::ViewSet(who.clone(), crate::core::views::EVERYTHING.into()),
                )?,
                c => self.check_command(i, c)?,
            }
        }
        let mut notes = vec![];
        for c in commands {
            notes.push(self.run_command(now, i, c)?);
        }
        // Every privacy change answers with all the settings: the last says it.
        if node == "privacy" && notes.len() > 1 {
            notes.drain(..notes.len() - 1);
        }
        Ok(if notes.is_empty() {
            if_none.to_owned()
        } else {
            notes.join("\n")
        })
    }
}
