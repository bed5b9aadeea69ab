//! A stored key: one Redis string, a fixed ASCII header and the encoded value
//! (docs/design/storage-format.md), and the clocks the service stamps it with.
//!
//! ```text
//! format 2: ff 02 | version: 16 digits | expires at: 14 digits | value
//! format 3: ff 03 | version: 16 digits | expires at: 14 digits | meta length: 6 digits | meta | value
//! ```
//!
//! The version and the absolute expiry (Unix ms on Redis's clock, all zeros
//! for none) live in the value so that a read is one GET (or one MGET for a
//! batch). Fixed-width decimals keep the header readable in `redis-cli` and
//! cheap for Lua (16-digit versions compare as strings). 0xff never starts
//! UTF-8 text, so a string another tool wrote is told apart from ours.
//! Format 3 is written only for keys that carry request-id entries (`meta`,
//! see `IdEntry`); every other key stays format 2, so idempotency costs
//! nothing where it is not used.

use std::{
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// First bytes of a format-2 and a format-3 value.
pub const MAGIC: [u8; 2] = [0xff, 0x02];
pub const MAGIC_META: [u8; 2] = [0xff, 0x03];
/// Bytes before the encoded value (format 2) or before the meta length (3).
pub const HEADER_LEN: usize = 32;
/// Format 3's header: the format-2 header and a 6-digit meta length.
pub const META_HEADER_LEN: usize = 38;
/// The largest expiry the header holds (Unix ms, the year 5138).
pub const MAX_EXPIRES_AT_MS: u64 = 99_999_999_999_999;
const VERSION: std::ops::Range<usize> = 2..18;
const EXPIRES: std::ops::Range<usize> = 18..32;
const META_LEN: std::ops::Range<usize> = 32..38;

/// A parsed stored string; `payload` and `meta` borrow from it.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub version: u64,
    /// Unix ms on Redis's clock; `None`: no expiry.
    pub expires_at_ms: Option<u64>,
    /// Request-id entries (format 3), empty otherwise.
    pub meta: &'a [u8],
    pub payload: &'a [u8],
}

/// Parses a stored string; the error says what is wrong, for messages.
pub fn parse(raw: &[u8]) -> Result<Record<'_>, String> {
    let meta_format = match raw.get(..2) {
        Some(m) if m == MAGIC => false,
        Some(m) if m == MAGIC_META => true,
        _ => return Err("the value has no state-service header".into()),
    };
    if raw.len() < HEADER_LEN {
        return Err("the value has no state-service header".into());
    }
    let version = digits(&raw[VERSION]).ok_or("bad version in the header")?;
    let expires = digits(&raw[EXPIRES]).ok_or("bad expiry in the header")?;
    let (meta, payload) = if meta_format {
        let len = raw
            .get(META_LEN)
            .and_then(digits)
            .ok_or("bad meta length in the header")? as usize;
        let meta = raw
            .get(META_HEADER_LEN..META_HEADER_LEN + len)
            .ok_or("the meta section is cut short")?;
        (meta, &raw[META_HEADER_LEN + len..])
    } else {
        (&[][..], &raw[HEADER_LEN..])
    };
    Ok(Record {
        version,
        expires_at_ms: (expires != 0).then_some(expires),
        meta,
        payload,
    })
}

/// Builds a stored string (format 2 without meta, 3 with). The service
/// builds the records of unconditional puts itself; the scripts rewrite only
/// the version digits when the old version is not below the new one.
pub fn encode(version: u64, expires_at_ms: Option<u64>, meta: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_HEADER_LEN + meta.len() + payload.len());
    if meta.is_empty() {
        out.extend_from_slice(&MAGIC);
        push_header(&mut out, version, expires_at_ms);
    } else {
        out.extend_from_slice(&MAGIC_META);
        push_header(&mut out, version, expires_at_ms);
        out.extend_from_slice(format!("{:06}", meta.len()).as_bytes());
        out.extend_from_slice(meta);
    }
    out.extend_from_slice(payload);
    out
}

fn push_header(out: &mut Vec<u8>, version: u64, expires_at_ms: Option<u64>) {
    let mut buf = itoa::Buffer::new();
    pad(out, buf.format(version), 16);
    pad(out, buf.format(expires_at_ms.unwrap_or(0)), 14);
}

fn pad(out: &mut Vec<u8>, digits: &str, width: usize) {
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits.as_bytes());
}

