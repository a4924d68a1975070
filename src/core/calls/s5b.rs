//! SOCKS5 bytestreams (XEP-0260 over XEP-0065) through the component's
//! own streamhost.
//!
//! A SOCKS5 stream is named by SHA-1(sid + offerer JID + connector JID)
//! (the `DST.ADDR`), and here each end knows the other by another JID, so
//! no streamhost of theirs ever pairs the two. Instead the component is
//! the other party of each end's negotiation, back to back: every SOCKS5
//! transport it relays loses its candidates (a direct one names her
//! device and address) and gets one mediated candidate of ours (`jid` our
//! domain, the configured host and port) whose `DST.ADDR` is computed
//! from the JIDs that end sees. Each end connects to us; we report
//! `candidate-error` for its own candidates, so ours is the one both
//! nominate; when both said `candidate-used`, we send each `activated`
//! (we offered the candidate, so activating it is ours to do), and the
//! runtime splices the two connections it parked under this bridge.
//! Neither end learns an address or JID of the other. An end that could
//! not reach us says `candidate-error`; the other end then hears
//! `proxy-error` and they fall back to in-band bytestreams, relayed as
//! before.
//!
//! The transport-info of a bridged stream (`candidate-used`,
//! `candidate-error`, `activated`, `proxy-error`) is answered here and not
//! relayed: each end negotiates with us, not with the other.

use std::collections::{HashMap, VecDeque};

use minidom::Element;
use sha1::{Digest, Sha1};
use tracing::{debug, info};

use super::super::jingle::{self, S5B};
use super::super::stanza::{element, set_attr};
use super::super::Time;
use super::{Calls, Ctx};

/// XEP-0260 §2.2: the type preference of a mediated candidate (10) in the
/// upper 16 bits.
const PROXY_PRIORITY: &str = "655360";
/// A bridge nobody completed is forgotten after this long (a leg of a
/// forked offer that lost, a transfer that fell back in-band).
const BRIDGE_TTL_MS: u64 = 10 * 60 * 1000;
/// Most bridges kept at once; the oldest goes first.
const MAX_BRIDGES: usize = 1024;

/// What the runtime's streamhost must do (see `crate::streamhost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamhostOp {
    /// Accept a SOCKS5 connection asking for any of `hashes` (one end of
    /// `bridge`) and splice it with the other end's connection.
    Expect {
        /// The bridge both connections belong to.
        bridge: u64,
        /// The `DST.ADDR`s this end may ask for, lowercase hex.
        hashes: Vec<String>,
    },
    /// Nothing more of `bridge` is expected: drop what waits for it.
    Forget {
        /// The bridge.
        bridge: u64,
    },
}

/// One end of a bridged stream: a device of hers or a contact's.
#[derive(Debug)]
struct End {
    /// Its real full JID.
    real: String,
    /// Our address facing it (her class resource, or his proxy full JID).
    our: String,
    /// The Jingle sid it knows the session by.
    sid: String,
    /// The content's creator and name, for our transport-info.
    creator: String,
    content: String,
    /// Our candidate's id, as offered to it.
    cid: String,
    /// What it said: `Some(true)` it connected to our candidate.
    used: Option<bool>,
}

#[derive(Debug)]
struct Bridge {
    /// The transport's own sid (XEP-0260), the same at both ends.
    tsid: String,
    ends: Vec<End>,
    /// Both ends heard our `candidate-error` for their own candidates.
    errors_sent: bool,
    /// `activated` (or `proxy-error`) went out: nothing more to do.
    done: bool,
    created: Time,
}

/// Every bridge the component is the streamhost of.
#[derive(Debug, Default)]
pub(super) struct Bridges {
    bridges: HashMap<u64, Bridge>,
    /// (transport sid, an end's real JID) -> its bridge.
    by_end: HashMap<(String, String), u64>,
    order: VecDeque<u64>,
    next: u64,
}

