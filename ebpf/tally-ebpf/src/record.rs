//! Who pays for each charged object: (object, row) -> the cgroup2 id charged, so that the free
//! side, which runs in whatever context drops the last reference, gives the charge back to the
//! container that was charged.
//!
//! Records live in `charge_table`, an array of buckets: finding an object's bucket is an
//! address computation (the verifier inlines array lookups), claiming a slot one
//! compare-exchange, and every row of one object shares its bucket. A hash map insert and
//! delete, which this replaces, cost some 200 ns native per object, most of a socket()+close().
//! A bucket's ninth record goes to the `charges` hash map, which the programs read only while
//! it holds something (`charges_in_hash`), so the free of an object that was never charged
//! (every file the host closes) costs one bucket scan.

use tally_common::{charge_bucket, charge_slot_key, stat, ChargeBucket, ChargeKey, ChargeSlot, CHARGE_SLOTS};

use crate::{
    atomic, kernel,
    maps::{bump_stat, CHARGES, CHARGES_IN_HASH, CHARGE_TABLE, CHARGE_TABLE_ENTRIES},
};

const BPF_NOEXIST: u64 = 1;

/// A charged object's identity: a kernel object's address or a socket cookie, as a plain
/// number (which the bucket hash needs; the verifier refuses it on a typed pointer).
#[derive(Clone, Copy)]
pub struct Object(u64);

impl Object {
    /// The kernel object a hook's pointer argument points to.
    #[inline(always)]
    pub fn at(pointer: u64) -> Option<Object> {
        kernel::address(pointer).map(Object)
    }

    /// An identity that is a number already: a socket cookie, an address read from memory.
    #[inline(always)]
    pub fn number(n: u64) -> Object {
        Object(n)
    }
}

#[inline(always)]
fn bucket(object: u64) -> Option<*mut ChargeBucket> {
    CHARGE_TABLE.get_ptr_mut(charge_bucket(object))
}

#[inline(always)]
fn slot(bucket: *mut ChargeBucket, i: usize) -> *mut ChargeSlot {
    // SAFETY: i < CHARGE_SLOTS (callers loop over that range); the bucket is a live map value.
    unsafe { core::ptr::addr_of_mut!((*bucket).slots[i]) }
}

#[inline(always)]
fn key_of(slot: *mut ChargeSlot) -> *mut u64 {
    // SAFETY: a field of a live map value.
    unsafe { core::ptr::addr_of_mut!((*slot).key) }
}

#[inline(always)]
fn hash_key(object: u64, res: usize) -> ChargeKey {
    ChargeKey {
        object,
        resource: res as u32,
        _pad: 0,
    }
}

/// Whether the `charges` hash map holds records (a bucket overflowed, or an earlier build
/// left them).
#[inline(always)]
pub fn hash_in_use() -> bool {
    CHARGES_IN_HASH.get_ptr_mut(0).is_some_and(|n| atomic::load(n) != 0)
}

#[inline(always)]
fn count_table(delta_up: bool) {
    if let Some(n) = CHARGE_TABLE_ENTRIES.get_ptr_mut(0) {
        if delta_up {
            atomic::add(n, 1);
        } else {
            atomic::sub(n, 1);
        }
    }
}

/// Records that `object` is charged to `cgid` for `res`. False when it cannot be recorded
/// (already recorded, or the bucket and the hash map are full): the caller undoes the charge.
#[inline(always)]
pub fn insert(Object(object): Object, res: usize, cgid: u64) -> bool {
    let key = charge_slot_key(object, res);
    if let Some(b) = bucket(object) {
        let mut free = CHARGE_SLOTS;
        for i in 0..CHARGE_SLOTS {
            let k = atomic::load(key_of(slot(b, i)));
            if k == key {
                return false;
            }
            if k == 0 && free == CHARGE_SLOTS {
                free = i;
            }
        }
        // A slot another CPU claims first sends the record to the next free one.
        for i in 0..CHARGE_SLOTS {
            if i >= free {
                let s = slot(b, i);
                if atomic::compare_exchange(key_of(s), 0, key) {
                    // Nobody reads this record before the charge returns: its free comes
                    // after the object's creation, which this charge is part of.
                    // SAFETY: a field of a live map value, this CPU's since the exchange.
                    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*s).cgroup_id), cgid) };
                    count_table(true);
                    return true;
                }
            }
        }
    }
    if CHARGES.insert(hash_key(object, res), cgid, BPF_NOEXIST).is_err() {
        bump_stat(stat::CHARGE_MAP_FULL);
        return false;
    }
    if let Some(n) = CHARGES_IN_HASH.get_ptr_mut(0) {
        atomic::add(n, 1);
    }
    true
}

/// The slot holding `key` in `object`'s bucket.
#[inline(always)]
fn find(object: u64, key: u64) -> Option<*mut ChargeSlot> {
    let b = bucket(object)?;
    (0..CHARGE_SLOTS).map(|i| slot(b, i)).find(|s| atomic::load(key_of(*s)) == key)
}

#[inline(always)]
fn cgroup_of(slot: *mut ChargeSlot) -> u64 {
    // SAFETY: a field of a live map value.
    atomic::load(unsafe { core::ptr::addr_of!((*slot).cgroup_id) })
}

/// The container `object` is charged to for `res`, if any.
#[inline(always)]
pub fn get(Object(object): Object, res: usize) -> Option<u64> {
    if let Some(s) = find(object, charge_slot_key(object, res)) {
        return Some(cgroup_of(s));
    }
    if !hash_in_use() {
        return None;
    }
    // SAFETY: the value is a plain u64 copied out at once.
    unsafe { CHARGES.get(hash_key(object, res)) }.copied()
}

/// Removes the record of `object` for `res` and returns the container it named. Of two CPUs
/// taking the same record, one gets it.
#[inline(always)]
pub fn take(Object(object): Object, res: usize) -> Option<u64> {
    let key = charge_slot_key(object, res);
    if let Some(s) = find(object, key) {
        // Read before the slot is let go: then another record may claim it.
        let cgid = cgroup_of(s);
        if !atomic::compare_exchange(key_of(s), key, 0) {
            return None;
        }
        count_table(false);
        return Some(cgid);
    }
    if !hash_in_use() {
        return None;
    }
    let k = hash_key(object, res);
    // SAFETY: the value is a plain u64 copied out at once.
    let cgid = unsafe { CHARGES.get(k) }.copied()?;
    if CHARGES.remove(k).is_err() {
        return None;
    }
    if let Some(n) = CHARGES_IN_HASH.get_ptr_mut(0) {
        atomic::sub(n, 1);
    }
    Some(cgid)
}
