//! The checks every driver of the core makes after each input: the
//! scenario tests, the property tests and the fuzz target share them, so
//! that their bounds cannot drift apart. They read what the core emitted
//! and how much it holds, never the core's own reasoning (the privacy
//! guard counts only as "it had nothing to stop").

use jid::Jid;
use minidom::Element;

use super::Core;

/// What is wrong with the core's state or output after one input, if
/// anything: every stanza out is addressed and from our domain, the
/// privacy guard had nothing to stop, the state is within the configured
/// limits, and an IQ request addressed to us (`input`) got exactly one
/// answer (RFC 6120 §8.2.3), unless it was relayed to someone else, whose
/// answer comes later.
pub fn check_step(core: &Core, input: Option<&Element>, out: &[Element]) -> Result<(), String> {
    let domain = core.domain();
    for el in out {
        let from = el.attr("from").unwrap_or_default();
        // D, D/res, x@D or x@D/res: the domain part is ours.
        let bare = from.split('/').next().unwrap_or_default();
        if bare.rsplit('@').next() != Some(domain) {
            return Err(format!("not from our domain: {el:?}"));
        }
        if el.attr("to").is_none() {
            return Err(format!("unaddressed: {el:?}"));
        }
    }
    if core.guard_drops() != 0 {
        return Err(format!(
            "the privacy guard had to stop {} stanza(s)",
            core.guard_drops()
        ));
    }
    let f = core.footprint();
    let l = core.limits();
    if f.max_devices_per_owner > l.devices_per_owner
        || f.max_watchers_per_owner > l.watchers_per_owner
        || f.pending_iqs > l.pending_iqs
        || f.calls > l.concurrent_calls
        || f.rate_buckets > super::RATE_BUCKETS
    {
        return Err(format!("over a limit: {f:?} with {l:?}"));
    }
    if let Some(iq) = input.filter(|i| requests_an_answer(i, domain)) {
        let (id, sender) = (iq.attr("id"), iq.attr("from"));
        let answers = out
            .iter()
            .filter(|e| {
                e.name() == "iq"
                    && matches!(e.attr("type"), Some("result") | Some("error"))
                    && e.attr("id") == id
                    && same_jid(e.attr("to"), sender)
            })
            .count();
        let relayed = out.iter().any(|e| {
            e.name() == "iq"
                && matches!(e.attr("type"), Some("get") | Some("set"))
                && !same_jid(e.attr("to"), sender)
        });
        if answers > 1 || (answers == 0 && !relayed) {
            return Err(format!("{answers} answers to {iq:?}: {out:?}"));
        }
    }
    Ok(())
}

/// An IQ get or set with an id, from a usable address outside our domain,
/// to a usable address in it: the core must answer it.
fn requests_an_answer(el: &Element, domain: &str) -> bool {
    let jid_in = |a: Option<&str>| a.and_then(|a| Jid::new(a).ok());
    el.name() == "iq"
        && el.ns() == super::stanza::ns::COMPONENT
        && matches!(el.attr("type"), Some("get") | Some("set"))
        && el.attr("id").is_some()
        && jid_in(el.attr("from")).is_some_and(|f| f.domain().as_str() != domain)
        && jid_in(el.attr("to")).is_some_and(|t| t.domain().as_str() == domain)
}

/// The same address, however spelled (RFC 7622 lowercases domains).
/// Whether two addresses are the same one, as RFC 7622 compares them (a
/// domain's trailing dot included).
fn same_jid(a: Option<&str>, b: Option<&str>) -> bool {
    match (
        a.and_then(super::canonical_jid),
        b.and_then(super::canonical_jid),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
