//! Page tokens are client input: decoding must never panic, with or without a
//! secret, and a token must only ever yield a cursor for the tenant and prefix
//! it was issued for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use state_service::{api::PageTokens, tenancy::TenantId};

fuzz_target!(|input: (bool, String, String, Vec<u8>)| {
    let (signed, prefix, token, cursor) = input;
    let tokens = if signed {
        PageTokens::signed(b"fuzz-page-token-secret-0123456789")
    } else {
        PageTokens::ephemeral()
    };
    let alpha = TenantId::parse("alpha").expect("valid id");
    let beta = TenantId::parse("alpha-b").expect("valid id");
    // Arbitrary text: an error or a cursor, never a panic.
    let _ = tokens.decode(&alpha, &prefix, &token);
    // What we issue round-trips for its owner only.
    let issued = tokens.encode(&alpha, &prefix, &cursor);
    assert_eq!(
        tokens.decode(&alpha, &prefix, &issued).expect("own token"),
        cursor
    );
    assert!(tokens.decode(&beta, &prefix, &issued).is_err());
    let other_prefix = format!("{prefix}x");
    assert!(tokens.decode(&alpha, &other_prefix, &issued).is_err());
});
