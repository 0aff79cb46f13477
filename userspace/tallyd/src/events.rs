//! Limit-hit events: drains the pinned ring buffer, logs each one the way OpenVZ's kernel did
//! ("resource shortage: numfile, CT 101"), and keeps the recent ones for `tally events`.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tally::{
    api::EventView,
    ct::Host,
    kernel::{events::EventReader, pins::PinLayout},
    ubc::Resource,
};

/// How many events tallyd remembers.
const KEPT: usize = 1000;

#[derive(Default)]
pub struct EventLog {
    next_id: u64,
    recent: VecDeque<EventView>,
}

impl EventLog {
    pub fn after(&self, id: u64) -> Vec<EventView> {
        self.recent.iter().filter(|e| e.id > id).cloned().collect()
    }

    fn push(&mut self, mut e: EventView) {
        self.next_id += 1;
        e.id = self.next_id;
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(e);
    }
}

/// Milliseconds since the epoch of a CLOCK_MONOTONIC time in ns.
fn wall_ms(monotonic_ns: u64) -> u64 {
    let now_mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::from(t).as_nanos() as u64)
        .unwrap_or(monotonic_ns);
    let wall = SystemTime::now() - Duration::from_nanos(now_mono.saturating_sub(monotonic_ns));
    wall.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub async fn collect(pins: PinLayout, host: Arc<Host>, log: Arc<Mutex<EventLog>>) {
    let mut reader = match EventReader::open(&pins) {
        Ok(r) => r,
        Err(e) => {
            log::error!("limit-hit events unavailable: {e}");
            return;
        }
    };
    loop {
        let batch = match reader.next_batch().await {
            Ok(b) => b,
            Err(e) => {
                log::error!("reading limit-hit events: {e}");
                return;
            }
        };
        for hit in batch {
            let ctid = host.ctid_of(hit.cgroup_id);
            let resource = Resource::ALL
                .get(hit.resource as usize)
                .map_or("?", |r| r.name())
                .to_string();
            let who = ctid
                .as_ref()
                .map_or_else(|| format!("cgroup {}", hit.cgroup_id), |c| format!("CT {c}"));
            log::warn!("resource shortage: {resource}, {who} (failcnt {})", hit.failcnt);
            log.lock().unwrap_or_else(|p| p.into_inner()).push(EventView {
                id: 0,
                ctid,
                cgroup_id: hit.cgroup_id,
                resource,
                failcnt: hit.failcnt,
                held: hit.held,
                barrier: hit.barrier,
                time_ms: wall_ms(hit.time_ns),
            });
        }
    }
}
