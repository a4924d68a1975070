//! In-band bytestreams (XEP-0047) of a call's file transfer (XEP-0234 over
//! XEP-0261): once a session is set up through us, its IBB `open`, `data`
//! and `close` IQs pass between the two ends like its Jingle IQs, each
//! side addressing the other as it knows it (his device as his proxy full
//! JID towards her, her class resource towards him). They carry their own
//! stream id, not the Jingle sid, so they follow the pair of ends.

use jid::FullJid;
use minidom::Element;

use super::super::router::{Resource, Target};
use super::{Calls, Ctx};

/// XEP-0047 namespace.
pub(super) const IBB: &str = "http://jabber.org/protocol/ibb";

/// Whether `iq` carries an in-band bytestream element.
pub(super) fn is_ibb(iq: &Element) -> bool {
    iq.children().any(|c| c.has_ns(IBB))
}

impl Calls {
    /// An IBB IQ set from `from` to `target`, relayed to the other end of
    /// the session it belongs to; `false` if it belongs to none.
    pub(super) fn ibb(
        &mut self,
        cx: &mut Ctx<'_>,
        iq: &Element,
        from: &FullJid,
        target: &Target,
    ) -> bool {
        let Some(payload) = iq.children().find(|c| c.has_ns(IBB)).cloned() else {
            return false;
        };
        let to_resource = iq
            .attr("to")
            .and_then(|t| jid::Jid::new(t).ok())
            .and_then(|t| t.resource().map(|r| r.to_string()));
        let account_owner = cx.out.secrets.account_owner(&from.to_bare());
        // (our address it leaves from, where it goes)
        let route: Option<(String, String)> = match target {
            // Her device to a contact's proxy full JID: a call she makes,
            // or a call to her that this device took.
            Target::Proxy { remote } if account_owner.is_some() => {
                let peer = to_resource.and_then(|r| FullJid::new(&format!("{remote}/{r}")).ok());
                match peer.and_then(|peer| self.route_to_him(from, &peer)) {
                    Some(route) => Some(route),
                    None => self.calls.values().find_map(|c| {
                        let w = c.winner?;
                        let to = iq.attr("to")?;
                        (c.leg(w).device == *from && to == c.proxy)
                            .then(|| (c.face.clone(), c.caller.to_string()))
                    }),
                }
            }
            // His device to her class resource.
            Target::Owner {
                owner,
                resource: Resource::Class(_),
            } if account_owner.is_none() => self.route_to_her(*owner, from).or_else(|| {
                self.calls.values().find_map(|c| {
                    let w = c.winner?;
                    (c.owner == *owner && c.caller == *from)
                        .then(|| (c.proxy.clone(), c.leg(w).device.to_string()))
                })
            }),
            _ => None,
        };
        let Some((our, to)) = route else {
            return false;
        };
        let mut out = super::stanza::stanza("iq", &our, &to, Some("set"));
        super::stanza::set_attr(&mut out, "id", cx.out.next_id());
        out.append_child(payload);
        self.relay_iq(cx, iq, out);
        true
    }
}
