//! Limit-hit events from the pinned `events` ring buffer (tally_common::LimitHit). The buffer
//! is pinned, so events that happen while tallyd is down wait for it (up to its size).

use aya::maps::{Map, MapData, RingBuf};
use tally_common::{map_name, LimitHit};
use tokio::io::unix::AsyncFd;

use super::{pins::PinLayout, KernelError};

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    /// Opens the instance's pinned ring buffer; must run inside a tokio runtime.
    pub fn open(pins: &PinLayout) -> Result<EventReader, KernelError> {
        let path = pins.map(map_name::EVENTS);
        if !path.exists() {
            return Err(KernelError::NotLoaded(pins.root.clone()));
        }
        let data = MapData::from_pin(&path).map_err(|source| KernelError::Map {
            name: map_name::EVENTS,
            source,
        })?;
        let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(|source| KernelError::Map {
            name: map_name::EVENTS,
            source,
        })?;
        // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf, and
        // its as_raw_fd always returns that fd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| KernelError::Io { path, source: e.into() })?;
        Ok(EventReader { ring })
    }

    /// Waits for events and returns every one that is there.
    pub async fn next_batch(&mut self) -> Result<Vec<LimitHit>, KernelError> {
        loop {
            let mut guard = self.ring.readable_mut().await.map_err(|source| KernelError::Io {
                path: "events".into(),
                source,
            })?;
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(item) = ring.next() {
                if item.len() >= std::mem::size_of::<LimitHit>() {
                    // SAFETY: LimitHit is #[repr(C)] plain data of exactly the size checked;
                    // read_unaligned makes no assumption on the buffer's alignment.
                    batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const LimitHit) });
                }
            }
            guard.clear_ready();
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }
}
