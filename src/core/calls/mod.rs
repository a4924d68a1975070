//! Calls (DESIGN.md section 5): a caller's XEP-0353 proposal or Jingle
//! `session-initiate` is forked to the owner's chosen devices, one leg
//! each; the first to answer wins; from then on every Jingle IQ is relayed
//! both ways with sids and IQ ids mapped.
//!
//! Facing the caller everything comes from the class resource
//! (`alice@D/audio`); facing a device everything of one leg comes from one
//! proxy full JID (`bob\40example.org@D/<token>`), because Conversations
//! ignores a retract or session-initiate from any other full JID.
//! Payloads are relayed as raw elements (see [`super::jingle`]).
//!
//! [`Calls`] owns every live call and relayed IQ, with private fields.
//! Its handlers take a [`Ctx`]: the input's time, the outbox, and the
//! owners and config to read, nothing else of the core. What the rest of
//! the core must hear (her classes turn busy or free) it queues as
//! [`Busy`] changes, which the core takes with [`Calls::poll_busy`].

use std::collections::HashMap;

use chrono::{Datelike, Timelike};
use jid::{FullJid, Jid};
use minidom::Element;
use tracing::{debug, info, trace, warn};

mod ibb;
mod outgoing;
pub(super) mod s5b;

use super::address::proxy_jid;
use super::jingle::{
    self, jingle_child, jingle_error, jingle_iq, jmi, jmi_child, jmi_copy, reason, rewrite_jingle,
};
use super::outbox::Outbox;
use super::owners::Owners;
use super::router::{Resource, Target};
use super::rules::{self, CallContext, Candidate, NoAnswer, RingPlan, Rule};
use super::stanza::{self, element, iq_result, ErrorType};
use super::OwnerId;
use super::{CandidatePolicy, CoreConfig, Event, Time};

/// What a call handler may touch besides the calls themselves: the
/// input's time, what goes out, and the owners and config to read (like
/// quinn-proto's narrow views of its `Connection`).
pub(super) struct Ctx<'a> {
    pub(super) now: Time,
    /// Wall-clock time of `now`, in ms since the epoch: rules read it.
    pub(super) wall_ms: u64,
    pub(super) out: &'a mut Outbox,
    pub(super) owners: &'a Owners,
    pub(super) cfg: &'a CoreConfig,
    /// The classes (bits) of the owner addressed that the sender may not
    /// call: his view hides them (DESIGN.md section 13).
    pub(super) hidden: u32,
}

impl Ctx<'_> {
    fn ring_plan(&self, owner: OwnerId, class: usize, caller: &jid::BareJid) -> RingPlan {
        ring_plan(&self.owners[owner], self.cfg, self.wall_ms, class, caller)
    }
}

/// A change the rest of the core must hear about: her call classes show
/// busy while one of her calls is answered (DESIGN.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Busy {
    /// A call of hers was answered: publish soon (coalesced).
    Started(OwnerId),
    /// An answered call of hers ended.
    Ended(OwnerId),
}

/// One call through the component, as long as it lives (never reused
/// while the core runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct CallId(u64);

/// How a call ended, for the admin's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// A device answered; the call ran and ended.
    Answered,
    /// Every device rung declined.
    Declined,
    /// The caller gave up before anyone answered.
    Cancelled,
    /// Nobody answered in time.
    Unanswered,
    /// Refused before ringing: busy, a reject rule, no device, media no
    /// class serves, or the concurrent-call limit.
    Rejected,
    /// Ended by the system: the owner's devices went away, the owner was
    /// removed, the component stopped or lost the server.
    Failed,
}

/// Why a call ended: what the log says, what the metrics count, and, when
/// the component ends it, the XEP-0166 reason both sides are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EndReason {
    /// The caller finished or retracted (XEP-0353).
    CallerEnded,
    /// The caller sent `session-terminate`.
    CallerTerminated,
    /// The caller cancelled the session before an answer.
    CallerCancelled,
    /// Every device rung declined.
    EveryDeviceDeclined,
    /// The answering device finished (XEP-0353).
    DeviceFinished,
    /// The answering device sent `session-terminate`.
    DeviceTerminated,
    /// The answering device went offline.
    DeviceWentOffline,
    /// Nobody answered in time.
    Timeout,
    /// Her devices or her address went away.
    OwnerGone,
    /// The component stops or loses the server.
    Connectivity,
}

impl EndReason {
    /// The XEP-0166 §7.4 condition sent when the component ends the call.
    fn condition(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::OwnerGone => "gone",
            EndReason::Connectivity => "connectivity-error",
            EndReason::EveryDeviceDeclined => "decline",
            EndReason::CallerEnded
            | EndReason::CallerTerminated
            | EndReason::CallerCancelled
            | EndReason::DeviceFinished
            | EndReason::DeviceTerminated
            | EndReason::DeviceWentOffline => "success",
        }
    }

    /// In words, for the text of a plain-Jingle ending (see
    /// [`jingle::end_session`]).
    fn words(self) -> &'static str {
        match self {
            EndReason::Timeout => "Nobody answered.",
            EndReason::OwnerGone => "This address is no longer available.",
            EndReason::Connectivity => "The service lost its connection.",
            EndReason::EveryDeviceDeclined => "Declined.",
            EndReason::CallerEnded | EndReason::CallerTerminated | EndReason::CallerCancelled => {
                "The caller hung up."
            }
            EndReason::DeviceFinished
            | EndReason::DeviceTerminated
            | EndReason::DeviceWentOffline => "The call ended.",
        }
    }

    /// How the metrics count a call that ended this way.
    fn outcome(self, answered: bool) -> CallOutcome {
        match self {
            _ if answered => CallOutcome::Answered,
            EndReason::EveryDeviceDeclined => CallOutcome::Declined,
            EndReason::CallerEnded | EndReason::CallerTerminated | EndReason::CallerCancelled => {
                CallOutcome::Cancelled
            }
            EndReason::Timeout => CallOutcome::Unanswered,
            EndReason::DeviceFinished
            | EndReason::DeviceTerminated
            | EndReason::DeviceWentOffline
            | EndReason::OwnerGone
            | EndReason::Connectivity => CallOutcome::Failed,
        }
    }
}

impl CallOutcome {
    /// Every outcome, for metric labels.
    pub const ALL: [CallOutcome; 6] = [
        CallOutcome::Answered,
        CallOutcome::Declined,
        CallOutcome::Cancelled,
        CallOutcome::Unanswered,
        CallOutcome::Rejected,
        CallOutcome::Failed,
    ];

    /// The label: `answered`, `declined`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Declined => "declined",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::Unanswered => "unanswered",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Failed => "failed",
        }
    }
}

/// How the caller asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// XEP-0353 propose, then Jingle to the winner.
    Jmi,
    /// A plain Jingle `session-initiate` to the class resource.
    Jingle,
}

/// A leg of one call: its place in [`Call::legs`] (legs are never
/// removed while the call lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LegId(usize);

/// One device being rung, or her account for its devices that are asleep
/// (DESIGN.md section 12).
#[derive(Debug)]
struct Leg {
    /// A device (full JID), or her account (bare JID): a propose her
    /// server keeps offline and pushes to the devices asleep.
    device: Jid,
    /// The leg's propose id and Jingle sid.
    id: String,
    declined: bool,
    /// Plain Jingle: the leg's own transport-info, held until it wins.
    held: Vec<Element>,
    /// JMI: the id of the message that carried the leg's propose, which
    /// the device's XEP-0184 receipt names.
    msg_id: Option<String>,
    /// The device showed it got the call: its receipt, `ringing` (or, in
    /// plain Jingle, its answer to the session-initiate or its ringing).
    reached: bool,
    /// A device of her account that woke for an account leg and joined
    /// the call under the same leg id.
    woke: bool,
}

impl Leg {
    fn new(device: Jid, id: String) -> Leg {
        Leg {
            device,
            id,
            declined: false,
            held: vec![],
            msg_id: None,
            reached: false,
            woke: false,
        }
    }

    /// Whether this leg rings her account (for devices asleep).
    fn is_account(&self) -> bool {
        self.device.is_bare()
    }

    /// Whether `device` may speak for this leg: the device itself, or for
    /// an account leg any device of the account.
    fn speaks_for(&self, device: &FullJid) -> bool {
        match self.device.try_as_full() {
            Ok(f) => f == device,
            Err(b) => *b == device.to_bare(),
        }
    }
}

