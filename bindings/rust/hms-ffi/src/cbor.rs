//! CBOR (RFC 8949) as hms-ffi peers exchange it: decoding through the `ciborium` crate, encoding
//! by the small encoder below, because the project's rules (tests/vectors/make_cbor_vectors.py)
//! differ from ciborium's serializer: floats are always float64 (ciborium shortens them), integers
//! use the shortest head, lengths are definite, map keys stay in the order given, datetimes are
//! tag 0 RFC 3339 strings and sets are tag 258 arrays.
//!
//! [`Value`] is the native form: [`Value::Timestamp`] and [`Value::Set`] are decoded from their
//! tags, integers cover the whole CBOR range (-2^64 ..= 2^64-1) as `i128`.
use std::fmt;
use std::io::Cursor;

use crate::error::{Code, Error, Result};

/// A CBOR value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// Any CBOR integer, -2^64 ..= 2^64-1.
    Integer(i128),
    /// Always encoded as float64.
    Float(f64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    /// Key/value pairs in their wire order.
    Map(Vec<(Value, Value)>),
    /// Tag 0: an RFC 3339 date-time.
    Timestamp(Timestamp),
    /// Tag 258: a set (kept in wire order).
    Set(Vec<Value>),
    /// Any other tag.
    Tag(u64, Box<Value>),
}

impl Value {
    /// The value under `key` when this is a map with a text key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(kv) => kv.iter().find(|(k, _)| matches!(k, Value::Text(t) if t == key)).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_i128(&self) -> Option<i128> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Integer(v.into())
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Integer(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

/// A UTC instant with nanosecond precision and the UTC offset it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub unix_seconds: i64,
    /// 0 ..= 999_999_999.
    pub nanos: u32,
    /// The offset of the written form, in minutes east of UTC (0 = "Z").
    pub offset_minutes: i16,
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // H. Hinnant's algorithm (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Timestamp {
    /// Parses "YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)".
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let t = s.get(r)?;
            if t.bytes().all(|c| c.is_ascii_digit()) {
                t.parse().ok()
            } else {
                None
            }
        };
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't') || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let mut i = 19;
        let mut nanos: u32 = 0;
        if b[i] == b'.' {
            i += 1;
            let st = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[st..i];
            if digits.is_empty() || digits.len() > 9 {
                return None;
            }
            nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
        }
        let offset_minutes: i16 = match b.get(i)? {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
                let m = (num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?) as i16;
                if *c == b'-' {
                    -m
                } else {
                    m
                }
            }
            _ => return None,
        };
        let days = days_from_civil(y, mo as u32, d as u32);
        let local = days * 86400 + h * 3600 + mi * 60 + se;
        Some(Timestamp { unix_seconds: local - offset_minutes as i64 * 60, nanos, offset_minutes })
    }

    /// Formats as cbor2 and Python's isoformat do: no fraction when it is zero, 6 digits for whole
    /// microseconds, else 9; "Z" for UTC.
    pub fn to_rfc3339(&self) -> String {
        let local = self.unix_seconds + self.offset_minutes as i64 * 60;
        let (days, secs) = (local.div_euclid(86400), local.rem_euclid(86400));
        let (y, m, d) = civil_from_days(days);
        let mut s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
        if self.nanos != 0 {
            if self.nanos % 1000 == 0 {
                s += &format!(".{:06}", self.nanos / 1000);
            } else {
                s += &format!(".{:09}", self.nanos);
            }
        }
        if self.offset_minutes == 0 {
            s.push('Z');
        } else {
            let o = self.offset_minutes.unsigned_abs();
            s += &format!("{}{:02}:{:02}", if self.offset_minutes < 0 { '-' } else { '+' }, o / 60, o % 60);
        }
        s
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

// ------------------------------------------------------------------ decoding

fn from_ciborium(v: ciborium::Value) -> Result<Value> {
    use ciborium::Value as C;
    Ok(match v {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => Value::Integer(i128::from(i)),
        C::Float(f) => Value::Float(f),
        C::Bytes(b) => Value::Bytes(b),
        C::Text(t) => Value::Text(t),
        C::Array(a) => Value::Array(a.into_iter().map(from_ciborium).collect::<Result<_>>()?),
        C::Map(m) => Value::Map(
            m.into_iter().map(|(k, v)| Ok((from_ciborium(k)?, from_ciborium(v)?))).collect::<Result<_>>()?,
        ),
        C::Tag(0, inner) => match *inner {
            C::Text(t) => match Timestamp::parse_rfc3339(&t) {
                Some(ts) => Value::Timestamp(ts),
                None => Value::Tag(0, Box::new(Value::Text(t))),
            },
            other => Value::Tag(0, Box::new(from_ciborium(other)?)),
        },
        C::Tag(258, inner) => match *inner {
            C::Array(a) => Value::Set(a.into_iter().map(from_ciborium).collect::<Result<_>>()?),
            other => Value::Tag(258, Box::new(from_ciborium(other)?)),
        },
        C::Tag(t, inner) => Value::Tag(t, Box::new(from_ciborium(*inner)?)),
        other => {
            return Err(Error::new(Code::InvalidArgument, format!("unsupported CBOR item {other:?}")));
        }
    })
}

/// Decodes exactly one CBOR item (trailing bytes are an error).
pub fn decode(bytes: &[u8]) -> Result<Value> {
    let mut cur = Cursor::new(bytes);
    let v: ciborium::Value = ciborium::de::from_reader(&mut cur)
        .map_err(|e| Error::new(Code::InvalidArgument, format!("invalid CBOR payload ({} bytes): {e}", bytes.len())))?;
    if cur.position() as usize != bytes.len() {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("CBOR payload has {} trailing bytes after the first item", bytes.len() - cur.position() as usize),
        ));
    }
    from_ciborium(v)
}

