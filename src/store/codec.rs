//! The encoding of a value, after the header of storage format 2 (see
//! docs/design/storage-format.md and `store::redis::record`).
//!
//! - An `int_value` is stored as its canonical ASCII decimal, so that the
//!   increment script parses it exactly and `redis-cli` shows it readably.
//! - Every other value is stored as a 0x00 byte followed by the protobuf
//!   encoding of `stateservice.v1.Value`. 0x00 can never start a decimal, so
//!   the two forms cannot be confused, and protobuf keeps doubles bit-exact
//!   (-0.0, NaN payloads) and bytes/strings verbatim.
//!
//! Decoding never panics: anything else is reported as foreign data.

use prost::Message;

use crate::pb::{Value, value::Kind};

/// First byte of a non-integer encoded value.
pub const BLOB_MARKER: u8 = 0x00;

/// Nesting depth accepted for list/map values. Protobuf decoding stops at 100
/// levels; keeping well below it guarantees that whatever is stored can be read.
pub const MAX_DEPTH: usize = 64;

/// Encodes a value.
pub fn encode(value: &Value) -> Vec<u8> {
    match value.kind {
        Some(Kind::IntValue(i)) => i.to_string().into_bytes(),
        _ => {
            let mut out = Vec::with_capacity(1 + value.encoded_len());
            out.push(BLOB_MARKER);
            // Encoding into a Vec cannot run out of space.
            value.encode(&mut out).expect("Vec<u8> grows as needed");
            out
        }
    }
}

/// Decodes a value; the error says what is wrong, for messages.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    match bytes.first() {
        None => Err("empty value field".into()),
        Some(&BLOB_MARKER) => {
            let v = Value::decode(&bytes[1..])
                .map_err(|e| format!("value is not a valid encoded Value: {e}"))?;
            if v.kind.is_none() {
                return Err("encoded Value has no kind".into());
            }
            Ok(v)
        }
        Some(_) => parse_int(bytes)
            .map(|i| Value {
                kind: Some(Kind::IntValue(i)),
            })
            .ok_or_else(|| "value field is neither an int nor an encoded Value".into()),
    }
}

/// Parses a canonical decimal int64 as Redis stores it.
pub fn parse_int(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The type name of an encoded value from its first bytes (the protobuf tag
/// after the marker), for NOT_AN_INTEGER messages.
pub fn type_of_encoded(head: &[u8]) -> &'static str {
    match head {
        [BLOB_MARKER, tag, ..] => match tag >> 3 {
            1 => "null",
            2 => "bool",
            3 => "int",
            4 => "double",
            5 => "string",
            6 => "bytes",
            7 => "list",
            8 => "map",
            _ => "unknown",
        },
        _ if parse_int(head).is_some() => "int",
        _ => "unknown",
    }
}

/// Depth of nested lists and maps (a scalar is depth 0).
pub fn depth(value: &Value) -> usize {
    match &value.kind {
        Some(Kind::ListValue(l)) => 1 + l.values.iter().map(depth).max().unwrap_or(0),
        Some(Kind::MapValue(m)) => 1 + m.fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{ValueList, ValueMap};

    fn v(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    #[test]
    fn every_kind_round_trips_exactly() {
        let mut map = std::collections::HashMap::new();
        map.insert("ü".to_string(), v(Kind::BytesValue(vec![])));
        let cases = vec![
            v(Kind::NullValue(0)),
            v(Kind::BoolValue(false)),
            v(Kind::IntValue(i64::MIN)),
            v(Kind::IntValue(i64::MAX)),
            v(Kind::IntValue(0)),
            v(Kind::DoubleValue(-0.0)),
            v(Kind::StringValue(String::new())),
            v(Kind::StringValue("日本語 🚀".into())),
            v(Kind::BytesValue(vec![0, 255])),
            v(Kind::ListValue(ValueList {
                values: vec![
                    v(Kind::IntValue(-1)),
                    v(Kind::MapValue(ValueMap { fields: map })),
                ],
            })),
        ];
        for case in cases {
            let back = decode(&encode(&case)).unwrap();
            assert_eq!(back, case);
        }
        let nan = decode(&encode(&v(Kind::DoubleValue(f64::NAN)))).unwrap();
        match nan.kind {
            Some(Kind::DoubleValue(d)) => assert_eq!(d.to_bits(), f64::NAN.to_bits()),
            other => panic!("{other:?}"),
        }
        let neg_zero = decode(&encode(&v(Kind::DoubleValue(-0.0)))).unwrap();
        match neg_zero.kind {
            Some(Kind::DoubleValue(d)) => assert!(d.is_sign_negative() && d == 0.0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ints_are_plain_decimals() {
        assert_eq!(encode(&v(Kind::IntValue(-42))), b"-42");
    }

    #[test]
    fn foreign_bytes_are_errors_not_panics() {
        for bad in [&b""[..], b"abc", b"\x00\xff\xff", b"1.5", b"\x00"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn type_names_come_from_the_tag() {
        assert_eq!(
            type_of_encoded(&encode(&v(Kind::StringValue("x".into())))[..2]),
            "string"
        );
        assert_eq!(
            type_of_encoded(&encode(&v(Kind::DoubleValue(1.0)))[..2]),
            "double"
        );
        assert_eq!(type_of_encoded(b"12"), "int");
    }
}
