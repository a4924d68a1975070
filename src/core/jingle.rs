//! Raw-element vocabulary for XEP-0353 (Jingle Message Initiation) and
//! XEP-0166 (Jingle) relaying.
//!
//! Written here rather than taken from xmpp-parsers: its `JingleMI` type
//! rejects `<ringing/>` and `<finish/>`, keeps one `<description/>` and
//! drops `<reason/>`, and its Jingle types drop unknown children on a
//! round trip (extmap-allow-mixed, bandwidth) and refuse mDNS candidates.
//! Everything here works on `minidom::Element`s and changes only the
//! attributes the relay must change, so payloads arrive as sent.

use minidom::{Element, Node};

use super::stanza::{element, set_attr, ErrorType};

/// XEP-0353 namespace (the current one, used by Conversations and Dino).
pub const JMI: &str = "urn:xmpp:jingle-message:0";
/// XEP-0166.
pub const JINGLE: &str = "urn:xmpp:jingle:1";
/// XEP-0166 §10 error conditions.
pub const JINGLE_ERRORS: &str = "urn:xmpp:jingle:errors:1";
/// XEP-0176 ICE-UDP transport.
pub const ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";
/// XEP-0167 RTP description.
pub const RTP: &str = "urn:xmpp:jingle:apps:rtp:1";
/// XEP-0184 receipts.
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0334 hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0280 carbons.
pub const CARBONS: &str = "urn:xmpp:carbons:2";

/// The XEP-0353 element of a message, if it has one.
pub fn jmi_child(message: &Element) -> Option<&Element> {
    message.children().find(|c| c.has_ns(JMI))
}

/// The Jingle element of an IQ, if it has one.
pub fn jingle_child(iq: &Element) -> Option<&Element> {
    iq.get_child("jingle", JINGLE)
}

/// A copy of a JMI element (`proceed`, `ringing`, ...) with a new `id`,
/// without the children that only make sense between the original two
/// parties (an OMEMO `<device/>` naming the answering device).
pub fn jmi_copy(el: &Element, id: &str) -> Element {
    let mut out = element(el.name(), JMI, &[]);
    // The peer's attributes keep their own (already parsed) names and
    // namespaces: nothing is re-parsed, so nothing a peer wrote can fail.
    for ((attr_ns, name), value) in el.attrs().iter() {
        out.set_attr(attr_ns.clone(), name.clone(), value.clone());
    }
    set_attr(&mut out, "id", id);
    for child in el.children().filter(|c| c.name() != "device") {
        out.append_child(child.clone());
    }
    out
}

/// A JMI element with only an id and optional children.
pub fn jmi(name: &str, id: &str, children: Vec<Element>) -> Element {
    let mut el = element(name, JMI, &[("id", id)]);
    for c in children {
        el.append_child(c);
    }
    el
}

/// A Jingle `<reason/>` with one condition (XEP-0166 §7.4).
pub fn reason(condition: &str) -> Element {
    let mut r = Element::bare("reason", JINGLE);
    r.append_child(Element::bare(condition, JINGLE));
    r
}

/// XEP-0371 ICE transport (the successor of ICE-UDP), candidates alike.
pub const ICE: &str = "urn:xmpp:jingle:transports:ice:0";

/// A copy of `jingle` with `sid` and, where given, `initiator` and
/// `responder` replaced. With `relay_only` (DESIGN.md section 5), applied
/// in both directions: only relay candidates stay, each with its
/// `rel-addr`/`rel-port` blanked to `0.0.0.0`/`0` (they name the
/// sender's own reflexive or host address), and a `remote-candidate`
/// (which names an address) goes. `None` when that left a transport-info
/// with no candidate at all: it is not sent, since even its arrival
/// would tell how many addresses were withheld.
pub fn rewrite_jingle(
    jingle: &Element,
    sid: &str,
    initiator: Option<&str>,
    responder: Option<&str>,
    relay_only: bool,
) -> Option<Element> {
    let mut out = jingle.clone();
    set_attr(&mut out, "sid", sid);
    if let (Some(i), Some(_)) = (initiator, out.attr("initiator")) {
        set_attr(&mut out, "initiator", i);
    }
    if let (Some(r), Some(_)) = (responder, out.attr("responder")) {
        set_attr(&mut out, "responder", r);
    }
    strip_socks5(&mut out);
    if relay_only {
        let mut removed = 0;
        let kept = keep_relay_candidates(&mut out, &mut removed);
        if removed > 0 && kept == 0 && jingle.attr("action") == Some("transport-info") {
            return None;
        }
    }
    Some(out)
}

/// XEP-0260 SOCKS5 bytestreams transport.
pub const S5B: &str = "urn:xmpp:jingle:transports:s5b:1";

