//! Per-class aggregation of device presence (a pure function) and the
//! presence stanzas a class resource publishes.
//!
//! Like Prosody's `util/presence.lua`, choosing what a watcher sees is a
//! function of the live devices only: no state, no I/O. The core compares
//! the result with what it last published and sends only changes.

use chrono::{DateTime, FixedOffset, SecondsFormat};
use minidom::Element;

use super::devices::{ClassDef, DeviceMap, Show};
use super::stanza::{self, element, ns, text_element};

/// What one class resource shows while available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPresence {
    /// The most available show among qualifying devices.
    pub show: Show,
    /// The status text of that device (already checked for secrets).
    pub status: Option<String>,
    /// XEP-0319: set only when every qualifying device is idle; the latest
    /// activity among them.
    pub idle_since: Option<DateTime<FixedOffset>>,
}

/// What was last published for a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Nothing yet this run: the first aggregate is always sent, so that
    /// watchers who saw an older state (before a restart) are corrected.
    Unknown,
    /// `unavailable`.
    Unavailable,
    /// Available with this state.
    Available(ClassPresence),
}

/// What one owner's watchers last heard, view by view and class by class,
/// and when they hear next: the publishing part of an owner.
#[derive(Debug, Clone)]
pub(super) struct Publishing {
    /// By view name (DESIGN.md section 13): what its watchers last heard.
    /// A view without watchers has no entry (it would go stale).
    published: std::collections::HashMap<String, Vec<Published>>,
    classes: usize,
    /// When her watchers are due to hear her latest change (the core
    /// keeps every owner's in one time-ordered set too).
    pub(super) due: Option<super::Time>,
    /// When her watchers last heard a change of hers: a change within
    /// `coalesce_ms` after it waits for the window's end.
    pub(super) last_publish: Option<super::Time>,
}

impl Publishing {
    /// Nothing heard yet this run, for `classes` classes.
    pub(super) fn new(classes: usize) -> Publishing {
        Publishing {
            published: Default::default(),
            classes,
            due: None,
            last_publish: None,
        }
    }

    /// Class `class` is now `state` for the watchers of view `view`:
    /// records it and says whether that is news to them (the first state
    /// of a run always is: watchers may have heard an older one before a
    /// restart).
    pub(super) fn update(
        &mut self,
        view: &str,
        class: usize,
        state: Option<&ClassPresence>,
    ) -> bool {
        let classes = self.classes;
        let heard = match self.published.get_mut(view) {
            Some(h) => h,
            None => self
                .published
                .entry(view.to_owned())
                .or_insert_with(|| vec![Published::Unknown; classes]),
        };
        let Some(slot) = heard.get_mut(class) else {
            return false;
        };
        let changed = match (&*slot, state) {
            (Published::Unknown, _) => true,
            (Published::Unavailable, None) => false,
            (Published::Available(old), Some(new)) => old != new,
            _ => true,
        };
        if changed {
            *slot = match state {
                Some(p) => Published::Available(p.clone()),
                None => Published::Unavailable,
            };
        }
        changed
    }

    /// What the watchers of `view` last heard of `class`.
    pub(super) fn heard(&self, view: &str, class: usize) -> &Published {
        self.published
            .get(view)
            .and_then(|h| h.get(class))
            .unwrap_or(&Published::Unknown)
    }

    /// Whether view `view` has watchers who heard something.
    pub(super) fn has_view(&self, view: &str) -> bool {
        self.published.contains_key(view)
    }

    /// View `view`'s watchers heard `shown` (a new view's first watcher,
    /// told directly).
    pub(super) fn set_view(&mut self, view: &str, shown: &[Option<ClassPresence>]) {
        let heard = shown
            .iter()
            .map(|s| match s {
                Some(p) => Published::Available(p.clone()),
                None => Published::Unavailable,
            })
            .collect();
        self.published.insert(view.to_owned(), heard);
    }

    /// Only views in `in_use` have watchers: the others' entries go.
    pub(super) fn keep_views(&mut self, in_use: &[&str]) {
        self.published.retain(|v, _| in_use.contains(&v.as_str()));
    }

    /// View `view` changed what it shows: what its watchers heard is no
    /// longer what it would publish.
    pub(super) fn forget_view(&mut self, view: &str) {
        self.published.remove(view);
    }

    /// What watchers heard of every available class is stale (her photo
    /// changed): each is news again at the next publish.
    pub(super) fn forget_available(&mut self) {
        for heard in self.published.values_mut() {
            for slot in heard {
                if matches!(slot, Published::Available(_)) {
                    *slot = Published::Unknown;
                }
            }
        }
    }

