//! Lenient deserializers for PVE's loosely typed JSON.
//!
//! PVE is written in Perl and does not coerce its responses to the schema: booleans arrive
//! as `0`/`1`, some numbers as strings (`"0.16"`), and optional fields are omitted. These
//! functions accept every such spelling and turn absent or `null` values into `None`.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// A scalar as PVE may send it.
enum Scalar {
    Num(f64),
    Bool(bool),
    Text(String),
    Null,
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, a numeric string, a boolean or null")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Num(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Num(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Num(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Text(v))
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
    d.deserialize_any(ScalarVisitor)
}

/// A number from a number, a numeric string (`"2400.000"`), or a boolean (1/0).
/// An empty string, `null` or absence gives `None`; a non-numeric string is an error.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match scalar(d)? {
        Scalar::Num(v) if v.is_finite() => Ok(Some(v)),
        Scalar::Num(v) => Err(de::Error::custom(format!(
            "expected a finite number, found {v}"
        ))),
        Scalar::Bool(b) => Ok(Some(if b { 1.0 } else { 0.0 })),
        Scalar::Null => Ok(None),
        Scalar::Text(s) => {
            let t = s.trim();
            if t.is_empty() {
                return Ok(None);
            }
            match t.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(de::Error::custom(format!("expected a number, found {s:?}"))),
            }
        }
    }
}

/// A non-negative integer (bytes, counts, seconds); fractions are truncated, negatives are an error.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match opt_f64(d)? {
        None => Ok(None),
        Some(v) if v < 0.0 => Err(de::Error::custom(format!(
            "expected a non-negative number, found {v}"
        ))),
        // `as` saturates at u64::MAX for out-of-range floats.
        Some(v) => Ok(Some(v as u64)),
    }
}

/// A signed integer (epoch seconds); fractions are truncated.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(opt_f64(d)?.map(|v| v as i64))
}

/// A guest id: a positive integer that fits in `u32`, given as a number or a string.
pub fn opt_vmid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match opt_f64(d)? {
        None => Ok(None),
        Some(v) if v >= 1.0 && v <= f64::from(u32::MAX) && v.fract() == 0.0 => Ok(Some(v as u32)),
        Some(v) => Err(de::Error::custom(format!(
            "expected a vmid (positive integer), found {v}"
        ))),
    }
}

/// A boolean from `0`/`1`, `"0"`/`"1"`, `true`/`false`, `"on"`/`"off"`, `"yes"`/`"no"`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match scalar(d)? {
        Scalar::Bool(b) => Ok(Some(b)),
        Scalar::Num(v) => Ok(Some(v != 0.0)),
        Scalar::Null => Ok(None),
        Scalar::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "1" | "true" | "on" | "yes" => Ok(Some(true)),
            "0" | "false" | "off" | "no" => Ok(Some(false)),
            _ => Err(de::Error::custom(format!(
                "expected a boolean, found {s:?}"
            ))),
        },
    }
}

/// A string from a string or a number (`"vmid":"106"`-style quirks in reverse); `null` gives `None`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match scalar(d)? {
        Scalar::Text(s) => Ok(Some(s)),
        Scalar::Num(v) => Ok(Some(if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{}", v as i64)
        } else {
            v.to_string()
        })),
        Scalar::Bool(b) => Ok(Some(if b { "1" } else { "0" }.to_owned())),
        Scalar::Null => Ok(None),
    }
}

/// A list of numbers that may be numeric strings (`loadavg: ["0.16","0.10","0.02"]`).
pub fn opt_f64_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Item(#[serde(deserialize_with = "opt_f64")] Option<f64>);
    let items: Option<Vec<Item>> = serde::Deserialize::deserialize(d)?;
    Ok(items.map(|v| v.into_iter().filter_map(|i| i.0).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default, PartialEq)]
    struct T {
        #[serde(default, deserialize_with = "opt_f64")]
        f: Option<f64>,
        #[serde(default, deserialize_with = "opt_u64")]
        u: Option<u64>,
        #[serde(default, deserialize_with = "opt_bool")]
        b: Option<bool>,
        #[serde(default, deserialize_with = "opt_vmid")]
        v: Option<u32>,
        #[serde(default, deserialize_with = "opt_f64_list")]
        l: Option<Vec<f64>>,
        #[serde(default, deserialize_with = "opt_string")]
        s: Option<String>,
    }

    fn parse(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn accepts_pve_spellings() {
        let t = parse(r#"{"f":"2400.000","u":18985763258.1554,"b":1,"v":"106","l":["0.16","0.10","0.02"],"s":5}"#).unwrap();
        assert_eq!(t.f, Some(2400.0));
        assert_eq!(t.u, Some(18_985_763_258));
        assert_eq!(t.b, Some(true));
        assert_eq!(t.v, Some(106));
        assert_eq!(t.l, Some(vec![0.16, 0.10, 0.02]));
        assert_eq!(t.s.as_deref(), Some("5"));
        let t = parse(r#"{"b":"0","f":5.63781757807018e-05,"v":101}"#).unwrap();
        assert_eq!(t.b, Some(false));
        assert_eq!(t.f, Some(5.637_817_578_070_18e-5));
        assert_eq!(t.v, Some(101));
    }

    #[test]
    fn absent_and_null_are_none() {
        assert_eq!(parse("{}").unwrap(), T::default());
        assert_eq!(parse(r#"{"f":null,"b":null}"#).unwrap(), T::default());
    }

    #[test]
    fn wrong_types_are_errors_that_say_what_was_expected() {
        let err = parse(r#"{"f":"abc"}"#).unwrap_err().to_string();
        assert!(err.contains("expected a number, found \"abc\""), "{err}");
        let err = parse(r#"{"u":-1}"#).unwrap_err().to_string();
        assert!(err.contains("non-negative"), "{err}");
        let err = parse(r#"{"v":0}"#).unwrap_err().to_string();
        assert!(err.contains("expected a vmid"), "{err}");
        let err = parse(r#"{"b":"maybe"}"#).unwrap_err().to_string();
        assert!(err.contains("expected a boolean"), "{err}");
        let err = parse(r#"{"f":[1]}"#).unwrap_err().to_string();
        assert!(err.contains("a number, a numeric string"), "{err}");
    }
}
