//! Who is calling and which part of the keyspace they own.
//!
//! A request's tenant comes from the `x-tenant-id` header (or the configured
//! default). Every storage key is `<key-prefix>:<tenant>:<key>`; since tenant ids
//! cannot contain `:`, one tenant's namespace is never a prefix of another's.
//! This module must never let client text shape anything outside that
//! namespace: List prefixes are escaped before they become SCAN patterns.

use std::fmt;

use tonic::metadata::MetadataMap;

use crate::error::{Error, Result};

/// Request header naming the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// A validated tenant id: `[A-Za-z0-9._-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!(
                "tenant id must be 1 to 64 characters, got {}",
                s.len()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "tenant id may contain only A-Z a-z 0-9 . _ - (found {c:?})"
            ));
        }
        Ok(TenantId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resolves the tenant of a request from its metadata.
#[derive(Debug, Clone)]
pub struct TenantResolver {
    default_tenant: TenantId,
}

impl TenantResolver {
    pub fn new(default_tenant: TenantId) -> Self {
        Self { default_tenant }
    }

    /// The tenant named by `x-tenant-id`, or the default one when absent.
    pub fn resolve(&self, metadata: &MetadataMap) -> Result<TenantId> {
        match metadata.get(TENANT_HEADER) {
            None => Ok(self.default_tenant.clone()),
            Some(v) => {
                let s = v
                    .to_str()
                    .map_err(|_| Error::invalid(format!("{TENANT_HEADER} must be ASCII")))?;
                TenantId::parse(s).map_err(|e| Error::invalid(format!("{TENANT_HEADER}: {e}")))
            }
        }
    }
}

/// The keyspace of one tenant: `<key-prefix>:<tenant>:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    tenant: TenantId,
    prefix: String,
}

impl Namespace {
    pub fn new(key_prefix: &str, tenant: TenantId) -> Self {
        let prefix = format!("{key_prefix}:{tenant}:");
        Self { tenant, prefix }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The storage key of a client key. Client keys are opaque: whatever they
    /// contain only extends this namespace's prefix.
    pub fn storage_key(&self, key: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + key.len());
        s.push_str(&self.prefix);
        s.push_str(key);
        s
    }

    /// The client key of a storage key, if it lies in this namespace and is UTF-8.
    pub fn client_key<'a>(&self, storage_key: &'a [u8]) -> Option<&'a str> {
        let rest = storage_key.strip_prefix(self.prefix.as_bytes())?;
        std::str::from_utf8(rest).ok()
    }

    /// A Redis SCAN MATCH pattern selecting exactly this namespace's keys that
    /// start with `client_prefix`: every glob metacharacter is escaped, so the
    /// pattern is a literal prefix followed by one `*`.
    pub fn scan_pattern(&self, client_prefix: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + client_prefix.len() * 2 + 1);
        for &b in self
            .prefix
            .as_bytes()
            .iter()
            .chain(client_prefix.as_bytes())
        {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'*');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_the_documented_alphabet() {
        assert!(TenantId::parse("team-a.prod_1").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse(&"a".repeat(65)).is_err());
        for bad in ["a:b", "a*", "a{b}", "ä", "a b", "a/b"] {
            assert!(TenantId::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn storage_keys_stay_inside_the_namespace() {
        let ns = Namespace::new("state", TenantId::parse("a").unwrap());
        assert_eq!(ns.storage_key("x:y{z}*"), "state:a:x:y{z}*");
        assert_eq!(ns.client_key(b"state:a:x:y"), Some("x:y"));
        assert_eq!(ns.client_key(b"state:ab:x"), None);
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        let ns = Namespace::new("state", TenantId::parse("a").unwrap());
        assert_eq!(
            ns.scan_pattern("k*?[]\\"),
            b"state:a:k\\*\\?\\[\\]\\\\*".to_vec()
        );
    }
}
