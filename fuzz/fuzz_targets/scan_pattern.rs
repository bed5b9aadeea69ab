//! A List prefix is client text that becomes a Redis SCAN MATCH pattern: the
//! pattern must be the namespace prefix and the client prefix with every glob
//! metacharacter escaped, followed by exactly one unescaped `*`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use state_service::{store::Keyspace, tenancy::TenantId};

fuzz_target!(|input: (String, String, String)| {
    let (tenant, prefix, key) = input;
    let Ok(tenant) = TenantId::parse(&tenant) else {
        return;
    };
    let ns = Keyspace::new("state").namespace(tenant.as_str());
    let pattern = ns.scan_pattern(&prefix);
    // Unescape: every metacharacter must come escaped, except the final `*`.
    let (last, body) = pattern.split_last().expect("never empty");
    assert_eq!(*last, b'*');
    let mut literal = Vec::new();
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            literal.push(*bytes.next().expect("an escape is never last"));
        } else {
            assert!(!matches!(b, b'*' | b'?' | b'[' | b']'), "unescaped {b}");
            literal.push(b);
        }
    }
    assert_eq!(literal, ns.storage_key(&prefix).into_bytes());
    // Keys round-trip and stay inside the namespace.
    let sk = ns.storage_key(&key);
    assert_eq!(ns.client_key(sk.as_bytes()), Some(key.as_str()));
});
