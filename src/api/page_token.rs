//! List page tokens: the backend's cursor, sealed so that clients can
//! neither read nor alter it, and bound to the tenant and prefix that
//! produced it.
//!
//! A token is base64url of `version (3) ‖ nonce (12) ‖ ChaCha20-Poly1305
//! ciphertext+tag (16)` over a canonical encoding of
//! `len(tenant) ‖ tenant ‖ len(prefix) ‖ prefix ‖ len(cursor) ‖ cursor`
//! (each length a 4-byte big-endian count), zero-padded to a multiple of 32
//! bytes so that the token's length says little about the cursor's. The
//! version byte is authenticated as associated data. Nonces are random
//! (96 bits; a key seals far fewer than 2^32 tokens between restarts or
//! rotations at any realistic List rate).
//!
//! Why this layout (issue 11, finding 9): the previous tokens were readable
//! (raw SCAN cursor, pending key names) and their MAC covered an ambiguous
//! NUL-separated encoding, so bytes could be moved between cursor and a
//! NUL-containing prefix. Length prefixes make the encoding injective, and
//! authenticated encryption makes it opaque.
//!
//! The key is derived from `--page-token-secret` (SHA-256 with a domain
//! label), or drawn at random when the process starts without one: tokens
//! then stay opaque and unforgeable, but do not survive a restart and are
//! not accepted by another instance.
//!
//! Isolation never depends on the token: the backend only ever scans the
//! caller's own namespace and prefix, whatever the cursor says.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    ChaCha20Poly1305, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const VERSION: u8 = 3;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const PAD_TO: usize = 32;

/// Longest token accepted for decoding: far above any real cursor, and it
/// keeps a hostile token from costing more than a bounded base64 decode.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Seals and opens page tokens under one key.
#[derive(Clone)]
pub struct PageTokens {
    cipher: ChaCha20Poly1305,
    /// Whether the key is this process's own random one.
    ephemeral: bool,
}

// Hand-written so that the key is never printed.
impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTokens")
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

impl Default for PageTokens {
    fn default() -> Self {
        Self::ephemeral()
    }
}

impl PageTokens {
    /// Tokens under a key derived from `secret` (every instance with the
    /// same secret accepts them).
    pub fn signed(secret: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"state-service page token key v3\0");
        h.update(secret);
        let key: [u8; 32] = h.finalize().into();
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            ephemeral: false,
        }
    }

    /// Tokens under a random key of this process: opaque and unforgeable,
    /// valid only until it stops and only on this instance.
    pub fn ephemeral() -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(&ChaCha20Poly1305::generate_key(&mut OsRng)),
            ephemeral: true,
        }
    }

    pub fn encode(&self, tenant: &str, prefix: &str, cursor: &[u8]) -> String {
        let plain = canonical(tenant, prefix, cursor);
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with ChaCha20-Poly1305 fails only for messages beyond
        // 256 GiB; ours are bounded by the key and prefix limits.
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: &[VERSION],
                },
            )
            .unwrap_or_else(|_| unreachable!("a page token is far below the AEAD's size limit"));
        let mut raw = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        raw.push(VERSION);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The backend cursor inside `token`, if this key sealed it for this
    /// tenant and prefix.
    pub fn decode(&self, tenant: &str, prefix: &str, token: &str) -> Result<Vec<u8>> {
        let invalid = || {
            Error::invalid(
                "page_token is not valid for this listing: pass the next_page_token of the \
                 previous page, with the same prefix and tenant, to the same service (tokens \
                 do not survive a restart without --page-token-secret)",
            )
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if raw.len() < 1 + NONCE_LEN + TAG_LEN || raw[0] != VERSION {
            return Err(invalid());
        }
        let (nonce, sealed) = raw[1..].split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &[VERSION],
                },
            )
            .map_err(|_| invalid())?;
        let (t, p, cursor) = parse(&plain).ok_or_else(invalid)?;
        if t != tenant.as_bytes() || p != prefix.as_bytes() {
            return Err(invalid());
        }
        Ok(cursor.to_vec())
    }
}