#[derive(Debug)]
struct Call {
    owner: OwnerId,
    mode: Mode,
    caller: FullJid,
    /// The caller's propose id / Jingle sid.
    sid: String,
    /// What devices see: the caller's proxy full JID.
    proxy: String,
    /// What the caller sees: the class resource.
    face: String,
    legs: Vec<Leg>,
    winner: Option<LegId>,
    rang: bool,
    /// The caller's propose asked for a receipt (XEP-0184) with this
    /// message id, and no device has yet shown it got the call.
    receipt: Option<String>,
    /// What a new leg is offered: the propose (JMI) or session-initiate.
    offer: Element,
    /// Plain Jingle: the caller's transport-info so far, for later legs.
    caller_transport: Vec<Element>,
    /// Steps of the ring plan not rung yet.
    steps: std::collections::VecDeque<Vec<Jid>>,
    step_ms: u64,
    /// When the current step gives way to the next one.
    next_step_at: Option<Time>,
    /// Where the current step's legs start in `legs`.
    step_start: usize,
    /// When the current step gives way to the next one if none of its
    /// devices is reached (`ack_timeout_ms`).
    ack_at: Option<Time>,
    /// When a device of hers first showed it got the call.
    first_reached: Option<Time>,
    /// When the whole call gives up.
    ends_at: Time,
    on_no_answer: NoAnswer,
    class: usize,
    /// Earliest of the two while nobody has answered (kept in
    /// [`Calls::deadlines`] too).
    deadline: Option<Time>,
    /// When the caller asked, for the ring time.
    started: Time,
    /// Relay-only for this call (her setting, or a rule's for this
    /// caller): candidates are filtered both ways.
    relay_only: bool,
}

impl Call {
    /// (device, leg id) of every leg still ringing, but `except`.
    fn open_legs(&self, except: Option<LegId>) -> Vec<(String, String)> {
        self.legs
            .iter()
            .enumerate()
            .filter(|(i, l)| Some(LegId(*i)) != except && !l.declined)
            .map(|(_, l)| (l.device.to_string(), l.id.clone()))
            .collect()
    }

    /// Who is still in the call: before an answer every ringing leg,
    /// after it the winner, as (device, leg id).
    fn live_legs(&self) -> Vec<(String, String)> {
        match self.winner {
            Some(w) => vec![(self.leg(w).device.to_string(), self.leg(w).id.clone())],
            None => self.open_legs(None),
        }
    }

    fn leg(&self, li: LegId) -> &Leg {
        &self.legs[li.0]
    }

    fn leg_mut(&mut self, li: LegId) -> &mut Leg {
        &mut self.legs[li.0]
    }

    /// The leg `device` rings on as `id`, if any.
    fn find_leg(&self, id: &str, device: &FullJid) -> Option<LegId> {
        self.legs
            .iter()
            .position(|l| l.id == id && l.device == *device)
            .map(LegId)
    }

    /// The leg `device` rings on as `id`: its own, or, for a device of an
    /// account rung while asleep, a leg of its own joined now (it woke
    /// and answers the propose her server kept for it).
    fn find_or_wake(&mut self, id: &str, device: &FullJid) -> Option<LegId> {
        if let Some(li) = self.find_leg(id, device) {
            return Some(li);
        }
        let account = self
            .legs
            .iter()
            .position(|l| l.id == id && l.is_account() && l.speaks_for(device))?;
        let woke = Leg {
            msg_id: self.legs[account].msg_id.clone(),
            woke: true,
            // Too late if its account's leg gave way or the call is taken.
            declined: self.legs[account].declined || self.winner.is_some(),
            ..Leg::new(Jid::from(device.clone()), id.to_owned())
        };
        debug!("a device asleep woke for the call");
        self.legs.push(woke);
        Some(LegId(self.legs.len() - 1))
    }

    /// The account leg a woken leg `li` joined through, if it is one.
    fn account_of(&self, li: LegId) -> Option<LegId> {
        let leg = self.leg(li);
        if !leg.woke {
            return None;
        }
        self.legs
            .iter()
            .position(|l| l.is_account() && l.id == leg.id)
            .map(LegId)
    }

    /// Leg `li` answered first: it wins and the ring timeouts stop.
    fn win(&mut self, li: LegId) {
        self.winner = Some(li);
        self.deadline = None;
        self.next_step_at = None;
        self.ack_at = None;
        self.steps.clear();
        // Her account's propose is not taken back from the device that
        // answered it (a retract to the account would reach it too).
        if let Some(a) = self.account_of(li) {
            self.leg_mut(a).declined = true;
        }
    }

    fn set_deadline(&mut self) {
        let step = match (self.next_step_at, self.ack_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.deadline = Some(step.map_or(self.ends_at, |t| t.min(self.ends_at)));
    }

    /// How many legs were rung, reached, and answered (devices, not
    /// accounts: an account counts when a device of it woke).
    fn leg_counts(&self) -> (u32, u32, u32) {
        let count = |f: &dyn Fn(&Leg) -> bool| self.legs.iter().filter(|l| f(l)).count() as u32;
        let rung = count(&|l| !l.woke);
        let reached = count(&|l| l.reached && !l.woke);
        (rung, reached, u32::from(self.winner.is_some()))
    }
}

/// An IQ we sent on someone's behalf: its answer goes back to them.
#[derive(Debug)]
struct Relay {
    /// Who must answer (anyone else's answer is ignored).
    peer: Jid,
    /// A leg's session-initiate: its answer shows the device got the call.
    reaches: Option<(CallId, LegId)>,
    /// Where the answer goes, from which of our addresses, with which id;
    /// `None` for IQs of our own (replays, cancels) whose answer we drop.
    back: Option<(String, String, String)>,
    deadline: Time,
}

/// Leg messages of ended calls whose receipts are still absorbed.
const SPENT_RECEIPTS: usize = 256;

/// Every live call and relayed IQ.
#[derive(Debug, Default)]
pub(super) struct Calls {
    calls: HashMap<CallId, Call>,
    by_caller: HashMap<(FullJid, String), CallId>,
    /// Receipts devices may still send for calls that have ended: (device
    /// or account, leg message id), the latest [`SPENT_RECEIPTS`].
    spent_receipts: std::collections::VecDeque<(Jid, String)>,
    by_leg: HashMap<String, CallId>,
    relays: HashMap<String, Relay>,
    /// Ring deadlines by call, in time order.
    deadlines: super::timers::Timers<CallId>,
    /// Relay expiries by IQ id, in time order.
    relay_deadlines: super::timers::Timers<String>,
    /// Answered calls per owner: her call classes show busy while > 0.
    answered: HashMap<OwnerId, u32>,
    /// Busy changes not yet taken by [`Calls::poll_busy`].
    busy: std::collections::VecDeque<Busy>,
    next: u64,
    /// Calls she makes, by (her, sid) (see [`outgoing`]).
    outgoing: HashMap<(OwnerId, String), outgoing::Outgoing>,
    /// Their ring deadlines, in time order.
    out_deadlines: super::timers::Timers<(OwnerId, String)>,
    /// SOCKS5 streams through our streamhost (see [`s5b`]).
    bridges: s5b::Bridges,
}

impl Calls {
    /// The earliest ring timeout or relay expiry.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        [
            self.deadlines.next(),
            self.relay_deadlines.next(),
            self.out_deadlines.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Call `c`'s deadline changed (or went: it was answered).
    fn sync_deadline(&mut self, c: CallId) {
        match self.calls.get(&c).and_then(|call| call.deadline) {
            Some(at) => self.deadlines.set(c, at),
            None => self.deadlines.cancel(&c),
        }
    }

    fn add_relay(&mut self, id: String, relay: Relay) {
        self.relay_deadlines.set(id.clone(), relay.deadline);
        self.relays.insert(id, relay);
    }

    fn take_relay(&mut self, id: &str) -> Option<Relay> {
        self.relay_deadlines.cancel(&id.to_owned());
        self.relays.remove(id)
    }

    /// Whether owner `i` is in a call through us (a leg has answered).
    /// Whether `caller` has a live call with owner `i` (ringing or
    /// answered).
    pub(super) fn has_call_from(&self, caller: &FullJid, i: OwnerId) -> bool {
        self.by_caller.iter().any(|((c, _), id)| {
            c == caller && self.calls.get(id).is_some_and(|call| call.owner == i)
        })
    }

