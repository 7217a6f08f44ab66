//! hms-rust-peer: the Rust side of the cross-language test matrix.
//!
//!   hms-rust-peer serve SERVICE            serve SERVICE 1.0.0: `echo` (CBOR decoded into
//!                                          hms_ffi::cbor::Value and re-encoded; raw returned as is)
//!                                          and `fail` ([code, message] -> that error); `arrow_sum`,
//!                                          `ndarray_sum` (read a pyarrow Table / numpy array in place
//!                                          and report sums, nulls and where the data lay),
//!                                          `arrow_keep` + `arrow_kept` (keep a request past its
//!                                          handler), `arrow_make n` (a Rust-built record batch); prints
//!                                          "ready"; exits 0 on SIGTERM/SIGINT
//!   hms-rust-peer call SERVICE VECTORS     every vector of VECTORS (tests/vectors/cbor.json) through
//!                                          SERVICE's `echo` as CBOR, then `fail` [5, "nope"];
//!                                          prints "ok N" or one line per mismatch (exit 1)
//!   hms-rust-peer bench SERVICE N          N round trips of 64 raw bytes to `echo` after N/10 warm-up:
//!                                          prints "p50_ns p99_ns calls_per_s"
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hms_ffi::cbor::{self, Value};
use hms_ffi::{ArrowData, Code, Error, NdArray, Node, Payload, CT_ARROW, CT_CBOR, CT_RAW};
use std::sync::{Arc, Mutex};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

fn usage() -> ExitCode {
    eprintln!("usage: hms-rust-peer serve SERVICE | call SERVICE VECTORS_JSON | bench SERVICE N");
    ExitCode::from(2)
}

fn serve(service: &str) -> hms_ffi::Result<()> {
    let node = Node::open("rust-peer")?;
    let svc = node.service(service, "1.0.0")?;
    svc.function("echo", |call| {
        if call.content_type() == CT_CBOR {
            let value = cbor::decode(call.request())?;
            call.reply(&cbor::encode(&value), CT_CBOR)
        } else {
            let req = call.request();
            call.reply(req, call.content_type())
        }
    })?;
    svc.function("fail", |call| {
        let v = cbor::decode(call.request())?;
        let (code, message) = match v.as_array() {
            Some([c, m, ..]) => (c.as_i128(), m.as_str()),
            _ => (None, None),
        };
        let (Some(code), Some(message)) = (code, message) else {
            return Err(Error::new(Code::InvalidArgument, format!("fail wants [code, message], got {v:?}")));
        };
        let code = i32::try_from(code).ok().and_then(Code::from_i32).ok_or_else(|| {
            Error::new(Code::InvalidArgument, format!("fail: {code} is not a status code (0..=16)"))
        })?;
        Err(Error::new(code, message))
    })?;
    svc.function_in_place("arrow_sum", |call| {
        let req = call.request();
        let a = ArrowData::decode(req)?;
        let mut rep = arrow_report(&a, req)?;
        rep.push(kv("req_addr", Value::from(req.as_ptr() as u64)));
        rep.push(kv("req_len", Value::from(req.len() as u64)));
        call.reply(&cbor::encode(&Value::Map(rep)), CT_CBOR)
    })?;
    let kept: Arc<Mutex<Option<Payload>>> = Arc::default();
    let k = kept.clone();
    svc.function_in_place("arrow_keep", move |call| {
        let rows = ArrowData::decode(call.request())?.num_rows();
        let p = call.take_request()?; // the arena block itself: no copy
        *k.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        call.reply(&cbor::encode(&Value::from(rows)), CT_CBOR)
    })?;
    svc.function("arrow_kept", move |call| {
        let p = kept.lock().unwrap_or_else(|e| e.into_inner()).take();
        let p = p.ok_or_else(|| Error::new(Code::FailedPrecondition, "arrow_keep was not called"))?;
        let a = ArrowData::decode(p.data())?;
        let mut rep = arrow_report(&a, p.data())?;
        rep.push(kv("zero_copy", Value::Bool(!p.is_copy())));
        call.reply(&cbor::encode(&Value::Map(rep)), CT_CBOR)
    })?;
    svc.function_in_place("ndarray_sum", |call| {
        let req = call.request();
        let a = NdArray::decode(req)?;
        let v = a.values::<f64>()?;
        let sum: f64 = v.iter().sum();
        let addr = v.as_ptr() as u64;
        let rep = vec![
            kv("sum", Value::Float(sum)),
            kv("shape", Value::Array(a.shape.iter().map(|&d| Value::from(d)).collect())),
            kv("dtype", Value::from(a.dtype.as_str())),
            kv("data_addr", Value::from(addr)),
            kv("req_addr", Value::from(req.as_ptr() as u64)),
            kv("req_len", Value::from(req.len() as u64)),
            kv("mapping", Value::from(mapping_of(addr))),
        ];
        call.reply(&cbor::encode(&Value::Map(rep)), CT_CBOR)
    })?;
    svc.function("arrow_make", |call| {
        let n = cbor::decode(call.request())?.as_i128().filter(|&n| (0..=1 << 24).contains(&n));
        let n = n.ok_or_else(|| Error::new(Code::InvalidArgument, "arrow_make wants a row count <= 2^24"))? as usize;
        let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let y: Vec<i64> = (0..n as i64).map(|i| i * 2).collect();
        let mut valid = vec![0u8; n.div_ceil(8)];
        for i in (0..n).filter(|i| i % 3 != 0) {
            valid[i / 8] |= 1 << (i % 8);
        }
        let (words, len) = hms_ffi::encode_record_batch(&[
            ("x", hms_ffi::ColumnRef::F64(&x), None),
            ("y", hms_ffi::ColumnRef::I64(&y), Some(&valid)),
        ])?;
        call.reply(hms_ffi::words_as_bytes(&words, len), CT_ARROW)
    })?;
    println!("ready");
    std::io::stdout().flush().ok();
    node.serve_until_signal()
}

