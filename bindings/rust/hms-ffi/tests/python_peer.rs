//! A Rust client against the Python echo service (`python3 tests/_servers.py echo`): calls, CBOR,
//! remote errors with details, a server stream, deadlines and the server's death.
use std::time::{Duration, Instant};

use hms_ffi::cbor::{self, Value};
use hms_ffi::{Code, Origin, CT_CBOR, CT_RAW};

mod common;
use common::{PyServer, RuntimeDir};

const T: Option<Duration> = Some(Duration::from_secs(10));

fn cb(v: Value) -> Vec<u8> {
    cbor::encode(&v)
}

#[test]
fn rust_client_python_service() {
    let dir = RuntimeDir::new();
    let mut py = PyServer::start(&dir);
    let node = dir.node("rs-client");
    let c = node.connect("py.echo", "^1").unwrap();
    assert_eq!(c.server_pid(), py.pid() as i32);
    assert_eq!(c.service_version(), "1.0.0");

    let r = c.call("echo", b"\x00raw\xff", CT_RAW, T).unwrap();
    assert_eq!((r.data(), r.content_type()), (&b"\x00raw\xff"[..], CT_RAW));

    let v = Value::Map(vec![
        ("id".into(), Value::from(7i64)),
        ("big".into(), Value::Integer(u64::MAX as i128)),
        ("pi".into(), Value::from(3.25f64)),
        ("tags".into(), Value::Array(vec!["a".into(), "b".into()])),
        ("when".into(), Value::Timestamp(cbor::Timestamp::parse_rfc3339("2026-01-02T03:04:05.000006Z").unwrap())),
        ("set".into(), Value::Set(vec![Value::from(1i64), Value::from(2i64)])),
    ]);
    let back = c.call("echo", &cb(v.clone()), CT_CBOR, T).unwrap();
    assert_eq!(back.content_type(), CT_CBOR);
    assert_eq!(cbor::decode(back.data()).unwrap(), v);

    // fail [code, message] is raised the Python way and arrives as that code and message
    let e = c.call("fail", &cb(Value::Array(vec![5i64.into(), "nope".into()])), CT_CBOR, T).unwrap_err();
    assert_eq!((e.code(), e.message(), e.origin()), (Code::NotFound, "nope", Origin::Remote));
    let details = Value::Map(vec![("field".into(), "qty".into())]);
    let e = c
        .call("fail", &cb(Value::Array(vec![3i64.into(), "bad qty".into(), details.clone()])), CT_CBOR, T)
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let (d, ct) = e.details();
    assert_eq!(ct, CT_CBOR);
    assert_eq!(cbor::decode(d).unwrap(), details);
    for code in [Code::Cancelled, Code::PermissionDenied, Code::Unavailable, Code::Unauthenticated] {
        let e = c.call("fail", &cb(Value::Array(vec![(code.as_i32() as i64).into(), "x".into()])), CT_CBOR, T).unwrap_err();
        assert_eq!(e.code(), code);
    }

    // a Python exception that is not an hms error still comes back as an error, and the service lives
    let e = c.call("crash", &cb(Value::Null), CT_CBOR, T).unwrap_err();
    assert_eq!(e.origin(), Origin::Remote);
    assert!(e.message().contains("boom"), "{e}");

    // server stream
    let items: Vec<Value> =
        c.stream("count_to", &cb(5i64.into()), CT_CBOR, T).unwrap().map(|p| cbor::decode(p.unwrap().data()).unwrap()).collect();
    assert_eq!(items, (0..5i64).map(Value::from).collect::<Vec<_>>());
    let mut s = c.stream("fail_after", &cb(3i64.into()), CT_CBOR, T).unwrap();
    let got: Vec<_> = s.by_ref().take(3).map(|p| cbor::decode(p.unwrap().data()).unwrap()).collect();
    assert_eq!(got, (0..3i64).map(Value::from).collect::<Vec<_>>());
    let e = s.next().unwrap().unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "failed after 3"));
    assert!(s.next().is_none());
    drop(s);
    // a per-item timeout leaves the stream usable; cancel stops the endless producer
    let mut s = c.stream("endless", &cb(Value::Null), CT_CBOR, T).unwrap();
    assert!(s.next_item(Some(Duration::from_secs(5))).unwrap().is_some());
    s.cancel();
    drop(s);

    // deadline as a Duration
    let t0 = Instant::now();
    let e = c.call("sleep", &cb(1.5f64.into()), CT_CBOR, Some(Duration::from_millis(50))).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(t0.elapsed() < Duration::from_millis(1200), "the deadline did not cut the wait: {:?}", t0.elapsed());

    // the service dies: calls fail with UNAVAILABLE, not a hang
    py.kill();
    let e = c.call("echo", b"x", CT_RAW, T).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
}

#[test]
fn python_client_is_answered_by_rust_closures() {
    // Python -> Rust through the Python package, driven from here: a Rust node serves, a Python
    // child calls it and prints what it got.
    let dir = RuntimeDir::new();
    let node = dir.node("rs-server");
    let svc = node.service("rs.forpy", "1.0.0").unwrap();
    svc.function("double", |call| {
        let v = cbor::decode(call.request())?;
        let n = v.as_i128().ok_or_else(|| hms_ffi::Error::new(Code::InvalidArgument, "want an integer"))?;
        call.reply(&cbor::encode(&Value::Integer(n * 2)), CT_CBOR)
    })
    .unwrap();
    svc.function("panic", |_call| -> hms_ffi::Result<()> { panic!("rust bug") }).unwrap();
    node.start().unwrap();
    let python = std::env::var("HMS_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import hms_ffi_native as hms
with hms.connect("rs.forpy", "^1") as c:
    print(c.call("double", 21, timeout=5))
    try:
        c.call("double", "x", timeout=5)
    except hms.InvalidArgument as e:
        print("InvalidArgument", e.message)
    try:
        c.call("panic", None, timeout=5)
    except hms.Internal as e:
        print("Internal", e.message)
    print(c.call("double", 2**40, timeout=5))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .env("HMS_FFI_RUNTIME_DIR", &dir.0)
        .env("PYTHONSAFEPATH", "1")
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["42", "InvalidArgument want an integer", "Internal handler of 'panic' panicked: rust bug", "2199023255552"]
    );
}