/// Empties every SOCKS5 transport of its candidates and its `dstaddr`.
///
/// A SOCKS5 bytestream cannot pass through an address-translating relay:
/// both ends name the stream by SHA-1(sid, initiator JID, responder JID)
/// (XEP-0260 §2.2, the SOCKS5 `DST.ADDR`), and here each end knows the
/// other by another JID, so no streamhost, direct or mediated, ever pairs
/// them. Its candidates would only tell the other side her addresses (a
/// direct candidate is her device's IP and full JID), and the `dstaddr`
/// would let him test a guess of her real JID. Without candidates both
/// ends report `candidate-error` at once and the initiator falls back to
/// in-band bytestreams (XEP-0261, `transport-replace`), which are relayed.
fn strip_socks5(el: &mut Element) {
    if el.is("transport", S5B) {
        el.attrs_mut()
            .remove(&minidom::rxml::Namespace::NONE, "dstaddr");
        for node in el.take_nodes() {
            match node {
                Node::Element(c) if c.name() == "candidate" => {}
                other => el.append_node(other),
            }
        }
        return;
    }
    for child in el.children_mut() {
        strip_socks5(child);
    }
}

/// Removes every candidate but relay ones (blanking their related
/// address); returns how many candidates are left, counting removals in
/// `removed`.
fn keep_relay_candidates(el: &mut Element, removed: &mut usize) -> usize {
    if el.is("transport", ICE_UDP) || el.is("transport", ICE) {
        let mut kept = 0;
        for node in el.take_nodes() {
            match node {
                Node::Element(mut c) if c.name() == "candidate" => {
                    if c.attr("type") != Some("relay") {
                        *removed += 1;
                        continue;
                    }
                    if c.attr("rel-addr").is_some() {
                        set_attr(&mut c, "rel-addr", "0.0.0.0");
                    }
                    if c.attr("rel-port").is_some() {
                        set_attr(&mut c, "rel-port", "0");
                    }
                    kept += 1;
                    el.append_child(c);
                }
                Node::Element(c) if c.name() == "remote-candidate" => *removed += 1,
                other => el.append_node(other),
            }
        }
        return kept;
    }
    el.children_mut()
        .map(|child| keep_relay_candidates(child, removed))
        .sum()
}

/// A Jingle IQ set from `from` to `to` with `id` carrying `jingle`.
pub fn jingle_iq(from: &str, to: &str, id: &str, jingle: Element) -> Element {
    let mut iq = super::stanza::stanza("iq", from, to, Some("set"));
    set_attr(&mut iq, "id", id);
    iq.append_child(jingle);
    iq
}

/// A `session-terminate` the component sends when it ends a plain-Jingle
/// call itself: `success` or `decline` with the precise reason as text.
///
/// XEP-0166 §7.4 has finer conditions (`timeout`, `cancel`, `busy`,
/// `gone`), but Gajim 1.7 (the plain-Jingle client most owners and callers
/// run) closes its call window only for `success` and `decline`: on any
/// other condition it shows an error and keeps the call "in progress",
/// refusing every later call until restarted. The text keeps what the
/// condition would have said.
pub fn end_session(sid: &str, condition: &str, text: &str) -> Element {
    let mut j = element(
        "jingle",
        JINGLE,
        &[("action", "session-terminate"), ("sid", sid)],
    );
    let mut r = reason(condition);
    r.append_child(super::stanza::text_element("text", JINGLE, text));
    j.append_child(r);
    j
}

/// XEP-0166 §10: an error reply with a Jingle-specific condition.
pub fn jingle_error(
    iq: &Element,
    typ: ErrorType,
    condition: &str,
    jingle_condition: &str,
) -> Option<Element> {
    let mut reply = super::stanza::error_reply(iq, typ, condition, None)?;
    if let Some(err) = reply.get_child_mut("error", super::stanza::ns::COMPONENT) {
        err.append_child(Element::bare(jingle_condition, JINGLE_ERRORS));
    }
    Some(reply)
}

