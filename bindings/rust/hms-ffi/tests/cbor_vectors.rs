//! Every vector of tests/vectors/cbor.json decodes into native values and re-encodes to the
//! identical bytes.
use hms_ffi::cbor::{self, Value};

mod common;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Integer(i) if *i >= 0 => "uint",
        Value::Integer(_) => "int",
        Value::Float(_) => "float",
        Value::Bytes(_) => "bytes",
        Value::Text(_) => "str",
        Value::Array(_) => "list",
        Value::Map(_) => "map",
        Value::Timestamp(_) => "timestamp",
        Value::Set(_) => "set",
        Value::Tag(..) => "tag",
    }
}

#[test]
fn every_vector_round_trips_to_identical_bytes() {
    let path = common::repo_root().join("tests/vectors/cbor.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 40, "only {} vectors in {}", vectors.len(), path.display());
    let mut failures = Vec::new();
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let want_kind = v["type"].as_str().unwrap();
        let bytes = hex(v["hex"].as_str().unwrap());
        let value = match cbor::decode(&bytes) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{name}: decode failed: {e}"));
                continue;
            }
        };
        if kind(&value) != want_kind {
            failures.push(format!("{name}: decoded as {} ({value:?}), vector says {want_kind}", kind(&value)));
        }
        let again = cbor::encode(&value);
        if again != bytes {
            failures.push(format!("{name}: re-encoded {} != {}", hexs(&again), hexs(&bytes)));
        }
    }
    assert!(failures.is_empty(), "{} vector(s) failed:\n{}", failures.len(), failures.join("\n"));
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn native_values_of_selected_vectors() {
    let order = cbor::decode(&hex(
        "a9686f726465725f6964686f72642d303030316b637573746f6d65725f69641b0000010000000000",
    ));
    // a truncated map is an error, not a panic
    assert!(order.is_err());
    let ts = cbor::decode(&hex("c074323032362d31322d30315430363a35303a32385a")).unwrap();
    match ts {
        Value::Timestamp(t) => assert_eq!((t.unix_seconds, t.nanos), (1_796_107_828, 0)),
        other => panic!("not a timestamp: {other:?}"),
    }
    assert_eq!(cbor::decode(&hex("1bffffffffffffffff")).unwrap(), Value::Integer(u64::MAX as i128));
    assert_eq!(cbor::decode(&hex("3b7fffffffffffffff")).unwrap(), Value::Integer(i64::MIN as i128));
    assert_eq!(
        cbor::decode(&hex("d9010283010203")).unwrap(),
        Value::Set(vec![Value::Integer(1), Value::Integer(2), Value::Integer(3)])
    );
}