fn kv(k: &str, v: Value) -> (Value, Value) {
    (Value::from(k), v)
}

/// "PERMS PATH" of the /proc/self/maps line holding addr ("" when none does).
fn mapping_of(addr: u64) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some((lo, hi)) = f.first().and_then(|r| r.split_once('-')) else { continue };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else { continue };
        if (lo..hi).contains(&addr) {
            return format!("{} {}", f.get(1).unwrap_or(&""), f.get(5..).map(|p| p.join(" ")).unwrap_or_default());
        }
    }
    String::new()
}

/// Sums and null counts of the float64 and int64 columns (all batches), with the addresses of the
/// float64 value buffers read and the mapping of the payload.
fn arrow_report(a: &ArrowData<'_>, src: &[u8]) -> hms_ffi::Result<Vec<(Value, Value)>> {
    let mut cols = Vec::new();
    let mut buffers = Vec::new();
    for (ci, f) in a.fields().iter().enumerate() {
        let (mut fsum, mut isum, mut nulls) = (0.0f64, 0i128, 0usize);
        match f.format.as_str() {
            "g" => {
                for b in 0..a.num_batches() {
                    let (v, valid) = a.values::<f64>(b, ci)?;
                    fsum += v.iter().enumerate().filter(|(i, _)| valid.is_valid(*i)).map(|(_, x)| x).sum::<f64>();
                    nulls += valid.null_count();
                    if !v.is_empty() {
                        buffers.push(Value::from(v.as_ptr() as u64));
                    }
                }
                cols.push(kv(&f.name, Value::Map(vec![kv("sum", Value::Float(fsum)), kv("nulls", Value::from(nulls as u64))])));
            }
            "l" => {
                for b in 0..a.num_batches() {
                    let (v, valid) = a.values::<i64>(b, ci)?;
                    isum += v.iter().enumerate().filter(|(i, _)| valid.is_valid(*i)).map(|(_, &x)| x as i128).sum::<i128>();
                    nulls += valid.null_count();
                }
                cols.push(kv(&f.name, Value::Map(vec![kv("sum", Value::Integer(isum)), kv("nulls", Value::from(nulls as u64))])));
            }
            _ => {}
        }
    }
    Ok(vec![
        kv("kind", Value::from(format!("{:?}", a.kind()).as_str())),
        kv("rows", Value::from(a.num_rows())),
        kv("batches", Value::from(a.num_batches() as u64)),
        kv("columns", Value::Map(cols)),
        kv("buffers", Value::Array(buffers)),
        kv("held_addr", Value::from(src.as_ptr() as u64)),
        kv("held_len", Value::from(src.len() as u64)),
        kv("mapping", Value::from(mapping_of(src.as_ptr() as u64))),
    ])
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn call(service: &str, vectors: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(vectors).map_err(|e| format!("cannot read {vectors}: {e}"))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{vectors} is not JSON: {e}"))?;
    let list = doc["vectors"].as_array().ok_or_else(|| format!("{vectors} has no \"vectors\" list"))?;
    let node = Node::open("rust-peer-client").map_err(|e| e.to_string())?;
    let client = node.connect(service, "^1").map_err(|e| format!("connect {service}: {e}"))?;
    let echo = client.function_id("echo").map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    let mut n = 0;
    for v in list {
        let name = v["name"].as_str().unwrap_or("?");
        let Some(bytes) = v["hex"].as_str().and_then(hex) else {
            problems.push(format!("{name}: bad hex in the vector file"));
            continue;
        };
        // the vector must also be a value our codec round-trips, or the test proves nothing
        match cbor::decode(&bytes).map(|x| cbor::encode(&x)) {
            Ok(b) if b == bytes => {}
            other => problems.push(format!("{name}: the Rust codec does not round-trip it locally: {other:?}")),
        }
        match client.call_id(echo, &bytes, CT_CBOR, TIMEOUT) {
            Ok(r) if r.data() == bytes && r.content_type() == CT_CBOR => n += 1,
            Ok(r) => problems.push(format!(
                "{name}: sent {} got {} (content type {})",
                v["hex"].as_str().unwrap_or(""),
                r.data().iter().map(|b| format!("{b:02x}")).collect::<String>(),
                r.content_type()
            )),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    let args = cbor::encode(&Value::Array(vec![Value::from(5i64), Value::from("nope")]));
    match client.call("fail", &args, CT_CBOR, TIMEOUT) {
        Ok(r) => problems.push(format!("fail: succeeded with {} bytes instead of NOT_FOUND", r.data().len())),
        Err(e) if e.code() == Code::NotFound && e.message() == "nope" => {}
        Err(e) => problems.push(format!("fail: expected NOT_FOUND \"nope\", got {} {:?}", e.code(), e.message())),
    }
    if problems.is_empty() {
        Ok(vec![format!("ok {n}")])
    } else {
        Err(problems.join("\n"))
    }
}

fn bench(service: &str, n: usize) -> Result<String, String> {
    let node = Node::open("rust-peer-bench").map_err(|e| e.to_string())?;
    let client = node.connect(service, "^1").map_err(|e| format!("connect {service}: {e}"))?;
    let echo = client.function_id("echo").map_err(|e| e.to_string())?;
    let msg = [b'x'; 64];
    for _ in 0..n / 10 {
        client.call_id(echo, &msg, CT_RAW, None).map_err(|e| e.to_string())?;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        let r = client.call_id(echo, &msg, CT_RAW, None).map_err(|e| e.to_string())?;
        lat.push(t0.elapsed().as_nanos() as u64);
        if r.data().len() != msg.len() {
            return Err(format!("echo returned {} bytes, not 64", r.data().len()));
        }
    }
    let total = start.elapsed();
    lat.sort_unstable();
    let p50 = lat[n / 2];
    let p99 = lat[((n as f64 * 0.99) as usize).min(n - 1)];
    Ok(format!("{p50} {p99} {:.0}", n as f64 / total.as_secs_f64()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 3 => match serve(&args[2]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hms-rust-peer serve: {e}");
                ExitCode::from(3)
            }
        },
        Some("call") if args.len() == 4 => match call(&args[2], &args[3]) {
            Ok(lines) => {
                lines.iter().for_each(|l| println!("{l}"));
                ExitCode::SUCCESS
            }
            Err(problems) => {
                println!("{problems}");
                ExitCode::from(1)
            }
        },
        Some("bench") if args.len() == 4 => {
            let Ok(n) = args[3].parse::<usize>() else { return usage() };
            if n == 0 {
                return usage();
            }
            match bench(&args[2], n) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hms-rust-peer bench: {e}");
                    ExitCode::from(3)
                }
            }
        }
        _ => usage(),
    }
}