/// The features a JMI `<propose/>` or a `session-initiate` asks for: each
/// description's namespace and, for RTP, the media feature.
pub fn needed_features(container: &Element) -> Vec<String> {
    let mut out = Vec::new();
    let mut visit = |d: &Element| {
        out.push(d.ns());
        if d.has_ns(RTP) {
            if let Some(media) = d.attr("media") {
                out.push(format!("urn:xmpp:jingle:apps:rtp:{media}"));
            }
        }
    };
    for child in container.children() {
        if child.name() == "description" {
            visit(child);
        } else if child.name() == "content" {
            for d in child.children().filter(|d| d.name() == "description") {
                visit(d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCEPT: &str = r#"<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='leg1' initiator='bob\40localhost@unified.localhost/t1' responder='alice@localhost/phone'>
      <content creator='initiator' name='0' senders='both'>
        <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
          <payload-type id='111' name='opus' clockrate='48000' channels='2'><rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='transport-cc'/></payload-type>
          <rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='1' uri='urn:ietf:params:rtp-hdrext:ssrc-audio-level'/>
          <extmap-allow-mixed xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0'/>
          <source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='1234'><parameter name='cname' value='x'/></source>
          <rtcp-mux/>
        </description>
        <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>
          <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='active'>AA:BB</fingerprint>
          <candidate component='1' foundation='1' generation='0' id='c1' ip='0c8d9b2e-1111.local' network='0' port='5000' priority='1' protocol='udp' type='host'/>
          <candidate component='1' foundation='2' generation='0' id='c2' ip='203.0.113.7' network='0' port='5001' priority='1' protocol='udp' type='srflx'/>
          <candidate component='1' foundation='3' generation='0' id='c3' ip='198.51.100.9' network='0' port='5002' priority='1' protocol='udp' type='relay'/>
        </transport>
      </content>
    </jingle>"#;

    #[test]
    fn rewriting_changes_only_sid_and_roles_and_keeps_unknown_children() {
        let el: Element = ACCEPT.parse().unwrap();
        let out = rewrite_jingle(
            &el,
            "S1",
            Some("bob@localhost/pc"),
            Some("alice@unified.localhost/audio"),
            false,
        )
        .unwrap();
        assert_eq!(out.attr("sid"), Some("S1"));
        assert_eq!(out.attr("initiator"), Some("bob@localhost/pc"));
        assert_eq!(out.attr("responder"), Some("alice@unified.localhost/audio"));
        let mut back = out.clone();
        set_attr(&mut back, "sid", "leg1");
        set_attr(&mut back, "initiator", el.attr("initiator").unwrap());
        set_attr(&mut back, "responder", el.attr("responder").unwrap());
        assert_eq!(back, el, "nothing else changed");
    }

    fn candidates(out: &Element) -> Vec<&Element> {
        out.get_child("content", JINGLE)
            .unwrap()
            .get_child("transport", ICE_UDP)
            .unwrap()
            .children()
            .filter(|c| c.name() == "candidate" || c.name() == "remote-candidate")
            .collect()
    }

    #[test]
    fn relay_only_keeps_relay_candidates_only_with_no_related_address() {
        let el: Element = ACCEPT
            .replace(
                "type='relay'/>",
                "type='relay' rel-addr='192.0.2.44' rel-port='61000'/><candidate component='1' foundation='4' generation='0' id='c4' ip='192.0.2.45' network='0' port='5003' priority='1' protocol='udp' type='prflx'/><remote-candidate component='1' ip='192.0.2.46' port='5004'/>",
            )
            .parse()
            .unwrap();
        let out = rewrite_jingle(&el, "S1", None, None, true).unwrap();
        let left = candidates(&out);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].attr("type"), Some("relay"));
        assert_eq!(left[0].attr("ip"), Some("198.51.100.9"));
        assert_eq!(left[0].attr("rel-addr"), Some("0.0.0.0"));
        assert_eq!(left[0].attr("rel-port"), Some("0"));
        let transport = out
            .get_child("content", JINGLE)
            .unwrap()
            .get_child("transport", ICE_UDP)
            .unwrap();
        assert!(
            transport.children().any(|c| c.name() == "fingerprint"),
            "the fingerprint stays"
        );
        // Direct: as sent.
        let direct = rewrite_jingle(&el, "S1", None, None, false).unwrap();
        assert_eq!(candidates(&direct).len(), 5);
    }

    #[test]
    fn a_transport_info_relay_only_empties_is_not_sent_but_one_sent_empty_is() {
        let info = |cands: &str| -> Element {
            format!("<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='x'><content creator='initiator' name='0'><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>{cands}</transport></content></jingle>")
                .parse()
                .unwrap()
        };
        let host = "<candidate component='1' foundation='1' generation='0' id='c1' ip='192.0.2.1' network='0' port='5000' priority='1' protocol='udp' type='host'/>";
        let relay = "<candidate component='1' foundation='3' generation='0' id='c3' ip='198.51.100.9' network='0' port='5002' priority='1' protocol='udp' type='relay'/>";
        assert!(rewrite_jingle(&info(host), "S", None, None, true).is_none());
        assert!(rewrite_jingle(&info(host), "S", None, None, false).is_some());
        assert!(rewrite_jingle(&info(&format!("{host}{relay}")), "S", None, None, true).is_some());
        // An ICE restart or end-of-candidates carries none to begin with.
        assert!(rewrite_jingle(&info(""), "S", None, None, true).is_some());
        // A session-accept keeps its transport (ufrag, fingerprint) even
        // when no candidate is left.
        let accept: Element = ACCEPT
            .replace(" type='relay'", " type='host'")
            .parse()
            .unwrap();
        assert!(rewrite_jingle(&accept, "S", None, None, true).is_some());
    }

    #[test]
    fn proceed_copy_drops_the_omemo_device() {
        let el: Element = "<proceed xmlns='urn:xmpp:jingle-message:0' id='leg1'><device xmlns='http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification' id='42'/></proceed>".parse().unwrap();
        let out = jmi_copy(&el, "S1");
        assert_eq!(out.attr("id"), Some("S1"));
        assert_eq!(out.children().count(), 0);
    }

    #[test]
    fn needed_features_of_a_video_propose() {
        let el: Element = "<propose xmlns='urn:xmpp:jingle-message:0' id='S'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'/></propose>".parse().unwrap();
        assert_eq!(
            needed_features(&el),
            [
                RTP,
                "urn:xmpp:jingle:apps:rtp:audio",
                RTP,
                "urn:xmpp:jingle:apps:rtp:video"
            ]
        );
    }
}
