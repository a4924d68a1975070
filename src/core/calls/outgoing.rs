//! Calls she makes (DESIGN.md section 10): her device proposes (XEP-0353)
//! or sends a Jingle `session-initiate` to a contact's proxy JID, and the
//! call leaves from her class resource (`alice@D/audio`) to his real JID.
//! The mirror of an incoming call with one leg each way: facing him
//! everything comes from her class resource, facing her device everything
//! of his device comes from his proxy full JID
//! (`bob\40example.org@D/<his resource>`); ids and sids pass unchanged,
//! `initiator` and `responder` are mapped, her candidate policy applies.

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tracing::{debug, info, trace};

use super::super::address::proxy_jid;
use super::super::jingle::{self, jmi, reason, rewrite_jingle};
use super::super::stanza::{self, ErrorType};
use super::super::{CandidatePolicy, Event, OwnerId, Time};
use super::{
    class_for, out_of_order, send_jmi, send_jmi_copy, unknown_session, CallOutcome, Calls, Ctx,
    EndReason, Mode,
};

/// One call she makes, keyed by (her, sid): the propose id or Jingle sid,
/// which pass unchanged.
#[derive(Debug)]
pub(super) struct Outgoing {
    mode: Mode,
    /// Her device that calls.
    device: FullJid,
    /// His bare JID: where the propose goes (his server forks it).
    remote: BareJid,
    /// His proxy JID (bare): with his resource, what her device sees.
    proxy: String,
    /// What he sees: her class resource.
    face: String,
    /// His device in the call: the one that proceeded (XEP-0353) or
    /// that her session-initiate went to (plain Jingle).
    peer: Option<FullJid>,
    answered: bool,
    /// Ring deadline while nobody answered.
    deadline: Option<Time>,
    started: Time,
    relay_only: bool,
}

impl Outgoing {
    /// `peer`'s proxy full JID, as her device sees him.
    fn proxy_of(&self, peer: &FullJid) -> String {
        format!("{}/{}", self.proxy, peer.resource())
    }
}

/// The resource of `el`'s `to`, if it has one.
fn to_resource(el: &Element) -> Option<String> {
    let to = Jid::new(el.attr("to")?).ok()?;
    to.resource().map(|r| r.to_string())
}

impl Calls {
    /// The ring deadline of her call `sid` changed.
    fn sync_outgoing_deadline(&mut self, key: &(OwnerId, String)) {
        match self.outgoing.get(key).and_then(|o| o.deadline) {
            Some(at) => self.out_deadlines.set(key.clone(), at),
            None => self.out_deadlines.cancel(key),
        }
    }

    /// Live calls made from `account`'s devices (for the per-caller limit).
    pub(super) fn outgoing_from(&self, account: &BareJid) -> usize {
        self.outgoing
            .values()
            .filter(|o| o.device.to_bare() == *account)
            .count()
    }

    /// Where a stream of her device `from` to his device `peer` goes, if a
    /// call she makes joins them: (our address it leaves from, his JID).
    pub(super) fn route_to_him(&self, from: &FullJid, peer: &FullJid) -> Option<(String, String)> {
        self.outgoing
            .values()
            .find(|o| o.device == *from && o.peer.as_ref() == Some(peer))
            .map(|o| (o.face.clone(), peer.to_string()))
    }

    /// Where a stream of his device `from` to owner `i` goes, if a call
    /// she makes joins them: (his proxy full JID, her device).
    pub(super) fn route_to_her(&self, i: OwnerId, from: &FullJid) -> Option<(String, String)> {
        self.outgoing
            .iter()
            .find(|((o_i, _), o)| *o_i == i && o.peer.as_ref() == Some(from))
            .map(|(_, o)| (o.proxy_of(from), o.device.to_string()))
    }

    /// Whether a JMI element from `from` to owner `i` belongs to a call
    /// she makes: he answers her propose.
    pub(super) fn is_answer_to_her(&self, i: OwnerId, from: &FullJid, sid: &str) -> bool {
        self.outgoing
            .get(&(i, sid.to_owned()))
            .is_some_and(|o| o.remote == from.to_bare())
    }

