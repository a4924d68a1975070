//! Views (DESIGN.md section 13): what each watcher may see.
//!
//! Like the access levels of Lync and Skype for Business, but hers to
//! define: a view names the classes a watcher sees and how much of each
//! (everything, the show alone, or only whether the class is available),
//! optionally only on some days and hours of her time zone. Watchers are
//! in views by JID, by domain or by default; a blocked watcher sees
//! nothing. Which view a watcher is in, and what a view shows of a state,
//! are pure functions here; the core builds each view's presences once
//! and copies them to the view's watchers.

use chrono::Weekday;
use jid::BareJid;
use serde::{Deserialize, Serialize};

use minidom::Element;

use super::devices::Show;
use super::presence::ClassPresence;
use super::presence::Published;
use super::rules::{parse_day, parse_window};
use super::{stanza, OwnerId, Time};

/// Every class, in full: what a watcher sees without views.
pub const EVERYTHING: &str = "everything";
/// Every class, only whether it is available (no show, text or idle).
pub const REACHABLE: &str = "reachable";
/// No class at all.
pub const NOTHING: &str = "nothing";
/// The built-in views, which every owner has.
pub const BUILT_IN: [&str; 3] = [EVERYTHING, REACHABLE, NOTHING];

/// How much of a class a view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Detail {
    /// Show, status text and idle time.
    #[default]
    Full,
    /// The show alone (away, busy...), no status text or idle time.
    Show,
    /// Only available or unavailable.
    Presence,
}

impl Detail {
    fn words(self) -> &'static str {
        match self {
            Detail::Full => "full",
            Detail::Show => "show",
            Detail::Presence => "presence",
        }
    }
}

/// One class a view shows, how much, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The class's name.
    pub class: String,
    /// How much of it.
    #[serde(default)]
    pub detail: Detail,
    /// Weekdays in her time zone; empty = every day.
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// Minutes since her local midnight, `[start, end)`; may span
    /// midnight; `None` = all day.
    #[serde(default)]
    pub window: Option<(u16, u16)>,
}

impl Shown {
    fn now(&self, weekday: Weekday, minute: u16) -> bool {
        // A window across midnight belongs to the day it starts on.
        let day = match self.window {
            Some((start, end)) if start > end && minute < end => weekday.pred(),
            _ => weekday,
        };
        (self.days.is_empty() || self.days.contains(&day))
            && match self.window {
                None => true,
                Some((start, end)) if start <= end => (start..end).contains(&minute),
                Some((start, end)) => minute >= start || minute < end,
            }
    }
}

/// A named view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Its name (`colleagues`).
    pub name: String,
    /// What it shows; the first entry for a class that holds now counts.
    pub shows: Vec<Shown>,
}

/// Her local weekday and minute, when a view is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Her weekday.
    pub weekday: Weekday,
    /// Minutes since her midnight.
    pub minute: u16,
}

impl View {
    /// The built-in view `name`, over the classes `classes`.
    pub fn built_in(name: &str, classes: &[&str]) -> Option<View> {
        let all = |detail| {
            classes
                .iter()
                .map(|c| Shown {
                    class: (*c).to_owned(),
                    detail,
                    days: vec![],
                    window: None,
                })
                .collect()
        };
        let shows = match name {
            EVERYTHING => all(Detail::Full),
            REACHABLE => all(Detail::Presence),
            NOTHING => vec![],
            _ => return None,
        };
        Some(View {
            name: name.to_owned(),
            shows,
        })
    }

    /// How much of `class` it shows at `at`, if anything.
    pub fn detail(&self, class: &str, at: LocalTime) -> Option<Detail> {
        self.shows
            .iter()
            .find(|s| s.class == class && s.now(at.weekday, at.minute))
            .map(|s| s.detail)
    }

    /// What a watcher in this view sees of `class` in `state` at `at`:
    /// `None` = unavailable.
    pub fn shows(
        &self,
        class: &str,
        state: Option<&ClassPresence>,
        at: LocalTime,
    ) -> Option<ClassPresence> {
        let state = state?;
        Some(match self.detail(class, at)? {
            Detail::Full => state.clone(),
            Detail::Show => ClassPresence {
                show: state.show,
                status: None,
                idle_since: None,
            },
            Detail::Presence => ClassPresence {
                show: Show::Online,
                status: None,
                idle_since: None,
            },
        })
    }

