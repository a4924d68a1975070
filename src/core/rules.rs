//! The owner's ring rules (DESIGN.md section 6) -> a ring plan.
//!
//! An ordered list; the first rule that matches the call decides. Matching
//! and planning are pure functions of the rule list, the call (class,
//! caller), the owner's local time and the live devices, so they are
//! tested without a clock: the core converts `now` to the owner's time
//! zone and passes the weekday and minute in.

use chrono::Weekday;
use jid::{BareJid, FullJid, Jid};
use serde::{Deserialize, Serialize};

use super::devices::Show;
use super::CandidatePolicy;

/// Who a rule is for (stored as its text form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CallerMatch {
    /// Exactly this bare JID.
    Jid(BareJid),
    /// Anyone on this domain.
    Domain(String),
    /// Anyone who watches the owner (an approved subscription).
    Watchers,
    /// Anyone at all.
    Anyone,
}

impl TryFrom<String> for CallerMatch {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        CallerMatch::parse(&s)
            .ok_or_else(|| format!("{s:?} is not a JID, a domain, watchers or anyone"))
    }
}

impl From<CallerMatch> for String {
    fn from(c: CallerMatch) -> String {
        match c {
            CallerMatch::Jid(j) => j.to_string(),
            CallerMatch::Domain(d) => d,
            CallerMatch::Watchers => "watchers".into(),
            CallerMatch::Anyone => "anyone".into(),
        }
    }
}

impl CallerMatch {
    /// Reads `bob@example.org`, `example.org`, `watchers` or `anyone`.
    pub fn parse(s: &str) -> Option<CallerMatch> {
        match s.trim() {
            "anyone" | "*" => Some(CallerMatch::Anyone),
            "watchers" => Some(CallerMatch::Watchers),
            s if s.contains('@') => BareJid::new(s).ok().map(CallerMatch::Jid),
            s if !s.is_empty() && !s.contains('/') => {
                Some(CallerMatch::Domain(s.to_ascii_lowercase()))
            }
            _ => None,
        }
    }

    fn matches(&self, caller: &BareJid, is_watcher: bool) -> bool {
        match self {
            CallerMatch::Jid(j) => j == caller,
            CallerMatch::Domain(d) => caller.domain().as_str() == d,
            CallerMatch::Watchers => is_watcher,
            CallerMatch::Anyone => true,
        }
    }
}

/// How the chosen devices ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RingMode {
    /// All at once.
    #[default]
    Parallel,
    /// One after the other, `step` each, in the listed order.
    Sequential,
    /// Highest XMPP priority first, equal priorities together, `step` each.
    Priority,
}

/// What happens when nobody answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoAnswer {
    /// The caller is told (reject / session-terminate with timeout).
    #[default]
    Reject,
    /// As `reject`, and the owner gets a missed-call chat message.
    Message,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Classes it applies to; empty = every class.
    pub classes: Vec<String>,
    /// Callers it applies to; empty = anyone.
    pub callers: Vec<CallerMatch>,
    /// Weekdays it applies on (owner's time zone); empty = every day.
    pub days: Vec<Weekday>,
    /// Minutes since local midnight, `[start, end)`; `start > end` spans
    /// midnight. `None` = all day.
    pub window: Option<(u16, u16)>,
    /// Device state: matches only while her most available device of the
    /// class shows this (`when away`). `None` = any state.
    #[serde(default)]
    pub when: Option<Show>,
    /// How devices ring; ringing nobody = "do not disturb" for the match.
    pub mode: RingMode,
    /// Which devices, by resource name, in order; empty = all qualifying.
    pub devices: Vec<String>,
    /// Leave out devices that are `xa` too (`dnd` ones never ring).
    pub skip_busy: bool,
    /// Each step of sequential or priority ringing, in ms.
    pub step_ms: u64,
    /// How long the whole call rings, in ms.
    pub timeout_ms: u64,
    /// What happens when nobody answers.
    pub on_no_answer: NoAnswer,
    /// Ring nobody: the caller is busy at once.
    pub reject: bool,
    /// The candidate policy for the calls it matches (DESIGN.md section
    /// 5, per caller by rule); `None` = her own setting.
    #[serde(default)]
    pub candidates: Option<CandidatePolicy>,
    /// Sets only `candidates` and leaves ringing to the rules after it
    /// (`rule add from anyone relay-only`).
    #[serde(default)]
    pub only_candidates: bool,
    /// Also ring her devices that are asleep (DESIGN.md section 12):
    /// a propose to her account, which her server keeps and pushes.
    #[serde(default = "yes")]
    pub asleep: bool,
}