    /// JMI from her device to his proxy JID that is no leg of an incoming
    /// call: a call she makes, or its end.
    pub(super) fn her_jmi(
        &mut self,
        cx: &mut Ctx<'_>,
        i: OwnerId,
        device: FullJid,
        remote: BareJid,
        msg: &Element,
        el: &Element,
    ) {
        let Some(sid) = el.attr("id").map(str::to_owned) else {
            return cx.out.reply_error(msg, ErrorType::Modify, "bad-request");
        };
        let key = (i, sid.clone());
        match (el.name(), self.outgoing.get(&key)) {
            ("propose", None) => self.her_propose(cx, i, device, remote, el, sid),
            ("propose", Some(_)) => trace!("duplicate propose"),
            ("retract" | "finish", Some(o)) if o.device == device => {
                let to = o
                    .peer
                    .as_ref()
                    .map_or(o.remote.to_string(), |p| p.to_string());
                let face = o.face.clone();
                send_jmi_copy(cx.out, &face, &to, el, &sid);
                self.end_outgoing(cx, &key, EndReason::CallerEnded);
            }
            (name, _) => trace!(name, "ignored JMI from her device"),
        }
    }

    /// Her device proposes a call to `remote`: from her class resource to
    /// his bare JID, which his server forks to his devices.
    fn her_propose(
        &mut self,
        cx: &mut Ctx<'_>,
        i: OwnerId,
        device: FullJid,
        remote: BareJid,
        el: &Element,
        sid: String,
    ) {
        let Some(proxy) = proxy_jid(&remote, &cx.cfg.domain) else {
            return;
        };
        let needed = jingle::needed_features(el);
        let Some(class) = class_for(&cx.cfg.classes, &needed) else {
            debug!("her propose for media no class serves");
            let reject = jmi("reject", &sid, vec![reason("unsupported-applications")]);
            return send_jmi(cx.out, proxy.as_str(), device.as_str(), reject);
        };
        if !self.admit_call(&cx.cfg.limits, &device) {
            let reject = jmi("reject", &sid, vec![reason("busy")]);
            return send_jmi(cx.out, proxy.as_str(), device.as_str(), reject);
        }
        let face = format!(
            "{}/{}",
            cx.owners[i].virtual_jid, cx.cfg.classes[class].name
        );
        // XEP-0353 §3.1: to his bare JID; kept for his devices that are
        // offline (store), as a propose of his own would be.
        let to = remote.to_string();
        self.new_outgoing(
            cx,
            i,
            Mode::Jmi,
            device,
            remote,
            proxy.to_string(),
            face.clone(),
            sid.clone(),
            None,
        );
        info!(owner = %cx.owners[i].name, "calling out");
        send_jmi_copy(cx.out, &face, &to, el, &sid);
    }

    #[allow(clippy::too_many_arguments)]
    fn new_outgoing(
        &mut self,
        cx: &mut Ctx<'_>,
        i: OwnerId,
        mode: Mode,
        device: FullJid,
        remote: BareJid,
        proxy: String,
        face: String,
        sid: String,
        peer: Option<FullJid>,
    ) {
        let relay_only = cx.owners[i].candidates == CandidatePolicy::RelayOnly;
        let key = (i, sid);
        self.outgoing.insert(
            key.clone(),
            Outgoing {
                mode,
                device,
                remote,
                proxy,
                face,
                peer,
                answered: false,
                deadline: Some(cx.now.plus_ms(cx.cfg.ring_timeout_ms)),
                started: cx.now,
                relay_only,
            },
        );
        self.sync_outgoing_deadline(&key);
    }

