//! One operation at a time per container, and none waits for another container's: an
//! operation that changes a container takes its lock for as long as it runs (a stop's grace
//! period included); a second one on the same container is refused at once with `locked`
//! rather than queued, as vzctl refuses a locked container. Reads take no lock: they read the
//! system as it is.

use std::{collections::HashMap, sync::Mutex};

use super::{CtId, HostError};

#[derive(Default)]
pub struct Locks {
    /// Container -> the operation holding it.
    held: Mutex<HashMap<CtId, &'static str>>,
}

/// Held while an operation runs; released when dropped, however the operation ends.
#[must_use]
pub struct CtLock<'a> {
    locks: &'a Locks,
    ct: CtId,
}

impl Locks {
    /// Takes `ct` for `op`, or says which operation has it.
    pub fn take(&self, ct: &CtId, op: &'static str) -> Result<CtLock<'_>, HostError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(by) = held.get(ct) {
            return Err(HostError::Locked {
                ct: ct.clone(),
                op: by.to_string(),
            });
        }
        held.insert(ct.clone(), op);
        Ok(CtLock {
            locks: self,
            ct: ct.clone(),
        })
    }
}

impl Drop for CtLock<'_> {
    fn drop(&mut self) {
        self.locks
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.ct);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_operation_on_one_container_is_refused_and_others_go_on() {
        let locks = Locks::default();
        let a = CtId::parse("101").unwrap();
        let b = CtId::parse("102").unwrap();
        let stop = locks.take(&a, "stop").unwrap();
        match locks.take(&a, "set") {
            Err(HostError::Locked { ct, op }) => assert_eq!((ct, op.as_str()), (a.clone(), "stop")),
            other => panic!("expected locked, got {:?}", other.map(|_| ())),
        }
        let other = locks.take(&b, "start").unwrap();
        drop(stop);
        let again = locks.take(&a, "set").unwrap();
        drop((other, again));
    }
}