    /// Whether the watchers of `view` last heard class `class` available.
    pub(super) fn is_available(&self, view: &str, class: usize) -> bool {
        matches!(self.heard(view, class), Published::Available(_))
    }
}

/// DESIGN.md section 3: the presence of class `class` given the live
/// devices. `None` = no qualifying device: unavailable. `status_ok` tells
/// whether a device's status text may be shown to watchers.
pub fn aggregate(
    devices: &DeviceMap,
    class: usize,
    status_ok: impl Fn(&str) -> bool,
) -> Option<ClassPresence> {
    let bit = 1u32 << class;
    let qualifying = || devices.iter().filter(move |(_, d)| d.classes & bit != 0);
    // Most available first; among equals the highest priority, then the
    // first full JID, so that the choice is stable across calls.
    let (_, best) =
        qualifying().reduce(|best, next| if better(next, best) { next } else { best })?;
    let idle_since = if qualifying().all(|(_, d)| d.idle_since.is_some()) {
        qualifying().filter_map(|(_, d)| d.idle_since).max()
    } else {
        None
    };
    Some(ClassPresence {
        show: best.show,
        status: best.status.clone().filter(|s| status_ok(s)),
        idle_since,
    })
}

/// The order [`aggregate`] picks the best device of a class by: most
/// available, then highest priority, then the first full JID.
fn better(
    (ja, a): (&jid::FullJid, &super::devices::Device),
    (jb, b): (&jid::FullJid, &super::devices::Device),
) -> bool {
    a.show
        .cmp(&b.show)
        .then(b.priority.cmp(&a.priority))
        .then(ja.cmp(jb))
        .is_lt()
}

/// Whether device `jid` changing from `old` to `new` may change what
/// [`aggregate`] says of any class, given the other devices in `devices`
/// (where `jid` may still hold `old`). `false` only when it cannot: its
/// classes and idle time stay, and in each of its classes it neither is
/// nor becomes the best device, so only its own status, show or priority
/// changed behind another device. Most device churn is such: then there
/// is nothing to publish, and nothing to schedule.
pub fn change_may_show(
    devices: &DeviceMap,
    jid: &jid::FullJid,
    old: &super::devices::Device,
    new: &super::devices::Device,
) -> bool {
    if old.classes != new.classes || old.idle_since != new.idle_since {
        return true;
    }
    if new.classes == 0 {
        return false;
    }
    // The best other device of each of its classes, in one pass.
    let mut rivals: [Option<(&jid::FullJid, &super::devices::Device)>; 32] = [None; 32];
    for (j, d) in devices.iter() {
        let mut bits = d.classes & new.classes;
        if bits == 0 || std::ptr::eq(d, old) || j == jid {
            continue;
        }
        while bits != 0 {
            let c = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            match rivals[c] {
                Some(best) if !better((j, d), best) => {}
                _ => rivals[c] = Some((j, d)),
            }
        }
    }
    let mut bits = new.classes;
    while bits != 0 {
        let c = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        match rivals[c] {
            Some(rival) if better(rival, (jid, old)) && better(rival, (jid, new)) => {}
            _ => return true,
        }
    }
    false
}

