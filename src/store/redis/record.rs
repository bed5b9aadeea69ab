//! A stored key in storage format 2: one Redis string, a fixed 32-byte ASCII
//! header and the encoded value (docs/design/storage-format.md).
//!
//! ```text
//! 0xff 0x02 | version: 16 decimal digits | expires at: 14 decimal digits | value
//! ```
//!
//! The version and the absolute expiry (Unix ms on Redis's clock, all zeros
//! for none) live in the value so that a read is one GET (or one MGET for a
//! batch): no HMGET, no PTTL, no MULTI/EXEC. Fixed-width decimals keep the
//! header readable in `redis-cli` and cheap for Lua (`string.sub` +
//! `tonumber`, exact below 2^53). 0xff never starts UTF-8 text, so a string
//! another tool wrote is told apart from ours.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// First two bytes of every stored value.
pub const MAGIC: [u8; 2] = [0xff, 0x02];
/// Bytes before the encoded value.
pub const HEADER_LEN: usize = 32;
const VERSION: std::ops::Range<usize> = 2..18;
const EXPIRES: std::ops::Range<usize> = 18..32;

/// A parsed stored string; `payload` borrows the encoded value.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub version: u64,
    /// Unix ms on Redis's clock; `None`: no expiry.
    pub expires_at_ms: Option<u64>,
    pub payload: &'a [u8],
}

/// Parses a stored string; the error says what is wrong, for messages.
pub fn parse(raw: &[u8]) -> Result<Record<'_>, String> {
    if raw.len() < HEADER_LEN || raw[..2] != MAGIC {
        return Err("the value has no state-service header".into());
    }
    let version = digits(&raw[VERSION]).ok_or("bad version in the header")?;
    let expires = digits(&raw[EXPIRES]).ok_or("bad expiry in the header")?;
    Ok(Record {
        version,
        expires_at_ms: (expires != 0).then_some(expires),
        payload: &raw[HEADER_LEN..],
    })
}

/// Builds a stored string (the scripts build them in Lua; this is the same
/// layout, for tests and future import).
pub fn encode(version: u64, expires_at_ms: Option<u64>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(format!("{version:016}{:014}", expires_at_ms.unwrap_or(0)).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// The condition argument the scripts compare with the stored version: the
/// same 16 digits, so the comparison is exact on strings. A version of more
/// than 16 digits was never issued and so never matches.
pub fn version_condition(version: u64) -> String {
    format!("V{version:016}")
}

fn digits(b: &[u8]) -> Option<u64> {
    if !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Redis's clock as seen from here. Expiries are absolute times on Redis's
/// clock (the scripts take `TIME`), while the remaining TTL a read reports is
/// computed in the service; the offset between the two clocks is measured by
/// the health loop (`TIME` between two local readings) so that a skewed
/// service host does not distort TTLs.
#[derive(Debug, Default)]
pub struct RedisClock {
    /// Redis time minus local time, in µs.
    offset_us: AtomicI64,
}

impl RedisClock {
    /// Records one `TIME` answer taken between the local readings `before`
    /// and `after` (all µs since the epoch); the midpoint is the best guess
    /// of when Redis read its clock.
    pub fn observe(&self, redis_us: i64, before_us: i64, after_us: i64) {
        let local = before_us + (after_us - before_us) / 2;
        self.offset_us.store(redis_us - local, Ordering::Relaxed);
    }

    /// Now on Redis's clock, in ms.
    pub fn now_ms(&self) -> i64 {
        (local_us() + self.offset_us.load(Ordering::Relaxed)).div_euclid(1000)
    }

    /// Remaining time to live of a key that expires at `expires_at_ms`. The
    /// key was just read, so it had not expired on Redis's clock: an estimate
    /// at or below zero (clock offset error) is reported as 1 ms.
    pub fn remaining(&self, expires_at_ms: u64) -> Duration {
        let left = i64::try_from(expires_at_ms).unwrap_or(i64::MAX) - self.now_ms();
        Duration::from_millis(left.max(1) as u64)
    }
}

/// Local wall clock in µs since the epoch.
pub fn local_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let raw = encode(1_764_000_000_000_001, Some(1_764_000_000_123), b"\x00abc");
        assert_eq!(raw.len(), HEADER_LEN + 4);
        assert_eq!(&raw[2..18], b"1764000000000001");
        let r = parse(&raw).unwrap();
        assert_eq!(r.version, 1_764_000_000_000_001);
        assert_eq!(r.expires_at_ms, Some(1_764_000_000_123));
        assert_eq!(r.payload, b"\x00abc");
        let raw = encode(7, None, b"-42");
        let r = parse(&raw).unwrap();
        assert_eq!(
            (r.version, r.expires_at_ms, r.payload),
            (7, None, &b"-42"[..])
        );
    }

    #[test]
    fn foreign_strings_are_rejected() {
        assert!(parse(b"hello").is_err());
        assert!(parse(&[0xff; 40]).is_err());
        let mut raw = encode(1, None, b"x");
        raw[5] = b'a';
        assert!(parse(&raw).unwrap_err().contains("version"));
        let mut raw = encode(1, None, b"x");
        raw[20] = b'+';
        assert!(parse(&raw).unwrap_err().contains("expiry"));
    }

    #[test]
    fn version_conditions_are_exact_strings() {
        assert_eq!(version_condition(42), "V0000000000000042");
        assert_eq!(version_condition(u64::MAX).len(), 21);
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Whatever another tool left in Redis: parsing never panics, and
        /// what parses is exactly what `encode` would write for it.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(raw in proptest::prop_oneof![
            proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            // Near misses: the magic, then mostly digits.
            proptest::collection::vec(proptest::sample::select(b"0123456789 +-x".to_vec()), 0..40)
                .prop_map(|rest| [&MAGIC[..], &rest].concat()),
        ]) {
            if let Ok(r) = parse(&raw) {
                proptest::prop_assert_eq!(encode(r.version, r.expires_at_ms, r.payload), raw.clone());
            }
        }

        #[test]
        fn headers_round_trip(
            version in 0u64..10_000_000_000_000_000,
            expires in proptest::option::of(1u64..100_000_000_000_000),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
        ) {
            let raw = encode(version, expires, &payload);
            let r = parse(&raw).unwrap();
            proptest::prop_assert_eq!((r.version, r.expires_at_ms, r.payload), (version, expires, &payload[..]));
        }
    }

    #[test]
    fn remaining_ttl_uses_the_observed_offset() {
        let clock = RedisClock::default();
        let now = local_us();
        // Redis 10 s ahead of this host.
        clock.observe(now + 10_000_000, now, now);
        let expires = (now / 1000 + 10_000 + 5_000) as u64;
        let left = clock.remaining(expires);
        assert!(left <= Duration::from_millis(5_000) && left > Duration::from_millis(4_000));
        assert_eq!(clock.remaining(1), Duration::from_millis(1));
    }
}