    /// Whether any of its entries depends on the time.
    pub fn timed(&self) -> bool {
        self.shows
            .iter()
            .any(|s| s.window.is_some() || !s.days.is_empty())
    }

    /// The minutes of the day (and whether days matter) at which what it
    /// shows may change: window edges, and midnight when it names days.
    pub fn edges(&self) -> Vec<u16> {
        let mut edges = vec![];
        for s in &self.shows {
            if let Some((a, b)) = s.window {
                edges.extend([a, b]);
            }
            if !s.days.is_empty() {
                edges.push(0);
            }
        }
        edges.sort_unstable();
        edges.dedup();
        edges
    }

    /// In words, for `views` and the ad-hoc form: `audio show mon-fri
    /// 09:00-18:00, chat presence`.
    pub fn describe(&self) -> String {
        if self.shows.is_empty() {
            return "nothing".into();
        }
        let parts: Vec<String> = self
            .shows
            .iter()
            .map(|s| {
                let mut w = format!("{} {}", s.class, s.detail.words());
                if !s.days.is_empty() {
                    let days: Vec<String> = s
                        .days
                        .iter()
                        .map(|d| d.to_string().to_ascii_lowercase())
                        .collect();
                    w.push(' ');
                    w.push_str(&days.join(","));
                }
                if let Some((a, b)) = s.window {
                    w.push_str(&format!(
                        " {:02}:{:02}-{:02}:{:02}",
                        a / 60,
                        a % 60,
                        b / 60,
                        b % 60
                    ));
                }
                w
            })
            .collect();
        parts.join(", ")
    }

    /// Parses what follows `view add <name>`: class names, each followed
    /// by its detail (`full`, `show`, `presence`; default full), days
    /// (`mon-fri`, `sat`) and a window (`09:00-18:00`). Commas are
    /// spaces.
    pub fn parse(name: &str, words: &[String], classes: &[&str]) -> Result<View, String> {
        let name = name.to_ascii_lowercase();
        if BUILT_IN.contains(&name.as_str()) {
            return Err(format!("{name} is a built-in view; pick another name."));
        }
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("A view's name is one word of letters, digits, - or _.".into());
        }
        let mut shows: Vec<Shown> = vec![];
        let words = words
            .iter()
            .flat_map(|w| w.split(','))
            .map(|w| w.trim().to_ascii_lowercase())
            .filter(|w| !w.is_empty());
        for w in words {
            if classes.contains(&w.as_str()) {
                shows.push(Shown {
                    class: w,
                    detail: Detail::Full,
                    days: vec![],
                    window: None,
                });
                continue;
            }
            let Some(last) = shows.last_mut() else {
                return Err(format!(
                    "Start with a class ({}), not {w:?}.",
                    classes.join(", ")
                ));
            };
            match w.as_str() {
                "full" => last.detail = Detail::Full,
                "show" => last.detail = Detail::Show,
                "presence" | "available" => last.detail = Detail::Presence,
                _ if parse_window(&w).is_some() => last.window = parse_window(&w),
                _ if parse_day(&w).is_some() => last.days.extend(parse_day(&w)),
                _ => match day_range(&w) {
                    Some(days) => last.days.extend(days),
                    None => {
                        return Err(format!(
                            "{w:?} is not a class ({}), a detail (full, show, presence), days \
                             (mon-fri) or hours (09:00-18:00).",
                            classes.join(", ")
                        ))
                    }
                },
            }
        }
        Ok(View { name, shows })
    }
}

/// `mon-fri` into its days.
fn day_range(w: &str) -> Option<Vec<Weekday>> {
    let (a, b) = w.split_once('-')?;
    let (first, last) = (parse_day(a)?, parse_day(b)?);
    let mut d = first;
    let mut days = vec![d];
    while d != last {
        d = d.succ();
        days.push(d);
    }
    Some(days)
}

/// Her views and who is in which (what the store keeps of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Views {
    /// The views she defined.
    #[serde(default)]
    pub defined: Vec<View>,
    /// Who is in which view: a bare JID or a domain, and the view's name.
    #[serde(default)]
    pub members: Vec<(String, String)>,
    /// The view of everyone else; `None` = the admin's default.
    #[serde(default)]
    pub default: Option<String>,
}