    pub(super) fn in_call(&self, i: OwnerId) -> bool {
        self.answered.get(&i).is_some_and(|n| *n > 0)
    }

    /// Leg `li` of call `c` answered first (XEP-0353 §3.4, XEP-0166 §6.4).
    /// Leg `li` won; returns how long the call rang.
    fn answer(&mut self, now: Time, c: CallId, li: LegId) -> Option<u64> {
        let call = self.calls.get_mut(&c)?;
        call.win(li);
        let (owner, started) = (call.owner, call.started);
        self.deadlines.cancel(&c);
        self.answered_call(owner);
        Some(now.0.saturating_sub(started.0))
    }

    /// A call of owner `i` (to her or from her) was answered: her call
    /// classes show busy.
    fn answered_call(&mut self, i: OwnerId) {
        *self.answered.entry(i).or_default() += 1;
        self.busy.push_back(Busy::Started(i));
    }

    /// An answered call of owner `i` ended.
    fn answered_call_ended(&mut self, i: OwnerId) {
        if let Some(n) = self.answered.get_mut(&i) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.answered.remove(&i);
            }
        }
        self.busy.push_back(Busy::Ended(i));
    }

    /// The next change of who is in a call, if any.
    pub(super) fn poll_busy(&mut self) -> Option<Busy> {
        self.busy.pop_front()
    }

    /// Live calls (for tests and metrics).
    pub(super) fn len(&self) -> usize {
        self.calls.len() + self.outgoing.len()
    }

    /// The live calls as the admin's status page lists them.
    pub(super) fn views(
        &self,
        owners: &Owners,
        cfg: &CoreConfig,
        now: Time,
    ) -> Vec<super::admin::CallView> {
        let mut calls: Vec<_> = self.calls.iter().collect();
        calls.sort_by_key(|(c, _)| **c);
        calls
            .into_iter()
            .map(|(_, call)| super::admin::CallView {
                owner: owners[call.owner].name.clone(),
                class: cfg.classes[call.class].name.clone(),
                caller: call.caller.to_bare().to_string(),
                state: if call.winner.is_some() {
                    "answered"
                } else {
                    "ringing"
                },
                legs: call.legs.iter().filter(|l| !l.woke).count(),
                reached: call.legs.iter().filter(|l| l.reached && !l.woke).count(),
                first_ring_secs: call
                    .first_reached
                    .map(|t| t.0.saturating_sub(call.started.0) as f64 / 1000.0),
                secs: now.0.saturating_sub(call.started.0) / 1000,
            })
            .collect()
    }
}

fn full(jid: &Jid) -> Option<FullJid> {
    jid.clone().try_into_full().ok()
}

impl Calls {
    /// A message with an XEP-0353 element; `false` if it has none.
    pub(super) fn call_message(
        &mut self,
        cx: &mut Ctx<'_>,
        msg: &Element,
        from: &Jid,
        target: &Target,
    ) -> bool {
        let Some(el) = jmi_child(msg) else {
            return false;
        };
        if msg.attr("type") == Some("error") {
            trace!("dropped: JMI error message");
            return true;
        }
        let Some(from) = full(from) else {
            trace!("dropped: JMI from a bare JID");
            return true;
        };
        let account_owner = cx.out.secrets.account_owner(&from.to_bare());
        match target {
            // A device answering a leg whose caller is another owner: the
            // leg's address is his virtual JID with the call's token.
            Target::Owner {
                resource: Resource::Other,
                ..
            } if account_owner.is_some() => self.leg_jmi(cx, from, el),
            Target::Owner { owner, .. }
                if cx.owners[*owner].watchers.is_blocked(&from.to_bare()) =>
            {
                trace!("dropped: JMI from a blocked sender")
            }
            // He answers a call she makes.
            Target::Owner { owner, .. }
                if account_owner.is_none()
                    && el
                        .attr("id")
                        .is_some_and(|id| self.is_answer_to_her(*owner, &from, id)) =>
            {
                self.his_jmi(cx, *owner, from, el)
            }
            Target::Owner { owner, .. } if account_owner != Some(*owner) => {
                self.caller_jmi(cx, *owner, from, msg, el)
            }
            // A device of hers: a leg of a call to her, or a call she makes.
            Target::Proxy { remote } => match account_owner {
                Some(_) if el.attr("id").is_some_and(|id| self.by_leg.contains_key(id)) => {
                    self.leg_jmi(cx, from, el)
                }
                Some(i) => self.her_jmi(cx, i, from, remote.clone(), msg, el),
                None => trace!("dropped: JMI to a proxy JID from a stranger"),
            },
            _ => trace!("dropped: JMI message with no call to go to"),
        }
        true
    }

    fn caller_jmi(
        &mut self,
        cx: &mut Ctx<'_>,
        owner: OwnerId,
        caller: FullJid,
        msg: &Element,
        el: &Element,
    ) {
        let Some(id) = el.attr("id").map(str::to_owned) else {
            return cx.out.reply_error(msg, ErrorType::Modify, "bad-request");
        };
        let call = self.by_caller.get(&(caller.clone(), id.clone())).copied();
        match (el.name(), call) {
            ("propose", None) => self.propose(cx, owner, caller, msg, el, id),
            ("propose", Some(_)) => trace!("duplicate propose"),
            ("retract", Some(c)) | ("finish", Some(c)) => {
                let name = el.name();
                let call = &self.calls[&c];
                let proxy = call.proxy.clone();
                let legs = call.live_legs();
                for (device, leg_id) in legs {
                    let out = if name == "finish" {
                        jmi_copy(el, &leg_id)
                    } else {
                        jmi("retract", &leg_id, vec![])
                    };
                    send_jmi(cx.out, &proxy, &device, out);
                }
                self.end_call(cx, c, EndReason::CallerEnded);
            }
            (name, _) => trace!(name, "ignored JMI from the caller"),
        }
    }

