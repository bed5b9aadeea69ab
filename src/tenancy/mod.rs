//! Who is calling and what they may do.
//!
//! A request's identity comes from its credentials when the server has any
//! configured (a bearer token from the tenants file, or a client certificate
//! verified against `--tls-client-ca`), and from the `x-tenant-id` header only
//! when it has none (trusted development and meshes). A header can narrow but
//! never change the tenant that credentials establish. Tenant ids are
//! `[A-Za-z0-9._-]{1,64}`: the key layout (`store::keyspace`) relies on them
//! containing neither `:` nor `#`. Which keys a tenant owns is the store's
//! business, not this module's.

pub mod cert;
pub mod rate;
pub mod tenants_file;

use std::{fmt, sync::Arc};

use rustls::pki_types::CertificateDer;
use tonic::metadata::MetadataMap;

use crate::error::{Error, Result};

pub use rate::{RateLimit, TenantLimiter};
pub use tenants_file::{TenantsFile, hash_token};

/// Request header naming the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// `TENANT_HEADER` parsed once (a lookup by `&str` parses the name each time).
static TENANT_KEY: std::sync::LazyLock<tonic::metadata::MetadataKey<tonic::metadata::Ascii>> =
    std::sync::LazyLock::new(|| tonic::metadata::MetadataKey::from_static(TENANT_HEADER));

/// Request header carrying `Bearer <token>`.
pub const AUTHORIZATION_HEADER: &str = "authorization";

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

/// What a caller may do. Scopes are independent: `admin` does not imply
/// `read` or `write`, so a token carries exactly the scopes listed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Get, BatchGet, List.
    Read,
    /// Put, PutWithTtl, Delete, Expire, Persist, Increment, BatchPut,
    /// BatchDelete, Transact, and Get with `refresh_ttl` (it extends a key's life).
    Write,
    /// Administrative RPCs (AdminService).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|sc| sc.as_str() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);
    pub const ALL: Scopes = Scopes(1 | 2 | 4);

    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::NONE, Scopes::with)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect();
        write!(f, "[{}]", names.join(", "))
    }
}

/// Which tenants a caller's `admin` scope reaches (AdminService). A
/// credential's admin scope covers its own tenant; others need an operator
/// grant on the token (`admin_tenants` in the tenants file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AdminGrant {
    /// Its own tenant only.
    #[default]
    Own,
    /// Its own tenant and these.
    Tenants(Arc<[TenantId]>),
    /// Every tenant (`admin_tenants = ["*"]`, and header mode, where every
    /// caller may name any tenant anyway).
    All,
}

/// Who a request comes from, once its credentials are checked.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tenant: TenantId,
    pub scopes: Scopes,
    /// The tenant's rate limiter, when the tenants file sets one.
    pub limiter: Option<Arc<TenantLimiter>>,
    /// The tenant's own in-flight limit from the tenants file, overriding
    /// the process default.
    pub max_in_flight: Option<usize>,
    /// The tenants an admin call may act on besides its own.
    pub admin: AdminGrant,
}

impl Identity {
    /// PERMISSION_DENIED unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.scopes.contains(scope) {
            return Ok(());
        }
        Err(Error::PermissionDenied {
            message: format!(
                "this call needs the {:?} scope; the caller's credentials grant {}",
                scope.as_str(),
                self.scopes
            ),
            scope: Some(scope.as_str()),
        })
    }

    /// The tenant an admin call acts on: `target` (empty: the caller's own).
    /// Another tenant than the caller's needs an operator grant; the refusal
    /// does not say whether the named tenant exists.
    pub fn admin_target(&self, target: &str) -> Result<TenantId> {
        if target.is_empty() || target == self.tenant.as_str() {
            return Ok(self.tenant.clone());
        }
        let target = TenantId::parse(target)
            .map_err(|e| Error::invalid_field("tenant", format!("tenant: {e}")))?;
        let granted = match &self.admin {
            AdminGrant::All => true,
            AdminGrant::Tenants(list) => list.contains(&target),
            AdminGrant::Own => false,
        };
        if granted {
            return Ok(target);
        }
        Err(Error::PermissionDenied {
            message: "the admin scope of these credentials covers their own tenant only; \
                      acting on another tenant needs an operator grant on the token \
                      (admin_tenants in the tenants file, docs/security.md)"
                .into(),
            scope: Some(Scope::Admin.as_str()),
        })
    }
}