// ------------------------------------------------------------------ encoding

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_into(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0xf6),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Integer(i) => {
            if *i >= 0 {
                match u64::try_from(*i) {
                    Ok(n) => head(out, 0, n),
                    Err(_) => bignum(out, 2, *i as u128),
                }
            } else {
                let n = (-1 - *i) as u128;
                match u64::try_from(n) {
                    Ok(n) => head(out, 1, n),
                    Err(_) => bignum(out, 3, n),
                }
            }
        }
        Value::Float(f) => {
            out.push(0xfb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Bytes(b) => {
            head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Text(t) => {
            head(out, 3, t.len() as u64);
            out.extend_from_slice(t.as_bytes());
        }
        Value::Array(a) => {
            head(out, 4, a.len() as u64);
            a.iter().for_each(|x| encode_into(out, x));
        }
        Value::Map(m) => {
            head(out, 5, m.len() as u64);
            for (k, x) in m {
                encode_into(out, k);
                encode_into(out, x);
            }
        }
        Value::Timestamp(ts) => {
            head(out, 6, 0);
            encode_into(out, &Value::Text(ts.to_rfc3339()));
        }
        Value::Set(items) => {
            head(out, 6, 258);
            head(out, 4, items.len() as u64);
            items.iter().for_each(|x| encode_into(out, x));
        }
        Value::Tag(t, inner) => {
            head(out, 6, *t);
            encode_into(out, inner);
        }
    }
}

/// Integers beyond 64 bits (only reachable for values built in Rust): tag 2/3 bignums.
fn bignum(out: &mut Vec<u8>, tag: u64, n: u128) {
    head(out, 6, tag);
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
    head(out, 2, (bytes.len() - first) as u64);
    out.extend_from_slice(&bytes[first..]);
}

/// Encodes a value with the project's rules (see the module docs).
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_their_text() {
        for s in [
            "2026-12-01T06:50:28Z",
            "1999-12-31T23:59:59.123456Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.000000001Z",
            "2000-02-29T12:00:00+05:30",
            "1900-03-01T00:00:00-08:00",
        ] {
            let t = Timestamp::parse_rfc3339(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(t.to_rfc3339(), s);
        }
        let t = Timestamp::parse_rfc3339("2026-12-01T06:50:28Z").unwrap();
        assert_eq!(t.unix_seconds, 1_796_107_828);
        assert_eq!(Timestamp::parse_rfc3339("1970-01-01T01:00:00+01:00").unwrap().unix_seconds, 0);
        for bad in ["", "2026-13-01T00:00:00Z", "2026-12-01 06:50:28Z", "2026-12-01T06:50:28", "2026-12-01T06:50:28.Z"] {
            assert!(Timestamp::parse_rfc3339(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn integers_use_the_shortest_head_and_the_full_range() {
        assert_eq!(encode(&Value::Integer(23)), [0x17]);
        assert_eq!(encode(&Value::Integer(24)), [0x18, 24]);
        assert_eq!(encode(&Value::Integer(-1)), [0x20]);
        assert_eq!(encode(&Value::Integer(u64::MAX as i128)), [0x1b, 255, 255, 255, 255, 255, 255, 255, 255]);
        assert_eq!(encode(&Value::Integer(-(u64::MAX as i128) - 1)), [0x3b, 255, 255, 255, 255, 255, 255, 255, 255]);
        assert_eq!(encode(&Value::Integer(1i128 << 64)), [0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode(&encode(&Value::Integer(-(u64::MAX as i128) - 1))).unwrap(), Value::Integer(-(1i128 << 64)));
    }

    #[test]
    fn floats_are_always_float64() {
        assert_eq!(encode(&Value::Float(0.5)), [0xfb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]);
        // a float16 on the wire decodes fine and is re-encoded as float64
        assert_eq!(decode(&[0xf9, 0x3c, 0x00]).unwrap(), Value::Float(1.0));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(decode(&[0x18]).unwrap_err().code(), Code::InvalidArgument);
        assert!(decode(&[0x01, 0x02]).unwrap_err().message().contains("trailing"));
        assert!(decode(&[]).is_err());
    }
}
