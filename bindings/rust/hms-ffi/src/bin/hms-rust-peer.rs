//! hms-rust-peer: the Rust side of the cross-language test matrix.
//!
//!   hms-rust-peer serve SERVICE            serve SERVICE 1.0.0: `echo` (CBOR decoded into
//!                                          hms_ffi::cbor::Value and re-encoded; raw returned as is)
//!                                          and `fail` ([code, message] -> that error); prints
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
use hms_ffi::{Code, Error, Node, CT_CBOR, CT_RAW};

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
    println!("ready");
    std::io::stdout().flush().ok();
    node.serve_until_signal()
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
