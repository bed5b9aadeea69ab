//! The key layout on a shared keyspace: which storage key a tenant's client
//! key becomes, which SCAN pattern lists a tenant's prefix, and the names of
//! the service's own bookkeeping keys.
//!
//! ```text
//! <key-prefix>:<tenant>:<client key>      a tenant's data
//! <key-prefix>:#<name>…                   the service's own keys
//! ```
//!
//! Tenant ids are `[A-Za-z0-9._-]{1,64}` (checked by `tenancy` before a
//! namespace is built), so the first `:` after the key prefix always ends the
//! tenant: one tenant's namespace is never a prefix of another's, and no
//! tenant id starts with `#`, so no tenant can name the service's own keys.
//! Client keys are opaque: whatever they contain only extends the caller's
//! namespace. Client text never becomes SCAN pattern syntax.

/// The service's key prefix (`--key-prefix`), from which every storage key
/// is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    /// `prefix` must be non-empty and free of `{ } * ? [ ] \` (checked at
    /// startup: braces would move the Redis Cluster hash slot, glob characters
    /// would make List patterns ambiguous).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace of `tenant`, an id already validated by `tenancy`
    /// (`[A-Za-z0-9._-]{1,64}`, in particular without `:` or `#`).
    pub fn namespace(&self, tenant: &str) -> Namespace {
        debug_assert!(
            !tenant.is_empty() && !tenant.contains([':', '#']),
            "tenant ids are validated before they reach the keyspace"
        );
        // Built by hand: this runs on every request, and `format!` costs
        // several times as much.
        let mut prefix = String::with_capacity(self.prefix.len() + tenant.len() + 2);
        prefix.push_str(&self.prefix);
        prefix.push(':');
        prefix.push_str(tenant);
        prefix.push(':');
        Namespace {
            tenant_len: tenant.len(),
            prefix,
        }
    }

    /// A key of the service's own (`<prefix>:#<name>`), outside every
    /// tenant's namespace.
    pub fn internal(&self, name: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + name.len() + 2);
        s.push_str(&self.prefix);
        s.push_str(":#");
        s.push_str(name);
        s
    }
}

/// One tenant's part of the keyspace: `<key-prefix>:<tenant>:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `<key-prefix>:<tenant>:`
    prefix: String,
    tenant_len: usize,
}

impl Namespace {
    /// The tenant this namespace belongs to.
    pub fn tenant(&self) -> &str {
        let end = self.prefix.len() - 1;
        &self.prefix[end - self.tenant_len..end]
    }

    /// The storage key of a client key.
    pub fn storage_key(&self, key: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + key.len());
        s.push_str(&self.prefix);
        s.push_str(key);
        s
    }

    /// The client key of a storage key, if it lies in this namespace and is
    /// UTF-8 (keys another tool wrote may be neither).
    pub fn client_key<'a>(&self, storage_key: &'a [u8]) -> Option<&'a str> {
        let rest = storage_key.strip_prefix(self.prefix.as_bytes())?;
        std::str::from_utf8(rest).ok()
    }

    /// A Redis SCAN MATCH pattern selecting exactly this namespace's keys that
    /// start with `client_prefix`: every glob metacharacter is escaped, so the
    /// pattern is a literal prefix followed by one `*` (see CVE-2022-36021
    /// for what crafted patterns can do to Redis).
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
    fn storage_keys_stay_inside_the_namespace() {
        let ns = Keyspace::new("state").namespace("a");
        assert_eq!(ns.tenant(), "a");
        assert_eq!(ns.storage_key("x:y{z}*"), "state:a:x:y{z}*");
        assert_eq!(ns.client_key(b"state:a:x:y"), Some("x:y"));
        assert_eq!(ns.client_key(b"state:ab:x"), None);
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        let ns = Keyspace::new("state").namespace("a");
        assert_eq!(
            ns.scan_pattern("k*?[]\\"),
            b"state:a:k\\*\\?\\[\\]\\\\*".to_vec()
        );
    }

    #[test]
    fn internal_keys_are_outside_every_namespace() {
        let ks = Keyspace::new("state");
        let internal = ks.internal("feed");
        assert_eq!(internal, "state:#feed");
        // A tenant id cannot start with '#', so no namespace covers it.
        assert_eq!(ks.namespace("feed").client_key(internal.as_bytes()), None);
    }
}
