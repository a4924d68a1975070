//! Phones that sleep (DESIGN.md section 12): whether her server pushes.
//!
//! A device asleep is offline to us; a call reaches it through her
//! account, whose server keeps the propose offline and wakes the device
//! with an XEP-0357 push. Her account only gets such a propose when its
//! server says it pushes: it lists `urn:xmpp:push:0` in the disco#info
//! of her bare JID (XEP-0357 §5), which it shows a contact with a
//! presence subscription, as her virtual JID is.

use jid::BareJid;
use minidom::Element;
use tracing::debug;

use super::stanza::ns;
use super::{Core, OwnerId, Purpose, Time};

/// XEP-0357.
pub(super) const PUSH: &str = "urn:xmpp:push:0";

impl Core {
    /// Asks her account `account` whether its server pushes.
    pub(super) fn ask_push(&mut self, now: Time, i: OwnerId, account: &BareJid) {
        let purpose = Purpose::AccountInfo {
            owner: i,
            account: account.clone(),
        };
        let query = Element::bare("query", ns::DISCO_INFO);
        self.ask_from(now, i, account, query, purpose, self.cfg.iq_timeout_ms);
    }

    /// Her account's disco#info: it pushes, or it does not. An error
    /// (her server answers only contacts, or not at all) changes nothing.
    pub(super) fn push_answer(&mut self, iq: &Element, i: OwnerId, account: &BareJid) {
        if iq.attr("type") != Some("result") {
            return debug!(account = %account, "her account did not say whether it pushes");
        }
        let pushes = iq.get_child("query", ns::DISCO_INFO).is_some_and(|q| {
            q.children()
                .any(|f| f.is("feature", ns::DISCO_INFO) && f.attr("var") == Some(PUSH))
        });
        let owner = &mut self.owners[i];
        debug!(owner = %owner.name, pushes, "her server's push support");
        if pushes {
            owner.push_accounts.insert(account.clone());
        } else {
            owner.push_accounts.remove(account);
        }
    }
}
