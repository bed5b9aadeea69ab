//! The tenants file (TOML, `--tenants-file`): tenants, their API tokens as
//! SHA-256 hashes with scopes, optional rate limits and certificate scopes.
//!
//! ```toml
//! [[tenants]]
//! id = "team-a"                       # [A-Za-z0-9._-]{1,64}
//! requests_per_second = 200           # optional; fractional allowed
//! burst = 400                         # optional; default one second's worth
//! certificate_scopes = ["read"]       # optional; mTLS clients with CN=team-a
//! max_in_flight = 64                  # optional; default --tenant-max-in-flight
//!
//! [[tenants.tokens]]
//! name = "2025-06 pipeline"           # optional label for logs
//! sha256 = "<64 hex digits>"          # `state-service hash-token` prints it
//! scopes = ["read", "write"]          # read, write, admin
//! admin_tenants = ["team-b"]          # optional, needs "admin": an operator
//!                                     # grant to administer these tenants
//!                                     # too ("*": every tenant)
//! ```
//!
//! Tokens are stored as SHA-256 hashes, never in plaintext: tokens are 256-bit
//! random strings, so a fast hash is already preimage-resistant, and a slow
//! password hash would only add milliseconds to every request. Presented
//! tokens are compared in constant time.
//!
//! The file is re-read when its contents change (polled) and on SIGHUP; a
//! file that does not parse or validate keeps the previous configuration.
//! Nothing here ever logs or returns a token or a hash.

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AdminGrant, Identity, Scope, Scopes, TenantId, rate::RateLimit, rate::TenantLimiter};
use crate::reload::{Reload, Reloadable};

/// The hex SHA-256 of a token, as the tenants file stores it.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    tenants: Vec<TenantDoc>,
}

// Unknown fields are errors: a misspelt `scope =` must fail the load, not
// silently grant nothing (or, for `certificate_scope`, silently keep mTLS off).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDoc {
    id: String,
    #[serde(default)]
    tokens: Vec<TokenDoc>,
    requests_per_second: Option<f64>,
    burst: Option<u32>,
    #[serde(default)]
    certificate_scopes: Vec<String>,
    /// Requests in flight at once; overrides --tenant-max-in-flight.
    max_in_flight: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenDoc {
    name: Option<String>,
    sha256: String,
    scopes: Vec<String>,
    #[serde(default)]
    admin_tenants: Vec<String>,
}

#[derive(Debug)]
struct TenantEntry {
    certificate_scopes: Scopes,
    limiter: Option<Arc<TenantLimiter>>,
    max_in_flight: Option<usize>,
}

struct TokenEntry {
    hash: [u8; 32],
    tenant: TenantId,
    scopes: Scopes,
    admin: AdminGrant,
}

// Hand-written so that a stray `{:?}` can never print a hash.
impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("tenant", &self.tenant)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// One validated version of the tenants file.
#[derive(Debug)]
pub struct Tenants {
    tenants: HashMap<TenantId, TenantEntry>,
    /// Keyed by the token's SHA-256: one lookup per request whatever the
    /// number of tokens.
    tokens: HashMap<[u8; 32], TokenEntry>,
}