    /// JMI from his device to her class resource, for a call she makes.
    pub(super) fn his_jmi(&mut self, cx: &mut Ctx<'_>, i: OwnerId, from: FullJid, el: &Element) {
        let Some(sid) = el.attr("id").map(str::to_owned) else {
            return;
        };
        let key = (i, sid.clone());
        let Some(o) = self.outgoing.get_mut(&key) else {
            return;
        };
        if o.peer.as_ref().is_some_and(|p| *p != from) {
            // Another device of his: the one in the call speaks for him.
            return trace!("JMI from another device of his");
        }
        let (device, shown) = (o.device.to_string(), o.proxy_of(&from));
        match el.name() {
            "ringing" => send_jmi(cx.out, &shown, &device, jmi("ringing", &sid, vec![])),
            "proceed" if !o.answered => {
                o.peer = Some(from);
                self.outgoing_answered(cx, &key);
                send_jmi_copy(cx.out, &shown, &device, el, &sid);
            }
            "reject" | "finish" => {
                send_jmi_copy(cx.out, &shown, &device, el, &sid);
                let why = if el.name() == "reject" {
                    EndReason::EveryDeviceDeclined
                } else {
                    EndReason::DeviceFinished
                };
                self.end_outgoing(cx, &key, why);
            }
            name => trace!(name, "ignored JMI from his device"),
        }
    }

