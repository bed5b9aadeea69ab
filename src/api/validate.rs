//! Request validation and limits. Every limit is configurable; a violation is
//! INVALID_ARGUMENT (reason LIMIT_EXCEEDED) with a message naming the limit,
//! its value and the flag that changes it. Nothing here touches storage.

use std::time::Duration;

use prost::Message;

use crate::{
    duration,
    error::{Error, Result},
    pb,
    store::{Condition, RequestId, codec},
};

/// The limits the API enforces (built from the configuration by `server`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_batch_items: usize,
    pub max_transaction_ops: usize,
    pub default_page_size: u32,
    pub max_page_size: u32,
    /// Longest TTL any call may set (the storage header holds expiries up to
    /// the year 5138; the configuration keeps this far below that).
    pub max_ttl: Duration,
    pub max_request_id_bytes: usize,
    /// Largest response a BatchGet or List page may produce.
    pub max_response_bytes: usize,
}

impl Limits {
    pub fn key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid_field("key", "key must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::limit(
                format_args!("key is {} bytes", key.len()),
                self.max_key_bytes as u64,
                " bytes",
                "--max-key-bytes",
            ));
        }
        Ok(())
    }

    /// A List prefix may be empty but not longer than a key.
    pub fn prefix(&self, prefix: &str) -> Result<()> {
        if prefix.len() > self.max_key_bytes {
            return Err(Error::limit(
                format_args!("prefix is {} bytes", prefix.len()),
                self.max_key_bytes as u64,
                " bytes",
                "--max-key-bytes",
            ));
        }
        Ok(())
    }

    /// The value of a write: required, with a kind, not too deep, not too big.
    pub fn value(&self, value: Option<pb::Value>) -> Result<pb::Value> {
        let value = value.ok_or_else(|| Error::invalid_field("value", "value is required"))?;
        if value.kind.is_none() {
            return Err(Error::invalid_field(
                "value",
                "value must have exactly one kind set (null_value, bool_value, int_value, ...)",
            ));
        }
        let depth = codec::depth(&value);
        if depth > codec::MAX_DEPTH {
            return Err(Error::invalid_field(
                "value",
                format!(
                    "value nests lists/maps {depth} levels deep; the limit is {}",
                    codec::MAX_DEPTH
                ),
            ));
        }
        let size = value.encoded_len();
        if size > self.max_value_bytes {
            return Err(Error::limit(
                format_args!("value is {size} bytes encoded"),
                self.max_value_bytes as u64,
                " bytes",
                "--max-value-bytes",
            ));
        }
        Ok(value)
    }

    pub fn batch(&self, n: usize, what: &str) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid_field(
                what,
                format!("{what} must not be empty"),
            ));
        }
        if n > self.max_batch_items {
            return Err(Error::limit(
                format_args!("{what} has {n} items"),
                self.max_batch_items as u64,
                " items",
                "--max-batch-items",
            ));
        }
        Ok(())
    }

    pub fn transaction(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid_field("ops", "ops must not be empty"));
        }
        if n > self.max_transaction_ops {
            return Err(Error::limit(
                format_args!("transaction has {n} ops"),
                self.max_transaction_ops as u64,
                " ops",
                "--max-transaction-ops",
            ));
        }
        Ok(())
    }

    pub fn page_size(&self, requested: u32) -> Result<usize> {
        match requested {
            0 => Ok(self.default_page_size as usize),
            n if n > self.max_page_size => Err(Error::limit(
                format_args!("page_size is {n}"),
                self.max_page_size as u64,
                "",
                "--max-page-size",
            )),
            n => Ok(n as usize),
        }
    }

    /// A required TTL: at least 1 ms, at most --max-ttl.
    pub fn ttl(&self, d: Option<prost_types::Duration>, field: &str) -> Result<Duration> {
        self.optional_ttl(d, field)?
            .ok_or_else(|| Error::invalid_field(field, format!("{field} is required")))
    }

    /// An optional TTL; when set, at least 1 ms (a shorter or negative TTL is
    /// an error, never a silently persistent key) and at most --max-ttl.
    /// Sub-millisecond parts are truncated, as documented.
    pub fn optional_ttl(
        &self,
        d: Option<prost_types::Duration>,
        field: &str,
    ) -> Result<Option<Duration>> {
        let Some(d) = d else { return Ok(None) };
        let dur = duration::from_proto(&d).ok_or_else(|| {
            Error::invalid_field(
                field,
                format!(
                    "{field} must be a positive duration (got {}s {}ns)",
                    d.seconds, d.nanos
                ),
            )
        })?;
        if dur < Duration::from_millis(1) {
            return Err(Error::invalid_field(
                field,
                format!("{field} must be at least 1ms (TTLs have millisecond precision)"),
            ));
        }
        if dur > self.max_ttl {
            return Err(Error::LimitExceeded {
                message: format!(
                    "{field} is {}; the limit is {} (--max-ttl / STATE_MAX_TTL)",
                    humantime::format_duration(dur),
                    humantime::format_duration(self.max_ttl)
                ),
                setting: "--max-ttl",
                limit: self.max_ttl.as_secs(),
            });
        }
        Ok(Some(Duration::from_millis(dur.as_millis() as u64)))
    }

    /// An optional idempotency key: empty means none; otherwise 1..N visible
    /// ASCII bytes (the scripts store and search it verbatim).
    pub fn request_id(&self, id: String) -> Result<Option<RequestId>> {
        if id.is_empty() {
            return Ok(None);
        }
        if id.len() > self.max_request_id_bytes {
            return Err(Error::limit(
                format_args!("request_id is {} bytes", id.len()),
                self.max_request_id_bytes as u64,
                " bytes",
                "--max-request-id-bytes",
            ));
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid_field(
                "request_id",
                "request_id may contain only visible ASCII characters (0x21-0x7e), e.g. a UUID",
            ));
        }
        Ok(Some(RequestId(id)))
    }
}

