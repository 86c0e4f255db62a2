//! Lenient reading of JSON values written by other tools: numbers arrive as numbers or as
//! strings, seeds as floats, names as objects. Nothing here panics or rejects the whole file.

use serde_json::Value;

/// A non-negative integer from a JSON number or a numeric string.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "whole, non-negative and below 2^64 is checked first"
)]
pub fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19).map(|f| f as u64)
        }),
        Value::String(s) => parse_u64(s),
        _ => None,
    }
}

/// A non-negative integer from text (`"42"`, `" 42 "`, `"42.0"`).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "whole, non-negative and below 2^64 is checked first"
)]
pub fn parse_u64(text: &str) -> Option<u64> {
    let text = text.trim();
    text.parse::<u64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
            .map(|f| f as u64)
    })
}

/// A `u32` from a JSON number or numeric string.
pub fn as_u32(value: &Value) -> Option<u32> {
    as_u64(value).and_then(|v| u32::try_from(v).ok())
}

/// A `u32` from text.
pub fn parse_u32(text: &str) -> Option<u32> {
    parse_u64(text).and_then(|v| u32::try_from(v).ok())
}

/// A finite float from a JSON number or numeric string.
#[allow(clippy::cast_possible_truncation, reason = "settings are f32; JSON numbers are f64")]
pub fn as_f32(value: &Value) -> Option<f32> {
    match value {
        Value::Number(n) => n.as_f64().map(|f| f as f32).filter(|f| f.is_finite()),
        Value::String(s) => parse_f32(s),
        _ => None,
    }
}

/// A finite float from text.
pub fn parse_f32(text: &str) -> Option<f32> {
    text.trim().parse::<f32>().ok().filter(|f| f.is_finite())
}

/// A string value (numbers are written out).
pub fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Any value as text for `extra`: strings as they are, everything else as compact JSON.
pub fn to_extra_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