impl Tenants {
    /// Parses and validates a tenants file. The error names the place
    /// (`tenants[1].tokens[0].sha256`) and never quotes a value.
    pub fn parse(text: &str) -> Result<Tenants, String> {
        let doc: FileDoc = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        if doc.tenants.is_empty() {
            // An empty file is far more often a truncated write than an
            // intent to lock every client out.
            return Err("the file lists no tenants".into());
        }
        let mut tenants = HashMap::new();
        let mut tokens = HashMap::new();
        for (i, t) in doc.tenants.into_iter().enumerate() {
            let at = format!("tenants[{i}]");
            let id = TenantId::parse(&t.id).map_err(|e| format!("{at}.id: {e}"))?;
            if tenants.contains_key(&id) {
                return Err(format!("{at}.id: tenant {id} is listed twice"));
            }
            let limiter = match t.requests_per_second {
                Some(rps) => Some(Arc::new(TenantLimiter::new(
                    RateLimit::new(rps, t.burst).map_err(|e| format!("{at}: {e}"))?,
                ))),
                None if t.burst.is_some() => {
                    return Err(format!("{at}.burst needs requests_per_second"));
                }
                None => None,
            };
            let certificate_scopes = scopes(&t.certificate_scopes, &at, "certificate_scopes")?;
            if t.max_in_flight == Some(0) {
                return Err(format!("{at}.max_in_flight: must be at least 1"));
            }
            for (j, tok) in t.tokens.into_iter().enumerate() {
                let at = format!("{at}.tokens[{j}]");
                let hash = parse_hash(&tok.sha256).map_err(|e| format!("{at}.sha256: {e}"))?;
                if tokens.contains_key(&hash) {
                    return Err(format!(
                        "{at}.sha256: the same token hash is listed twice; every token must be \
                         unique, or a request could not say which tenant it acts for"
                    ));
                }
                let token_scopes = scopes(&tok.scopes, &at, "scopes")?;
                if token_scopes.is_empty() {
                    return Err(format!("{at}.scopes: a token needs at least one scope"));
                }
                // The name is only a label; keep it bounded for log lines.
                if tok.name.as_ref().is_some_and(|n| n.len() > 128) {
                    return Err(format!("{at}.name: at most 128 characters"));
                }
                let admin = admin_grant(&tok.admin_tenants, token_scopes, &at)?;
                tokens.insert(
                    hash,
                    TokenEntry {
                        hash,
                        tenant: id.clone(),
                        scopes: token_scopes,
                        admin,
                    },
                );
            }
            tenants.insert(
                id,
                TenantEntry {
                    certificate_scopes,
                    limiter,
                    max_in_flight: t.max_in_flight,
                },
            );
        }
        Ok(Tenants { tenants, tokens })
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The identity a bearer token grants, if it is listed.
    pub fn authenticate(&self, token: &str) -> Option<Identity> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Looked up by digest: the time a lookup takes depends on the
        // digest, which an attacker cannot steer towards a listed one
        // without a SHA-256 preimage, so it says nothing about how close a
        // guess came. The final comparison is constant-time all the same.
        let entry = self
            .tokens
            .get(&presented)
            .filter(|e| bool::from(e.hash.ct_eq(&presented)))?;
        let tenant = self.tenants.get(&entry.tenant);
        Some(Identity {
            tenant: entry.tenant.clone(),
            scopes: entry.scopes,
            admin: entry.admin.clone(),
            max_in_flight: tenant.and_then(|t| t.max_in_flight),
            limiter: self
                .tenants
                .get(&entry.tenant)
                .and_then(|t| t.limiter.clone()),
        })
    }

    /// The identity a verified client certificate naming `tenant` grants, if
    /// that tenant lists certificate scopes.
    pub fn certificate_identity(&self, tenant: &TenantId) -> Option<Identity> {
        let t = self.tenants.get(tenant)?;
        if t.certificate_scopes.is_empty() {
            return None;
        }
        Some(Identity {
            tenant: tenant.clone(),
            scopes: t.certificate_scopes,
            limiter: t.limiter.clone(),
            max_in_flight: t.max_in_flight,
            // Operator grants are given to tokens only: a certificate's
            // admin scope covers its own tenant.
            admin: AdminGrant::Own,
        })
    }

    /// Keeps the running limiters of tenants whose limit did not change, so a
    /// reload neither resets budgets nor grants a fresh burst.
    fn carry_limiters_from(&mut self, old: &Tenants) {
        for (id, entry) in &mut self.tenants {
            let (Some(new), Some(old)) = (
                &entry.limiter,
                old.tenants.get(id).and_then(|t| t.limiter.as_ref()),
            ) else {
                continue;
            };
            if new.limit() == old.limit() {
                entry.limiter = Some(old.clone());
            }
        }
    }
}

fn scopes(names: &[String], at: &str, field: &str) -> Result<Scopes, String> {
    names
        .iter()
        .map(|n| {
            Scope::parse(n).ok_or_else(|| {
                format!("{at}.{field}: unknown scope {n:?} (expected read, write or admin)")
            })
        })
        .collect()
}

