//! The uuids rtbd issues: random version-4 uuids that also say where their
//! record lives.
//!
//! Bits 0–5 name the shard of the caller (so a uuid finds its shard without a
//! lookup) and bits 6–45 hold the record's sequence number in that shard's
//! record ring (so a uuid finds its record without a hash map). Those 46
//! bits are stored XORed with bits 80–125, which are random, so every uuid
//! still looks random throughout. The other bits, 76 in all, are random
//! apart from the version and variant, so uuids stay unguessable.

/// Bits naming the shard.
pub const SHARD_BITS: u32 = 6;
/// Bits of the record sequence number.
pub const SEQ_BITS: u32 = 40;
const SHARD_MASK: u128 = (1 << SHARD_BITS) - 1;
const SEQ_MASK: u128 = (1 << SEQ_BITS) - 1;
/// The bits that carry shard and sequence number.
const PLACE_MASK: u128 = (1 << (SHARD_BITS + SEQ_BITS)) - 1;

/// Where the random bits that hide the place start.
const MASK_SHIFT: u32 = 80;

/// A fresh uuid for record `seq` of `shard`.
pub fn new_uuid(shard: usize, seq: u64) -> u128 {
    let random: [u8; 16] = rand::random();
    let random = uuid::Builder::from_random_bytes(random).into_uuid().as_u128();
    let place = (u128::from(seq) & SEQ_MASK) << SHARD_BITS | (shard as u128 & SHARD_MASK);
    (random & !PLACE_MASK) | ((place ^ (random >> MASK_SHIFT)) & PLACE_MASK)
}

/// The shard and sequence bits of a uuid, unmasked.
#[inline]
fn place(uuid: u128) -> u128 {
    (uuid ^ (uuid >> MASK_SHIFT)) & PLACE_MASK
}

/// The shard a uuid was issued from.
#[inline]
pub fn shard_of(uuid: u128) -> usize {
    (place(uuid) & SHARD_MASK) as usize
}

/// The record sequence number a uuid was issued with.
#[inline]
pub fn seq_of(uuid: u128) -> u64 {
    ((place(uuid) >> SHARD_BITS) & SEQ_MASK) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_carry_shard_and_seq_and_stay_v4() {
        for (shard, seq) in [(0, 0), (63, 1), (17, (1 << SEQ_BITS) - 1), (5, 123_456_789)] {
            let id = new_uuid(shard, seq);
            assert_eq!(shard_of(id), shard);
            assert_eq!(seq_of(id), seq);
            let parsed = uuid::Uuid::from_u128(id);
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        }
        assert_ne!(new_uuid(1, 1), new_uuid(1, 1), "random bits differ");
        // The low bits look random too: two uuids of neighbouring records
        // rarely share their last 12 hex digits.
        let tails: std::collections::HashSet<u128> =
            (0..100).map(|i| new_uuid(3, i) & ((1 << 48) - 1)).collect();
        assert!(tails.len() > 95);
    }
}