fn yes() -> bool {
    true
}

impl Rule {
    /// DESIGN.md section 6: the rule used when none matches (or none
    /// exists): parallel, every qualifying device that is not `dnd`, 30 s.
    pub fn default_rule(timeout_ms: u64) -> Rule {
        Rule {
            classes: vec![],
            callers: vec![],
            days: vec![],
            window: None,
            when: None,
            mode: RingMode::Parallel,
            devices: vec![],
            skip_busy: false,
            step_ms: 10_000,
            timeout_ms,
            on_no_answer: NoAnswer::Reject,
            reject: false,
            candidates: None,
            only_candidates: false,
            asleep: true,
        }
    }
}

/// Parses `HH:MM-HH:MM` into minutes since midnight.
pub fn parse_window(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    Some((minutes(a)?, minutes(b)?))
}

/// Parses `mon`..`sun` (or full names).
pub fn parse_day(s: &str) -> Option<Weekday> {
    s.trim().parse::<Weekday>().ok()
}

/// The call being planned.
#[derive(Debug, Clone)]
pub struct CallContext<'a> {
    /// The class's name.
    pub class: &'a str,
    /// The caller.
    pub caller: &'a BareJid,
    /// Whether the caller watches the owner.
    pub caller_is_watcher: bool,
    /// Owner's local weekday.
    pub weekday: Weekday,
    /// Owner's local minutes since midnight.
    pub minute: u16,
    /// The show of her most available device of the class, if any.
    pub best_show: Option<Show>,
}

/// A device that qualifies for the class: one online now, or one asleep
/// (known by its record, on an account whose server pushes and which has
/// no device online, so that a propose to the account reaches only the
/// sleepers).
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its address.
    pub jid: FullJid,
    /// Its availability (asleep: `online`, it is not known).
    pub show: Show,
    /// Its priority.
    pub priority: i8,
    /// Offline, reachable only through her account's push.
    pub asleep: bool,
}

/// Who rings when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingPlan {
    /// Who is rung together, step after step; empty = busy. A full JID is
    /// a device online; a bare JID is her account, for its devices that
    /// are asleep (each account at most once).
    pub steps: Vec<Vec<Jid>>,
    /// Time each step rings before the next (sequential, priority).
    pub step_ms: u64,
    /// Time the whole call rings.
    pub timeout_ms: u64,
    /// What happens when nobody answers.
    pub on_no_answer: NoAnswer,
    /// The matching rule's candidate policy, if it sets one.
    pub candidates: Option<CandidatePolicy>,
}

fn in_window(window: Option<(u16, u16)>, minute: u16) -> bool {
    match window {
        None => true,
        Some((start, end)) if start <= end => (start..end).contains(&minute),
        // Across midnight: 22:00-06:00.
        Some((start, end)) => minute >= start || minute < end,
    }
}

/// The first rule matching `ctx` that decides how devices ring, if any.
pub fn matching<'r>(rules: &'r [Rule], ctx: &CallContext<'_>) -> Option<&'r Rule> {
    rules.iter().find(|r| !r.only_candidates && matches(r, ctx))
}

/// The candidate policy the first matching rule that sets one chooses.
pub fn candidates(rules: &[Rule], ctx: &CallContext<'_>) -> Option<CandidatePolicy> {
    rules
        .iter()
        .find(|r| r.candidates.is_some() && matches(r, ctx))
        .and_then(|r| r.candidates)
}

fn matches(r: &Rule, ctx: &CallContext<'_>) -> bool {
    {
        (r.classes.is_empty() || r.classes.iter().any(|c| c == ctx.class))
            && (r.callers.is_empty()
                || r.callers
                    .iter()
                    .any(|c| c.matches(ctx.caller, ctx.caller_is_watcher)))
            && (r.days.is_empty() || r.days.contains(&ctx.weekday))
            && in_window(r.window, ctx.minute)
            && r.when.is_none_or(|w| ctx.best_show == Some(w))
    }
}

