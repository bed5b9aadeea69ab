//! The key layout on a shared keyspace: which storage key a tenant's client
//! key becomes, which SCAN pattern lists a tenant's prefix, and the names of
//! the service's own bookkeeping keys.
//!
//! ```text
//! <key-prefix>:<tenant>:<client key>      a tenant's data
//! <key-prefix>:#<name>…                   the service's own keys
//! <key-prefix>:#feed:<tenant>             a tenant's change feed (Watch)
//! <key-prefix>:#feed-exp, :#feed-ver      expiries the feed still has to report
//! ```
//!
//! The feed's keys are decided here, not in the scripts: on a standalone
//! Redis each tenant has one stream and the expiry index is shared. On a
//! Redis Cluster a script may only touch keys of its data key's slot, so the
//! same layout becomes one stream and one index per slot, named with
//! `slot::tag_for_slot` (`FeedKeys::for_slot`): the reader then reads a
//! tenant's streams on every master, and the scripts do not change.
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

    /// The change feed's keys for writes of `ns` (standalone layout).
    pub fn feed_keys(&self, ns: &Namespace) -> FeedKeys {
        FeedKeys {
            stream: self.internal(&format!("feed:{}", ns.tenant())),
            expiries: self.internal("feed-exp"),
            versions: self.internal("feed-ver"),
        }
    }

    /// Where the feed's epoch lives: a random id that changes when Redis
    /// loses the feed (restart without persistence), so that a resume
    /// position from before is refused instead of skipping what was lost.
    pub fn feed_epoch(&self) -> String {
        self.internal("feed-epoch")
    }

    /// The namespace a storage key belongs to, if it is a tenant's key.
    pub fn namespace_of(&self, storage_key: &[u8]) -> Option<Namespace> {
        let rest = storage_key
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b":")?;
        let end = rest.iter().position(|&b| b == b':')?;
        let tenant = std::str::from_utf8(&rest[..end]).ok()?;
        if tenant.is_empty() || tenant.starts_with('#') {
            return None;
        }
        Some(self.namespace(tenant))
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

/// The keys a write script with the feed on appends to: the tenant's
/// stream, and the index of expiries the sweeper has yet to report (sorted
/// set: storage key by expiry in ms; hash: storage key to version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedKeys {
    pub stream: String,
    pub expiries: String,
    pub versions: String,
}

impl FeedKeys {
    /// The Redis Cluster layout: the same keys, one set per hash slot,
    /// carrying the slot's tag so that a script writing a key of `slot`
    /// appends to keys of that slot.
    pub fn for_slot(&self, slot: u16) -> FeedKeys {
        let tag = super::redis::slot::tag_for_slot(slot);
        let tagged = |k: &str| format!("{k}:{{{tag}}}");
        FeedKeys {
            stream: tagged(&self.stream),
            expiries: tagged(&self.expiries),
            versions: tagged(&self.versions),
        }
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
    fn feed_keys_are_internal_and_tenants_are_found_from_storage_keys() {
        let ks = Keyspace::new("state");
        let ns = ks.namespace("a");
        let keys = ks.feed_keys(&ns);
        assert_eq!(keys.stream, "state:#feed:a");
        assert_eq!(ks.namespace_of(b"state:a:x:y"), Some(ns));
        assert_eq!(ks.namespace_of(keys.stream.as_bytes()), None);
        assert_eq!(ks.namespace_of(b"other:a:x"), None);
        let slot = super::super::redis::slot::slot_of(b"k");
        let tagged = keys.for_slot(slot);
        assert_eq!(
            super::super::redis::slot::slot_of(tagged.stream.as_bytes()),
            slot
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
