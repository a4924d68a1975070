//! What leaves the core: stanzas, changes for the store, events for the
//! metrics, and the ids they carry.
//!
//! The [`Outbox`] owns the privacy guard's [`Secrets`], so that every way
//! out passes it (DESIGN.md section 1): code that only needs to send takes
//! `&mut Outbox`, not the whole core.

use std::collections::VecDeque;

use jid::Jid;
use minidom::Element;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, error};

use super::address::Secrets;
use super::calls::s5b::StreamhostOp;
use super::stanza::{self, error_reply, ErrorType};
use super::{Event, StoreOp, MAX_EVENTS};

/// Stanzas on their way out, as the shell may write them.
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// One stanza.
    One(Element),
    /// One stanza to each of many recipients: the same stanza but for
    /// `to`, which `stanza` lacks. The guard passed it for every one of
    /// them, so the shell may serialise it once and vary only the
    /// address (a class presence to every watcher).
    Each {
        /// The stanza, without `to`.
        stanza: Element,
        /// The recipients, in order.
        to: VecDeque<String>,
    },
}

impl Transmit {
    /// How many stanzas this is.
    pub fn len(&self) -> usize {
        match self {
            Transmit::One(_) => 1,
            Transmit::Each { to, .. } => to.len(),
        }
    }

    /// None at all (an `Each` with no recipient left).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stanzas one by one, as [`Transmit::One`] would carry them.
    pub fn into_stanzas(self) -> impl Iterator<Item = Element> {
        let (one, each) = match self {
            Transmit::One(el) => (Some(el), None),
            Transmit::Each { stanza, to } => (None, Some((stanza, to))),
        };
        one.into_iter().chain(
            each.into_iter()
                .flat_map(|(stanza, to)| to.into_iter().map(move |to| addressed(&stanza, to))),
        )
    }
}

/// A copy of `stanza` to `to`.
fn addressed(stanza: &Element, to: String) -> Element {
    let mut copy = stanza.clone();
    stanza::set_attr(&mut copy, "to", to);
    copy
}

/// Everything the core emits, in order, until the shell drains it.
#[derive(Debug)]
pub(super) struct Outbox {
    /// Our domain: every stanza we send is from it.
    domain: String,
    /// Who must not learn what (the guard), and whose accounts are whose.
    pub(super) secrets: Secrets,
    transmit: VecDeque<Transmit>,
    /// Stanzas in `transmit` (an `Each` counts each recipient).
    queued: usize,
    store: VecDeque<StoreOp>,
    events: VecDeque<Event>,
    streamhost: VecDeque<StreamhostOp>,
    rng: StdRng,
    next_id: u64,
    guard_drops: u64,
}

impl Outbox {
    pub(super) fn new(domain: String, secrets: Secrets, seed: u64) -> Outbox {
        Outbox {
            domain,
            secrets,
            transmit: VecDeque::new(),
            queued: 0,
            store: VecDeque::new(),
            events: VecDeque::new(),
            streamhost: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            next_id: 0,
            guard_drops: 0,
        }
    }

    /// Every stanza leaves through here: addressed, from our domain, and
    /// free of secrets for its recipient (DESIGN.md section 1).
    pub(super) fn send(&mut self, stanza: Element) {
        if !self.sent_by_us(&stanza) {
            self.guard_drops += 1;
            error!(from = ?stanza.attr("from"), to = ?stanza.attr("to"), "bug: stanza without our from or a to, dropped");
            return;
        }
        if let Some(leak) = self.secrets.leak_in(&stanza) {
            self.guard_drops += 1;
            error!(to = ?stanza.attr("to"), kind = ?leak.kind, "bug: privacy guard dropped a stanza");
            return;
        }
        self.queued += 1;
        self.transmit.push_back(Transmit::One(stanza));
    }

    /// Relays `out` on behalf of `original`'s sender unless it names a
    /// secret of its recipient's; then the sender gets `not-acceptable`
    /// instead, so that the guard in [`Outbox::send`] stays the last line
    /// and never the expected path. Returns whether `out` was sent.
    pub(super) fn send_on_behalf(&mut self, original: &Element, out: Element) -> bool {
        if self.secrets.leak_in(&out).is_none() {
            self.send(out);
            return true;
        }
        debug!("refused to relay a stanza naming the owner's own device or account");
        let text = "Not sent: it names one of your own devices or accounts, which this address keeps private.";
        if let Some(e) = error_reply(original, ErrorType::Modify, "not-acceptable", Some(text)) {
            self.send(e);
        }
        false
    }

    /// The RFC 6120 error reply to `original`, where one is allowed.
    pub(super) fn reply_error(&mut self, original: &Element, typ: ErrorType, condition: &str) {
        if let Some(reply) = error_reply(original, typ, condition, None) {
            self.send(reply);
        }
    }

    /// One stanza to many recipients (a class presence to every watcher):
    /// built once, passed through the guard once for a reader who may see
    /// no secret at all (clean for nobody in particular is clean for
    /// everyone, `to` aside), and queued once as [`Transmit::Each`].
    /// Should the guard object, each copy goes through [`Outbox::send`]
    /// on its own.
    pub(super) fn send_to_each(&mut self, mut stanza: Element, recipients: Vec<String>) {
        let clean = self.sent_by_us(&stanza) && self.secrets.leak_for_anyone(&stanza).is_none();
        if !clean {
            for to in recipients {
                self.send(addressed(&stanza, to));
            }
            return;
        }
        if recipients.is_empty() {
            return;
        }
        stanza
            .attrs_mut()
            .remove(&minidom::rxml::Namespace::NONE, "to");
        self.queued += recipients.len();
        self.transmit.push_back(Transmit::Each {
            stanza,
            to: recipients.into(),
        });
    }

