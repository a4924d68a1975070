//! What the admin's status page shows (`[http]`, see `crate::http`): each
//! owner with her devices and what they qualify for, what her watchers see
//! per class, and the live calls. Only ever served to a holder of the
//! admin token (or loopback, with `trust_loopback`), never to a
//! watcher: device resources appear here and nowhere else.

use serde::Serialize;

use super::devices::Show;
use super::{Core, Footprint, Time, WatcherState};

fn show_name(s: Show) -> &'static str {
    match s {
        Show::Chat => "chat",
        Show::Online => "online",
        Show::Away => "away",
        Show::Xa => "xa",
        Show::Dnd => "dnd",
    }
}

/// The whole page.
#[derive(Debug, Clone, Serialize)]
pub struct AdminView {
    /// The component's domain.
    pub domain: String,
    /// Owners in name order, at most the `limit` asked for.
    pub owners: Vec<OwnerView>,
    /// Owners in all (more than `owners.len()` when the limit cut).
    pub owners_total: usize,
    /// Live calls.
    pub calls: Vec<CallView>,
    /// How much state the core holds.
    pub footprint: Footprint,
    /// Stanzas the privacy guard refused so far (each one a bug).
    pub guard_drops: u64,
}

/// One owner.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerView {
    /// Her virtual JID.
    pub address: String,
    /// Her accounts, approved or still asked.
    pub accounts: Vec<(String, bool)>,
    /// Watchers she approved (her own accounts watching her not counted).
    pub watchers: usize,
    /// Requests waiting for her answer.
    pub pending: usize,
    /// What her watchers see, per class: `unavailable` or the show.
    pub classes: Vec<(String, String)>,
    /// Her live devices.
    pub devices: Vec<DeviceView>,
}

/// One live device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    /// Its resource.
    pub resource: String,
    /// Its show.
    pub show: String,
    /// The classes it qualifies for.
    pub classes: Vec<String>,
}

/// One live call.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    /// The owner called.
    pub owner: String,
    /// The class asked for.
    pub class: String,
    /// The caller's bare JID.
    pub caller: String,
    /// `ringing` or `answered`.
    pub state: &'static str,
    /// Legs rung so far (a device, or her account for its devices
    /// asleep).
    pub legs: usize,
    /// Of these, how many showed they got the call (receipt, ringing).
    pub reached: usize,
    /// Seconds from the caller's request to the first device reached.
    pub first_ring_secs: Option<f64>,
    /// Seconds since the caller asked.
    pub secs: u64,
}

impl Core {
    /// The admin's view of everything live, owners cut at `limit`.
    pub fn admin_view(&self, now: Time, limit: usize) -> AdminView {
        let mut order: Vec<super::OwnerId> = self
            .owners
            .ids()
            .filter(|&i| self.by_name.get(&self.owners[i].name) == Some(&i))
            .collect();
        let owners_total = order.len();
        order.sort_by(|&a, &b| self.owners[a].name.cmp(&self.owners[b].name));
        order.truncate(limit);
        let class_names = |bits: u32| {
            self.cfg
                .classes
                .iter()
                .enumerate()
                .filter(|(c, _)| bits & (1 << c) != 0)
                .map(|(_, d)| d.name.clone())
                .collect::<Vec<_>>()
        };
        // Her own accounts watching her address are hers, not watchers.
        let others = |o: &super::Owner, state: WatcherState| {
            o.watchers
                .iter()
                .filter(|(j, s)| **s == state && !o.accounts.iter().any(|(a, _)| a.as_str() == *j))
                .count()
        };
        let owners = order
            .into_iter()
            .map(|i| {
                let o = &self.owners[i];
                OwnerView {
                    address: o.virtual_jid.to_string(),
                    accounts: o
                        .accounts
                        .iter()
                        .map(|(j, s)| (j.to_string(), s.approved))
                        .collect(),
                    watchers: others(o, WatcherState::Subscribed),
                    pending: others(o, WatcherState::Pending),
                    classes: (0..self.cfg.classes.len())
                        .map(|c| {
                            let shown = self
                                .aggregate(i, c)
                                .map_or("unavailable", |p| show_name(p.show));
                            (self.cfg.classes[c].name.clone(), shown.to_owned())
                        })
                        .collect(),
                    devices: o
                        .devices
                        .live
                        .iter()
                        .map(|(jid, d)| DeviceView {
                            resource: jid.resource().to_string(),
                            show: show_name(d.show).to_owned(),
                            classes: class_names(d.classes),
                        })
                        .collect(),
                }
            })
            .collect();
        AdminView {
            domain: self.cfg.domain.clone(),
            owners,
            owners_total,
            calls: self.calls.views(&self.owners, &self.cfg, now),
            footprint: self.footprint(),
            guard_drops: self.out.guard_drops(),
        }
    }
}