impl Views {
    /// The name of the view `watcher` is in, and why (`jid`, `domain` or
    /// `default`), with `fallback` as the default when she set none.
    pub fn name_for<'a>(&'a self, watcher: &str, fallback: &'a str) -> (&'a str, &'static str) {
        if self.members.is_empty() {
            return (self.default.as_deref().unwrap_or(fallback), "default");
        }
        let jid = watcher;
        if let Some((_, v)) = self.members.iter().find(|(who, _)| who == jid) {
            return (v, "jid");
        }
        // A bare JID's domain follows its '@' (a node has none).
        let domain = jid.split_once('@').map_or(jid, |(_, d)| d);
        if let Some((_, v)) = self.members.iter().find(|(who, _)| who == domain) {
            return (v, "domain");
        }
        (self.default.as_deref().unwrap_or(fallback), "default")
    }

    /// Her view `name`.
    pub fn defined(&self, name: &str) -> Option<&View> {
        self.defined.iter().find(|v| v.name == name)
    }

    /// Whether any view she may use depends on the time.
    pub fn timed(&self) -> bool {
        self.defined.iter().any(View::timed)
    }
}

impl super::Core {
    /// Her local weekday and minute now (views' days and hours).
    pub(super) fn local_at(&self, i: OwnerId) -> LocalTime {
        use chrono::{Datelike, Timelike};
        let t = super::local_time(self.wall_ms(self.clock), self.owners[i].timezone);
        LocalTime {
            weekday: t.weekday(),
            minute: (t.hour() * 60 + t.minute()) as u16,
        }
    }

    /// The name of the view `who` is in, and why: blocked, her own
    /// account (which sees everything), by JID, by domain, or by default.
    pub(super) fn view_name(&self, i: OwnerId, who: &BareJid) -> (&str, &'static str) {
        self.view_name_of(i, who.as_str())
    }

    /// [`Core::view_name`] for a bare JID's text (as her watcher list
    /// keeps them).
    pub(super) fn view_name_of(&self, i: OwnerId, who: &str) -> (&str, &'static str) {
        let o = &self.owners[i];
        if super::watchlist::listed_text(&o.watchers.blocked, who) {
            return (NOTHING, "blocked");
        }
        if self.out.secrets.account_of(who) == Some(i) {
            return (EVERYTHING, "your own account");
        }
        o.views.name_for(who, &self.cfg.default_view)
    }

    /// Owner `i`'s view `name`: hers, the admin's or a built-in one. A name
    /// that is gone (an admin's view removed from the config) is the
    /// admin's default, or everything.
    pub(super) fn view_named(&self, i: OwnerId, name: &str) -> &View {
        let known = |n: &str| {
            self.owners[i]
                .views
                .defined(n)
                .or_else(|| self.cfg.views.iter().find(|v| v.name == n))
                .or_else(|| self.built_in_views.iter().find(|v| v.name == n))
        };
        known(name)
            .or_else(|| known(&self.cfg.default_view))
            .unwrap_or(&self.built_in_views[0])
    }

    /// Whether owner `i` has a view called `name`.
    pub(super) fn has_view(&self, i: OwnerId, name: &str) -> bool {
        self.owners[i].views.defined(name).is_some()
            || self.cfg.views.iter().any(|v| v.name == name)
            || BUILT_IN.contains(&name)
    }

    /// Every class's state now, as her devices make it.
    pub(super) fn states(&self, i: OwnerId) -> Vec<Option<ClassPresence>> {
        (0..self.cfg.classes.len())
            .map(|c| self.aggregate(i, c))
            .collect()
    }

    /// What view `view` shows of `states` now, class by class.
    pub(super) fn shown_by(
        &self,
        i: OwnerId,
        view: &View,
        states: &[Option<ClassPresence>],
    ) -> Vec<Option<ClassPresence>> {
        let at = self.local_at(i);
        self.cfg
            .classes
            .iter()
            .zip(states)
            .map(|(def, s)| view.shows(&def.name, s.as_ref(), at))
            .collect()
    }

