//! Property tests (proptest, part of the normal suite): key encoding and the
//! value codec never panic, round-trip exactly, and never produce a key or a
//! SCAN pattern that reaches outside the tenant's namespace. SCAN patterns
//! are checked with a port of Redis' own glob matcher (`stringmatchlen`).

use proptest::prelude::*;
use state_service::{
    pb::{self, ValueList, ValueMap, value::Kind},
    store::Keyspace,
    store::codec,
    tenancy::TenantId,
};

/// Redis `stringmatchlen` (util.c), case-sensitive, over bytes.
fn redis_glob(pattern: &[u8], string: &[u8]) -> bool {
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() && s < string.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < string.len() {
                    if redis_glob(&pattern[p + 1..], &string[s..]) {
                        return true;
                    }
                    s += 1;
                }
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = p < pattern.len() && pattern[p] == b'^';
                if not {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    if p >= pattern.len() {
                        // Redis: an unterminated class ends at the pattern end.
                        p -= 1;
                        break;
                    }
                    if pattern[p] == b'\\' && p + 1 < pattern.len() {
                        p += 1;
                        if pattern[p] == string[s] {
                            matched = true;
                        }
                    } else if pattern[p] == b']' {
                        break;
                    } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' {
                        let (mut lo, mut hi) = (pattern[p], pattern[p + 2]);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        p += 2;
                        if string[s] >= lo && string[s] <= hi {
                            matched = true;
                        }
                    } else if pattern[p] == string[s] {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            c => {
                let c = if c == b'\\' && p + 1 < pattern.len() {
                    p += 1;
                    pattern[p]
                } else {
                    c
                };
                if c != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while p < pattern.len() && pattern[p] == b'*' {
                p += 1;
            }
            break;
        }
    }
    p == pattern.len() && s == string.len()
}

#[test]
fn the_glob_port_agrees_with_redis_on_known_cases() {
    assert!(redis_glob(b"a*", b"abc"));
    assert!(redis_glob(b"a*", b"a"));
    assert!(!redis_glob(b"a\\*", b"abc"));
    assert!(redis_glob(b"a\\*", b"a*"));
    assert!(redis_glob(b"h?llo", b"hello"));
    assert!(redis_glob(b"h[ae]llo", b"hallo"));
    assert!(!redis_glob(b"h[^e]llo", b"hello"));
    assert!(redis_glob(b"h[a-b]llo", b"hbllo"));
    assert!(redis_glob(b"\\[x\\]*", b"[x]y"));
    assert!(!redis_glob(b"\\[x\\]*", b"xy"));
}

fn tenant() -> impl Strategy<Value = TenantId> {
    "[A-Za-z0-9._-]{1,64}".prop_map(|s| TenantId::parse(&s).unwrap())
}

fn key_prefix() -> impl Strategy<Value = String> {
    prop_oneof![Just("state".to_string()), "[a-z0-9:._-]{1,12}"]
}

