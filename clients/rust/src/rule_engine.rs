//! Lossless conversions between [`Value`] and `rust_rule_engine::types::Value`
//! (feature `rule-engine`), so `StateStore<rust_rule_engine::types::Value>`
//! drops in for rust-rule-engine's own `StateStore`. What has no exact
//! counterpart is refused, never approximated: an `Expression` (engine
//! code, evaluated at runtime, not data) going in, and bytes coming out.

use std::collections::HashMap;

use rust_rule_engine::{RuleEngineError, types::Value as RuleValue};

use crate::{
    error::Error,
    store::StoreValue,
    value::{Value, ValueError},
};

impl TryFrom<RuleValue> for Value {
    type Error = ValueError;
    fn try_from(v: RuleValue) -> Result<Self, ValueError> {
        Ok(match v {
            RuleValue::Null => Value::Null,
            RuleValue::Boolean(b) => Value::Bool(b),
            RuleValue::Integer(i) => Value::Int(i),
            RuleValue::Number(f) => Value::Float(f),
            RuleValue::String(s) => Value::String(s),
            RuleValue::Array(items) => Value::List(
                items
                    .into_iter()
                    .map(Value::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            RuleValue::Object(fields) => Value::Map(
                fields
                    .into_iter()
                    .map(|(k, v)| Ok((k, Value::try_from(v)?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
            RuleValue::Expression(expr) => {
                return Err(ValueError::Unrepresentable(format!(
                    "rust_rule_engine Value::Expression({expr:?}) is code the engine evaluates, \
                     not data: evaluate it and store the result"
                )));
            }
        })
    }
}

impl TryFrom<Value> for RuleValue {
    type Error = ValueError;
    fn try_from(v: Value) -> Result<Self, ValueError> {
        Ok(match v {
            Value::Null => RuleValue::Null,
            Value::Bool(b) => RuleValue::Boolean(b),
            Value::Int(i) => RuleValue::Integer(i),
            Value::Float(f) => RuleValue::Number(f),
            Value::String(s) => RuleValue::String(s),
            Value::List(items) => RuleValue::Array(
                items
                    .into_iter()
                    .map(RuleValue::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Map(fields) => RuleValue::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| Ok((k, RuleValue::try_from(v)?)))
                    .collect::<Result<HashMap<_, _>, ValueError>>()?,
            ),
            Value::Bytes(b) => {
                return Err(ValueError::Unrepresentable(format!(
                    "a bytes value ({} bytes) has no rust_rule_engine Value variant",
                    b.len()
                )));
            }
        })
    }
}

impl StoreValue for RuleValue {
    fn to_value(self) -> Result<Value, ValueError> {
        Value::try_from(self)
    }
    fn from_value(value: Value) -> Result<Self, ValueError> {
        RuleValue::try_from(value)
    }
}

/// Lets `?` inside rule-engine code (`StateResult<T>`) propagate this
/// client's errors; the message keeps the code and reason.
impl From<Error> for RuleEngineError {
    fn from(e: Error) -> Self {
        RuleEngineError::ExecutionError(format!("state-service: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_values() -> Vec<RuleValue> {
        vec![
            RuleValue::Null,
            RuleValue::Boolean(true),
            RuleValue::Integer(i64::MIN),
            RuleValue::Integer(i64::MAX),
            RuleValue::Number(-0.0),
            RuleValue::Number(f64::INFINITY),
            RuleValue::String("ünï".into()),
            RuleValue::Array(vec![RuleValue::Integer(1), RuleValue::Null]),
            RuleValue::Object(HashMap::from([
                ("a".to_string(), RuleValue::Number(1.5)),
                (
                    "b".to_string(),
                    RuleValue::Object(HashMap::from([(
                        "c".to_string(),
                        RuleValue::Boolean(false),
                    )])),
                ),
            ])),
        ]
    }

    #[test]
    fn every_rule_engine_value_round_trips_exactly() {
        for v in rule_values() {
            let ours = Value::try_from(v.clone()).expect("converts");
            let back = RuleValue::try_from(ours).expect("converts back");
            match (&v, &back) {
                (RuleValue::Number(a), RuleValue::Number(b)) => {
                    assert_eq!(a.to_bits(), b.to_bits())
                }
                _ => assert_eq!(back, v),
            }
        }
    }

    #[test]
    fn nan_keeps_its_bits() {
        let ours = Value::try_from(RuleValue::Number(f64::NAN)).unwrap();
        let RuleValue::Number(back) = RuleValue::try_from(ours).unwrap() else {
            panic!("not a number")
        };
        assert_eq!(back.to_bits(), f64::NAN.to_bits());
    }

    #[test]
    fn integer_and_number_stay_distinct() {
        assert_eq!(
            Value::try_from(RuleValue::Integer(1)).unwrap(),
            Value::Int(1)
        );
        assert_eq!(
            Value::try_from(RuleValue::Number(1.0)).unwrap(),
            Value::Float(1.0)
        );
    }

    #[test]
    fn an_expression_is_refused_with_a_clear_error() {
        let err = Value::try_from(RuleValue::Expression("Order.qty * 2".into())).unwrap_err();
        assert!(err.to_string().contains("Expression"), "{err}");
        // Nested inside an object too.
        let nested = RuleValue::Array(vec![RuleValue::Expression("x".into())]);
        assert!(Value::try_from(nested).is_err());
    }

    #[test]
    fn bytes_are_refused_on_the_way_out() {
        let err = RuleValue::try_from(Value::Bytes(vec![1, 2])).unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err}");
    }

    #[test]
    fn client_errors_convert_for_question_mark() {
        let e: RuleEngineError = Error::from(ValueError::Empty).into();
        assert!(e.to_string().contains("state-service"));
    }
}