/// A token's operator grant: `admin_tenants`, tenant ids or `"*"`. Only a
/// token that holds the admin scope may carry one (a grant without the scope
/// would be a silent no-op, which is how misconfigurations hide).
fn admin_grant(names: &[String], scopes: Scopes, at: &str) -> Result<AdminGrant, String> {
    if names.is_empty() {
        return Ok(AdminGrant::Own);
    }
    if !scopes.contains(Scope::Admin) {
        return Err(format!(
            "{at}.admin_tenants: an operator grant needs the \"admin\" scope on the same token"
        ));
    }
    if names.iter().any(|n| n == "*") {
        return Ok(AdminGrant::All);
    }
    let ids = names
        .iter()
        .enumerate()
        .map(|(i, n)| TenantId::parse(n).map_err(|e| format!("{at}.admin_tenants[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AdminGrant::Tenants(ids.into()))
}

fn parse_hash(hex: &str) -> Result<[u8; 32], String> {
    let bad = || {
        format!(
            "must be 64 hex digits (the output of `state-service hash-token`), got {} characters",
            hex.chars().count()
        )
    };
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A TOML error as "line N: message", without the source excerpt toml would
/// print (the excerpt could quote a token pasted into the wrong field).
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |before| before.matches('\n').count())
                + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

/// The tenants file on disk and the last good version of it.
#[derive(Debug)]
pub struct TenantsFile {
    path: PathBuf,
    current: RwLock<Arc<Tenants>>,
    /// Digest of the contents last tried, good or bad: unchanged contents are
    /// not re-parsed (or re-reported) on every poll.
    seen: Mutex<[u8; 32]>,
}

impl TenantsFile {
    /// Loads the file; at startup there is no previous version to fall back
    /// on, so any problem is an error.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = read(path)?;
        let tenants =
            Tenants::parse(&text).map_err(|e| format!("tenants file {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(tenants)),
            seen: Mutex::new(Sha256::digest(text.as_bytes()).into()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Tenants> {
        // Poisoning cannot leave a half-written Arc behind.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Reloadable for TenantsFile {
    fn name(&self) -> &'static str {
        "tenants"
    }

    fn reload(&self, force: bool) -> Reload {
        let text = match read(&self.path) {
            Ok(t) => t,
            Err(e) => return Reload::Failed(e),
        };
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == digest && !force {
                return Reload::Unchanged;
            }
            *seen = digest;
        }
        match Tenants::parse(&text) {
            Ok(mut tenants) => {
                tenants.carry_limiters_from(&self.current());
                let summary = format!(
                    "{} tenants, {} tokens",
                    tenants.tenant_count(),
                    tenants.token_count()
                );
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tenants);
                Reload::Applied(summary)
            }
            Err(e) => Reload::Failed(format!(
                "tenants file {}: {e}; keeping the previous configuration",
                self.path.display()
            )),
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read tenants file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(token_hash: &str) -> String {
        format!(
            r#"
[[tenants]]
id = "alpha"
requests_per_second = 10
certificate_scopes = ["read"]

[[tenants.tokens]]
name = "main"
sha256 = "{token_hash}"
scopes = ["read", "write"]

[[tenants]]
id = "beta"
"#
        )
    }

    #[test]
    fn tokens_authenticate_by_hash() {
        let t = Tenants::parse(&file(&hash_token("secret-a"))).unwrap();
        let id = t.authenticate("secret-a").unwrap();
        assert_eq!(id.tenant.as_str(), "alpha");
        assert!(id.scopes.contains(Scope::Write) && !id.scopes.contains(Scope::Admin));
        assert!(id.limiter.is_some());
        assert!(t.authenticate("secret-b").is_none());
        assert!(t.authenticate(&hash_token("secret-a")).is_none());
        let cert = t
            .certificate_identity(&TenantId::parse("alpha").unwrap())
            .unwrap();
        assert!(cert.scopes.contains(Scope::Read) && !cert.scopes.contains(Scope::Write));
        assert!(
            t.certificate_identity(&TenantId::parse("beta").unwrap())
                .is_none()
        );
    }

    #[test]
    fn broken_files_are_refused_without_quoting_values() {
        let h = hash_token("x");
        let cases = [
            ("", "no tenants"),
            ("[[tenants]]\nid = \"a:b\"", "tenants[0].id"),
            ("[[tenants]]\nid = \"a\"\n[[tenants]]\nid = \"a\"", "twice"),
            (
                "[[tenants]]\nid = \"a\"\n[[tenants.tokens]]\nsha256 = \"sst_plaintext\"\nscopes = [\"read\"]",
                "64 hex digits",
            ),
            (
                &format!(
                    "[[tenants]]\nid = \"a\"\n[[tenants.tokens]]\nsha256 = \"{h}\"\nscopes = [\"root\"]"
                ),
                "unknown scope",
            ),
            (
                &format!(
                    "[[tenants]]\nid = \"a\"\n[[tenants.tokens]]\nsha256 = \"{h}\"\nscopes = []"
                ),
                "at least one scope",
            ),
            (
                &format!(
                    "[[tenants]]\nid = \"a\"\n[[tenants.tokens]]\nsha256 = \"{h}\"\nscopes = [\"read\"]\n\
                     [[tenants]]\nid = \"b\"\n[[tenants.tokens]]\nsha256 = \"{h}\"\nscopes = [\"read\"]"
                ),
                "listed twice",
            ),
            ("[[tenants]]\nid = \"a\"\nscope = [\"read\"]", "line 3"),
            (
                "[[tenants]]\nid = \"a\"\nrequests_per_second = 0",
                "greater than 0",
            ),
            (
                "[[tenants]]\nid = \"a\"\nburst = 5",
                "needs requests_per_second",
            ),
            ("not toml at all = = sst_plaintext", "line 1"),
        ];
        for (text, want) in cases {
            let e = Tenants::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("sst_plaintext"), "{e}");
        }
    }

    #[test]
    fn reloads_keep_unchanged_limiters() {
        let old = Tenants::parse(&file(&hash_token("a"))).unwrap();
        let mut new = Tenants::parse(&file(&hash_token("b"))).unwrap();
        new.carry_limiters_from(&old);
        let alpha = TenantId::parse("alpha").unwrap();
        let (o, n) = (
            old.tenants[&alpha].limiter.as_ref().unwrap(),
            new.tenants[&alpha].limiter.as_ref().unwrap(),
        );
        assert!(Arc::ptr_eq(o, n));
    }

    #[test]
    fn operator_grants_name_tenants_or_all_and_need_the_admin_scope() {
        let tok = |scopes: &str, grant: &str| {
            format!(
                "[[tenants]]\nid = \"ops\"\n[[tenants.tokens]]\nsha256 = \"{}\"\n\
                 scopes = {scopes}\n{grant}\n",
                hash_token("t")
            )
        };
        let grant = |scopes: &str, grant: &str| {
            Tenants::parse(&tok(scopes, grant)).map(|t| t.authenticate("t").unwrap().admin)
        };
        assert_eq!(grant(r#"["admin"]"#, ""), Ok(AdminGrant::Own));
        assert_eq!(
            grant(r#"["admin"]"#, r#"admin_tenants = ["*"]"#),
            Ok(AdminGrant::All)
        );
        let Ok(AdminGrant::Tenants(list)) = grant(r#"["admin"]"#, r#"admin_tenants = ["b", "c"]"#)
        else {
            panic!("a list of tenants is a grant of those tenants");
        };
        assert_eq!(list.len(), 2);
        let err = grant(r#"["read"]"#, r#"admin_tenants = ["b"]"#).unwrap_err();
        assert!(
            err.contains("admin_tenants") && err.contains("admin"),
            "{err}"
        );
        let err = grant(r#"["admin"]"#, r#"admin_tenants = ["a:b"]"#).unwrap_err();
        assert!(err.contains("admin_tenants[0]"), "{err}");
        // The grant reaches the named tenants, and never others.
        let id = Tenants::parse(&tok(r#"["admin"]"#, r#"admin_tenants = ["b"]"#))
            .unwrap()
            .authenticate("t")
            .unwrap();
        assert_eq!(id.admin_target("").unwrap().as_str(), "ops");
        assert_eq!(id.admin_target("b").unwrap().as_str(), "b");
        assert!(id.admin_target("c").is_err());
    }

    #[test]
    fn debug_output_never_contains_hashes() {
        let h = hash_token("secret-a");
        let t = Tenants::parse(&file(&h)).unwrap();
        assert!(!format!("{t:?}").contains(&h[..16]));
    }
}
