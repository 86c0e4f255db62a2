//! Field coercion as AUTOMATIC1111's API does it (FastAPI on pydantic 1), for request fields
//! declared `Optional[int]`, `Optional[float]`, …: `null` is "not given", numbers may arrive as
//! strings, booleans as `"true"`/`1`. A value that does not fit is an error carrying pydantic's
//! type and message (`type_error.integer`, "value is not a valid integer"), which the caller
//! turns into FastAPI's 422 `{"detail": [{"loc", "msg", "type"}]}` naming the field.
//!
//! One deliberate difference: pydantic 1 truncates `5.7` to the integer 5; here a fractional
//! number for an integer field is refused, so nothing is silently changed.

use serde::de::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Separates pydantic's error type from its message inside a serde error.
pub const TYPE_SEPARATOR: char = '\u{1f}';

fn fail<E: serde::de::Error>(kind: &str, message: &str) -> E {
    E::custom(format!("{kind}{TYPE_SEPARATOR}{message}"))
}

/// Splits a serde error message made here into (pydantic type, message); other messages
/// (serde's own) come back as `value_error`.
pub fn split_error(message: &str) -> (String, String) {
    match message.split_once(TYPE_SEPARATOR) {
        Some((kind, text)) => (kind.to_owned(), text.to_owned()),
        None => ("value_error".to_owned(), message.to_owned()),
    }
}

fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64().or_else(|| {
            number.as_f64().filter(|float| float.fract() == 0.0 && float.abs() < 9.0e15).map(
                #[allow(clippy::cast_possible_truncation, reason = "whole and within ±9e15")]
                |float| float as i64,
            )
        }),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// `Optional[int]`.
pub fn opt_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(value) => as_integer(&value)
            .map(Some)
            .ok_or_else(|| fail("type_error.integer", "value is not a valid integer")),
    }
}

/// `Optional[float]`.
pub fn opt_float<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number
            .as_f64()
            .map(Some)
            .ok_or_else(|| fail("type_error.float", "value is not a valid float")),
        Some(Value::String(text)) => text
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| fail("type_error.float", "value is not a valid float")),
        Some(_) => Err(fail("type_error.float", "value is not a valid float")),
    }
}

/// `Optional[bool]`: pydantic 1's spellings.
pub fn opt_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    let invalid = || fail("type_error.bool", "value could not be parsed to a boolean");
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(flag)),
        Some(Value::Number(number)) => match number.as_i64() {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(invalid()),
        },
        Some(Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
            "0" | "off" | "f" | "false" | "n" | "no" => Ok(Some(false)),
            "1" | "on" | "t" | "true" | "y" | "yes" => Ok(Some(true)),
            _ => Err(invalid()),
        },
        Some(_) => Err(invalid()),
    }
}

/// `Optional[str]` (numbers are taken as their text, as pydantic 1 does).
pub fn opt_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => Err(fail("type_error.str", "str type expected")),
    }
}

/// `Optional[list[str]]`.
pub fn opt_string_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                Value::Number(number) => Ok(number.to_string()),
                _ => Err(fail("type_error.str", "str type expected")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(fail("type_error.list", "value is not a valid list")),
    }
}

/// `Optional[list]` of anything.
pub fn opt_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<Value>>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(fail("type_error.list", "value is not a valid list")),
    }
}

/// `Optional[dict]`.
pub fn opt_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(fail("type_error.dict", "value is not a valid dict")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "opt_int")]
        int: Option<i64>,
        #[serde(default, deserialize_with = "opt_float")]
        float: Option<f64>,
        #[serde(default, deserialize_with = "opt_bool")]
        flag: Option<bool>,
        #[serde(default, deserialize_with = "opt_string")]
        text: Option<String>,
    }

    fn probe(json: &str) -> Result<Probe, (String, String)> {
        let value: Value = serde_json::from_str(json).expect("json");
        serde_json::from_value(value).map_err(|err| split_error(&err.to_string()))
    }

    #[test]
    fn pydantic_coercions() {
        let ok = probe(r#"{"int": "12", "float": 3, "flag": "yes", "text": 5}"#).expect("ok");
        assert_eq!(
            (ok.int, ok.float, ok.flag, ok.text.as_deref()),
            (Some(12), Some(3.0), Some(true), Some("5"))
        );
        let nulls =
            probe(r#"{"int": null, "float": null, "flag": null, "text": null}"#).expect("ok");
        assert_eq!((nulls.int, nulls.flag), (None, None));
        assert_eq!(probe(r#"{"int": 4.0}"#).expect("whole").int, Some(4));
        assert_eq!(
            probe(r#"{"int": "abc"}"#).expect_err("bad"),
            ("type_error.integer".to_owned(), "value is not a valid integer".to_owned())
        );
        assert_eq!(probe(r#"{"int": 4.5}"#).expect_err("fraction").0, "type_error.integer");
        assert_eq!(probe(r#"{"float": [1]}"#).expect_err("list").0, "type_error.float");
        assert_eq!(probe(r#"{"flag": "maybe"}"#).expect_err("flag").0, "type_error.bool");
        assert_eq!(probe(r#"{"text": {}}"#).expect_err("dict").0, "type_error.str");
    }
}