/// A version as the scripts compare it: 16 zero-padded digits. Two of them
/// order as strings exactly as the numbers do.
pub fn version_digits(version: u64) -> String {
    format!("{version:016}")
}

/// An expiry as the header holds it: 14 zero-padded digits (zeros: none).
pub fn expiry_digits(expires_at_ms: Option<u64>) -> String {
    format!("{:014}", expires_at_ms.unwrap_or(0))
}

fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The clocks a Redis store stamps records with.
///
/// **Versions** come from this host's clock, not from Redis: a failover to a
/// replica whose clock lags can then never send versions backwards. Each
/// process issues strictly increasing "now"s, and never below the shared
/// floor (`observe_floor`): every instance publishes its clock into one Redis
/// key and reads the maximum back every health interval, so an instance
/// whose clock lags is pulled up to the fastest instance's clock as it was at
/// most two intervals ago (docs/design/storage-format.md, "Versions"). The
/// scripts keep `max(previous + 1, now)` per key.
///
/// **Expiries** are absolute times on Redis's clock (Redis expires the key
/// itself, `SET … PXAT`): this host's clock plus the offset to Redis's,
/// measured by the health loop (`TIME` between two local readings).
#[derive(Debug, Default)]
pub struct Clocks {
    /// Redis time minus local time, in µs.
    offset_us: AtomicI64,
    /// The last "now" handed out, in µs.
    last_version_us: AtomicU64,
    /// The shared floor last read back, in µs.
    floor_us: AtomicU64,
}

impl Clocks {
    /// Records one `TIME` answer taken between the local readings `before`
    /// and `after` (all µs since the epoch); the midpoint is the best guess
    /// of when Redis read its clock.
    pub fn observe_redis(&self, redis_us: i64, before_us: i64, after_us: i64) {
        let local = before_us + (after_us - before_us) / 2;
        self.offset_us.store(redis_us - local, Ordering::Relaxed);
    }

    /// Raises the floor to what the shared floor key held.
    pub fn observe_floor(&self, floor_us: u64) {
        self.floor_us.fetch_max(floor_us, Ordering::Relaxed);
    }

    /// The next version "now" (µs): above the clock's reading, the floor and
    /// every "now" this process handed out before.
    pub fn next_version(&self) -> u64 {
        let candidate = (local_us().max(0) as u64).max(self.floor_us.load(Ordering::Relaxed) + 1);
        let prev = self.last_version_us.fetch_max(candidate, Ordering::Relaxed);
        if prev >= candidate {
            // Another call took this microsecond (or a later one): one above.
            self.last_version_us.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            candidate
        }
    }

    /// What this process publishes into the shared floor: its clock. (Not
    /// its last "now": that may itself come from the floor, and publishing
    /// it would ratchet the floor ahead of every clock.)
    pub fn floor_to_publish(&self) -> u64 {
        local_us().max(0) as u64
    }

    /// Now on Redis's clock, in ms.
    pub fn redis_now_ms(&self) -> i64 {
        (local_us() + self.offset_us.load(Ordering::Relaxed)).div_euclid(1000)
    }

    /// The absolute expiry (Unix ms on Redis's clock) of a TTL starting now.
    pub fn expires_at(&self, ttl: Duration) -> u64 {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        (self.redis_now_ms().max(0) as u64)
            .saturating_add(ttl_ms)
            .min(MAX_EXPIRES_AT_MS)
    }

    /// Remaining time to live of a key that expires at `expires_at_ms`. The
    /// key was just read, so it had not expired on Redis's clock: an estimate
    /// at or below zero (clock offset error) is reported as 1 ms.
    pub fn remaining(&self, expires_at_ms: u64) -> Duration {
        let left = i64::try_from(expires_at_ms).unwrap_or(i64::MAX) - self.redis_now_ms();
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
        let raw = encode(
            1_764_000_000_000_001,
            Some(1_764_000_000_123),
            b"",
            b"\x00abc",
        );
        assert_eq!(raw.len(), HEADER_LEN + 4);
        assert_eq!(&raw[2..18], b"1764000000000001");
        let r = parse(&raw).unwrap();
        assert_eq!(r.version, 1_764_000_000_000_001);
        assert_eq!(r.expires_at_ms, Some(1_764_000_000_123));
        assert_eq!(r.payload, b"\x00abc");
        let raw = encode(7, None, b"", b"-42");
        let r = parse(&raw).unwrap();
        assert_eq!(
            (r.version, r.expires_at_ms, r.payload),
            (7, None, &b"-42"[..])
        );
    }