/// XEP-0260 §2.2 / XEP-0065 §5.3.2: SHA-1 of the stream id, the
/// offerer's JID and the connector's, as lowercase hex.
pub fn dst_addr(sid: &str, offerer: &str, connector: &str) -> String {
    let mut h = Sha1::new();
    h.update(sid.as_bytes());
    h.update(offerer.as_bytes());
    h.update(connector.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The SOCKS5 transports of `jingle`: (content creator, content name,
/// transport).
fn s5b_transports(jingle: &Element) -> Vec<(String, String, &Element)> {
    jingle
        .children()
        .filter(|c| c.is("content", jingle::JINGLE))
        .filter_map(|c| {
            let t = c.get_child("transport", S5B)?;
            Some((
                c.attr("creator").unwrap_or("initiator").to_owned(),
                c.attr("name").unwrap_or_default().to_owned(),
                t,
            ))
        })
        .collect()
}

impl Bridges {
    fn forget_old(&mut self, cx: &mut Ctx<'_>) {
        while let Some(&b) = self.order.front() {
            let expired = self.bridges.get(&b).is_none_or(|br| {
                br.created.plus_ms(BRIDGE_TTL_MS) <= cx.now || self.bridges.len() >= MAX_BRIDGES
            });
            if !expired {
                break;
            }
            self.order.pop_front();
            if let Some(br) = self.bridges.remove(&b) {
                for end in &br.ends {
                    self.by_end.remove(&(br.tsid.clone(), end.real.clone()));
                }
                cx.out.streamhost(StreamhostOp::Forget { bridge: b });
            }
        }
    }
}

impl Calls {
    /// `jingle` (already rewritten for `to`, its SOCKS5 candidates gone)
    /// goes from `our` to `to` on behalf of `from`: where it offers a
    /// SOCKS5 transport, our streamhost becomes its one candidate. After
    /// an accept, the bridges returned are ready for
    /// [`Calls::streamhost_accepted`], once `jingle` has gone out.
    pub(super) fn offer_streamhost(
        &mut self,
        cx: &mut Ctx<'_>,
        from: &str,
        our: &str,
        to: &str,
        jingle: &mut Element,
    ) -> Vec<u64> {
        let Some(host) = cx.cfg.streamhost.clone() else {
            return Vec::new();
        };
        let action = jingle.attr("action").unwrap_or_default().to_owned();
        if !matches!(
            action.as_str(),
            "session-initiate" | "session-accept" | "transport-replace" | "transport-accept"
        ) {
            return Vec::new();
        }
        let sid = jingle.attr("sid").unwrap_or_default().to_owned();
        let mut touched = Vec::new();
        for content in jingle.children_mut() {
            if !content.is("content", jingle::JINGLE) {
                continue;
            }
            let creator = content.attr("creator").unwrap_or("initiator").to_owned();
            let name = content.attr("name").unwrap_or_default().to_owned();
            let Some(t) = content.children_mut().find(|t| t.is("transport", S5B)) else {
                continue;
            };
            let Some(tsid) = t.attr("sid").map(str::to_owned) else {
                continue;
            };
            self.bridges.forget_old(cx);
            let b = match self.bridges.by_end.get(&(tsid.clone(), from.to_owned())) {
                Some(&b) => b,
                None => match self.bridges.by_end.get(&(tsid.clone(), to.to_owned())) {
                    Some(&b) => b,
                    None => {
                        self.bridges.next += 1;
                        let b = self.bridges.next;
                        self.bridges.bridges.insert(
                            b,
                            Bridge {
                                tsid: tsid.clone(),
                                ends: Vec::new(),
                                errors_sent: false,
                                done: false,
                                created: cx.now,
                            },
                        );
                        self.bridges.order.push_back(b);
                        b
                    }
                },
            };
            let Some(bridge) = self.bridges.bridges.get_mut(&b) else {
                continue;
            };
            let hash = dst_addr(&tsid, our, to);
            let cid = match bridge.ends.iter().find(|e| e.real == to) {
                Some(end) => end.cid.clone(),
                None if bridge.ends.len() < 2 => {
                    let cid = cx.out.next_id();
                    bridge.ends.push(End {
                        real: to.to_owned(),
                        our: our.to_owned(),
                        sid: sid.clone(),
                        creator,
                        content: name,
                        cid: cid.clone(),
                        used: None,
                    });
                    self.bridges.by_end.insert((tsid.clone(), to.to_owned()), b);
                    // Older Conversations and Gajim hash the Jingle sid.
                    let mut hashes = vec![hash.clone()];
                    if sid != tsid {
                        hashes.push(dst_addr(&sid, our, to));
                    }
                    cx.out
                        .streamhost(StreamhostOp::Expect { bridge: b, hashes });
                    cid
                }
                None => continue,
            };
            let mut candidate = element(
                "candidate",
                S5B,
                &[
                    ("cid", cid.as_str()),
                    ("host", host.host.as_str()),
                    ("jid", cx.cfg.domain.as_str()),
                    ("priority", PROXY_PRIORITY),
                    ("type", "proxy"),
                ],
            );
            set_attr(&mut candidate, "port", host.port.to_string());
            t.append_child(candidate);
            // XEP-0065 §7: the DST.ADDR to use (Dino takes it from here).
            set_attr(t, "dstaddr", hash);
            touched.push(b);
        }
        if action == "session-accept" || action == "transport-accept" {
            touched
        } else {
            Vec::new()
        }
    }

    /// Both ends of each bridge are known and the session accepted: each
    /// end hears that none of its own candidates worked for us, so ours
    /// is the one nominated.
    pub(super) fn streamhost_accepted(&mut self, cx: &mut Ctx<'_>, bridges: Vec<u64>) {
        for b in bridges {
            self.candidate_errors(cx, b);
        }
    }

    fn candidate_errors(&mut self, cx: &mut Ctx<'_>, b: u64) {
        let Some(bridge) = self.bridges.bridges.get_mut(&b) else {
            return;
        };
        if bridge.ends.len() < 2 || std::mem::replace(&mut bridge.errors_sent, true) {
            return;
        }
        let sends: Vec<_> = bridge
            .ends
            .iter()
            .map(|e| {
                let info = s5b_info(e, &bridge.tsid, element("candidate-error", S5B, &[]));
                (e.our.clone(), e.real.clone(), info)
            })
            .collect();
        for (our, real, info) in sends {
            self.send_own(cx, &our, &real, info);
        }
        self.maybe_activate(cx, b);
    }

    /// A `transport-info` from `from` about a bridged SOCKS5 stream:
    /// answered here, not relayed. `false` if it is about none.
    pub(super) fn bridged_transport_info(
        &mut self,
        cx: &mut Ctx<'_>,
        from: &str,
        jingle: &Element,
    ) -> bool {
        if jingle.attr("action") != Some("transport-info") {
            return false;
        }
        let transports = s5b_transports(jingle);
        if transports.is_empty() {
            return false;
        }
        let mut known = false;
        for (_, _, t) in transports {
            let Some(tsid) = t.attr("sid") else {
                continue;
            };
            let Some(&b) = self.bridges.by_end.get(&(tsid.to_owned(), from.to_owned())) else {
                continue;
            };
            known = true;
            let Some(bridge) = self.bridges.bridges.get_mut(&b) else {
                continue;
            };
            let Some(end) = bridge.ends.iter_mut().find(|e| e.real == from) else {
                continue;
            };
            if let Some(used) = t.get_child("candidate-used", S5B) {
                end.used = Some(used.attr("cid") == Some(end.cid.as_str()));
            } else if t.get_child("candidate-error", S5B).is_some() {
                end.used = Some(false);
            }
            // `activated` and `proxy-error` from an end: nothing for us.
            self.maybe_activate(cx, b);
        }
        known
    }

    /// When both ends connected to our candidate, each hears `activated`;
    /// when one could not, the other hears `proxy-error` (XEP-0260 §2.4)
    /// and they fall back in-band.
    fn maybe_activate(&mut self, cx: &mut Ctx<'_>, b: u64) {
        let Some(bridge) = self.bridges.bridges.get_mut(&b) else {
            return;
        };
        if bridge.done || !bridge.errors_sent || bridge.ends.len() < 2 {
            return;
        }
        let said: Vec<Option<bool>> = bridge.ends.iter().map(|e| e.used).collect();
        let what = if said.iter().all(|u| *u == Some(true)) {
            "activated"
        } else if said.contains(&Some(false)) && !said.contains(&None) {
            "proxy-error"
        } else {
            // Not everyone said yet. An end that connected while the
            // other failed hears proxy-error once both said.
            return;
        };
        bridge.done = true;
        let sends: Vec<_> = bridge
            .ends
            .iter()
            .filter(|e| e.used == Some(true))
            .map(|e| {
                let child = match what {
                    "activated" => element("activated", S5B, &[("cid", e.cid.as_str())]),
                    _ => element("proxy-error", S5B, &[]),
                };
                (
                    e.our.clone(),
                    e.real.clone(),
                    s5b_info(e, &bridge.tsid, child),
                )
            })
            .collect();
        if what == "activated" {
            info!(bridge = b, "bytestream through our streamhost");
        } else {
            debug!(bridge = b, "bytestream failed: in-band next");
            cx.out.streamhost(StreamhostOp::Forget { bridge: b });
        }
        for (our, real, info) in sends {
            self.send_own(cx, &our, &real, info);
        }
    }
}

/// A `transport-info` about `end`'s SOCKS5 transport carrying `child`.
fn s5b_info(end: &End, tsid: &str, child: Element) -> Element {
    let mut t = element("transport", S5B, &[("sid", tsid)]);
    t.append_child(child);
    let mut content = element(
        "content",
        jingle::JINGLE,
        &[
            ("creator", end.creator.as_str()),
            ("name", end.content.as_str()),
        ],
    );
    content.append_child(t);
    let mut j = element(
        "jingle",
        jingle::JINGLE,
        &[("action", "transport-info"), ("sid", end.sid.as_str())],
    );
    j.append_child(content);
    j
}

#[cfg(test)]
mod tests {
    use super::dst_addr;

    /// XEP-0260 example 1: sid `vj3hs98y`, initiator
    /// `romeo@montague.lit/orchard`, responder
    /// `juliet@capulet.lit/balcony`, and the `dstaddr` given there.
    #[test]
    fn dst_addr_is_the_xep_example() {
        assert_eq!(
            dst_addr(
                "vj3hs98y",
                "romeo@montague.lit/orchard",
                "juliet@capulet.lit/balcony"
            ),
            "972b7bf47291ca609517f67f86b5081086052dad"
        );
    }
}