    /// DESIGN.md section 5, steps 1-3.
    fn propose(
        &mut self,
        cx: &mut Ctx<'_>,
        owner: OwnerId,
        caller: FullJid,
        msg: &Element,
        el: &Element,
        sid: String,
    ) {
        let needed = jingle::needed_features(el);
        let Some(class) = class_for(&cx.cfg.classes, &needed) else {
            debug!("propose for media no class serves");
            let face = cx.owners[owner].virtual_jid.to_string();
            let reject = jmi("reject", &sid, vec![reason("unsupported-applications")]);
            self.call_rejected(cx.out);
            return send_jmi(cx.out, &face, caller.as_str(), reject);
        };
        let face = format!(
            "{}/{}",
            cx.owners[owner].virtual_jid, cx.cfg.classes[class].name
        );
        if cx.hidden & (1 << class) != 0 {
            // A class his view hides is, to him, a class with no device.
            info!(owner = %cx.owners[owner].name, "call for a class the caller's view hides: busy");
            self.call_rejected(cx.out);
            return send_jmi(
                cx.out,
                &face,
                caller.as_str(),
                jmi("reject", &sid, vec![reason("busy")]),
            );
        }
        // XEP-0184: the caller hears that the proposal arrived once a
        // device of hers shows it did (its receipt, ringing or answer),
        // not when it merely reached us.
        let receipt = msg
            .get_child("request", jingle::RECEIPTS)
            .and(msg.attr("id"))
            .map(str::to_owned);
        if !self.admit_call(&cx.cfg.limits, &caller) {
            let reject = jmi("reject", &sid, vec![reason("busy")]);
            self.call_rejected(cx.out);
            return send_jmi(cx.out, &face, caller.as_str(), reject);
        }
        let mut plan = cx.ring_plan(owner, class, &caller.to_bare());
        let any_device = !plan.steps.is_empty();
        // A propose rings only devices that speak XEP-0353: one that does
        // not (Gajim 1.7) would show nothing while the caller waits.
        let devices = &cx.owners[owner].devices.live;
        for step in &mut plan.steps {
            step.retain(|d| match d.try_as_full() {
                Ok(d) => devices.get(d).is_some_and(|dev| {
                    matches!(&dev.features, super::devices::Features::Known(f) if f.contains(jingle::JMI))
                }),
                // Her account, for devices asleep: mobile clients that
                // sleep on push are the ones that speak XEP-0353.
                Err(_) => true,
            });
        }
        plan.steps.retain(|s| !s.is_empty());
        if plan.steps.is_empty() && any_device {
            // Only plain-Jingle devices would ring (Gajim 1.7): proceed on
            // their behalf, so that the caller sends his session-initiate
            // to the class resource (XEP-0353 §3.2: with the propose's id
            // as sid), and that is forked to them like any plain-Jingle
            // call, ringing, timeout and all. The caller sees "connecting"
            // rather than "ringing" meanwhile, which beats a busy signal.
            info!(owner = %cx.owners[owner].name, "no XEP-0353 device: proceeding for plain Jingle");
            return send_jmi(cx.out, &face, caller.as_str(), jmi("proceed", &sid, vec![]));
        }
        if plan.steps.is_empty() {
            info!(owner = %cx.owners[owner].name, "no device to ring: busy");
            self.call_rejected(cx.out);
            return send_jmi(
                cx.out,
                &face,
                caller.as_str(),
                jmi("reject", &sid, vec![reason("busy")]),
            );
        }
        let Some(c) = self.new_call(
            cx,
            owner,
            class,
            Mode::Jmi,
            caller,
            sid,
            face,
            plan,
            el.clone(),
        ) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&c) {
            call.receipt = receipt;
        }
        self.ring_step(cx, c);
    }

    /// Tells the caller of call `c` that his proposal arrived, once: a
    /// device of hers got it.
    fn caller_receipt(&mut self, out: &mut Outbox, c: CallId) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(msg_id) = call.receipt.take() else {
            return;
        };
        let mut receipt = stanza::stanza("message", &call.face, call.caller.as_str(), None);
        receipt.append_child(element("received", jingle::RECEIPTS, &[("id", &msg_id)]));
        out.send(receipt);
    }

    /// A device's XEP-0184 receipt for the message that rang it: mapped to
    /// the caller's once, absorbed after that (it names our leg message,
    /// which means nothing to anyone else). `false` if it is no such
    /// receipt.
    pub(super) fn call_receipt(
        &mut self,
        now: Time,
        out: &mut Outbox,
        msg: &Element,
        from: &Jid,
        target: &Target,
    ) -> bool {
        if !matches!(
            target,
            Target::Proxy { .. }
                | Target::Owner {
                    resource: Resource::Other,
                    ..
                }
        ) {
            return false;
        }
        let Some(id) = msg
            .get_child("received", jingle::RECEIPTS)
            .and_then(|r| r.attr("id"))
        else {
            return false;
        };
        let Some(device) = full(from) else {
            return false;
        };
        let leg = self.calls.iter().find_map(|(c, call)| {
            call.legs
                .iter()
                .position(|l| l.speaks_for(&device) && l.msg_id.as_deref() == Some(id))
                .map(|li| (*c, LegId(li)))
        });
        let Some((c, li)) = leg else {
            // Late, for a call that has ended: nobody's business either.
            return self.spent_receipts.iter().any(|(d, m)| {
                m == id
                    && match d.try_as_full() {
                        Ok(f) => *f == device,
                        Err(b) => *b == device.to_bare(),
                    }
            });
        };
        self.reach(now, out, c, li);
        self.caller_receipt(out, c);
        true
    }

    /// Leg `li` of call `c` showed that its device got the call. The first
    /// such device is the call's first ring (for the metrics); one in the
    /// ringing step keeps that step ringing its full time.
    fn reach(&mut self, now: Time, out: &mut Outbox, c: CallId, li: LegId) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        if call.leg(li).reached {
            return;
        }
        call.leg_mut(li).reached = true;
        let account = call.account_of(li);
        if let Some(a) = account {
            call.leg_mut(a).reached = true;
        }
        if call.first_reached.is_none() {
            call.first_reached = Some(now);
            out.event(Event::CallReached {
                ms: now.0.saturating_sub(call.started.0),
            });
        }
        let in_step = account.unwrap_or(li).0 >= call.step_start;
        if in_step && call.ack_at.take().is_some() {
            call.set_deadline();
            self.sync_deadline(c);
        }
    }

    /// Whether a new call from `caller` fits the limits on live calls
    /// (over all owners, and per caller account); refused calls are busy.
    fn admit_call(&self, limits: &super::Limits, caller: &FullJid) -> bool {
        if self.len() >= limits.concurrent_calls {
            warn!(
                limit = limits.concurrent_calls,
                "call refused: too many live calls"
            );
            return false;
        }
        let account = caller.to_bare();
        let own = self
            .calls
            .values()
            .filter(|c| c.caller.to_bare() == account)
            .count()
            + self.outgoing_from(&account);
        if own >= limits.calls_per_caller {
            warn!(caller = %account, limit = limits.calls_per_caller, "call refused: caller has too many live calls");
            return false;
        }
        true
    }

    /// Rings the next step of call `c`'s plan: a leg per device, offered
    /// the caller's propose or session-initiate.
    fn ring_step(&mut self, cx: &mut Ctx<'_>, c: CallId) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(devices) = call.steps.pop_front() else {
            return;
        };
        call.next_step_at = (!call.steps.is_empty()).then(|| cx.now.plus_ms(call.step_ms));
        call.step_start = call.legs.len();
        // A step that may give way early: unless a device shows it got
        // the call in time, the next one rings. Not one that wakes a
        // device asleep, which takes its time (push, wake, reconnect).
        let ack = cx.cfg.ack_timeout_ms;
        call.ack_at = (call.next_step_at.is_some()
            && ack < call.step_ms
            && devices.iter().all(|d| d.is_full()))
        .then(|| cx.now.plus_ms(ack));
        call.set_deadline();
        if let Some(at) = call.deadline {
            self.deadlines.set(c, at);
        }
        let (proxy, mode, offer, transport, relay_only) = (
            call.proxy.clone(),
            call.mode,
            call.offer.clone(),
            call.caller_transport.clone(),
            call.relay_only,
        );
        for device in devices {
            let leg_id = cx.out.next_id();
            self.by_leg.insert(leg_id.clone(), c);
            let li = match self.calls.get_mut(&c) {
                Some(call) => {
                    call.legs.push(Leg::new(device.clone(), leg_id.clone()));
                    LegId(call.legs.len() - 1)
                }
                None => return,
            };
            let to = device.to_string();
            match mode {
                Mode::Jmi => {
                    // Kept for a device that reconnects (store). To her
                    // account (a bare JID), for its devices asleep
                    // (DESIGN.md section 12), her server keeps it offline
                    // and pushes. To a device, only the chosen devices
                    // ring: no carbons, no archive copies elsewhere
                    // (XEP-0280 private, XEP-0334 no-copy).
                    let mut m = stanza::stanza("message", &proxy, &to, Some("chat"));
                    let msg_id = cx.out.next_id();
                    stanza::set_attr(&mut m, "id", msg_id.clone());
                    m.append_child(Element::bare("request", jingle::RECEIPTS));
                    if let Some(call) = self.calls.get_mut(&c) {
                        call.leg_mut(li).msg_id = Some(msg_id);
                    }
                    m.append_child(jmi_copy(&offer, &leg_id));
                    m.append_child(Element::bare("store", jingle::HINTS));
                    if !device.is_bare() {
                        m.append_child(Element::bare("private", jingle::CARBONS));
                        m.append_child(Element::bare("no-copy", jingle::HINTS));
                    }
                    cx.out.send(m);
                }
                Mode::Jingle => {
                    let offered = rewrite_jingle(&offer, &leg_id, Some(&proxy), None, relay_only);
                    if let Some(mut out) = offered {
                        let caller = self.calls.get(&c).map(|call| call.caller.to_string());
                        if let Some(caller) = caller {
                            self.offer_streamhost(cx, &caller, &proxy, &to, &mut out);
                        }
                        self.send_own_reaching(cx, &proxy, &to, out, Some((c, li)));
                    }
                    let later = transport
                        .iter()
                        .filter_map(|t| rewrite_jingle(t, &leg_id, Some(&proxy), None, relay_only));
                    for out in later {
                        self.send_own(cx, &proxy, &to, out);
                    }
                }
            }
        }
    }

    /// Leg `li` of call `c` declined. When every rung leg has, the next
    /// step rings; `true` when none is left and the caller must be told.
    fn leg_declined(&mut self, cx: &mut Ctx<'_>, c: CallId, li: LegId) -> bool {
        let Some(call) = self.calls.get_mut(&c) else {
            return false;
        };
        call.leg_mut(li).declined = true;
        if !call.legs.iter().all(|l| l.declined) {
            return false;
        }
        if call.steps.is_empty() {
            return true;
        }
        self.ring_step(cx, c);
        false
    }

    /// The current step gave up: its legs stop ringing and the next step
    /// rings; with no step left, the call ends as nobody answered.
    fn next_step(&mut self, cx: &mut Ctx<'_>, c: CallId) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        if call.steps.is_empty() {
            return self.abort_call(cx, c, EndReason::Timeout);
        }
        let (proxy, mode) = (call.proxy.clone(), call.mode);
        let open = call.open_legs(None);
        for l in call.legs.iter_mut() {
            l.declined = true;
        }
        for (device, id) in open {
            match mode {
                Mode::Jmi => send_jmi(
                    cx.out,
                    &proxy,
                    &device,
                    jmi("retract", &id, vec![reason("timeout")]),
                ),
                Mode::Jingle => self.send_own(
                    cx,
                    &proxy,
                    &device,
                    jingle::end_session(&id, "success", "The call moved on to another device."),
                ),
            }
        }
        self.ring_step(cx, c);
    }

    #[allow(clippy::too_many_arguments)]
    fn new_call(
        &mut self,
        cx: &mut Ctx<'_>,
        owner: OwnerId,
        class: usize,
        mode: Mode,
        caller: FullJid,
        sid: String,
        face: String,
        plan: RingPlan,
        offer: Element,
    ) -> Option<CallId> {
        // Her devices see the caller's virtual JID if he is an owner here
        // (DESIGN.md section 10), else his proxy JID.
        let proxy = match cx.out.secrets.account_owner(&caller.to_bare()) {
            Some(o) => cx.owners[o].virtual_jid.clone(),
            None => proxy_jid(&caller.to_bare(), &cx.cfg.domain)?,
        };
        let relay_only =
            plan.candidates.unwrap_or(cx.owners[owner].candidates) == CandidatePolicy::RelayOnly;
        let token = cx.out.next_id();
        let proxy = format!("{proxy}/{token}");
        self.next += 1;
        let c = CallId(self.next);
        info!(owner = %cx.owners[owner].name, steps = plan.steps.len(), ?mode, "ringing");
        self.by_caller.insert((caller.clone(), sid.clone()), c);
        let mut call = Call {
            owner,
            mode,
            caller,
            sid,
            proxy,
            face,
            legs: vec![],
            winner: None,
            rang: false,
            receipt: None,
            offer,
            caller_transport: vec![],
            steps: plan.steps.into(),
            step_ms: plan.step_ms,
            next_step_at: None,
            step_start: 0,
            ack_at: None,
            first_reached: None,
            ends_at: cx.now.plus_ms(plan.timeout_ms),
            on_no_answer: plan.on_no_answer,
            class,
            deadline: None,
            started: cx.now,
            relay_only,
        };
        call.set_deadline();
        self.calls.insert(c, call);
        self.sync_deadline(c);
        Some(c)
    }

    fn call_answered(&mut self, cx: &mut Ctx<'_>, c: CallId, li: LegId) {
        if let Some(ring_ms) = self.answer(cx.now, c, li) {
            info!(ring_ms, "answered");
            cx.out.event(Event::CallAnswered { ring_ms });
        }
    }

    /// A call refused before it rang anyone.
    fn call_rejected(&mut self, out: &mut Outbox) {
        out.event(Event::CallEnded(CallOutcome::Rejected));
    }

    fn end_call(&mut self, cx: &mut Ctx<'_>, c: CallId, why: EndReason) {
        let Some(call) = self.calls.remove(&c) else {
            return;
        };
        self.deadlines.cancel(&c);
        let (rung, reached, answered) = call.leg_counts();
        info!(owner = %cx.owners[call.owner].name, ?why, rung, reached, answered, "call ended");
        let outcome = why.outcome(call.winner.is_some());
        cx.out.event(Event::CallEnded(outcome));
        cx.out.event(Event::CallLegs {
            rung,
            reached,
            answered,
        });
        self.by_caller
            .remove(&(call.caller.clone(), call.sid.clone()));
        for l in call.legs {
            self.by_leg.remove(&l.id);
            if let (Some(m), false) = (l.msg_id, l.woke) {
                if self.spent_receipts.len() >= SPENT_RECEIPTS {
                    self.spent_receipts.pop_front();
                }
                self.spent_receipts.push_back((l.device, m));
            }
        }
        if call.winner.is_some() {
            // The call classes stop showing "In a call".
            self.answered_call_ended(call.owner);
        }
    }

    /// JMI from one of the owner's devices to a proxy JID.
    fn leg_jmi(&mut self, cx: &mut Ctx<'_>, device: FullJid, el: &Element) {
        let Some(leg_id) = el.attr("id") else { return };
        let Some(&c) = self.by_leg.get(leg_id) else {
            return trace!("JMI for no live leg");
        };
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(li) = call.find_or_wake(leg_id, &device) else {
            return trace!("JMI from a device that is not this leg's");
        };
        let call = &self.calls[&c];
        if call.leg(li).declined {
            if matches!(el.name(), "ringing" | "proceed") {
                // Late (a device that woke after its step gave way, or
                // after the call was taken): it stops ringing.
                let proxy = call.proxy.clone();
                send_jmi(
                    cx.out,
                    &proxy,
                    device.as_str(),
                    jmi("retract", leg_id, vec![]),
                );
            }
            return trace!("JMI from a leg that declined already");
        }
        if matches!(el.name(), "ringing" | "proceed") {
            self.reach(cx.now, cx.out, c, li);
        }
        let call = &self.calls[&c];
        let (face, caller, sid, proxy) = (
            call.face.clone(),
            call.caller.to_string(),
            call.sid.clone(),
            call.proxy.clone(),
        );
        match (el.name(), call.winner) {
            ("ringing", None) if !call.rang => {
                if let Some(call) = self.calls.get_mut(&c) {
                    call.rang = true;
                }
                self.caller_receipt(cx.out, c);
                send_jmi(cx.out, &face, &caller, jmi("ringing", &sid, vec![]));
            }
            // XEP-0353 §3.4: the first proceed wins.
            ("proceed", None) => {
                self.caller_receipt(cx.out, c);
                self.call_answered(cx, c, li);
                // After the win: her account's leg, if the winner woke
                // through it, is no longer open.
                let others = self
                    .calls
                    .get(&c)
                    .map(|call| call.open_legs(Some(li)))
                    .unwrap_or_default();
                send_jmi_copy(cx.out, &face, &caller, el, &sid);
                for (d, id) in others {
                    send_jmi(cx.out, &proxy, &d, jmi("retract", &id, vec![]));
                }
            }
            // A late second proceed is told the call is taken.
            ("proceed", Some(w)) if w != li => send_jmi(
                cx.out,
                &proxy,
                device.as_str(),
                jmi("retract", leg_id, vec![]),
            ),
            ("reject", None) => {
                // Declined on a device that woke: her account declines
                // (another device that wakes has a leg of its own).
                if let Some(a) = self.calls.get(&c).and_then(|call| call.account_of(li)) {
                    if let Some(call) = self.calls.get_mut(&c) {
                        call.leg_mut(a).declined = true;
                    }
                }
                if self.leg_declined(cx, c, li) {
                    send_jmi_copy(cx.out, &face, &caller, el, &sid);
                    self.end_call(cx, c, EndReason::EveryDeviceDeclined);
                }
            }
            ("finish", Some(w)) if w == li => {
                send_jmi_copy(cx.out, &face, &caller, el, &sid);
                self.end_call(cx, c, EndReason::DeviceFinished);
            }
            (name, _) => trace!(name, "ignored JMI from a device"),
        }
    }

    /// A Jingle IQ set; `false` if it is not one we route as a call.
    pub(super) fn call_iq(
        &mut self,
        cx: &mut Ctx<'_>,
        iq: &Element,
        from: &Jid,
        target: &Target,
    ) -> bool {
        if ibb::is_ibb(iq) {
            let Some(from) = full(from) else {
                return false;
            };
            return self.ibb(cx, iq, &from, target);
        }
        let Some(j) = jingle_child(iq) else {
            return false;
        };
        let (Some(sid), Some(action)) = (j.attr("sid"), j.attr("action")) else {
            cx.out.reply_error(iq, ErrorType::Modify, "bad-request");
            return true;
        };
        let Some(from) = full(from) else {
            cx.out.reply_error(iq, ErrorType::Modify, "bad-request");
            return true;
        };
        // Each end of a bridged SOCKS5 stream negotiates with us.
        if self.bridged_transport_info(cx, from.as_str(), j) {
            ack(cx.out, iq);
            return true;
        }
        let account_owner = cx.out.secrets.account_owner(&from.to_bare());
        match target {
            // He answers a call she makes.
            Target::Owner {
                owner,
                resource: Resource::Class(_),
            } if account_owner.is_none()
                && self.his_jingle(cx, *owner, &from, iq, j, sid, action) => {}
            Target::Owner {
                owner,
                resource: Resource::Class(class),
            } if account_owner != Some(*owner) => {
                self.caller_jingle(
                    cx,
                    *owner,
                    *class,
                    from,
                    iq,
                    j,
                    sid.to_owned(),
                    action.to_owned(),
                );
            }
            // A device of hers, to a proxy JID: a call she makes.
            Target::Proxy { remote }
                if !self.by_leg.contains_key(sid)
                    && account_owner.is_some_and(|i| {
                        self.her_jingle(
                            cx,
                            i,
                            from.clone(),
                            remote.clone(),
                            iq,
                            j,
                            sid.to_owned(),
                            action,
                        )
                    }) => {}
            Target::Proxy { .. }
            | Target::Owner {
                resource: Resource::Other,
                ..
            } if account_owner.is_some() => {
                self.device_jingle(cx, from, iq, j, sid.to_owned(), action.to_owned());
            }
            _ => unknown_session(cx.out, iq),
        }
        true
    }

    /// Sends an IQ of our own (a replay or a cancel) whose answer we drop.
    fn send_own(&mut self, cx: &mut Ctx<'_>, from: &str, to: &str, jingle: Element) {
        self.send_own_reaching(cx, from, to, jingle, None);
    }

    /// [`Calls::send_own`]; a result from `to` shows that leg `reaches` got
    /// the call.
    fn send_own_reaching(
        &mut self,
        cx: &mut Ctx<'_>,
        from: &str,
        to: &str,
        jingle: Element,
        reaches: Option<(CallId, LegId)>,
    ) {
        let id = cx.out.next_id();
        let stanza = jingle_iq(from, to, &id, jingle);
        if cx.out.secrets.leak_in(&stanza).is_some() {
            // A device's held or declining payload that names it: its leg
            // was answered already; the caller learns the outcome otherwise.
            debug!("not replayed: a device's Jingle payload names it");
            return;
        }
        if let Ok(peer) = Jid::new(to) {
            self.add_relay(
                id,
                Relay {
                    peer,
                    reaches,
                    back: None,
                    deadline: cx.now.plus_ms(cx.cfg.iq_timeout_ms),
                },
            );
        }
        cx.out.send(stanza);
    }

    /// Sends `jingle` from `from` to `to` on behalf of `iq`'s sender, whose
    /// IQ gets the answer.
    /// A SOCKS5 transport in it offers our streamhost instead (see [`s5b`]).
    fn relay(&mut self, cx: &mut Ctx<'_>, iq: &Element, from: &str, to: &str, mut jingle: Element) {
        let accepted = match iq.attr("from") {
            Some(sender) => self.offer_streamhost(cx, sender, from, to, &mut jingle),
            None => Vec::new(),
        };
        let id = cx.out.next_id();
        self.relay_iq(cx, iq, jingle_iq(from, to, &id, jingle));
        self.streamhost_accepted(cx, accepted);
    }

    /// Asks `to` what `iq` (a get) asks, from `from`, on behalf of `iq`'s
    /// sender, whose IQ gets the answer: her client's disco#info of a
    /// contact's proxy full JID (which decides whether it offers calls).
    pub(super) fn relay_get(
        &mut self,
        cx: &mut Ctx<'_>,
        iq: &Element,
        from: &str,
        to: &str,
        payload: Element,
    ) {
        let mut out = stanza::stanza("iq", from, to, Some("get"));
        stanza::set_attr(&mut out, "id", cx.out.next_id());
        out.append_child(payload);
        self.relay_iq(cx, iq, out);
    }

    /// Sends `out` (an IQ request of ours) on behalf of `iq`'s sender and
    /// remembers where its answer goes.
    fn relay_iq(&mut self, cx: &mut Ctx<'_>, iq: &Element, out: Element) {
        let (Some(id), Some(to)) = (out.attr("id"), out.attr("to")) else {
            return;
        };
        let (id, to) = (id.to_owned(), to.to_owned());
        let back = match (iq.attr("from"), iq.attr("to"), iq.attr("id")) {
            (Some(f), Some(t), Some(i)) => Some((f.to_owned(), t.to_owned(), i.to_owned())),
            _ => None,
        };
        if !cx.out.send_on_behalf(iq, out) {
            return;
        }
        if let Ok(peer) = Jid::new(&to) {
            self.add_relay(
                id,
                Relay {
                    peer,
                    reaches: None,
                    back,
                    deadline: cx.now.plus_ms(cx.cfg.iq_timeout_ms),
                },
            );
        }
    }

    /// An answer to an IQ we relayed; `false` if it is not one.
    pub(super) fn relay_answer(
        &mut self,
        now: Time,
        out: &mut Outbox,
        iq: &Element,
        from: &Jid,
    ) -> bool {
        let Some(id) = iq.attr("id") else {
            return false;
        };
        if self.relays.get(id).is_none_or(|r| r.peer != *from) {
            return false;
        }
        let Some(relay) = self.take_relay(id) else {
            return false;
        };
        if let (Some((c, li)), Some("result")) = (relay.reaches, iq.attr("type")) {
            self.reach(now, out, c, li);
        }
        if let Some((to, our_from, their_id)) = relay.back {
            let mut answer = stanza::stanza("iq", &our_from, &to, iq.attr("type"));
            stanza::set_attr(&mut answer, "id", their_id);
            let mut bare = answer.clone();
            for child in iq.children() {
                let mut child = child.clone();
                // An OMEMO device list's labels may name a device; her
                // vCard4 names her account.
                crate::core::omemo::drop_labels(&mut child);
                crate::core::profile::scrub_vcard4(&mut child, &|t: &str| {
                    out.secrets.names_secret(t, None).is_some()
                });
                answer.append_child(child);
            }
            if out.secrets.leak_in(&answer).is_some() {
                // The answer's payload names a device: its type alone.
                if iq.attr("type") == Some("error") {
                    let mut error = element("error", stanza::ns::COMPONENT, &[("type", "cancel")]);
                    error.append_child(Element::bare("undefined-condition", stanza::ns::STANZAS));
                    bare.append_child(error);
                }
                answer = bare;
            }
            out.send(answer);
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn caller_jingle(
        &mut self,
        cx: &mut Ctx<'_>,
        owner: OwnerId,
        class: usize,
        caller: FullJid,
        iq: &Element,
        j: &Element,
        sid: String,
        action: String,
    ) {
        let call = self.by_caller.get(&(caller.clone(), sid.clone())).copied();
        let Some(c) = call else {
            if action != "session-initiate" {
                return unknown_session(cx.out, iq);
            }
            // Plain Jingle (Dino without JMI): fork the session-initiate.
            let face = format!(
                "{}/{}",
                cx.owners[owner].virtual_jid, cx.cfg.classes[class].name
            );
            ack(cx.out, iq);
            if cx.hidden & (1 << class) != 0 || !self.admit_call(&cx.cfg.limits, &caller) {
                self.call_rejected(cx.out);
                return self.send_own(
                    cx,
                    &face.clone(),
                    caller.as_str(),
                    jingle::end_session(&sid, "decline", "Busy."),
                );
            }
            let mut plan = cx.ring_plan(owner, class, &caller.to_bare());
            // A session-initiate to her account would go to her server,
            // not to a device: plain Jingle rings devices online only.
            for step in &mut plan.steps {
                step.retain(|d| d.is_full());
            }
            plan.steps.retain(|s| !s.is_empty());
            if plan.steps.is_empty() {
                self.call_rejected(cx.out);
                return self.send_own(
                    cx,
                    &face.clone(),
                    caller.as_str(),
                    jingle::end_session(&sid, "decline", "Busy."),
                );
            }
            let Some(c) = self.new_call(
                cx,
                owner,
                class,
                Mode::Jingle,
                caller,
                sid,
                face,
                plan,
                j.clone(),
            ) else {
                return;
            };
            return self.ring_step(cx, c);
        };
        let call = &self.calls[&c];
        let (proxy, mode, winner, relay_only) =
            (call.proxy.clone(), call.mode, call.winner, call.relay_only);
        match winner {
            Some(w) => {
                let leg = call.leg(w);
                let (device, leg_id) = (leg.device.to_string(), leg.id.clone());
                if action == "session-initiate" && mode == Mode::Jingle {
                    return out_of_order(cx.out, iq);
                }
                match rewrite_jingle(j, &leg_id, Some(&proxy), None, relay_only) {
                    Some(out) => self.relay(cx, iq, &proxy, &device, out),
                    // Relay-only left nothing to say: answered here.
                    None => ack(cx.out, iq),
                }
                if action == "session-terminate" {
                    self.end_call(cx, c, EndReason::CallerTerminated);
                }
            }
            None if mode == Mode::Jingle
                && (action == "transport-info" || action == "session-terminate") =>
            {
                let legs = call.open_legs(None);
                ack(cx.out, iq);
                let hung_up = action == "session-terminate";
                for (device, leg_id) in legs {
                    // A caller hanging up before an answer sends `cancel`,
                    // which ringing Gajims do not take as the end (see
                    // `jingle::end_session`): the legs are ours to end.
                    let out = if hung_up {
                        let words = EndReason::CallerCancelled.words();
                        Some(jingle::end_session(&leg_id, "success", words))
                    } else {
                        rewrite_jingle(j, &leg_id, Some(&proxy), None, relay_only)
                    };
                    if let Some(out) = out {
                        self.send_own(cx, &proxy, &device, out);
                    }
                }
                if hung_up {
                    self.end_call(cx, c, EndReason::CallerCancelled);
                } else if let Some(call) = self.calls.get_mut(&c) {
                    // Legs of later steps get it after their session-initiate.
                    call.caller_transport.push(j.clone());
                }
            }
            // XEP-0353: nothing but the propose's answer before proceed.
            None => out_of_order(cx.out, iq),
        }
    }

    fn device_jingle(
        &mut self,
        cx: &mut Ctx<'_>,
        device: FullJid,
        iq: &Element,
        j: &Element,
        leg_id: String,
        action: String,
    ) {
        let Some(&c) = self.by_leg.get(&leg_id) else {
            return unknown_session(cx.out, iq);
        };
        let call = &self.calls[&c];
        let Some(li) = call.find_leg(&leg_id, &device) else {
            return unknown_session(cx.out, iq);
        };
        let relay_only = call.relay_only;
        let (face, caller, sid, proxy, mode) = (
            call.face.clone(),
            call.caller.to_string(),
            call.sid.clone(),
            call.proxy.clone(),
            call.mode,
        );
        match call.winner {
            Some(w) if w == li => {
                match rewrite_jingle(j, &sid, Some(&caller), Some(&face), relay_only) {
                    Some(out) => self.relay(cx, iq, &face, &caller, out),
                    // Relay-only left nothing to say: answered here.
                    None => ack(cx.out, iq),
                }
                if action == "session-terminate" {
                    self.end_call(cx, c, EndReason::DeviceTerminated);
                }
            }
            // This leg lost; its session is over.
            Some(_) => unknown_session(cx.out, iq),
            // A leg that declined already: nothing more of it goes to the
            // caller (a late ringing would look like the call going on).
            None if call.leg(li).declined => unknown_session(cx.out, iq),
            None if mode == Mode::Jmi => out_of_order(cx.out, iq),
            None => match action.as_str() {
                // XEP-0166 §6.4: the first session-accept wins.
                "session-accept" => {
                    self.call_answered(cx, c, li);
                    let Some(call) = self.calls.get_mut(&c) else {
                        tracing::error!("bug: an answered call vanished");
                        return unknown_session(cx.out, iq);
                    };
                    let (others, held) = (
                        call.open_legs(Some(li)),
                        std::mem::take(&mut call.leg_mut(li).held),
                    );
                    info!("answered");
                    match rewrite_jingle(j, &sid, Some(&caller), Some(&face), relay_only) {
                        Some(out) => self.relay(cx, iq, &face, &caller, out),
                        None => ack(cx.out, iq),
                    }
                    for h in held {
                        if let Some(out) =
                            rewrite_jingle(&h, &sid, Some(&caller), Some(&face), relay_only)
                        {
                            self.send_own(cx, &face, &caller, out);
                        }
                    }
                    for (d, id) in others {
                        self.send_own(
                            cx,
                            &proxy,
                            &d,
                            jingle::end_session(&id, "success", "Answered on another device."),
                        );
                    }
                }
                "transport-info" => {
                    ack(cx.out, iq);
                    if let Some(call) = self.calls.get_mut(&c) {
                        call.leg_mut(li).held.push(j.clone());
                    }
                }
                "session-terminate" => {
                    ack(cx.out, iq);
                    if self.leg_declined(cx, c, li) {
                        if let Some(out) =
                            rewrite_jingle(j, &sid, Some(&caller), Some(&face), relay_only)
                        {
                            self.send_own(cx, &face, &caller, out);
                        }
                        self.end_call(cx, c, EndReason::EveryDeviceDeclined);
                    }
                }
                "session-info" => {
                    ack(cx.out, iq);
                    self.reach(cx.now, cx.out, c, li);
                    let first = self
                        .calls
                        .get_mut(&c)
                        .is_some_and(|call| !std::mem::replace(&mut call.rang, true));
                    if first {
                        if let Some(out) =
                            rewrite_jingle(j, &sid, Some(&caller), Some(&face), relay_only)
                        {
                            self.send_own(cx, &face, &caller, out);
                        }
                    }
                }
                _ => ack(cx.out, iq),
            },
        }
    }

    /// Ring timeouts and expired relays.
    pub(super) fn call_timeouts(&mut self, cx: &mut Ctx<'_>) {
        while let Some(id) = self.relay_deadlines.pop_due(cx.now) {
            self.relays.remove(&id);
        }
        self.outgoing_timeouts(cx);
        while let Some(c) = self.deadlines.pop_due(cx.now) {
            let Some(call) = self.calls.get(&c) else {
                continue;
            };
            let due = |t: Option<Time>| t.is_some_and(|t| t <= cx.now);
            if call.ends_at <= cx.now {
                self.abort_call(cx, c, EndReason::Timeout);
            } else if due(call.next_step_at) || due(call.ack_at) {
                if due(call.ack_at) && !due(call.next_step_at) {
                    debug!("no device of the step got the call: the next one rings");
                }
                self.next_step(cx, c);
            } else {
                self.sync_deadline(c);
            }
        }
    }

    /// Ends call `c` on every side with `condition` (XEP-0166 §7.4): a
    /// call not yet answered is retracted on its legs and rejected to the
    /// caller; an answered one is finished (or terminated) both ways.
    fn abort_call(&mut self, cx: &mut Ctx<'_>, c: CallId, why: EndReason) {
        let Some(call) = self.calls.get(&c) else {
            return;
        };
        let condition = why.condition();
        let (face, caller, sid, proxy, mode) = (
            call.face.clone(),
            call.caller.to_string(),
            call.sid.clone(),
            call.proxy.clone(),
            call.mode,
        );
        let answered = call.winner.is_some();
        // DESIGN.md section 6: on no answer, optionally a missed-call note
        // to the owner, from the caller's proxy JID (her chat with them).
        let missed =
            (!answered && why == EndReason::Timeout && call.on_no_answer == NoAnswer::Message)
                .then(|| {
                    let class = cx.cfg.classes[call.class].name.clone();
                    let woke = call.legs.iter().any(|l| l.is_account());
                    (call.owner, call.caller.to_bare(), class, woke)
                });
        let legs = call.live_legs();
        match mode {
            Mode::Jmi => {
                let (to_legs, to_caller) = if answered {
                    ("finish", "finish")
                } else {
                    ("retract", "reject")
                };
                for (d, id) in legs {
                    send_jmi(
                        cx.out,
                        &proxy,
                        &d,
                        jmi(to_legs, &id, vec![reason(condition)]),
                    );
                }
                send_jmi(
                    cx.out,
                    &face,
                    &caller,
                    jmi(to_caller, &sid, vec![reason(condition)]),
                );
            }
            Mode::Jingle => {
                for (d, id) in legs {
                    let end = jingle::end_session(&id, "success", why.words());
                    self.send_own(cx, &proxy, &d, end);
                }
                let to_caller = if answered { "success" } else { "decline" };
                let end = jingle::end_session(&sid, to_caller, why.words());
                self.send_own(cx, &face, &caller, end);
            }
        }
        if let Some((owner, caller, class, woke)) = missed {
            self.missed_call_note(cx, owner, &caller, &class, woke);
        }
        self.end_call(cx, c, why);
    }

    fn missed_call_note(
        &mut self,
        cx: &mut Ctx<'_>,
        owner: OwnerId,
        caller: &jid::BareJid,
        class: &str,
        asleep: bool,
    ) {
        let Some(proxy) = proxy_jid(caller, &cx.cfg.domain) else {
            return;
        };
        let text = if asleep {
            format!(
                "Missed {class} call from {caller}. Your devices that were asleep were called \
                 through your server too; the call was withdrawn, so they will not ring for it \
                 when they wake."
            )
        } else {
            format!("Missed {class} call from {caller}")
        };
        for a in cx.owners.linked_accounts(owner, &cx.out.secrets) {
            let mut m = stanza::stanza("message", proxy.as_str(), a.as_str(), Some("chat"));
            stanza::set_attr(&mut m, "id", cx.out.next_id());
            m.append_child(stanza::text_element("body", stanza::ns::COMPONENT, &text));
            m.append_child(Element::bare("store", jingle::HINTS));
            cx.out.send(m);
        }
    }

    /// Every call of owner `i` ends (she unregistered).
    pub(super) fn abort_owner_calls(&mut self, cx: &mut Ctx<'_>, i: OwnerId) {
        let hers: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.owner == i)
            .map(|(k, _)| *k)
            .collect();
        for c in hers {
            self.abort_call(cx, c, EndReason::OwnerGone);
        }
        for key in self.outgoing_of(Some(i), None) {
            self.abort_outgoing(cx, &key, EndReason::OwnerGone);
        }
    }

    /// Every call ends (graceful shutdown).
    pub(super) fn abort_all_calls(&mut self, cx: &mut Ctx<'_>) {
        let all: Vec<CallId> = self.calls.keys().copied().collect();
        for c in all {
            self.abort_call(cx, c, EndReason::Connectivity);
        }
        for key in self.outgoing_of(None, None) {
            self.abort_outgoing(cx, &key, EndReason::Connectivity);
        }
    }

    /// A device went offline: its ringing leg is declined; if it had
    /// answered, the call ends on the caller's side.
    pub(super) fn call_device_gone(&mut self, cx: &mut Ctx<'_>, device: &FullJid) {
        let gone = Jid::from(device.clone());
        for key in self.outgoing_of(None, Some(device)) {
            self.abort_outgoing(cx, &key, EndReason::DeviceWentOffline);
        }
        let affected: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.legs.iter().any(|l| l.device == gone))
            .map(|(k, _)| *k)
            .collect();
        for c in affected {
            let call = &self.calls[&c];
            let Some(li) = call.legs.iter().position(|l| l.device == gone).map(LegId) else {
                continue;
            };
            let (face, caller, sid, mode, answered) = (
                call.face.clone(),
                call.caller.to_string(),
                call.sid.clone(),
                call.mode,
                call.winner.is_some(),
            );
            let ended = if answered {
                call.winner == Some(li)
            } else {
                // Like a decline: the next step rings if there is one.
                self.leg_declined(cx, c, li)
            };
            if !ended {
                continue;
            }
            match mode {
                Mode::Jmi if answered => send_jmi(
                    cx.out,
                    &face,
                    &caller,
                    jmi("finish", &sid, vec![reason("connectivity-error")]),
                ),
                Mode::Jmi => send_jmi(
                    cx.out,
                    &face,
                    &caller,
                    jmi("reject", &sid, vec![reason("busy")]),
                ),
                Mode::Jingle => {
                    let condition = if answered { "success" } else { "decline" };
                    let end = jingle::end_session(&sid, condition, "Her device went offline.");
                    self.send_own(cx, &face, &caller, end)
                }
            }
            self.end_call(cx, c, EndReason::DeviceWentOffline);
        }
    }
}