    #[test]
    fn records_with_meta_are_format_3() {
        let raw = encode(9, None, b"\nentry", b"-1");
        assert_eq!(&raw[..2], &MAGIC_META);
        assert_eq!(&raw[32..38], b"000006");
        let r = parse(&raw).unwrap();
        assert_eq!(
            (r.version, r.meta, r.payload),
            (9, &b"\nentry"[..], &b"-1"[..])
        );
        let mut cut = raw.clone();
        cut.truncate(40);
        assert!(parse(&cut).is_err());
    }

    #[test]
    fn foreign_strings_are_rejected() {
        assert!(parse(b"hello").is_err());
        assert!(parse(&[0xff; 40]).is_err());
        let mut raw = encode(1, None, b"", b"x");
        raw[5] = b'a';
        assert!(parse(&raw).unwrap_err().contains("version"));
        let mut raw = encode(1, None, b"", b"x");
        raw[20] = b'+';
        assert!(parse(&raw).unwrap_err().contains("expiry"));
    }

    #[test]
    fn version_digits_order_like_numbers() {
        assert_eq!(version_digits(42), "0000000000000042");
        assert!(version_digits(999) < version_digits(1000));
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Whatever another tool left in Redis: parsing never panics, and
        /// what parses is exactly what `encode` would write for it.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(raw in proptest::prop_oneof![
            proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            // Near misses: a magic, then mostly digits.
            proptest::collection::vec(proptest::sample::select(b"0123456789 +-x".to_vec()), 0..48)
                .prop_map(|rest| [&MAGIC[..], &rest].concat()),
            proptest::collection::vec(proptest::sample::select(b"0123456789 +-x".to_vec()), 0..48)
                .prop_map(|rest| [&MAGIC_META[..], &rest].concat()),
        ]) {
            if let Ok(r) = parse(&raw) {
                // A format-3 record with an empty meta re-encodes as format 2.
                if !(raw[1] == 3 && r.meta.is_empty()) {
                    proptest::prop_assert_eq!(encode(r.version, r.expires_at_ms, r.meta, r.payload), raw.clone());
                }
            }
        }

        /// Every version and every expiry up to the header's limit, the limit
        /// itself included, round-trips without spilling into the value.
        #[test]
        fn headers_round_trip_up_to_the_limit(
            version in 0u64..10_000_000_000_000_000,
            expires in proptest::option::of(proptest::prop_oneof![
                1u64..=MAX_EXPIRES_AT_MS,
                proptest::strategy::Just(MAX_EXPIRES_AT_MS),
            ]),
            meta in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
        ) {
            let raw = encode(version, expires, &meta, &payload);
            let r = parse(&raw).unwrap();
            proptest::prop_assert_eq!(
                (r.version, r.expires_at_ms, r.meta, r.payload),
                (version, expires, &meta[..], &payload[..])
            );
        }
    }

    #[test]
    fn remaining_ttl_uses_the_observed_offset() {
        let clock = Clocks::default();
        let now = local_us();
        // Redis 10 s ahead of this host.
        clock.observe_redis(now + 10_000_000, now, now);
        let expires = (now / 1000 + 10_000 + 5_000) as u64;
        let left = clock.remaining(expires);
        assert!(left <= Duration::from_millis(5_000) && left > Duration::from_millis(4_000));
        assert_eq!(clock.remaining(1), Duration::from_millis(1));
        // Expiries are on Redis's clock and never beyond the header's range.
        let at = clock.expires_at(Duration::from_secs(1));
        assert!(at >= (now / 1000 + 10_000) as u64);
        assert_eq!(clock.expires_at(Duration::MAX), MAX_EXPIRES_AT_MS);
    }

    #[test]
    fn versions_increase_and_respect_the_floor() {
        let clock = Clocks::default();
        let a = clock.next_version();
        let b = clock.next_version();
        assert!(b > a);
        // Another instance's clock is an hour ahead: its floor lifts ours.
        let ahead = (local_us() as u64) + 3_600_000_000;
        clock.observe_floor(ahead);
        let c = clock.next_version();
        assert!(c > ahead);
        assert!(clock.next_version() > c);
        // What it publishes is its own clock, not the floor it was lifted to.
        assert!(clock.floor_to_publish() < ahead);
    }
}
