//! Building stanzas as raw elements, and RFC 6120 error replies.
//!
//! The core reads and writes `minidom::Element`s so that what it relays is
//! never re-serialised through types that drop unknown children
//! (STYLE.md, practice 4). This module is the small vocabulary for that.

use minidom::rxml::{Namespace, NcName};
use minidom::Element;

/// Namespaces the core speaks.
pub mod ns {
    /// XEP-0114 stanza namespace.
    pub const COMPONENT: &str = "jabber:component:accept";
    /// RFC 6120 §8.3 stanza error conditions.
    pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    /// XEP-0030.
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    /// XEP-0030.
    pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    /// XEP-0115.
    pub const CAPS: &str = "http://jabber.org/protocol/caps";
    /// XEP-0319.
    pub const IDLE: &str = "urn:xmpp:idle:1";
    /// XEP-0004.
    pub const DATA: &str = "jabber:x:data";
    /// XEP-0199.
    pub const PING: &str = "urn:xmpp:ping";
    /// XEP-0092.
    pub const VERSION: &str = "jabber:iq:version";
    /// XEP-0203.
    pub const DELAY: &str = "urn:xmpp:delay";
}

fn name(n: &str) -> NcName {
    // Invariant: every attribute name the core writes is a literal XML name.
    NcName::try_from(n.to_owned()).expect("literal attribute names are valid NcNames")
}

/// The routing attributes of a stanza (`from`, `to`, `type`), read in
/// one pass over its attributes: each `Element::attr` is a search of a
/// namespaced map, and the entry point would otherwise make half a dozen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// `from`, as written.
    pub from: Option<&'a str>,
    /// `to`, as written.
    pub to: Option<&'a str>,
    /// `type`.
    pub typ: Option<&'a str>,
}

impl<'a> Header<'a> {
    /// The header of `el`.
    pub fn read(el: &'a Element) -> Header<'a> {
        let mut h = Header::default();
        for ((ns, name), value) in el.attrs().iter() {
            if !ns.is_none() {
                continue;
            }
            match name.as_str() {
                "from" => h.from = Some(value.as_str()),
                "to" => h.to = Some(value.as_str()),
                "type" => h.typ = Some(value.as_str()),
                _ => {}
            }
        }
        h
    }
}

/// Sets (or replaces) an unqualified attribute. One already there is
/// replaced in place: no attribute name is built (copies of a stanza to
/// many watchers differ only in `to`).
pub fn set_attr(el: &mut Element, attr: &str, value: impl Into<String>) {
    if let Some(v) = el.attrs_mut().get_mut(&Namespace::NONE, attr) {
        *v = value.into();
        return;
    }
    el.set_attr(Namespace::NONE, name(attr), value.into());
}

/// A new element with attributes.
pub fn element(tag: &str, ns: &str, attrs: &[(&str, &str)]) -> Element {
    let mut el = Element::bare(tag, ns);
    for (k, v) in attrs {
        set_attr(&mut el, k, *v);
    }
    el
}

/// A new element with text content.
pub fn text_element(tag: &str, ns: &str, text: &str) -> Element {
    let mut el = Element::bare(tag, ns);
    el.append_text(text);
    el
}

/// A stanza (`presence`, `message`, `iq`) with `from`, `to` and `type`.
pub fn stanza(kind: &str, from: &str, to: &str, typ: Option<&str>) -> Element {
    let mut el = element(kind, ns::COMPONENT, &[("from", from), ("to", to)]);
    if let Some(t) = typ {
        set_attr(&mut el, "type", t);
    }
    el
}

/// An IQ result for `iq`, from its `to`, with an optional payload.
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut el = stanza(
        "iq",
        iq.attr("to").unwrap_or_default(),
        iq.attr("from").unwrap_or_default(),
        Some("result"),
    );
    if let Some(id) = iq.attr("id") {
        set_attr(&mut el, "id", id);
    }
    if let Some(p) = payload {
        el.append_child(p);
    }
    el
}

/// RFC 6120 §8.3.2 error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Do not retry.
    Cancel,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting.
    Wait,
    /// Retry after providing credentials.
    Auth,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
            ErrorType::Auth => "auth",
        }
    }
}

/// RFC 6120 §8.3: the error reply to `original`, or `None` where no reply
/// may be sent (an error is never answered with an error, §8.3.1; a stanza
/// without `from` has no one to answer).
///
/// The original payload is not echoed back: it may name a device.
pub fn error_reply(
    original: &Element,
    typ: ErrorType,
    condition: &str,
    text: Option<&str>,
) -> Option<Element> {
    if original.attr("type") == Some("error") {
        return None;
    }
    let to = original.attr("from")?;
    let from = original.attr("to")?;
    let mut reply = stanza(original.name(), from, to, Some("error"));
    if let Some(id) = original.attr("id") {
        set_attr(&mut reply, "id", id);
    }
    let mut error = element("error", ns::COMPONENT, &[("type", typ.as_str())]);
    error.append_child(Element::bare(condition, ns::STANZAS));
    if let Some(t) = text {
        error.append_child(text_element("text", ns::STANZAS, t));
    }
    reply.append_child(error);
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_never_answered_with_errors() {
        let err: Element =
            "<iq xmlns='jabber:component:accept' type='error' from='a@b' to='c@d' id='1'/>"
                .parse()
                .unwrap();
        assert!(error_reply(&err, ErrorType::Cancel, "service-unavailable", None).is_none());
    }

    #[test]
    fn error_reply_swaps_addresses_and_keeps_id() {
        let iq: Element = "<iq xmlns='jabber:component:accept' type='get' from='a@b/r' to='c@d' id='x1'><q xmlns='urn:q'/></iq>"
            .parse()
            .unwrap();
        let reply = error_reply(&iq, ErrorType::Cancel, "service-unavailable", None).unwrap();
        assert_eq!(reply.attr("to"), Some("a@b/r"));
        assert_eq!(reply.attr("from"), Some("c@d"));
        assert_eq!(reply.attr("id"), Some("x1"));
        assert_eq!(reply.attr("type"), Some("error"));
        let error = reply.get_child("error", ns::COMPONENT).unwrap();
        assert!(error.has_child("service-unavailable", ns::STANZAS));
        assert!(!reply.has_child("q", "urn:q"), "payload is not echoed");
    }
}
