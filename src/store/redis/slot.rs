//! Redis Cluster hash slots: which slot a key lives in, and a short hash tag
//! for every slot, so that the service can name keys of its own (a put's
//! stage key) in the same slot as a client's key. The same rules apply on a
//! standalone Redis, where they cost nothing and change nothing.

use std::sync::OnceLock;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The slot of `key`: CRC16 (XMODEM) of its hash tag — the text between the
/// first `{` and the first `}` after it, when not empty — or of the whole key.
pub fn slot_of(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The part of `key` that decides its slot.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// A short tag (`{…}` contents) whose slot is `slot`.
pub fn tag_for_slot(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        // Counting through short strings finds a tag for every slot within a
        // few tens of thousands of tries (a few milliseconds, once).
        let mut tags = vec![String::new(); SLOTS as usize];
        let mut missing = SLOTS as usize;
        let mut n: u64 = 0;
        while missing > 0 {
            let tag = format!("{n:x}");
            let s = slot_of(tag.as_bytes()) as usize;
            if tags[s].is_empty() {
                tags[s] = tag;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    &tags[(slot % SLOTS) as usize]
}

/// CRC16-XMODEM (polynomial 0x1021), as Redis Cluster computes it.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
    }

    #[test]
    fn every_slot_has_a_tag() {
        for slot in [0, 1, 12182, SLOTS - 1] {
            assert_eq!(slot_of(tag_for_slot(slot).as_bytes()), slot);
        }
    }
}