/// Client text, biased towards the characters that mean something to Redis.
fn client_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[*?\\[\\]\\\\{}:^a-c-]{0,12}",
        "(state:)?[a-c]{0,3}:[*?a-c]{0,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn storage_keys_round_trip_inside_the_namespace(
        kp in key_prefix(), t in tenant(), key in client_text()
    ) {
        let ns = Keyspace::new(&kp).namespace(t.as_str());
        let sk = ns.storage_key(&key);
        let prefix = format!("{kp}:{t}:");
        prop_assert!(sk.starts_with(&prefix));
        prop_assert_eq!(&sk[prefix.len()..], key.as_str());
        prop_assert_eq!(ns.client_key(sk.as_bytes()), Some(key.as_str()));
    }

    #[test]
    fn another_tenants_storage_keys_are_never_ours(
        kp in key_prefix(), a in tenant(), b in tenant(), key in client_text()
    ) {
        prop_assume!(a != b);
        let na = Keyspace::new(&kp).namespace(a.as_str());
        let nb = Keyspace::new(&kp).namespace(b.as_str());
        let theirs = na.storage_key(&key);
        prop_assert_eq!(nb.client_key(theirs.as_bytes()), None);
    }

    #[test]
    fn client_key_never_panics_on_any_bytes(t in tenant(), raw in any::<Vec<u8>>()) {
        let ns = Keyspace::new("state").namespace(t.as_str());
        let _ = ns.client_key(&raw);
        let mut prefixed = b"state:".to_vec();
        prefixed.extend_from_slice(&raw);
        let _ = ns.client_key(&prefixed);
    }

    #[test]
    fn scan_patterns_match_exactly_the_prefix_inside_the_namespace(
        kp in key_prefix(),
        a in tenant(),
        b in tenant(),
        prefix in client_text(),
        suffix in client_text(),
        other in client_text(),
    ) {
        let na = Keyspace::new(&kp).namespace(a.as_str());
        let pattern = na.scan_pattern(&prefix);
        // Every key of ours under the prefix is matched...
        let ours = na.storage_key(&format!("{prefix}{suffix}"));
        prop_assert!(redis_glob(&pattern, ours.as_bytes()), "{:?} !~ {}", pattern, ours);
        // ...no key of ours outside it...
        if !other.starts_with(&prefix) {
            let outside = na.storage_key(&other);
            prop_assert!(!redis_glob(&pattern, outside.as_bytes()), "{:?} ~ {}", pattern, outside);
        }
        // ...and nothing of another tenant, whatever its key.
        if a != b {
            let nb = Keyspace::new(&kp).namespace(b.as_str());
            for k in [&other, &prefix, &format!("{prefix}{suffix}")] {
                let theirs = nb.storage_key(k);
                prop_assert!(!redis_glob(&pattern, theirs.as_bytes()), "{:?} ~ {}", pattern, theirs);
            }
        }
    }
}

fn value() -> impl Strategy<Value = pb::Value> {
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<i64>().prop_map(Kind::IntValue),
        any::<u64>().prop_map(|bits| Kind::DoubleValue(f64::from_bits(bits))),
        any::<f64>().prop_map(Kind::DoubleValue),
        any::<String>().prop_map(Kind::StringValue),
        any::<Vec<u8>>().prop_map(Kind::BytesValue),
    ]
    .prop_map(|k| pb::Value { kind: Some(k) });
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|values| pb::Value {
                kind: Some(Kind::ListValue(ValueList { values })),
            }),
            prop::collection::hash_map(any::<String>(), inner, 0..6).prop_map(|fields| {
                pb::Value {
                    kind: Some(Kind::MapValue(ValueMap { fields })),
                }
            }),
        ]
    })
}

/// Structural equality with doubles compared bit for bit (NaN payloads, -0.0).
fn same(a: &pb::Value, b: &pb::Value) -> bool {
    match (&a.kind, &b.kind) {
        (Some(Kind::DoubleValue(x)), Some(Kind::DoubleValue(y))) => x.to_bits() == y.to_bits(),
        (Some(Kind::ListValue(x)), Some(Kind::ListValue(y))) => {
            x.values.len() == y.values.len()
                && x.values.iter().zip(&y.values).all(|(p, q)| same(p, q))
        }
        (Some(Kind::MapValue(x)), Some(Kind::MapValue(y))) => {
            x.fields.len() == y.fields.len()
                && x.fields
                    .iter()
                    .all(|(k, p)| y.fields.get(k).is_some_and(|q| same(p, q)))
        }
        (x, y) => x == y,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_value_round_trips_exactly(v in value()) {
        let decoded = codec::decode(&codec::encode(&v)).unwrap();
        prop_assert!(same(&decoded, &v), "{:?} came back as {:?}", v, decoded);
    }

    #[test]
    fn decoding_any_bytes_never_panics_and_is_stable(raw in any::<Vec<u8>>()) {
        if let Ok(v) = codec::decode(&raw) {
            let again = codec::decode(&codec::encode(&v)).unwrap();
            prop_assert!(same(&again, &v));
        }
        let mut blob = vec![codec::BLOB_MARKER];
        blob.extend_from_slice(&raw);
        let _ = codec::decode(&blob);
        let _ = codec::type_of_encoded(&raw);
    }
}