    /// What `who` may see of class `class` now (`None`: unavailable).
    pub(super) fn shown_to(
        &self,
        i: OwnerId,
        who: &BareJid,
        class: usize,
    ) -> Option<ClassPresence> {
        let (name, _) = self.view_name(i, who);
        let view = self.view_named(i, name);
        let def = self.cfg.classes.get(class)?;
        view.shows(
            &def.name,
            self.aggregate(i, class).as_ref(),
            self.local_at(i),
        )
    }

    /// Whether `who` may see class `class` at all now (available or not).
    pub(super) fn may_see(&self, i: OwnerId, who: &BareJid, class: usize) -> bool {
        let (name, _) = self.view_name(i, who);
        let view = self.view_named(i, name);
        self.cfg
            .classes
            .get(class)
            .is_some_and(|def| view.detail(&def.name, self.local_at(i)).is_some())
    }

    /// Whether nobody is in a view of her own choosing: all her
    /// watchers see everything, with no lookup per watcher.
    fn all_see_everything(&self, i: OwnerId) -> bool {
        let o = &self.owners[i];
        o.views.members.is_empty()
            && o.views.default.as_deref().unwrap_or(&self.cfg.default_view) == EVERYTHING
    }

    /// The views her subscribed watchers are in, each once, in name order.
    pub(super) fn views_in_use(&self, i: OwnerId) -> Vec<String> {
        let o = &self.owners[i];
        if self.all_see_everything(i) {
            return match o.watchers.subscribed().next() {
                Some(_) => vec![EVERYTHING.to_owned()],
                None => vec![],
            };
        }
        let names: std::collections::BTreeSet<&str> = o
            .watchers
            .subscribed()
            .map(|w| self.view_name_of(i, w).0)
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    /// Her subscribed watchers in view `view`.
    pub(super) fn watchers_in(&self, i: OwnerId, view: &str) -> Vec<String> {
        let o = &self.owners[i];
        let all = self.all_see_everything(i);
        o.watchers
            .subscribed()
            .filter(|w| all || self.view_name_of(i, w).0 == view)
            .map(|w| w.to_string())
            .collect()
    }

    /// Her subscribed watchers by the view they are in, in view order.
    pub(super) fn audience(&self, i: OwnerId) -> Vec<(String, Vec<String>)> {
        let o = &self.owners[i];
        // Nobody put anywhere and everything by default: one view, no
        // lookup per watcher (the common case, and the hot path).
        if self.all_see_everything(i) {
            let all: Vec<String> = o.watchers.subscribed().map(|w| w.to_string()).collect();
            return if all.is_empty() {
                vec![]
            } else {
                vec![(EVERYTHING.to_owned(), all)]
            };
        }
        let mut groups: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for w in o.watchers.subscribed() {
            let (name, _) = self.view_name_of(i, w);
            groups.entry(name).or_default().push(w.to_string());
        }
        groups
            .into_iter()
            .map(|(n, ws)| (n.to_owned(), ws))
            .collect()
    }

    /// The presences `to` (one of her watchers) receives now: each class
    /// his view shows available, or one `unavailable` if none.
    pub(super) fn presences_for(&self, i: OwnerId, to: &str) -> Vec<Element> {
        let who = jid::Jid::new(to).map(|j| j.to_bare()).ok();
        let states = self.states(i);
        let shown = match &who {
            Some(w) => {
                let (name, _) = self.view_name(i, w);
                self.shown_by(i, self.view_named(i, name), &states)
            }
            None => vec![None; states.len()],
        };
        let mut out: Vec<Element> = shown
            .iter()
            .enumerate()
            .filter_map(|(c, s)| s.as_ref().map(|s| self.class_presence(i, c, to, Some(s))))
            .collect();
        if out.is_empty() {
            let virtual_jid = self.owners[i].virtual_jid.to_string();
            out.push(stanza::stanza(
                "presence",
                &virtual_jid,
                to,
                Some("unavailable"),
            ));
        }
        out
    }

    /// Changes her views with `change` (`redefined`: a view whose
    /// definition changed), then tells each watcher whose view or view's
    /// content changed exactly the difference: classes that appear, change
    /// or go (`unavailable`), and nothing he may not see.
    pub(super) fn regroup(
        &mut self,
        i: OwnerId,
        redefined: Option<&str>,
        change: impl FnOnce(&mut Views),
    ) {
        let before: Vec<(String, String)> = self.owners[i]
            .watchers
            .subscribed()
            .map(|w| (w.to_owned(), self.view_name_of(i, w).0.to_owned()))
            .collect();
        // What each view's watchers heard, before anything changes.
        let classes = self.cfg.classes.len();
        let mut heard: std::collections::HashMap<String, Vec<Published>> = Default::default();
        for (_, v) in &before {
            if !heard.contains_key(v) {
                let p = &self.owners[i].publishing;
                let h = (0..classes).map(|c| p.heard(v, c).clone()).collect();
                heard.insert(v.clone(), h);
            }
        }
        let in_use_before: Vec<String> = heard.keys().cloned().collect();
        change(&mut self.owners[i].views);
        if let Some(v) = redefined {
            self.owners[i].publishing.forget_view(v);
        }
        let states = self.states(i);
        let mut out = vec![];
        let mut fresh: std::collections::HashMap<String, Vec<Option<ClassPresence>>> =
            Default::default();
        for (w, old) in before {
            let new = self.view_name_of(i, &w).0.to_owned();
            if new == old && redefined != Some(old.as_str()) {
                continue;
            }
            let shown = match fresh.get(&new) {
                Some(s) => s.clone(),
                None => {
                    let s = self.shown_by(i, self.view_named(i, &new), &states);
                    fresh.insert(new.clone(), s.clone());
                    s
                }
            };
            let to = w.to_string();
            for (c, now) in shown.iter().enumerate() {
                let was = heard
                    .get(&old)
                    .and_then(|h| h.get(c))
                    .unwrap_or(&Published::Unknown);
                // Unknown (nothing published yet this run: he may still
                // hold what he heard before a restart) is told either way.
                let same = match (was, now) {
                    (Published::Available(a), Some(b)) => a == b,
                    (Published::Unavailable, None) => true,
                    _ => false,
                };
                if !same {
                    out.push(self.class_presence(i, c, &to, now.as_ref()));
                }
            }
        }
        // A view left without watchers forgets what they heard; one that
        // had none starts from what its new ones got.
        let in_use_after = self.views_in_use(i);
        for v in &in_use_before {
            if !in_use_after.contains(v) {
                self.owners[i].publishing.forget_view(v);
            }
        }
        for (v, shown) in &fresh {
            let p = &mut self.owners[i].publishing;
            if !in_use_before.contains(v) || !p.has_view(v) {
                p.set_view(v, shown);
            }
        }
        for s in out {
            self.out.send(s);
        }
        self.schedule_view_edge(i);
    }

    /// Her watchers hear again when a view of theirs changes by the clock.
    pub(super) fn schedule_view_edge(&mut self, i: OwnerId) {
        let names = self.views_in_use(i);
        let in_use: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Some(at) = self.next_view_edge(i, &in_use) {
            self.schedule_publish(i, at);
        }
    }

    /// When what her views show next changes by the clock alone (a
    /// window opens or closes, a day starts), in core time; `None` when
    /// no view of a watcher of hers depends on the time.
    pub(super) fn next_view_edge(&self, i: OwnerId, in_use: &[&str]) -> Option<Time> {
        use chrono::{Duration, TimeZone};
        let mut edges: Vec<u16> = in_use
            .iter()
            .map(|n| self.view_named(i, n))
            .filter(|v| v.timed())
            .flat_map(View::edges)
            .collect();
        if edges.is_empty() {
            return None;
        }
        edges.sort_unstable();
        edges.dedup();
        let tz = self.owners[i].timezone;
        let wall = self.wall_ms(self.clock);
        let local = super::local_time(wall, tz);
        let today = local.date_naive();
        let next = (0..=1)
            .flat_map(|d| edges.iter().map(move |e| (d, *e)))
            .filter_map(|(d, e)| {
                let day = today + Duration::days(d);
                let naive = day.and_hms_opt(u32::from(e / 60) % 24, u32::from(e % 60), 0)?;
                let at = tz.from_local_datetime(&naive).earliest()?;
                let ms = u64::try_from(at.timestamp_millis()).ok()?;
                (ms > wall).then_some(ms)
            })
            .min()?;
        Some(self.clock.plus_ms(next - wall))
    }
}

impl super::Core {
    /// The classes (bits) of the owner `target` names that `from` may not
    /// call through us: those his view hides, unless a rule of hers names
    /// him (his JID or domain) for the class.
    pub(super) fn hidden_classes(&self, from: &jid::Jid, target: &super::router::Target) -> u32 {
        let super::router::Target::Owner { owner: i, .. } = *target else {
            return 0;
        };
        let who = from.to_bare();
        if self.out.secrets.account_owner(&who) == Some(i) {
            return 0;
        }
        let mut hidden = 0;
        for (c, def) in self.cfg.classes.iter().enumerate() {
            if self.may_see(i, &who, c) {
                continue;
            }
            let named = self.owners[i].rules.iter().any(|r| {
                !r.reject
                    && !r.only_candidates
                    && (r.classes.is_empty() || r.classes.contains(&def.name))
                    && r.callers.iter().any(|m| match m {
                        super::rules::CallerMatch::Jid(j) => *j == who,
                        super::rules::CallerMatch::Domain(d) => d == who.domain().as_str(),
                        _ => false,
                    })
            });
            if !named {
                hidden |= 1 << c;
            }
        }
        hidden
    }
}

/// One class presence as a user would say it: `alice@D/audio:
/// available, away ("Lunch"), idle since ...`.
pub fn describe_presence(p: &Element) -> String {
    use super::stanza::ns;
    let from = p.attr("from").unwrap_or_default();
    if p.attr("type") == Some("unavailable") {
        return format!("{from}: unavailable");
    }
    let mut words = format!("{from}: available");
    if let Some(show) = p.get_child("show", ns::COMPONENT) {
        let show = Show::from_xml(&show.text()).map_or("online", Show::words);
        words.push_str(&format!(", {show}"));
    }
    if let Some(status) = p.get_child("status", ns::COMPONENT) {
        words.push_str(&format!(" ({:?})", status.text()));
    }
    if let Some(idle) = p.get_child("idle", ns::IDLE) {
        words.push_str(&format!(
            ", idle since {}",
            idle.attr("since").unwrap_or("?")
        ));
    }
    words
}

impl super::Core {
    /// `views`: her views, the admin's and the built-in ones, and who is
    /// in which.
    pub(super) fn views_text(&self, i: OwnerId) -> String {
        use std::fmt::Write as _;
        let o = &self.owners[i];
        let mut out = String::from("Your views (what each contact sees of you):\n");
        for v in &self.built_in_views {
            let _ = writeln!(out, "• {} (built in): {}", v.name, v.describe());
        }
        for v in &self.cfg.views {
            let _ = writeln!(out, "• {} (of this service): {}", v.name, v.describe());
        }
        for v in &o.views.defined {
            let _ = writeln!(out, "• {}: {}", v.name, v.describe());
        }
        if o.views.members.is_empty() {
            out.push_str("Nobody is in a view of their own.\n");
        } else {
            out.push_str("Who is in which:\n");
            for (who, v) in &o.views.members {
                let _ = writeln!(out, "• {who}: {v}");
            }
        }
        let default = o.views.default.as_deref().unwrap_or(&self.cfg.default_view);
        let _ = write!(
            out,
            "Everyone else sees {default}. Your own accounts always see everything; blocked contacts nothing."
        );
        out
    }

