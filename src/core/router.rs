//! The routing table: where a stanza addressed to us goes.
//!
//! Like Prosody's `doc/stanza_routing.txt`, routing is a table of the `to`
//! address shape; each row has one handler in the core:
//!
//! | `to`                         | target                  |
//! |------------------------------|-------------------------|
//! | `D`                          | [`Target::Domain`]      |
//! | `alice@D` (an owner)         | [`Target::Owner`] bare  |
//! | `alice@D/<class>`            | [`Target::Owner`] class |
//! | `alice@D/<other>`            | [`Target::Owner`] other |
//! | `bob\40example.org@D[/r]`    | [`Target::Proxy`]       |
//! | `nobody@D[/r]`               | [`Target::Nobody`]      |
//!
//! Stanzas whose `to` is not on `D` never reach the table: the core drops
//! them (the server routed them to us by mistake).

use super::OwnerId;
use jid::{BareJid, Jid};

use super::address::proxied_remote;

/// Which resource of a virtual JID a stanza is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The bare virtual JID.
    Bare,
    /// A class resource, by index into the configured classes.
    Class(usize),
    /// Any other resource: not ours.
    Other,
}

/// The row of the routing table a `to` address falls in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The component domain itself.
    Domain,
    /// An owner's virtual JID.
    Owner {
        /// The owner's index.
        owner: OwnerId,
        /// Which resource.
        resource: Resource,
    },
    /// A proxy JID standing for a remote party.
    Proxy {
        /// The remote party's bare JID.
        remote: BareJid,
    },
    /// A localpart on our domain that is nobody.
    Nobody,
}

/// Finds the row for `to`, which is on our domain. `owner_of` maps a
/// localpart to an owner; `class_of` a resource to a class.
pub fn route(
    to: &Jid,
    owner_of: impl Fn(&str) -> Option<OwnerId>,
    class_of: impl Fn(&str) -> Option<usize>,
) -> Target {
    let Some(node) = to.node() else {
        return Target::Domain;
    };
    if let Some(owner) = owner_of(node.as_str()) {
        let resource = match to.resource() {
            None => Resource::Bare,
            Some(r) => class_of(r.as_str()).map_or(Resource::Other, Resource::Class),
        };
        return Target::Owner { owner, resource };
    }
    match proxied_remote(node.as_str()) {
        Some(remote) => Target::Proxy { remote },
        None => Target::Nobody,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(to: &str) -> Target {
        let to = Jid::new(to).unwrap();
        route(
            &to,
            |n| (n == "alice").then_some(OwnerId::nth(0)),
            |c| ["chat", "audio"].iter().position(|x| *x == c),
        )
    }

    #[test]
    fn every_row_of_the_table() {
        assert_eq!(r("unified.localhost"), Target::Domain);
        assert_eq!(
            r("alice@unified.localhost"),
            Target::Owner {
                owner: OwnerId::nth(0),
                resource: Resource::Bare
            }
        );
        assert_eq!(
            r("alice@unified.localhost/audio"),
            Target::Owner {
                owner: OwnerId::nth(0),
                resource: Resource::Class(1)
            }
        );
        assert_eq!(
            r("alice@unified.localhost/phone"),
            Target::Owner {
                owner: OwnerId::nth(0),
                resource: Resource::Other
            }
        );
        assert_eq!(
            r(r"bob\40localhost@unified.localhost"),
            Target::Proxy {
                remote: BareJid::new("bob@localhost").unwrap()
            }
        );
        assert_eq!(r("carol@unified.localhost"), Target::Nobody);
    }
}