/// Relays a JMI element (a device's answer to the caller, her propose to
/// a contact) from `from` to `to`; a child that would name a secret the
/// recipient may not see is left out, the others (a propose's
/// `<description/>`) kept.
fn send_jmi_copy(out: &mut Outbox, from: &str, to: &str, el: &Element, sid: &str) {
    let leaks = |out: &Outbox, candidate: &Element| {
        let mut probe = stanza::stanza("message", from, to, Some("chat"));
        probe.append_child(candidate.clone());
        out.secrets.leak_in(&probe).is_some()
    };
    let mut copy = jmi_copy(el, sid);
    if leaks(out, &copy) {
        let mut kept = jmi(el.name(), sid, vec![]);
        for child in copy.children() {
            if !leaks(out, &jmi(el.name(), sid, vec![child.clone()])) {
                kept.append_child(child.clone());
            }
        }
        copy = kept;
    }
    send_jmi(out, from, to, copy);
}

fn send_jmi(out: &mut Outbox, from: &str, to: &str, el: Element) {
    let mut m = stanza::stanza("message", from, to, Some("chat"));
    stanza::set_attr(&mut m, "id", out.next_id());
    m.append_child(el);
    m.append_child(Element::bare("store", jingle::HINTS));
    out.send(m);
}

fn unknown_session(out: &mut Outbox, iq: &Element) {
    // XEP-0166 §10.
    if let Some(e) = jingle_error(iq, ErrorType::Cancel, "item-not-found", "unknown-session") {
        out.send(e);
    }
}