/// The ring plan for a call: the first matching rule (or `fallback`)
/// applied to the qualifying devices.
pub fn plan(
    rules: &[Rule],
    fallback: &Rule,
    ctx: &CallContext<'_>,
    devices: &[Candidate],
) -> RingPlan {
    let rule = matching(rules, ctx).unwrap_or(fallback);
    let plan = |steps| RingPlan {
        steps,
        step_ms: rule.step_ms,
        timeout_ms: rule.timeout_ms,
        on_no_answer: rule.on_no_answer,
        candidates: candidates(rules, ctx),
    };
    if rule.reject {
        return plan(vec![]);
    }
    let usable = |d: &&Candidate| {
        if d.asleep {
            return rule.asleep;
        }
        d.show != Show::Dnd && !(rule.skip_busy && d.show == Show::Xa)
    };
    let mut chosen: Vec<&Candidate> = if rule.devices.is_empty() {
        // Devices online first: what rings at once is what is surely there.
        let mut all: Vec<&Candidate> = devices.iter().filter(usable).collect();
        all.sort_by_key(|d| d.asleep);
        all
    } else {
        // In the listed order; a named device that is offline is skipped
        // unless it is asleep and may be woken.
        rule.devices
            .iter()
            .filter_map(|name| {
                let named = |d: &&Candidate| d.jid.resource().as_str() == name;
                let live = devices.iter().filter(|d| !d.asleep).find(named);
                live.or_else(|| devices.iter().find(named))
            })
            .filter(usable)
            .collect()
    };
    let mut accounts: Vec<BareJid> = vec![];
    // A sleeper is rung through her account, once per account.
    let target = |d: &Candidate, accounts: &mut Vec<BareJid>| -> Option<Jid> {
        if !d.asleep {
            return Some(Jid::from(d.jid.clone()));
        }
        let account = d.jid.to_bare();
        if accounts.contains(&account) {
            return None;
        }
        accounts.push(account.clone());
        Some(Jid::from(account))
    };
    let steps: Vec<Vec<Jid>> = match rule.mode {
        RingMode::Parallel => {
            let step: Vec<Jid> = chosen
                .iter()
                .filter_map(|d| target(d, &mut accounts))
                .collect();
            if step.is_empty() {
                vec![]
            } else {
                vec![step]
            }
        }
        RingMode::Sequential => chosen
            .iter()
            .filter_map(|d| target(d, &mut accounts).map(|t| vec![t]))
            .collect(),
        RingMode::Priority => {
            // Sleepers last, after every device online.
            chosen.sort_by_key(|d| (d.asleep, std::cmp::Reverse(d.priority)));
            let mut steps: Vec<Vec<Jid>> = vec![];
            let mut last = None;
            for d in chosen {
                let Some(t) = target(d, &mut accounts) else {
                    continue;
                };
                let key = (d.asleep, d.priority);
                if last == Some(key) {
                    if let Some(step) = steps.last_mut() {
                        step.push(t);
                    }
                } else {
                    steps.push(vec![t]);
                }
                last = Some(key);
            }
            steps
        }
    };
    plan(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(res: &str, show: Show, priority: i8) -> Candidate {
        Candidate {
            jid: FullJid::new(&format!("alice@localhost/{res}")).unwrap(),
            show,
            priority,
            asleep: false,
        }
    }

    fn sleeper(res: &str) -> Candidate {
        Candidate {
            asleep: true,
            ..dev(res, Show::Online, 0)
        }
    }

    fn ctx<'a>(
        caller: &'a BareJid,
        class: &'a str,
        weekday: Weekday,
        minute: u16,
    ) -> CallContext<'a> {
        CallContext {
            class,
            caller,
            caller_is_watcher: false,
            weekday,
            minute,
            best_show: Some(Show::Online),
        }
    }

    fn names(plan: &RingPlan) -> Vec<Vec<String>> {
        plan.steps
            .iter()
            .map(|s| {
                s.iter()
                    .map(|j| match j.resource() {
                        Some(r) => r.to_string(),
                        None => format!("account {j}"),
                    })
                    .collect()
            })
            .collect()
    }

    fn base() -> Rule {
        Rule::default_rule(30_000)
    }

    #[test]
    fn sleepers_ring_through_their_account_once_after_the_devices_online() {
        let bob = BareJid::new("bob@x").unwrap();
        let mut other = sleeper("tab");
        other.jid = FullJid::new("alice@work.example/tab").unwrap();
        let devices = [
            sleeper("phone"),
            dev("laptop", Show::Online, 5),
            sleeper("watch"),
            other,
        ];
        let c = ctx(&bob, "audio", Weekday::Mon, 600);
        let p = plan(&[], &base(), &c, &devices);
        assert_eq!(
            names(&p),
            [[
                "laptop",
                "account alice@localhost",
                "account alice@work.example"
            ]]
        );
        let seq = Rule {
            mode: RingMode::Sequential,
            ..base()
        };
        assert_eq!(
            names(&plan(std::slice::from_ref(&seq), &base(), &c, &devices)),
            [
                vec!["laptop"],
                vec!["account alice@localhost"],
                vec!["account alice@work.example"]
            ]
        );
        // Named: her order, a sleeper included by name.
        let named = Rule {
            devices: vec!["phone".into(), "laptop".into()],
            ..seq.clone()
        };
        assert_eq!(
            names(&plan(&[named], &base(), &c, &devices)),
            [vec!["account alice@localhost"], vec!["laptop"]]
        );
        let prio = Rule {
            mode: RingMode::Priority,
            ..base()
        };
        assert_eq!(
            names(&plan(&[prio], &base(), &c, &devices)),
            [
                vec!["laptop"],
                vec!["account alice@localhost", "account alice@work.example"]
            ]
        );
        // A rule that says awake only.
        let awake = Rule {
            asleep: false,
            ..seq
        };
        assert_eq!(
            names(&plan(&[awake], &base(), &c, &devices)),
            [vec!["laptop"]]
        );
        // Only sleepers: her accounts are still rung, not busy.
        let p = plan(&[], &base(), &c, &devices[..1]);
        assert_eq!(names(&p), [["account alice@localhost"]]);
    }

    #[test]
    fn no_rules_ring_every_non_dnd_device_in_parallel_for_30_s() {
        let bob = BareJid::new("bob@x").unwrap();
        let devices = [
            dev("phone", Show::Online, 0),
            dev("laptop", Show::Dnd, 0),
            dev("tablet", Show::Xa, 0),
        ];
        let p = plan(
            &[],
            &base(),
            &ctx(&bob, "audio", Weekday::Mon, 600),
            &devices,
        );
        assert_eq!(names(&p), [["phone", "tablet"]]);
        assert_eq!(p.timeout_ms, 30_000);
    }

    #[test]
    fn sequential_rings_named_devices_in_order_skipping_offline_ones() {
        let bob = BareJid::new("bob@x").unwrap();
        let rule = Rule {
            mode: RingMode::Sequential,
            devices: vec!["phone".into(), "watch".into(), "laptop".into()],
            ..base()
        };
        let devices = [
            dev("laptop", Show::Online, 0),
            dev("phone", Show::Online, 0),
        ];
        let p = plan(
            &[rule],
            &base(),
            &ctx(&bob, "audio", Weekday::Mon, 600),
            &devices,
        );
        assert_eq!(names(&p), [["phone"], ["laptop"]]);
    }

    #[test]
    fn priority_rings_highest_first_and_equal_ones_together() {
        let bob = BareJid::new("bob@x").unwrap();
        let rule = Rule {
            mode: RingMode::Priority,
            ..base()
        };
        let devices = [
            dev("a", Show::Online, 1),
            dev("b", Show::Online, 10),
            dev("c", Show::Away, 10),
            dev("d", Show::Online, -1),
        ];
        let p = plan(
            &[rule],
            &base(),
            &ctx(&bob, "audio", Weekday::Mon, 600),
            &devices,
        );
        assert_eq!(names(&p), vec![vec!["b", "c"], vec!["a"], vec!["d"]]);
    }

    #[test]
    fn first_matching_rule_wins_by_class_caller_and_order() {
        let bob = BareJid::new("bob@x.org").unwrap();
        let eve = BareJid::new("eve@y.org").unwrap();
        let rules = [
            Rule {
                callers: vec![CallerMatch::Domain("x.org".into())],
                devices: vec!["phone".into()],
                ..base()
            },
            Rule {
                classes: vec!["video".into()],
                reject: true,
                ..base()
            },
            Rule {
                devices: vec!["laptop".into()],
                ..base()
            },
        ];
        let devices = [
            dev("phone", Show::Online, 0),
            dev("laptop", Show::Online, 0),
        ];
        assert_eq!(
            names(&plan(
                &rules,
                &base(),
                &ctx(&bob, "video", Weekday::Mon, 0),
                &devices
            )),
            [["phone"]]
        );
        assert!(plan(
            &rules,
            &base(),
            &ctx(&eve, "video", Weekday::Mon, 0),
            &devices
        )
        .steps
        .is_empty());
        assert_eq!(
            names(&plan(
                &rules,
                &base(),
                &ctx(&eve, "audio", Weekday::Mon, 0),
                &devices
            )),
            [["laptop"]]
        );
    }

    #[test]
    fn watchers_and_exact_jids_match_callers() {
        let bob = BareJid::new("bob@x.org").unwrap();
        let rule = Rule {
            callers: vec![CallerMatch::Watchers],
            reject: true,
            ..base()
        };
        let mut c = ctx(&bob, "audio", Weekday::Mon, 0);
        assert!(matching(std::slice::from_ref(&rule), &c).is_none());
        c.caller_is_watcher = true;
        assert!(matching(std::slice::from_ref(&rule), &c).is_some());
        assert_eq!(CallerMatch::parse("bob@x.org"), Some(CallerMatch::Jid(bob)));
        assert_eq!(
            CallerMatch::parse("X.org"),
            Some(CallerMatch::Domain("x.org".into()))
        );
    }

    #[test]
    fn time_windows_work_across_midnight_and_by_weekday() {
        let night = Rule {
            window: parse_window("22:00-06:30"),
            reject: true,
            ..base()
        };
        let office = Rule {
            window: parse_window("09:00-17:00"),
            days: vec![Weekday::Mon, Weekday::Fri],
            reject: true,
            ..base()
        };
        let bob = BareJid::new("bob@x").unwrap();
        let at =
            |r: &Rule, d, m| matching(std::slice::from_ref(r), &ctx(&bob, "audio", d, m)).is_some();
        assert!(at(&night, Weekday::Tue, 23 * 60));
        assert!(at(&night, Weekday::Tue, 6 * 60 + 29));
        assert!(!at(&night, Weekday::Tue, 6 * 60 + 30));
        assert!(!at(&night, Weekday::Tue, 12 * 60));
        assert!(at(&office, Weekday::Fri, 9 * 60));
        assert!(!at(&office, Weekday::Fri, 17 * 60));
        assert!(!at(&office, Weekday::Wed, 10 * 60));
        assert_eq!(parse_window("25:00-01:00"), None);
        assert_eq!(parse_day("sat"), Some(Weekday::Sat));
    }

    #[test]
    fn device_state_conditions_match_her_best_device() {
        let bob = BareJid::new("bob@x").unwrap();
        let away = Rule {
            when: Some(Show::Away),
            reject: true,
            ..base()
        };
        let mut c = ctx(&bob, "audio", Weekday::Mon, 0);
        assert!(matching(std::slice::from_ref(&away), &c).is_none());
        c.best_show = Some(Show::Away);
        assert!(matching(std::slice::from_ref(&away), &c).is_some());
    }

    #[test]
    fn skip_busy_leaves_out_xa_too() {
        let bob = BareJid::new("bob@x").unwrap();
        let rule = Rule {
            skip_busy: true,
            ..base()
        };
        let devices = [dev("phone", Show::Xa, 0), dev("laptop", Show::Away, 0)];
        assert_eq!(
            names(&plan(
                &[rule],
                &base(),
                &ctx(&bob, "audio", Weekday::Mon, 0),
                &devices
            )),
            [["laptop"]]
        );
    }
}