    /// `preview <jid>`: what `who` receives of her now, stanza by
    /// stanza, and who his call would ring.
    pub(super) fn preview_text(&self, i: OwnerId, who: &BareJid) -> String {
        use std::fmt::Write as _;
        let o = &self.owners[i];
        let (view, why) = self.view_name(i, who);
        let mut out = match why {
            "default" => format!("{who} is in no view of their own: your default, {view}.\n"),
            "blocked" => format!("{who} is blocked: they see nothing.\n"),
            "your own account" => format!("{who} is your own account: it sees everything.\n"),
            _ => {
                let by = if why == "jid" {
                    "by address"
                } else {
                    "by domain"
                };
                format!("{who} is in your view {view} ({by}).\n")
            }
        };
        if o.watchers.is_subscribed(who) {
            out.push_str("They watch you, and have now:\n");
        } else {
            out.push_str("They do not watch you; if they did, they would have now:\n");
        }
        for p in self.presences_for(i, who.as_str()) {
            let _ = writeln!(out, "• {}", describe_presence(&p));
        }
        let hidden = self.hidden_classes(
            &jid::Jid::from(who.clone()),
            &super::router::Target::Owner {
                owner: i,
                resource: super::router::Resource::Bare,
            },
        );
        for (c, def) in self.cfg.classes.iter().enumerate() {
            if !def.jmi {
                continue;
            }
            let ring = if hidden & (1 << c) != 0 {
                "nobody: their view hides it (they get busy)".to_owned()
            } else {
                self.ring_words(self.clock, i, c, who)
            };
            let _ = writeln!(out, "Their {} call now would ring: {ring}", def.name);
        }
        out.trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(weekday: Weekday, h: u16, m: u16) -> LocalTime {
        LocalTime {
            weekday,
            minute: h * 60 + m,
        }
    }

    fn state() -> ClassPresence {
        ClassPresence {
            show: Show::Away,
            status: Some("Lunch".into()),
            idle_since: None,
        }
    }

    const CLASSES: [&str; 4] = ["chat", "audio", "video", "files"];

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn each_detail_shows_what_it_says() {
        let v = View::parse(
            "colleagues",
            &words("audio show, chat presence, video"),
            &CLASSES,
        )
        .unwrap();
        let now = at(Weekday::Mon, 10, 0);
        let s = state();
        assert_eq!(v.shows("video", Some(&s), now), Some(s.clone()));
        let audio = v.shows("audio", Some(&s), now).unwrap();
        assert_eq!((audio.show, audio.status), (Show::Away, None));
        let chat = v.shows("chat", Some(&s), now).unwrap();
        assert_eq!((chat.show, chat.status), (Show::Online, None));
        assert_eq!(v.shows("files", Some(&s), now), None, "not in the view");
        assert_eq!(v.shows("video", None, now), None, "unavailable stays so");
        assert_eq!(v.describe(), "audio show, chat presence, video full");
    }

    #[test]
    fn windows_hold_on_their_days_and_across_midnight() {
        let v = View::parse("work", &words("audio show mon-fri 09:00-18:00"), &CLASSES).unwrap();
        let s = state();
        assert!(v
            .shows("audio", Some(&s), at(Weekday::Fri, 17, 59))
            .is_some());
        assert!(v
            .shows("audio", Some(&s), at(Weekday::Fri, 18, 0))
            .is_none());
        assert!(v
            .shows("audio", Some(&s), at(Weekday::Sat, 10, 0))
            .is_none());
        assert_eq!(v.edges(), [0, 540, 1080]);
        // A night window on Friday runs into Saturday morning, not into
        // Friday morning.
        let night = View::parse("night", &words("chat fri 22:00-06:00"), &CLASSES).unwrap();
        assert!(night
            .shows("chat", Some(&s), at(Weekday::Fri, 23, 0))
            .is_some());
        assert!(night
            .shows("chat", Some(&s), at(Weekday::Sat, 5, 59))
            .is_some());
        assert!(night
            .shows("chat", Some(&s), at(Weekday::Fri, 5, 0))
            .is_none());
        assert!(night
            .shows("chat", Some(&s), at(Weekday::Sat, 6, 0))
            .is_none());
    }

    #[test]
    fn watchers_fall_into_views_by_jid_then_domain_then_default() {
        let views = Views {
            members: vec![
                ("example.org".into(), "colleagues".into()),
                ("boss@example.org".into(), "everything".into()),
            ],
            default: Some("reachable".into()),
            ..Views::default()
        };
        let name = |j: &str| views.name_for(BareJid::new(j).unwrap().as_str(), EVERYTHING);
        assert_eq!(name("boss@example.org"), ("everything", "jid"));
        assert_eq!(name("carol@example.org"), ("colleagues", "domain"));
        assert_eq!(name("dave@example.net"), ("reachable", "default"));
        assert_eq!(
            Views::default().name_for(BareJid::new("x@y").unwrap().as_str(), "nothing"),
            ("nothing", "default")
        );
    }

    #[test]
    fn bad_views_are_refused_with_why() {
        assert!(View::parse("everything", &words("chat"), &CLASSES).is_err());
        assert!(View::parse("a b", &words("chat"), &CLASSES).is_err());
        let e = View::parse("x", &words("show chat"), &CLASSES).unwrap_err();
        assert!(e.starts_with("Start with a class"), "{e}");
        let e = View::parse("x", &words("chat loud"), &CLASSES).unwrap_err();
        assert!(e.contains("\"loud\""), "{e}");
    }
}