/// `len ‖ bytes` three times, then zero padding to a multiple of `PAD_TO`.
fn canonical(tenant: &str, prefix: &str, cursor: &[u8]) -> Vec<u8> {
    let parts = [tenant.as_bytes(), prefix.as_bytes(), cursor];
    let len: usize = parts.iter().map(|p| 4 + p.len()).sum();
    let mut out = Vec::with_capacity(len.next_multiple_of(PAD_TO));
    for p in parts {
        // Keys, prefixes and cursors are bounded far below 4 GiB.
        out.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(p);
    }
    out.resize(len.next_multiple_of(PAD_TO), 0);
    out
}

/// The three fields of `canonical`; `None` unless the rest is zero padding.
fn parse(mut buf: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut field = || {
        let (len, rest) = buf.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (f, rest) = rest.split_at(len);
        buf = rest;
        Some(f)
    };
    let (t, p, c) = (field()?, field()?, field()?);
    (buf.len() < PAD_TO && buf.iter().all(|&b| b == 0)).then_some((t, p, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(token: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(token).unwrap()
    }

    #[test]
    fn tokens_round_trip_for_their_tenant_and_prefix_only() {
        for codec in [
            PageTokens::ephemeral(),
            PageTokens::signed(b"s3cret-s3cret-16"),
        ] {
            let t = codec.encode("a", "p", b"cursor");
            assert_eq!(codec.decode("a", "p", &t).unwrap(), b"cursor");
            assert!(codec.decode("b", "p", &t).is_err());
            assert!(codec.decode("a", "q", &t).is_err());
            assert!(codec.decode("a", "p", "!!!").is_err());
            assert!(codec.decode("a", "p", "").is_err());
        }
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let codec = PageTokens::signed(b"s3cret-s3cret-16");
        let t = codec.encode("a", "p", b"cursor");
        let bytes = raw(&t);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                codec.decode("a", "p", &URL_SAFE_NO_PAD.encode(&b)).is_err(),
                "byte {i} altered and accepted"
            );
        }
    }

    #[test]
    fn tokens_of_another_key_are_refused() {
        let t = PageTokens::signed(b"one-secret-0123456").encode("a", "p", b"c");
        assert!(
            PageTokens::signed(b"two-secret-0123456")
                .decode("a", "p", &t)
                .is_err()
        );
        assert!(PageTokens::ephemeral().decode("a", "p", &t).is_err());
        // The same secret on another instance accepts it.
        assert!(
            PageTokens::signed(b"one-secret-0123456")
                .decode("a", "p", &t)
                .is_ok()
        );
    }

    #[test]
    fn the_encoding_cannot_be_spliced() {
        // Moving bytes between prefix and cursor (the old NUL-separated
        // MAC input made "p\0x" + "y" equal "p" + "x\0y") changes the
        // canonical encoding.
        assert_ne!(canonical("a", "p\0x", b"y"), canonical("a", "p", b"x\0y"));
        assert_ne!(canonical("a\0p", "", b""), canonical("a", "p", b""));
        let codec = PageTokens::signed(b"s3cret-s3cret-16");
        let t = codec.encode("a", "p\0x", b"y");
        assert!(codec.decode("a", "p", &t).is_err());
        assert_eq!(codec.decode("a", "p\0x", &t).unwrap(), b"y");
    }

    #[test]
    fn tokens_do_not_show_the_cursor_or_key_names() {
        let codec = PageTokens::ephemeral();
        let cursor = b"12345\0pending-key-name";
        let t = codec.encode("tenant-a", "orders/", cursor);
        let bytes = raw(&t);
        for needle in [&b"pending-key-name"[..], b"12345", b"orders/", b"tenant-a"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{needle:?} readable in the token"
            );
        }
        assert!(!t.contains("pending"));
        // Two tokens for the same page differ (random nonce).
        assert_ne!(t, codec.encode("tenant-a", "orders/", cursor));
    }

    #[test]
    fn the_key_is_never_printed() {
        assert!(!format!("{:?}", PageTokens::signed(b"s3cret-s3cret-16")).contains("s3cret"));
    }
}