/// The stanza for `state` of class `def`, from `from` to `to`.
pub fn class_presence(
    def: &ClassDef,
    caps_node: &str,
    from: &str,
    to: &str,
    state: Option<&ClassPresence>,
) -> Element {
    let Some(state) = state else {
        return stanza::stanza("presence", from, to, Some("unavailable"));
    };
    let mut p = stanza::stanza("presence", from, to, None);
    if let Some(show) = state.show.as_xml() {
        p.append_child(text_element("show", ns::COMPONENT, show));
    }
    if let Some(status) = &state.status {
        p.append_child(text_element("status", ns::COMPONENT, status));
    }
    p.append_child(text_element(
        "priority",
        ns::COMPONENT,
        &def.priority.to_string(),
    ));
    p.append_child(element(
        "c",
        ns::CAPS,
        &[("hash", "sha-1"), ("node", caps_node), ("ver", &def.ver)],
    ));
    if let Some(since) = state.idle_since {
        let since = since.to_rfc3339_opts(SecondsFormat::Secs, true);
        p.append_child(element("idle", ns::IDLE, &[("since", &since)]));
    }
    p
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use jid::FullJid;

    use super::*;
    use crate::core::devices::{Device, Features};

    fn device(show: Show, priority: i8, classes: u32, idle: Option<&str>) -> Device {
        Device {
            show,
            status: Some(format!("{show:?}")),
            priority,
            idle_since: idle.map(|s| DateTime::parse_from_rfc3339(s).unwrap()),
            caps: None,
            features: Features::Known(Arc::new(BTreeSet::new())),
            classes,
        }
    }

    fn jid(s: &str) -> FullJid {
        FullJid::new(s).unwrap()
    }

    proptest::proptest! {
        /// Whenever [`change_may_show`] says a device's change cannot
        /// show, every class aggregates the same before and after it.
        #[test]
        fn a_change_said_invisible_changes_no_class(
            others in proptest::collection::vec((0u8..6, -2i8..3, 0u32..4, proptest::bool::ANY), 0..4),
            old in (0u8..6, -2i8..3, 0u32..4, proptest::bool::ANY),
            new in (0u8..6, -2i8..3, 0u32..4, proptest::bool::ANY),
            at in 0usize..5,
        ) {
            let shows = [Show::Chat, Show::Online, Show::Away, Show::Xa, Show::Dnd, Show::Online];
            let make = |(s, p, c, idle): (u8, i8, u32, bool), status: &str| {
                let mut d = device(shows[usize::from(s)], p, c, idle.then_some("2026-01-01T00:00:00Z"));
                d.status = Some(status.to_owned());
                d
            };
            let mut devices = DeviceMap::default();
            for (n, o) in others.iter().enumerate() {
                devices.insert(jid(&format!("a@x/{n}")), make(*o, "other"));
            }
            let me = jid(&format!("a@x/{at}"));
            let (old, new) = (make(old, "before"), make(new, "after"));
            devices.insert(me.clone(), old.clone());
            let before: Vec<_> = (0..2).map(|c| aggregate(&devices, c, |_| true)).collect();
            let shows_it = change_may_show(&devices, &me, &old, &new);
            devices.insert(me, new);
            let after: Vec<_> = (0..2).map(|c| aggregate(&devices, c, |_| true)).collect();
            if !shows_it {
                proptest::prop_assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn most_available_device_wins_with_its_status() {
        let mut d = DeviceMap::default();
        d.insert(jid("a@x/1"), device(Show::Dnd, 50, 1, None));
        d.insert(jid("a@x/2"), device(Show::Away, 0, 1, None));
        d.insert(jid("a@x/3"), device(Show::Xa, 0, 1, None));
        let p = aggregate(&d, 0, |_| true).unwrap();
        assert_eq!(p.show, Show::Away);
        assert_eq!(p.status.as_deref(), Some("Away"));
    }

    #[test]
    fn no_qualifying_device_means_unavailable() {
        let mut d = DeviceMap::default();
        d.insert(jid("a@x/1"), device(Show::Chat, 0, 0b01, None));
        assert!(aggregate(&d, 1, |_| true).is_none());
    }

    #[test]
    fn idle_only_when_every_qualifying_device_is_idle_and_latest_wins() {
        let mut d = DeviceMap::default();
        d.insert(
            jid("a@x/1"),
            device(Show::Away, 0, 1, Some("2026-11-24T08:00:00Z")),
        );
        d.insert(jid("a@x/2"), device(Show::Away, 0, 1, None));
        assert_eq!(aggregate(&d, 0, |_| true).unwrap().idle_since, None);
        d.insert(
            jid("a@x/2"),
            device(Show::Away, 0, 1, Some("2026-11-24T09:00:00Z")),
        );
        let since = aggregate(&d, 0, |_| true).unwrap().idle_since.unwrap();
        assert_eq!(since.to_rfc3339(), "2026-11-24T09:00:00+00:00");
    }

    #[test]
    fn a_status_that_would_leak_is_left_out() {
        let mut d = DeviceMap::default();
        d.insert(jid("a@x/1"), device(Show::Chat, 0, 1, None));
        assert_eq!(aggregate(&d, 0, |_| false).unwrap().status, None);
    }

    #[test]
    fn class_presence_carries_our_caps_and_priority() {
        let def = ClassDef::new("audio", vec!["urn:xmpp:jingle:1".into()], 5, true);
        let state = ClassPresence {
            show: Show::Dnd,
            status: Some("busy".into()),
            idle_since: None,
        };
        let p = class_presence(&def, "urn:node", "alice@d/audio", "bob@x", Some(&state));
        assert_eq!(p.get_child("show", ns::COMPONENT).unwrap().text(), "dnd");
        assert_eq!(p.get_child("priority", ns::COMPONENT).unwrap().text(), "5");
        let c = p.get_child("c", ns::CAPS).unwrap();
        assert_eq!(c.attr("node"), Some("urn:node"));
        assert_eq!(c.attr("ver"), Some(def.ver.as_str()));
        let gone = class_presence(&def, "urn:node", "alice@d/audio", "bob@x", None);
        assert_eq!(gone.attr("type"), Some("unavailable"));
    }
}