    /// Whether `stanza` is addressed and from our domain.
    fn sent_by_us(&self, stanza: &Element) -> bool {
        let from_ok = stanza
            .attr("from")
            .and_then(|f| Jid::new(f).ok())
            .is_some_and(|f| f.domain().as_str() == self.domain);
        from_ok && stanza.attr("to").is_some()
    }

    /// A change the shell makes durable before anything queued after it
    /// goes out.
    pub(super) fn keep(&mut self, op: StoreOp) {
        self.store.push_back(op);
    }

    /// Something the metrics count. A core nobody drains keeps at most
    /// [`MAX_EVENTS`] (the oldest are dropped).
    pub(super) fn event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Something the runtime's SOCKS5 streamhost must do.
    pub(super) fn streamhost(&mut self, op: StreamhostOp) {
        self.streamhost.push_back(op);
    }

    pub(super) fn poll_streamhost(&mut self) -> Option<StreamhostOp> {
        self.streamhost.pop_front()
    }

    /// A fresh stanza id: a counter and a seeded salt, so that ids are
    /// unique in a run and not guessable across runs.
    pub(super) fn next_id(&mut self) -> String {
        self.next_id += 1;
        let salt: u32 = self.rng.gen();
        format!("up{:x}-{:08x}", self.next_id, salt)
    }

    /// The seeded generator, for what else must not be guessed (link codes).
    pub(super) fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// The next stanza, one at a time (an `Each` gives a copy per
    /// recipient).
    pub(super) fn poll_transmit(&mut self) -> Option<Element> {
        let el = match self.transmit.front_mut()? {
            Transmit::One(_) => match self.transmit.pop_front() {
                Some(Transmit::One(el)) => el,
                _ => return None,
            },
            Transmit::Each { stanza, to } => {
                let el = to.pop_front().map(|to| addressed(stanza, to));
                if to.is_empty() {
                    self.transmit.pop_front();
                }
                el?
            }
        };
        self.queued -= 1;
        Some(el)
    }

    /// The next stanza or group of stanzas, whole.
    pub(super) fn poll_transmit_group(&mut self) -> Option<Transmit> {
        let t = self.transmit.pop_front()?;
        self.queued -= t.len();
        Some(t)
    }

    pub(super) fn poll_store(&mut self) -> Option<StoreOp> {
        self.store.pop_front()
    }

    pub(super) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Stanzas queued and not yet drained.
    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    /// Whether a queued change acknowledges something (see
    /// [`StoreOp::acknowledged`]).
    pub(super) fn keeps_acknowledged(&self) -> bool {
        self.store.iter().any(StoreOp::acknowledged)
    }

    /// Drops every queued stanza and change: the store refused them.
    pub(super) fn discard(&mut self) {
        self.store.clear();
        self.transmit.clear();
        self.queued = 0;
    }

    /// Stanzas the guard refused so far (each one a bug).
    pub(super) fn guard_drops(&self) -> u64 {
        self.guard_drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "unified.localhost";

    fn outbox() -> Outbox {
        Outbox::new(D.into(), Secrets::default(), 1)
    }

    fn to_of(el: &Element) -> &str {
        el.attr("to").unwrap_or_default()
    }

    /// One at a time or a group at a time, the same stanzas in the same
    /// order; a stanza for many leaves as one group without `to`.
    #[test]
    fn both_ways_out_drain_one_queue_in_order() {
        let fill = |out: &mut Outbox| {
            out.send(stanza::stanza("message", D, "a@localhost", Some("chat")));
            out.send_to_each(
                stanza::stanza("presence", &format!("alice@{D}/chat"), "x@localhost", None),
                vec!["b@localhost".into(), "c@localhost".into()],
            );
            out.send_to_each(
                stanza::stanza("presence", &format!("alice@{D}/chat"), "x@localhost", None),
                vec![],
            );
            out.send(stanza::stanza("message", D, "d@localhost", Some("chat")));
        };
        let mut one = outbox();
        fill(&mut one);
        assert_eq!(one.queued(), 4);
        let got: Vec<String> = std::iter::from_fn(|| one.poll_transmit())
            .map(|el| format!("{} {}", el.name(), to_of(&el)))
            .collect();
        assert_eq!(
            got,
            [
                "message a@localhost",
                "presence b@localhost",
                "presence c@localhost",
                "message d@localhost"
            ]
        );
        assert_eq!(one.queued(), 0);

        let mut group = outbox();
        fill(&mut group);
        let groups: Vec<Transmit> = std::iter::from_fn(|| group.poll_transmit_group()).collect();
        assert_eq!(
            groups.iter().map(Transmit::len).collect::<Vec<_>>(),
            [1, 2, 1]
        );
        let Transmit::Each { stanza, to } = &groups[1] else {
            panic!("the presence for two is one group: {groups:?}");
        };
        assert_eq!(stanza.attr("to"), None);
        assert_eq!(to, &["b@localhost", "c@localhost"]);
        let flat: Vec<String> = groups
            .into_iter()
            .flat_map(Transmit::into_stanzas)
            .map(|el| format!("{} {}", el.name(), to_of(&el)))
            .collect();
        assert_eq!(flat, got);
        assert_eq!(group.queued(), 0);
    }
}