/// How identities are established.
#[derive(Debug, Clone)]
enum Authentication {
    /// No credentials configured: `x-tenant-id` is trusted as sent.
    Header { default_tenant: TenantId },
    /// Bearer tokens (with a tenants file) and/or client certificates (with
    /// `--tls-client-ca`); `x-tenant-id` may only repeat the tenant they name.
    Credentials {
        tenants: Option<Arc<TenantsFile>>,
        certificates: bool,
    },
}

/// Establishes the identity of each request from its metadata and client
/// certificate.
#[derive(Debug, Clone)]
pub struct TenantResolver {
    auth: Authentication,
}

impl TenantResolver {
    /// Trusts `x-tenant-id` (or `default_tenant` when absent): no credentials.
    pub fn new(default_tenant: TenantId) -> Self {
        Self {
            auth: Authentication::Header { default_tenant },
        }
    }

    /// Requires credentials: a bearer token listed in `tenants` and/or, when
    /// `certificates` is set, a verified client certificate whose subject CN
    /// names the tenant.
    pub fn authenticated(tenants: Option<Arc<TenantsFile>>, certificates: bool) -> Self {
        Self {
            auth: Authentication::Credentials {
                tenants,
                certificates,
            },
        }
    }

    /// Whether requests must carry credentials (false: the header is trusted).
    pub fn requires_credentials(&self) -> bool {
        matches!(self.auth, Authentication::Credentials { .. })
    }

