//! List page tokens: an opaque wrapper around the backend's cursor, bound to
//! the tenant and prefix that produced it.
//!
//! Two layouts (before base64url):
//! - without `--page-token-secret`, version byte 1, 8 bytes of
//!   SHA-256(tenant NUL prefix), then the backend cursor. Anyone can compute
//!   this binding, so it only catches mistakes (a token replayed by another
//!   tenant or with another prefix is INVALID_ARGUMENT);
//! - with a secret, version byte 2, 16 bytes of
//!   HMAC-SHA256(secret, tenant NUL prefix NUL cursor), then the cursor: a
//!   token can no longer be crafted or altered, only replayed as issued.
//!
//! Isolation never depends on either: the backend only ever scans the
//! caller's own namespace and prefix, whatever the cursor says, so a token can
//! never widen what is listed. The secret only stops clients from steering
//! the cursor inside their own listing.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const V1_HASHED: u8 = 1;
const V2_HMAC: u8 = 2;
const V1_BINDING_LEN: usize = 8;
const V2_MAC_LEN: usize = 16;

/// Longest token accepted for decoding: far above any real cursor, and it
/// keeps a hostile token from costing more than a bounded base64 decode.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Encodes and checks page tokens, with or without a secret.
#[derive(Clone, Default)]
pub struct PageTokens {
    secret: Option<Vec<u8>>,
}

// Hand-written so that the secret is never printed.
impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTokens")
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl PageTokens {
    /// Tokens bound by a public hash (no secret).
    pub fn unsigned() -> Self {
        Self { secret: None }
    }

    /// Tokens authenticated with HMAC-SHA256 under `secret`.
    pub fn signed(secret: &[u8]) -> Self {
        Self {
            secret: Some(secret.to_vec()),
        }
    }

    fn mac(secret: &[u8], tenant: &str, prefix: &str, cursor: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(tenant.as_bytes());
        mac.update(&[0]);
        mac.update(prefix.as_bytes());
        mac.update(&[0]);
        mac.update(cursor);
        mac
    }

    pub fn encode(&self, tenant: &str, prefix: &str, cursor: &[u8]) -> String {
        let mut raw = Vec::with_capacity(1 + V2_MAC_LEN + cursor.len());
        match &self.secret {
            None => {
                raw.push(V1_HASHED);
                raw.extend_from_slice(&binding(tenant, prefix));
            }
            Some(secret) => {
                raw.push(V2_HMAC);
                let tag = Self::mac(secret, tenant, prefix, cursor)
                    .finalize()
                    .into_bytes();
                raw.extend_from_slice(&tag[..V2_MAC_LEN]);
            }
        }
        raw.extend_from_slice(cursor);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The backend cursor inside `token`, if the token was issued for this
    /// tenant and prefix (and, with a secret, by a server holding it).
    pub fn decode(&self, tenant: &str, prefix: &str, token: &str) -> Result<Vec<u8>> {
        let invalid = || {
            Error::invalid(
                "page_token is not valid for this listing: pass the next_page_token of the \
                 previous page, with the same prefix and tenant",
            )
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        match (&self.secret, raw.first()) {
            (None, Some(&V1_HASHED)) => {
                let rest = &raw[1..];
                if rest.len() < V1_BINDING_LEN || rest[..V1_BINDING_LEN] != binding(tenant, prefix)
                {
                    return Err(invalid());
                }
                Ok(rest[V1_BINDING_LEN..].to_vec())
            }
            (Some(secret), Some(&V2_HMAC)) => {
                let rest = &raw[1..];
                if rest.len() < V2_MAC_LEN {
                    return Err(invalid());
                }
                let (tag, cursor) = rest.split_at(V2_MAC_LEN);
                // verify_truncated_left compares in constant time.
                Self::mac(secret, tenant, prefix, cursor)
                    .verify_truncated_left(tag)
                    .map_err(|_| invalid())?;
                Ok(cursor.to_vec())
            }
            // Unsigned tokens are refused once a secret is set (they could be
            // crafted), and signed ones without it (they cannot be checked).
            _ => Err(invalid()),
        }
    }
}

fn binding(tenant: &str, prefix: &str) -> [u8; V1_BINDING_LEN] {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(prefix.as_bytes());
    let digest = h.finalize();
    let mut out = [0; V1_BINDING_LEN];
    out.copy_from_slice(&digest[..V1_BINDING_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_tenant_and_prefix() {
        let (a, b) = ("a", "b");
        for codec in [PageTokens::unsigned(), PageTokens::signed(b"s3cret")] {
            let t = codec.encode(a, "p", b"cursor");
            assert_eq!(codec.decode(a, "p", &t).unwrap(), b"cursor");
            assert!(codec.decode(b, "p", &t).is_err());
            assert!(codec.decode(a, "q", &t).is_err());
            assert!(codec.decode(a, "p", "!!!").is_err());
            assert!(codec.decode(a, "p", "").is_err());
        }
    }

    #[test]
    fn signed_tokens_cannot_be_crafted_or_altered() {
        let a = "a";
        let signed = PageTokens::signed(b"s3cret");
        let unsigned = PageTokens::unsigned();
        // A token anyone can compute is refused once a secret is set...
        let crafted = unsigned.encode(a, "p", b"cursor");
        assert!(signed.decode(a, "p", &crafted).is_err());
        // ...as is a signed one with any byte changed...
        let t = signed.encode(a, "p", b"cursor");
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(
            signed
                .decode(a, "p", &URL_SAFE_NO_PAD.encode(&raw))
                .is_err()
        );
        // ...or one signed under another secret.
        let other = PageTokens::signed(b"other").encode(a, "p", b"cursor");
        assert!(signed.decode(a, "p", &other).is_err());
        // Without the secret, signed tokens cannot be checked: refused.
        assert!(unsigned.decode(a, "p", &t).is_err());
    }

    #[test]
    fn the_secret_is_never_printed() {
        assert!(!format!("{:?}", PageTokens::signed(b"s3cret")).contains("s3cret"));
    }
}
