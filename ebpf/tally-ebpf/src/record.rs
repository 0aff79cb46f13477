//! Who pays for each charged object: (object, row) -> the cgroup2 id charged, so that the free
//! side, which runs in whatever context drops the last reference, gives the charge back to the
//! container that was charged.
//!
//! Records live in `charge_table`, an array of buckets: finding an object's bucket is an
//! address computation (the verifier inlines array lookups), claiming a slot one
//! compare-exchange, and every row of one object shares its bucket (a hash map insert and
//! delete per object, which this replaces, took most of what tally added to a socket()+close();
//! see BENCHMARKS.md).
//! A bucket's ninth record goes to the `charges` hash map, which the programs read only while
//! it holds something (`charges_in_hash`), so the free of an object that was never charged
//! (every file the host closes) costs one bucket scan.

use tally_common::{charge_bucket, charge_slot_key, ChargeBucket, ChargeKey, ChargeSlot, CHARGE_SLOTS};

use crate::{
    atomic,
    maps::{CHARGES, CHARGES_IN_HASH, CHARGE_TABLE, CHARGE_TABLE_ENTRIES},
};

const BPF_NOEXIST: u64 = 1;

/// A charged kernel object (task_struct, file, sock), as the pointer a hook received.
///
/// The bucket hash needs the address as a number, and the verifier allows no arithmetic on a
/// typed pointer but one: the difference of two pointers is a number (for privileged
/// programs). So the table's identity of an object is its distance from the `charge_table`
/// map, whose address stays put while the map lives (it is pinned, and kept across builds):
/// one instruction, where reading the address back through a helper cost about 140 ns per
/// hook under emulation. The `charges` hash map keys records by the address itself.
#[derive(Clone, Copy)]
pub struct Object {
    /// `pointer - &charge_table`: the table's key.
    id: u64,
    /// The pointer, for the hash map's key (a pointer spilled to the stack is a valid key).
    pointer: u64,
}

impl Object {
    /// The kernel object a hook's typed pointer argument (or ctx) points to.
    #[inline(always)]
    pub fn at(pointer: u64) -> Object {
        let base = core::ptr::addr_of!(CHARGE_TABLE) as u64;
        Object {
            id: pointer.wrapping_sub(base),
            pointer,
        }
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

/// Why a record was not kept.
pub enum NotRecorded {
    /// `object` is recorded for `res` already.
    Already,
    /// Its bucket and the hash map are full.
    Full,
}

/// Records that `object` is charged to `cgid` for `res`; when it cannot be recorded the
/// caller undoes the charge.
#[inline(always)]
pub fn insert(Object { id, pointer }: Object, res: usize, cgid: u64) -> Result<(), NotRecorded> {
    let key = charge_slot_key(id, res);
    if let Some(b) = bucket(id) {
        let mut free = CHARGE_SLOTS;
        for i in 0..CHARGE_SLOTS {
            let k = atomic::load(key_of(slot(b, i)));
            if k == key {
                return Err(NotRecorded::Already);
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
                    return Ok(());
                }
            }
        }
    }
    if CHARGES.insert(hash_key(pointer, res), cgid, BPF_NOEXIST).is_err() {
        return Err(NotRecorded::Full);
    }
    if let Some(n) = CHARGES_IN_HASH.get_ptr_mut(0) {
        atomic::add(n, 1);
    }
    Ok(())
}

/// The slot holding `key` in `object`'s bucket.
#[inline(always)]
fn find(object: u64, key: u64) -> Option<*mut ChargeSlot> {
    let b = bucket(object)?;
    (0..CHARGE_SLOTS)
        .map(|i| slot(b, i))
        .find(|s| atomic::load(key_of(*s)) == key)
}

#[inline(always)]
fn cgroup_of(slot: *mut ChargeSlot) -> u64 {
    // SAFETY: a field of a live map value.
    atomic::load(unsafe { core::ptr::addr_of!((*slot).cgroup_id) })
}

/// The container `object` is charged to for `res`, if any.
#[inline(always)]
pub fn get(Object { id, pointer }: Object, res: usize) -> Option<u64> {
    if let Some(s) = find(id, charge_slot_key(id, res)) {
        return Some(cgroup_of(s));
    }
    if !hash_in_use() {
        return None;
    }
    // SAFETY: the value is a plain u64 copied out at once.
    unsafe { CHARGES.get(hash_key(pointer, res)) }.copied()
}

/// Lets go of the slot holding `key` and returns the container its record named; None when
/// another CPU took it first.
#[inline(always)]
fn release(slot: *mut ChargeSlot, key: u64) -> Option<u64> {
    // Read before the slot is let go: then another record may claim it.
    let cgid = cgroup_of(slot);
    if !atomic::compare_exchange(key_of(slot), key, 0) {
        return None;
    }
    count_table(false);
    Some(cgid)
}

/// Removes the record of `object` for `res` and returns the container it named. Of two CPUs
/// taking the same record, one gets it.
#[inline(always)]
pub fn take(Object { id, pointer }: Object, res: usize) -> Option<u64> {
    let key = charge_slot_key(id, res);
    if let Some(s) = find(id, key) {
        return release(s, key);
    }
    if !hash_in_use() {
        return None;
    }
    take_from_hash(pointer, res)
}

/// [`take`] for several rows of one object, with one scan of its bucket: for the free hooks,
/// which run for every object the host frees, charged or not. Calls `given(row, cgroup)` for
/// each record taken. A record is in the table or in the hash map, never both: while
/// the hash map holds records, each row is looked for there too.
#[inline(always)]
pub fn take_each<const N: usize>(Object { id, pointer }: Object, rows: [usize; N], mut given: impl FnMut(usize, u64)) {
    if let Some(b) = bucket(id) {
        for i in 0..CHARGE_SLOTS {
            let s = slot(b, i);
            let k = atomic::load(key_of(s));
            // The object's key with the row bits cleared (charge_slot_key).
            if k & !63 != charge_slot_key(id, 0) & !63 {
                continue;
            }
            for row in rows {
                // The row as a constant: an index computed from the key would reach the
                // verifier as an offset it cannot bound.
                if k == charge_slot_key(id, row) {
                    if let Some(cgid) = release(s, k) {
                        given(row, cgid);
                    }
                }
            }
        }
    }
    if hash_in_use() {
        for row in rows {
            if let Some(cgid) = take_from_hash(pointer, row) {
                given(row, cgid);
            }
        }
    }
}

/// Removes the `charges` hash map's record of `object` (an address) for `res`.
#[inline(always)]
fn take_from_hash(object: u64, res: usize) -> Option<u64> {
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