    /// The identity of a request. `peer_certs` is the verified client chain
    /// (leaf first), if the connection presented one.
    pub fn resolve(
        &self,
        metadata: &MetadataMap,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Identity> {
        match &self.auth {
            Authentication::Header { default_tenant } => {
                let tenant = match metadata.get(&*TENANT_KEY) {
                    None => default_tenant.clone(),
                    Some(v) => {
                        let s = v.to_str().map_err(|_| {
                            Error::invalid_field(
                                TENANT_HEADER,
                                format!("{TENANT_HEADER} must be ASCII"),
                            )
                        })?;
                        TenantId::parse(s).map_err(|e| {
                            Error::invalid_field(TENANT_HEADER, format!("{TENANT_HEADER}: {e}"))
                        })?
                    }
                };
                Ok(Identity {
                    tenant,
                    scopes: Scopes::ALL,
                    limiter: None,
                    max_in_flight: None,
                    admin: AdminGrant::All,
                })
            }
            Authentication::Credentials {
                tenants,
                certificates,
            } => {
                let identity = match bearer_token(metadata)? {
                    Some(token) => {
                        let Some(tenants) = tenants else {
                            return Err(Error::Unauthenticated(
                                "this server authenticates by client certificate only; \
                                 remove the authorization header"
                                    .into(),
                            ));
                        };
                        tenants.current().authenticate(token).ok_or_else(|| {
                            Error::Unauthenticated(
                                "the bearer token is not valid (unknown or revoked)".into(),
                            )
                        })?
                    }
                    None => match peer_certs.and_then(|c| c.first()) {
                        Some(leaf) if *certificates => {
                            certificate_identity(tenants.as_deref(), leaf)?
                        }
                        _ => {
                            return Err(Error::Unauthenticated(if *certificates {
                                "missing credentials: send `authorization: Bearer <token>` \
                                 or connect with a client certificate"
                                    .into()
                            } else {
                                "missing credentials: send `authorization: Bearer <token>`".into()
                            }));
                        }
                    },
                };
                // The header may repeat the caller's tenant (clients written
                // for header mode keep working) but never name another one.
                for v in metadata.get_all(TENANT_HEADER) {
                    if v.as_bytes() != identity.tenant.as_str().as_bytes() {
                        return Err(Error::PermissionDenied {
                            message: format!(
                                "{TENANT_HEADER} does not match the tenant of the credentials; \
                                 omit the header or send your own tenant id"
                            ),
                            scope: None,
                        });
                    }
                }
                Ok(identity)
            }
        }
    }
}

/// The token of an `authorization: Bearer <token>` header, if any. More than
/// one authorization header, or another scheme, is refused rather than
/// guessed at: proxies and clients disagree on which copy wins.
fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>> {
    let mut values = metadata.get_all(AUTHORIZATION_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed = || {
        Error::Unauthenticated(
            "the authorization header must be exactly `Bearer <token>`, sent once".into(),
        )
    };
    if values.next().is_some() {
        return Err(malformed());
    }
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(malformed());
    }
    Ok(Some(token))
}

/// The identity a verified client certificate establishes.
fn certificate_identity(
    tenants: Option<&TenantsFile>,
    leaf: &CertificateDer<'_>,
) -> Result<Identity> {
    let tenant = cert::tenant_of(leaf).map_err(|e| {
        Error::Unauthenticated(format!("the client certificate names no tenant: {e}"))
    })?;
    match tenants {
        // Without a tenants file, the CA is the authority: any tenant it
        // certifies may read and write its own namespace.
        None => Ok(Identity {
            tenant,
            scopes: Scopes::NONE.with(Scope::Read).with(Scope::Write),
            limiter: None,
            max_in_flight: None,
            admin: AdminGrant::Own,
        }),
        Some(file) => file.current().certificate_identity(&tenant).ok_or_else(|| {
            Error::Unauthenticated(
                "the client certificate's tenant may not authenticate by certificate \
                 (no certificate_scopes in the tenants file)"
                    .into(),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn bearer_tokens_must_be_well_formed_and_single() {
        assert_eq!(bearer_token(&md(&[])).unwrap(), None);
        assert_eq!(
            bearer_token(&md(&[("authorization", "Bearer abc")])).unwrap(),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&md(&[("authorization", "bearer abc")])).unwrap(),
            Some("abc")
        );
        for bad in ["Bearer", "Bearer ", "Basic abc", "Bearer a b", "abc"] {
            assert!(
                matches!(
                    bearer_token(&md(&[("authorization", bad)])),
                    Err(Error::Unauthenticated(_))
                ),
                "{bad:?} accepted"
            );
        }
        let two = md(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(matches!(bearer_token(&two), Err(Error::Unauthenticated(_))));
    }

    #[test]
    fn header_mode_trusts_the_header_and_grants_everything() {
        let r = TenantResolver::new(TenantId::parse("default").unwrap());
        let id = r.resolve(&md(&[]), None).unwrap();
        assert_eq!(id.tenant.as_str(), "default");
        assert_eq!(id.scopes, Scopes::ALL);
        let id = r.resolve(&md(&[("x-tenant-id", "a")]), None).unwrap();
        assert_eq!(id.tenant.as_str(), "a");
        assert!(!r.requires_credentials());
    }

    #[test]
    fn certificate_mode_without_a_certificate_is_unauthenticated() {
        let r = TenantResolver::authenticated(None, true);
        assert!(matches!(
            r.resolve(&md(&[("x-tenant-id", "a")]), None),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            r.resolve(&md(&[("authorization", "Bearer x")]), None),
            Err(Error::Unauthenticated(_))
        ));
    }

    #[test]
    fn scopes_are_independent() {
        let s: Scopes = [Scope::Admin].into_iter().collect();
        assert!(s.contains(Scope::Admin));
        assert!(!s.contains(Scope::Read) && !s.contains(Scope::Write));
        assert_eq!(Scopes::ALL.to_string(), "[read, write, admin]");
        let id = Identity {
            tenant: TenantId::parse("a").unwrap(),
            scopes: s,
            limiter: None,
            max_in_flight: None,
            admin: AdminGrant::Own,
        };
        assert!(matches!(
            id.require(Scope::Read),
            Err(Error::PermissionDenied { .. })
        ));
    }

    #[test]
    fn tenant_ids_follow_the_documented_alphabet() {
        assert!(TenantId::parse("team-a.prod_1").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse(&"a".repeat(65)).is_err());
        for bad in ["a:b", "a*", "a{b}", "ä", "a b", "a/b"] {
            assert!(TenantId::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
