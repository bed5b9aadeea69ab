//! Request validation and limits. Every limit is configurable; a violation is
//! INVALID_ARGUMENT with a message naming the limit, its value and the flag
//! that changes it. Nothing here touches storage.

use std::time::Duration;

use prost::Message;

use crate::{
    config::Config,
    error::{Error, Result},
    pb,
    store::{Condition, codec},
};

/// The configured limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_batch_items: usize,
    pub max_transaction_ops: usize,
    pub default_page_size: u32,
    pub max_page_size: u32,
}

impl Limits {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            max_key_bytes: cfg.max_key_bytes,
            max_value_bytes: cfg.max_value_bytes,
            max_batch_items: cfg.max_batch_items,
            max_transaction_ops: cfg.max_transaction_ops,
            default_page_size: cfg.default_page_size,
            max_page_size: cfg.max_page_size,
        }
    }

    pub fn key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid("key must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::invalid(format!(
                "key is {} bytes; the limit is {} bytes (--max-key-bytes / STATE_MAX_KEY_BYTES)",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// A List prefix may be empty but not longer than a key.
    pub fn prefix(&self, prefix: &str) -> Result<()> {
        if prefix.len() > self.max_key_bytes {
            return Err(Error::invalid(format!(
                "prefix is {} bytes; the limit is {} bytes (--max-key-bytes / STATE_MAX_KEY_BYTES)",
                prefix.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// The value of a write: required, with a kind, not too deep, not too big.
    pub fn value(&self, value: Option<pb::Value>) -> Result<pb::Value> {
        let value = value.ok_or_else(|| Error::invalid("value is required"))?;
        if value.kind.is_none() {
            return Err(Error::invalid(
                "value must have exactly one kind set (null_value, bool_value, int_value, ...)",
            ));
        }
        let depth = codec::depth(&value);
        if depth > codec::MAX_DEPTH {
            return Err(Error::invalid(format!(
                "value nests lists/maps {depth} levels deep; the limit is {}",
                codec::MAX_DEPTH
            )));
        }
        let size = value.encoded_len();
        if size > self.max_value_bytes {
            return Err(Error::invalid(format!(
                "value is {size} bytes encoded; the limit is {} bytes \
                 (--max-value-bytes / STATE_MAX_VALUE_BYTES)",
                self.max_value_bytes
            )));
        }
        Ok(value)
    }

    pub fn batch(&self, n: usize, what: &str) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid(format!("{what} must not be empty")));
        }
        if n > self.max_batch_items {
            return Err(Error::invalid(format!(
                "{what} has {n} items; the limit is {} (--max-batch-items / STATE_MAX_BATCH_ITEMS)",
                self.max_batch_items
            )));
        }
        Ok(())
    }

    pub fn transaction(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid("ops must not be empty"));
        }
        if n > self.max_transaction_ops {
            return Err(Error::invalid(format!(
                "transaction has {n} ops; the limit is {} \
                 (--max-transaction-ops / STATE_MAX_TRANSACTION_OPS)",
                self.max_transaction_ops
            )));
        }
        Ok(())
    }

    pub fn page_size(&self, requested: u32) -> Result<usize> {
        match requested {
            0 => Ok(self.default_page_size as usize),
            n if n > self.max_page_size => Err(Error::invalid(format!(
                "page_size {n} exceeds the limit of {} (--max-page-size / STATE_MAX_PAGE_SIZE)",
                self.max_page_size
            ))),
            n => Ok(n as usize),
        }
    }
}

/// A required TTL of at least 1 ms.
pub fn ttl(d: Option<prost_types::Duration>, field: &str) -> Result<Duration> {
    optional_ttl(d, field)?.ok_or_else(|| Error::invalid(format!("{field} is required")))
}

/// An optional TTL; when set, at least 1 ms (a shorter or negative TTL is an
/// error, never a silently persistent key).
pub fn optional_ttl(d: Option<prost_types::Duration>, field: &str) -> Result<Option<Duration>> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(Error::invalid(format!(
            "{field} must be a positive duration (got {}s {}ns)",
            d.seconds, d.nanos
        )));
    }
    let dur = Duration::new(d.seconds as u64, d.nanos as u32);
    if dur < Duration::from_millis(1) {
        return Err(Error::invalid(format!(
            "{field} must be at least 1ms (TTLs have millisecond precision)"
        )));
    }
    // Redis PEXPIRE takes a signed 64-bit millisecond count.
    if dur.as_millis() > (i64::MAX / 2) as u128 {
        return Err(Error::invalid(format!("{field} is too large")));
    }
    // Sub-millisecond parts are truncated, as documented.
    Ok(Some(Duration::from_millis(dur.as_millis() as u64)))
}

/// Converts a request condition.
pub fn condition(c: Option<pb::Condition>) -> Result<Condition> {
    use pb::condition::Kind;
    Ok(match c.and_then(|c| c.kind) {
        None => Condition::None,
        Some(Kind::IfAbsent(_)) => Condition::IfAbsent,
        Some(Kind::IfExists(_)) => Condition::IfExists,
        Some(Kind::IfVersion(0)) => {
            return Err(Error::invalid(
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

    fn limits() -> Limits {
        Limits {
            max_key_bytes: 4,
            max_value_bytes: 16,
            max_batch_items: 2,
            max_transaction_ops: 2,
            default_page_size: 10,
            max_page_size: 20,
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
    fn ttls_below_a_millisecond_are_rejected() {
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert!(ttl(d(0, 999_999), "ttl").is_err());
        assert!(ttl(d(-1, 0), "ttl").is_err());
        assert!(ttl(None, "ttl").is_err());
        assert_eq!(
            ttl(d(1, 1_500_000), "ttl").unwrap(),
            Duration::from_millis(1001)
        );
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
