//! The native value model: one Rust enum for every kind a `stateservice.v1.Value`
//! can hold, converted to and from the wire type without loss. Conversions
//! that cannot be exact (a `u64` above `i64::MAX`, a value with no kind) fail
//! with [`ValueError`] instead of rounding or guessing.

use std::collections::{BTreeMap, HashMap};

use crate::pb;

/// A typed value as the service stores it.
///
/// Equality is exact: floats compare by bit pattern, so `NaN == NaN` (same
/// payload) and `0.0 != -0.0` — the relation a round trip must preserve.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    /// Stored as a Redis integer: `increment` works on it.
    Int(i64),
    Float(f64),
    String(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

/// A native value that has no exact `Value` representation, or a wire value
/// this client cannot represent natively.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// An unsigned integer above `i64::MAX`.
    #[error("integer {0} is outside the int64 range the service stores")]
    IntOutOfRange(u128),
    /// A wire `Value` with no kind set (the service never returns one).
    #[error("value has no kind set")]
    Empty,
    /// A value of a kind the target type has no variant for.
    #[error("{0}")]
    Unrepresentable(String),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Value {
    /// The kind's name, as the service's error messages spell it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "double",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A map from `(key, value)` pairs.
    pub fn map<K: Into<String>, V: Into<Value>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A list from anything convertible.
    pub fn list<V: Into<Value>>(items: impl IntoIterator<Item = V>) -> Self {
        Value::List(items.into_iter().map(Into::into).collect())
    }
}

macro_rules! from_exact {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(<$as>::from(v))
            }
        })*
    };
}

from_exact!(
    bool => Bool as bool,
    i8 => Int as i64, i16 => Int as i64, i32 => Int as i64, i64 => Int as i64,
    u8 => Int as i64, u16 => Int as i64, u32 => Int as i64,
    f32 => Float as f64, f64 => Float as f64,
    String => String as String, &str => String as String,
    Vec<u8> => Bytes as Vec<u8>, &[u8] => Bytes as Vec<u8>,
    Vec<Value> => List as Vec<Value>,
    BTreeMap<String, Value> => Map as BTreeMap<String, Value>,
);

impl From<()> for Value {
    fn from(_: ()) -> Self {
        Value::Null
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl From<HashMap<String, Value>> for Value {
    fn from(m: HashMap<String, Value>) -> Self {
        Value::Map(m.into_iter().collect())
    }
}

impl TryFrom<u64> for Value {
    type Error = ValueError;
    fn try_from(v: u64) -> Result<Self, ValueError> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| ValueError::IntOutOfRange(u128::from(v)))
    }
}

impl TryFrom<usize> for Value {
    type Error = ValueError;
    fn try_from(v: usize) -> Result<Self, ValueError> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| ValueError::IntOutOfRange(v as u128))
    }
}

impl From<Value> for pb::Value {
    fn from(v: Value) -> Self {
        use pb::value::Kind;
        let kind = match v {
            Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
            Value::Bool(b) => Kind::BoolValue(b),
            Value::Int(i) => Kind::IntValue(i),
            Value::Float(f) => Kind::DoubleValue(f),
            Value::String(s) => Kind::StringValue(s),
            Value::Bytes(b) => Kind::BytesValue(b),
            Value::List(l) => Kind::ListValue(pb::ValueList {
                values: l.into_iter().map(Into::into).collect(),
            }),
            Value::Map(m) => Kind::MapValue(pb::ValueMap {
                fields: m.into_iter().map(|(k, v)| (k, v.into())).collect(),
            }),
        };
        pb::Value { kind: Some(kind) }
    }
}

impl TryFrom<pb::Value> for Value {
    type Error = ValueError;
    fn try_from(v: pb::Value) -> Result<Self, ValueError> {
        use pb::value::Kind;
        Ok(match v.kind.ok_or(ValueError::Empty)? {
            Kind::NullValue(_) => Value::Null,
            Kind::BoolValue(b) => Value::Bool(b),
            Kind::IntValue(i) => Value::Int(i),
            Kind::DoubleValue(f) => Value::Float(f),
            Kind::StringValue(s) => Value::String(s),
            Kind::BytesValue(b) => Value::Bytes(b),
            Kind::ListValue(l) => Value::List(
                l.values
                    .into_iter()
                    .map(Value::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            Kind::MapValue(m) => Value::Map(
                m.fields
                    .into_iter()
                    .map(|(k, v)| Ok((k, Value::try_from(v)?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value) -> Value {
        Value::try_from(pb::Value::from(v)).expect("round trip")
    }

    #[test]
    fn every_kind_round_trips_exactly() {
        let cases = vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::Int(0),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::Float(-0.0),
            Value::Float(f64::MIN_POSITIVE / 2.0),
            Value::String(String::new()),
            Value::String("ünïcødé 🦀 \u{0}".into()),
            Value::Bytes(vec![]),
            Value::Bytes((0..=255).collect()),
            Value::list([Value::Int(1), Value::Null, Value::list(Vec::<Value>::new())]),
            Value::map([("", Value::Null), ("a", Value::map([("b", 1)]))]),
        ];
        for v in cases {
            assert_eq!(round_trip(v.clone()), v);
        }
    }

    #[test]
    fn negative_zero_and_zero_are_different_values() {
        assert_ne!(Value::Float(-0.0), Value::Float(0.0));
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
    }

    #[test]
    fn u64_above_i64_max_is_refused() {
        assert_eq!(Value::try_from(i64::MAX as u64), Ok(Value::Int(i64::MAX)));
        assert_eq!(
            Value::try_from(u64::MAX),
            Err(ValueError::IntOutOfRange(u128::from(u64::MAX)))
        );
    }

    #[test]
    fn a_wire_value_without_kind_is_an_error() {
        assert_eq!(
            Value::try_from(pb::Value { kind: None }),
            Err(ValueError::Empty)
        );
    }

    #[test]
    fn option_none_is_null() {
        assert_eq!(Value::from(None::<i64>), Value::Null);
        assert_eq!(Value::from(Some("x")), Value::String("x".into()));
    }
}