    /// A Jingle IQ from her device to his proxy JID that is no leg of an
    /// incoming call; `false` if it is none of hers either (unknown sid,
    /// not a session-initiate).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn her_jingle(
        &mut self,
        cx: &mut Ctx<'_>,
        i: OwnerId,
        device: FullJid,
        remote: BareJid,
        iq: &Element,
        j: &Element,
        sid: String,
        action: &str,
    ) -> bool {
        let key = (i, sid.clone());
        if !self.outgoing.contains_key(&key) {
            if action != "session-initiate" {
                return false;
            }
            // Plain Jingle (Dino, Gajim): to one device of his, named by
            // the proxy full JID her client chose.
            let Some(resource) = to_resource(iq) else {
                out_of_order(cx.out, iq);
                return true;
            };
            let (Some(proxy), Ok(peer)) = (
                proxy_jid(&remote, &cx.cfg.domain),
                FullJid::new(&format!("{remote}/{resource}")),
            ) else {
                unknown_session(cx.out, iq);
                return true;
            };
            let needed = jingle::needed_features(j);
            let Some(class) = class_for(&cx.cfg.classes, &needed) else {
                cx.out
                    .reply_error(iq, ErrorType::Cancel, "feature-not-implemented");
                return true;
            };
            if !self.admit_call(&cx.cfg.limits, &device) {
                cx.out
                    .reply_error(iq, ErrorType::Wait, "resource-constraint");
                return true;
            }
            let face = format!(
                "{}/{}",
                cx.owners[i].virtual_jid, cx.cfg.classes[class].name
            );
            info!(owner = %cx.owners[i].name, "calling out (plain Jingle)");
            self.new_outgoing(
                cx,
                i,
                Mode::Jingle,
                device.clone(),
                remote,
                proxy.to_string(),
                face,
                sid.clone(),
                Some(peer),
            );
        }
        let Some(o) = self.outgoing.get(&key) else {
            return false;
        };
        if o.device != device {
            unknown_session(cx.out, iq);
            return true;
        }
        let Some(peer) = o.peer.clone() else {
            // XEP-0353: nothing but the propose until he proceeds.
            out_of_order(cx.out, iq);
            return true;
        };
        let face = o.face.clone();
        match rewrite_jingle(j, &sid, Some(&face), None, o.relay_only) {
            Some(out) => self.relay(cx, iq, &face, peer.as_str(), out),
            None => cx.out.send(stanza::iq_result(iq, None)),
        }
        if action == "session-terminate" {
            self.end_outgoing(cx, &key, EndReason::CallerTerminated);
        }
        true
    }

    /// A Jingle IQ from his device to her class resource; `false` if it
    /// is for no call she makes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn his_jingle(
        &mut self,
        cx: &mut Ctx<'_>,
        i: OwnerId,
        from: &FullJid,
        iq: &Element,
        j: &Element,
        sid: &str,
        action: &str,
    ) -> bool {
        let key = (i, sid.to_owned());
        let Some(o) = self.outgoing.get_mut(&key) else {
            return false;
        };
        if o.remote != from.to_bare() {
            return false;
        }
        if o.peer.as_ref() != Some(from) {
            unknown_session(cx.out, iq);
            return true;
        }
        let (device, shown) = (o.device.to_string(), o.proxy_of(from));
        if action == "session-accept" && !o.answered {
            // Plain Jingle: his accept is the answer.
            self.outgoing_answered(cx, &key);
        }
        let o = &self.outgoing[&key];
        match rewrite_jingle(j, sid, Some(&device), Some(&shown), o.relay_only) {
            Some(out) => self.relay(cx, iq, &shown, &device, out),
            None => cx.out.send(stanza::iq_result(iq, None)),
        }
        if action == "session-terminate" {
            self.end_outgoing(cx, &key, EndReason::DeviceTerminated);
        }
        true
    }

    /// Her call `key` was answered: no more ring deadline, her classes
    /// show busy.
    fn outgoing_answered(&mut self, cx: &mut Ctx<'_>, key: &(OwnerId, String)) {
        let Some(o) = self.outgoing.get_mut(key) else {
            return;
        };
        o.answered = true;
        o.deadline = None;
        let ring_ms = cx.now.0.saturating_sub(o.started.0);
        self.sync_outgoing_deadline(key);
        self.answered_call(key.0);
        cx.out.event(Event::CallAnswered { ring_ms });
    }

    /// Her calls nobody answered in time: retracted towards him, and her
    /// device hears the call was not taken.
    pub(super) fn outgoing_timeouts(&mut self, cx: &mut Ctx<'_>) {
        while let Some(key) = self.out_deadlines.pop_due(cx.now) {
            self.abort_outgoing(cx, &key, EndReason::Timeout);
        }
    }

    /// Ends her call `key` on both sides with `why` (her device went away,
    /// she unregistered, the component stops, nobody answered).
    pub(super) fn abort_outgoing(
        &mut self,
        cx: &mut Ctx<'_>,
        key: &(OwnerId, String),
        why: EndReason,
    ) {
        let Some(o) = self.outgoing.get(key) else {
            return;
        };
        let sid = &key.1;
        let to_him = o
            .peer
            .as_ref()
            .map_or(o.remote.to_string(), |p| p.to_string());
        let shown = o.peer.as_ref().map_or(o.proxy.clone(), |p| o.proxy_of(p));
        let (face, device) = (o.face.clone(), o.device.to_string());
        match o.mode {
            Mode::Jmi => {
                let (his, hers) = if o.answered {
                    ("finish", "finish")
                } else {
                    ("retract", "reject")
                };
                send_jmi(
                    cx.out,
                    &face,
                    &to_him,
                    jmi(his, sid, vec![reason(why.condition())]),
                );
                if why != EndReason::DeviceWentOffline {
                    send_jmi(
                        cx.out,
                        &shown,
                        &device,
                        jmi(hers, sid, vec![reason(why.condition())]),
                    );
                }
            }
            Mode::Jingle => {
                let end = jingle::end_session(sid, "success", why.words());
                self.send_own(cx, &face, &to_him, end);
                if why != EndReason::DeviceWentOffline {
                    let end = jingle::end_session(sid, "success", why.words());
                    self.send_own(cx, &shown, &device, end);
                }
            }
        }
        self.end_outgoing(cx, key, why);
    }

    /// Every call owner `i` makes, by key (for ending them).
    pub(super) fn outgoing_of(
        &self,
        i: Option<OwnerId>,
        device: Option<&FullJid>,
    ) -> Vec<(OwnerId, String)> {
        self.outgoing
            .iter()
            .filter(|(k, o)| i.is_none_or(|i| k.0 == i) && device.is_none_or(|d| o.device == *d))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn end_outgoing(&mut self, cx: &mut Ctx<'_>, key: &(OwnerId, String), why: EndReason) {
        let Some(o) = self.outgoing.remove(key) else {
            return;
        };
        self.out_deadlines.cancel(key);
        info!(owner = %cx.owners[key.0].name, ?why, "call out ended");
        let outcome: CallOutcome = why.outcome(o.answered);
        cx.out.event(Event::CallEnded(outcome));
        if o.answered {
            self.answered_call_ended(key.0);
        }
    }
}