/// Converts a request condition.
pub fn condition(c: Option<pb::Condition>) -> Result<Condition> {
    use pb::condition::Kind;
    Ok(match c.and_then(|c| c.kind) {
        None => Condition::None,
        Some(Kind::IfAbsent(_)) => Condition::IfAbsent,
        Some(Kind::IfExists(_)) => Condition::IfExists,
        Some(Kind::IfVersion(0)) => {
            return Err(Error::invalid_field(
                "condition.if_version",
                "if_version must be a version returned by the service (never 0)",
            ));
        }
        Some(Kind::IfVersion(v)) => Condition::IfVersion(v),
    })
}

/// `grpc-timeout`, parsed once: looking a header up by `&str` parses and
/// validates the name on every call.
static GRPC_TIMEOUT: std::sync::LazyLock<tonic::metadata::MetadataKey<tonic::metadata::Ascii>> =
    std::sync::LazyLock::new(|| tonic::metadata::MetadataKey::from_static("grpc-timeout"));

/// The deadline a client sent in `grpc-timeout`, as a duration from now.
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let raw = metadata.get(&*GRPC_TIMEOUT)?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn limits() -> Limits {
        Limits {
            max_key_bytes: 4,
            max_value_bytes: 16,
            max_batch_items: 2,
            max_transaction_ops: 2,
            default_page_size: 10,
            max_page_size: 20,
            max_ttl: Duration::from_secs(3600),
            max_request_id_bytes: 8,
            max_response_bytes: 1024,
        }
    }

    #[test]
    fn limits_name_the_flag_to_change() {
        let e = limits().key("12345").unwrap_err().to_string();
        assert!(e.contains("--max-key-bytes") && e.contains('4'), "{e}");
        let e = limits().batch(3, "keys").unwrap_err().to_string();
        assert!(e.contains("--max-batch-items"), "{e}");
        let e = limits().page_size(21).unwrap_err().to_string();
        assert!(e.contains("--max-page-size"), "{e}");
        assert_eq!(limits().page_size(0).unwrap(), 10);
    }

    #[test]
    fn ttls_are_between_a_millisecond_and_the_maximum() {
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        let l = limits();
        assert!(l.ttl(d(0, 999_999), "ttl").is_err());
        assert!(l.ttl(d(-1, 0), "ttl").is_err());
        assert!(l.ttl(None, "ttl").is_err());
        assert_eq!(
            l.ttl(d(1, 1_500_000), "ttl").unwrap(),
            Duration::from_millis(1001)
        );
        assert_eq!(l.ttl(d(3600, 0), "ttl").unwrap(), Duration::from_secs(3600));
        let e = l.ttl(d(3600, 1_000_000), "ttl").unwrap_err().to_string();
        assert!(e.contains("--max-ttl / STATE_MAX_TTL"), "{e}");
        // The largest a Duration can say is refused, not overflowed.
        assert!(l.ttl(d(i64::MAX, 999_999_999), "ttl").is_err());
    }

    #[test]
    fn request_ids_are_visible_ascii_of_bounded_length() {
        let l = limits();
        assert_eq!(l.request_id(String::new()).unwrap(), None);
        assert!(l.request_id("a-b_c:1".into()).unwrap().is_some());
        assert!(l.request_id("a b".into()).is_err());
        assert!(l.request_id("é".into()).is_err());
        let e = l.request_id("123456789".into()).unwrap_err().to_string();
        assert!(e.contains("--max-request-id-bytes"), "{e}");
    }

    #[test]
    fn grpc_timeouts_parse() {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_millis(250)));
        m.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_secs(2)));
    }
}
