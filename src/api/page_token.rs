//! List page tokens: an opaque wrapper around the backend's cursor, bound to
//! the tenant and prefix that produced it.
//!
//! Layout (before base64url): version byte 1, 8 bytes of
//! SHA-256(tenant NUL prefix), then the backend cursor. A token presented by
//! another tenant or with another prefix fails the binding check and is
//! INVALID_ARGUMENT. The binding is a check, not a secret: isolation never
//! depends on it, because the backend only ever scans the caller's own
//! namespace and prefix, whatever the cursor says.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::{
    error::{Error, Result},
    tenancy::TenantId,
};

const VERSION: u8 = 1;

fn binding(tenant: &TenantId, prefix: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(tenant.as_str().as_bytes());
    h.update([0]);
    h.update(prefix.as_bytes());
    let digest = h.finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

pub fn encode(tenant: &TenantId, prefix: &str, cursor: &[u8]) -> String {
    let mut raw = Vec::with_capacity(9 + cursor.len());
    raw.push(VERSION);
    raw.extend_from_slice(&binding(tenant, prefix));
    raw.extend_from_slice(cursor);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The backend cursor inside `token`, if the token belongs to this tenant and prefix.
pub fn decode(tenant: &TenantId, prefix: &str, token: &str) -> Result<Vec<u8>> {
    let invalid = || {
        Error::invalid(
            "page_token is not valid for this listing: pass the next_page_token of the \
             previous page, with the same prefix and tenant",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if raw.len() < 9 || raw[0] != VERSION || raw[1..9] != binding(tenant, prefix) {
        return Err(invalid());
    }
    Ok(raw[9..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_tenant_and_prefix() {
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let t = encode(&a, "p", b"cursor");
        assert_eq!(decode(&a, "p", &t).unwrap(), b"cursor");
        assert!(decode(&b, "p", &t).is_err());
        assert!(decode(&a, "q", &t).is_err());
        assert!(decode(&a, "p", "!!!").is_err());
        assert!(decode(&a, "p", "").is_err());
    }
}
