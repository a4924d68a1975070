//! Flood control: a token bucket per sending account, and the size of a
//! stanza.
//!
//! A sender (bare JID: all of an account's resources share one budget)
//! may send `burst` stanzas at once and `per_sec` a second after that.
//! The table of buckets is bounded: a bucket that has refilled is the same
//! as no bucket, so full ones are pruned first when the table is at its cap.

use super::FastMap as HashMap;

use minidom::{Element, Node};

use super::Time;

/// One sender's budget, in thousandths of a stanza.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    last: Time,
    /// Stanzas refused since the sender last got through.
    refused: u64,
}

/// What [`RateLimiter::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within budget.
    Pass,
    /// Within budget again after `refused` stanzas were refused.
    PassAfter { refused: u64 },
    /// Over budget; the first refusal of an episode is `first`.
    Refuse { first: bool },
}

/// Per-sender token buckets.
#[derive(Debug)]
pub(super) struct RateLimiter {
    per_sec: u64,
    burst: u64,
    max_senders: usize,
    /// By the sender's bare JID text, so that a stanza's full `from` is
    /// looked up without building a `BareJid`.
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// `per_sec` stanzas a second after a burst of `burst`; at most
    /// `max_senders` buckets kept. `per_sec == 0` turns limiting off.
    pub(super) fn new(per_sec: u64, burst: u64, max_senders: usize) -> RateLimiter {
        RateLimiter {
            per_sec,
            burst: burst.max(1),
            max_senders: max_senders.max(1),
            buckets: HashMap::default(),
        }
    }

    /// Buckets held (for bounds checks).
    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }

    fn refill(per_sec: u64, burst: u64, b: &mut Bucket, now: Time) {
        let elapsed = now.0.saturating_sub(b.last.0);
        // ms * stanzas/s = thousandths of a stanza.
        let add = elapsed.saturating_mul(per_sec);
        b.milli_tokens = b
            .milli_tokens
            .saturating_add(add)
            .min(burst.saturating_mul(1000));
        b.last = now.max(b.last);
    }

    /// Charges one stanza from `sender` (a bare JID) at `now`. On the path
    /// of every stanza: a known sender costs one lookup, no allocation.
    pub(super) fn check(&mut self, sender: &str, now: Time) -> Verdict {
        if self.per_sec == 0 {
            return Verdict::Pass;
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        if !self.buckets.contains_key(sender) {
            if self.buckets.len() >= self.max_senders {
                self.prune(now);
            }
            let full = Bucket {
                milli_tokens: burst.saturating_mul(1000),
                last: now,
                refused: 0,
            };
            self.buckets.insert(sender.to_owned(), full);
        }
        let Some(b) = self.buckets.get_mut(sender) else {
            // Inserted just above: a bug if missing, and not the sender's
            // to pay for.
            tracing::error!(sender, "bug: a rate bucket vanished");
            return Verdict::Pass;
        };
        Self::refill(per_sec, burst, b, now);
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            match std::mem::take(&mut b.refused) {
                0 => Verdict::Pass,
                refused => Verdict::PassAfter { refused },
            }
        } else {
            b.refused += 1;
            Verdict::Refuse {
                first: b.refused == 1,
            }
        }
    }

    /// Drops buckets that have refilled; if the table is still full (a
    /// crowd of senders all over budget), drops the ones idle longest.
    fn prune(&mut self, now: Time) {
        let cap = self.burst.saturating_mul(1000);
        let per_sec = self.per_sec;
        self.buckets.retain(|_, b| {
            let elapsed = now.0.saturating_sub(b.last.0);
            b.milli_tokens
                .saturating_add(elapsed.saturating_mul(per_sec))
                < cap
        });
        if self.buckets.len() >= self.max_senders {
            let mut by_age: Vec<(Time, String)> = self
                .buckets
                .iter()
                .map(|(j, b)| (b.last, j.clone()))
                .collect();
            by_age.sort();
            let excess = self.buckets.len() + 1 - self.max_senders;
            for (_, j) in by_age.into_iter().take(excess.max(self.max_senders / 4)) {
                self.buckets.remove(&j);
            }
        }
    }
}

/// Whether `el`, serialised, would take more than `max` bytes. An
/// estimate (names, attributes, text; no escaping), stopping as soon as it
/// is over, so a huge stanza costs no more than `max` to measure.
pub(super) fn larger_than(el: &Element, max: usize) -> bool {
    /// Takes `n` from the budget; true when it runs out.
    fn over(budget: &mut usize, n: usize) -> bool {
        match budget.checked_sub(n) {
            Some(left) => {
                *budget = left;
                false
            }
            None => true,
        }
    }
    fn walk(el: &Element, budget: &mut usize) -> bool {
        // `<name` + `>` + `</name>`.
        if over(budget, 2 * el.name().len() + 5) {
            return true;
        }
        // Most children have no attributes; iterating an empty map still
        // costs two B-tree iterators, for every stanza.
        if !el.attrs().is_empty() {
            for ((_, name), v) in el.attrs() {
                if over(budget, name.len() + v.len() + 4) {
                    return true;
                }
            }
        }
        el.nodes().any(|node| match node {
            Node::Element(child) => walk(child, budget),
            Node::Text(t) => over(budget, t.len()),
        })
    }
    let mut budget = max;
    walk(el, &mut budget)
}

#[cfg(test)]
mod tests {
    use jid::BareJid;

    use super::*;

    fn jid(s: &str) -> &str {
        BareJid::new(s).unwrap();
        s
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let mut rl = RateLimiter::new(10, 5, 100);
        let eve = jid("eve@evil.example");
        let t = Time(1_000);
        for _ in 0..5 {
            assert_eq!(rl.check(eve, t), Verdict::Pass);
        }
        assert_eq!(rl.check(eve, t), Verdict::Refuse { first: true });
        assert_eq!(rl.check(eve, t), Verdict::Refuse { first: false });
        // 10/s: one more every 100 ms.
        assert_eq!(
            rl.check(eve, t.plus_ms(100)),
            Verdict::PassAfter { refused: 2 }
        );
        assert_eq!(
            rl.check(eve, t.plus_ms(100)),
            Verdict::Refuse { first: true }
        );
        // Others are not affected.
        assert_eq!(rl.check(jid("bob@localhost"), t), Verdict::Pass);
    }

    #[test]
    fn the_table_stays_bounded_under_a_crowd() {
        let mut rl = RateLimiter::new(10, 2, 50);
        for n in 0..10_000u64 {
            let sender = format!("u{n}@crowd.example");
            rl.check(jid(&sender), Time(n));
            rl.check(&sender, Time(n));
            assert!(rl.len() <= 50, "{}", rl.len());
        }
    }

    #[test]
    fn zero_rate_turns_it_off() {
        let mut rl = RateLimiter::new(0, 1, 1);
        for _ in 0..100 {
            assert_eq!(rl.check(jid("a@b"), Time(0)), Verdict::Pass);
        }
        assert_eq!(rl.len(), 0);
    }

    #[test]
    fn sizes_are_bounded_early() {
        let small: Element =
            "<message xmlns='jabber:component:accept' to='a@b'><body>hi</body></message>"
                .parse()
                .unwrap();
        assert!(!larger_than(&small, 200));
        assert!(larger_than(&small, 20));
        let big = format!(
            "<message xmlns='jabber:component:accept'><body>{}</body></message>",
            "x".repeat(100_000)
        );
        let big: Element = big.parse().unwrap();
        assert!(larger_than(&big, 65_536));
        assert!(!larger_than(&big, 200_000));
    }
}
