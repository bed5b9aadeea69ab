//! Durations as people type them and as protobuf carries them: one place for
//! the service's flags, its gRPC surface and the tools built on it (the load
//! generator, the admin CLI), so they parse and convert alike.

use std::time::Duration;

/// Parses human durations such as `500ms`, `2s`, `1m 30s` or `10y` (clap
/// value parser of every duration flag).
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 2s, 1m)"))
}

/// A `google.protobuf.Duration` for `d`; saturates at the largest
/// representable duration instead of wrapping.
pub fn to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A `google.protobuf.Duration` as a non-negative `Duration`, or `None` when
/// it is negative or malformed (nanos out of range or of the other sign).
pub fn from_proto(d: &prost_types::Duration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_durations_round_trip_and_reject_negatives() {
        let d = Duration::from_millis(1_500);
        assert_eq!(from_proto(&to_proto(d)), Some(d));
        let neg = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(from_proto(&neg), None);
        let bad = prost_types::Duration {
            seconds: 1,
            nanos: 1_000_000_000,
        };
        assert_eq!(from_proto(&bad), None);
        assert_eq!(to_proto(Duration::MAX).seconds, i64::MAX);
    }

    #[test]
    fn human_durations_parse_with_a_hint_on_error() {
        assert_eq!(parse("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse("soon").unwrap_err().contains("examples"));
    }
}