fn out_of_order(out: &mut Outbox, iq: &Element) {
    if let Some(e) = jingle_error(iq, ErrorType::Wait, "unexpected-request", "out-of-order") {
        out.send(e);
    }
}

fn ack(out: &mut Outbox, iq: &Element) {
    out.send(iq_result(iq, None));
}

/// The class whose features cover what the caller asks, the smallest
/// such (audio before video for an audio call).
fn class_for(classes: &[super::ClassDef], needed: &[String]) -> Option<usize> {
    if needed.is_empty() {
        return None;
    }
    classes
        .iter()
        .enumerate()
        .filter(|(_, c)| needed.iter().all(|n| c.requires.contains(n)))
        .min_by_key(|(_, c)| c.requires.len())
        .map(|(i, _)| i)
}

/// Who rings when: owner `o`'s first matching rule (DESIGN.md section 6)
/// over her live devices of the class, at her local time.
pub(super) fn ring_plan(
    o: &super::owners::Owner,
    cfg: &CoreConfig,
    wall_ms: u64,
    class: usize,
    caller: &jid::BareJid,
) -> RingPlan {
    let local = super::local_time(wall_ms, o.timezone);
    let ctx = CallContext {
        class: &cfg.classes[class].name,
        caller_is_watcher: o.watchers.is_subscribed(caller),
        caller,
        weekday: local.weekday(),
        minute: (local.hour() * 60 + local.minute()) as u16,
        best_show: o.devices.best_show(class),
    };
    let mut candidates: Vec<Candidate> = o
        .devices
        .live
        .iter()
        .filter(|(_, d)| d.classes & (1 << class) != 0)
        .map(|(j, d)| Candidate {
            jid: j.clone(),
            show: d.show,
            priority: d.priority,
            asleep: false,
        })
        .collect();
    candidates.extend(
        o.asleep(wall_ms, &cfg.push_domains)
            .into_iter()
            .map(|jid| Candidate {
                jid,
                show: super::devices::Show::Online,
                priority: 0,
                asleep: true,
            }),
    );
    let fallback = Rule::default_rule(cfg.ring_timeout_ms);
    rules::plan(&o.rules, &fallback, &ctx, &candidates)
}
