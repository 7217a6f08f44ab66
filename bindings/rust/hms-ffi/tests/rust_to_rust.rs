//! A Rust service and a Rust client in one process (two nodes): calls, errors, panics, deadlines,
//! server streams, concurrency, and publish/subscribe.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hms_ffi::cbor::{self, Value};
use hms_ffi::{Code, Error, Node, Origin, CT_CBOR, CT_RAW};

mod common;
use common::RuntimeDir;

const T: Option<Duration> = Some(Duration::from_secs(5));

fn serve_demo(node: &Node) {
    let svc = node.service("rs.demo", "1.2.0").unwrap();
    svc.function("echo", |call| {
        let req = call.request();
        call.reply(req, call.content_type())
    })
    .unwrap();
    svc.function("fail", |call| {
        let v = cbor::decode(call.request())?;
        let args = v.as_array().ok_or_else(|| Error::new(Code::InvalidArgument, "fail wants [code, message]"))?;
        let code = args[0].as_i128().and_then(|c| Code::from_i32(c as i32)).unwrap_or(Code::Unknown);
        let msg = args[1].as_str().unwrap_or("");
        Err(Error::new(code, msg).with_details(b"{\"why\":1}".to_vec(), hms_ffi::CT_JSON))
    })
    .unwrap();
    svc.function("panic", |_call| -> hms_ffi::Result<()> { panic!("handler bug {}", 42) }).unwrap();
    svc.function("sleep_ms", |call| {
        let ms = u64::from_le_bytes(call.request().try_into().unwrap_or([0; 8]));
        std::thread::sleep(Duration::from_millis(ms));
        call.reply(b"slept", CT_RAW)
    })
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    svc.function("count", move |call| {
        let n = c2.fetch_add(1, Ordering::SeqCst) + 1;
        call.reply(&n.to_le_bytes(), CT_RAW)
    })
    .unwrap();
    svc.stream_function("count_to", |call| {
        let n = u32::from_le_bytes(call.request().try_into().map_err(|_| Error::new(Code::InvalidArgument, "want u32"))?);
        for i in 0..n {
            call.send(&cbor::encode(&Value::from(i as u64)), CT_CBOR)?;
        }
        if n == 13 {
            return Err(Error::new(Code::OutOfRange, "unlucky"));
        }
        Ok(())
    })
    .unwrap();
    svc.function("whoami", |call| {
        let (pid, _, _) = call.peer();
        let s = format!("{} {} {} {}", pid, call.function_name(), call.service_name(), call.time_left().is_some());
        call.reply(s.as_bytes(), CT_RAW)
    })
    .unwrap();
}

#[test]
fn calls_errors_panics_and_deadlines() {
    let dir = RuntimeDir::new();
    let server = dir.node("rs-server");
    serve_demo(&server);
    server.start().unwrap();
    let node = dir.node("rs-client");
    let c = node.connect("rs.demo", "^1").unwrap();
    assert_eq!(c.service_name(), "rs.demo");
    assert_eq!(c.service_version(), "1.2.0");
    assert_eq!(c.server_pid(), std::process::id() as i32);
    let names: Vec<String> = c.functions().into_iter().map(|f| f.0).collect();
    assert!(names.contains(&"echo".to_string()) && names.contains(&"count_to".to_string()), "{names:?}");

    let r = c.call("echo", b"\x00hello\xff", CT_RAW, T).unwrap();
    assert_eq!((r.data(), r.content_type()), (&b"\x00hello\xff"[..], CT_RAW));
    let empty = c.call("echo", b"", CT_RAW, T).unwrap();
    assert!(empty.data().is_empty());

    let v = Value::Map(vec![("k".into(), Value::Array(vec![1i64.into(), 2.5f64.into()]))]);
    assert_eq!(c.call_cbor("echo", &v, T).unwrap(), v);

    let e = c.call_cbor("fail", &Value::Array(vec![5i64.into(), "nope".into()]), T).unwrap_err();
    assert_eq!((e.code(), e.message(), e.origin()), (Code::NotFound, "nope", Origin::Remote));
    assert_eq!(e.details(), (&b"{\"why\":1}"[..], hms_ffi::CT_JSON));
    assert_eq!(e.to_string(), "NOT_FOUND: nope (from the peer)");
    let e = c.call("fail", b"\xff", CT_CBOR, T).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    // a panicking handler is an INTERNAL error reply, and the server keeps serving
    for _ in 0..3 {
        let e = c.call("panic", b"", CT_RAW, T).unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.message().contains("handler of 'panic' panicked: handler bug 42"), "{e}");
    }
    assert_eq!(c.call("echo", b"still here", CT_RAW, T).unwrap().data(), b"still here");

    // deadlines are Durations
    let t0 = Instant::now();
    let e = c.call("sleep_ms", &1000u64.to_le_bytes(), CT_RAW, Some(Duration::from_millis(50))).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(t0.elapsed() < Duration::from_millis(800), "the deadline did not cut the wait: {:?}", t0.elapsed());
    assert_eq!(c.call("sleep_ms", &0u64.to_le_bytes(), CT_RAW, T).unwrap().data(), b"slept");

    let who = c.call("whoami", b"", CT_RAW, T).unwrap();
    assert_eq!(String::from_utf8_lossy(who.data()), format!("{} whoami rs.demo true", std::process::id()));

    let e = c.call("no_such_fn", b"", CT_RAW, T).unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("echo"), "lists the known functions: {e}");
    let e = node.connect("rs.absent", "^1").err().unwrap();
    assert_eq!(e.code(), Code::NotFound);
    let e = node.connect("rs.demo", "^2").err().unwrap();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("1.2.0"), "the message lists the versions seen: {e}");
    let e = server.service("rs.demo", "1.2.0").err().unwrap();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = server.service("bad name!", "1.0.0").err().unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    drop(c);
    server.stop();
}

#[test]
fn server_streams_end_error_and_cancel() {
    let dir = RuntimeDir::new();
    let server = dir.node("rs-server");
    serve_demo(&server);
    server.start().unwrap();
    let node = dir.node("rs-client");
    let c = node.connect("rs.demo", "^1").unwrap();
    let items: Vec<Value> =
        c.stream("count_to", &5u32.to_le_bytes(), CT_RAW, T).unwrap().map(|p| cbor::decode(p.unwrap().data()).unwrap()).collect();
    assert_eq!(items, (0..5u64).map(Value::from).collect::<Vec<_>>());

    let mut s = c.stream("count_to", &13u32.to_le_bytes(), CT_RAW, T).unwrap();
    let mut n = 0;
    let err = loop {
        match s.next() {
            Some(Ok(_)) => n += 1,
            Some(Err(e)) => break e,
            None => panic!("stream ended without its error"),
        }
    };
    assert_eq!(n, 13);
    assert_eq!((err.code(), err.message()), (Code::OutOfRange, "unlucky"));
    assert!(s.next().is_none(), "nothing after the error");

    // cancel after one item of a long stream: the handler sees CANCELLED from send and stops
    let mut s = c.stream("count_to", &1_000_000u32.to_le_bytes(), CT_RAW, T).unwrap();
    assert!(s.next().unwrap().is_ok());
    s.cancel();
    drop(s);
    assert_eq!(c.call("echo", b"after", CT_RAW, T).unwrap().data(), b"after");
}

#[test]
fn one_client_many_threads() {
    let dir = RuntimeDir::new();
    let server = dir.node("rs-server");
    serve_demo(&server);
    server.start().unwrap();
    let node = dir.node("rs-client");
    let c = node.connect("rs.demo", "^1").unwrap();
    let echo = c.function_id("echo").unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let c = &c;
            s.spawn(move || {
                for i in 0..200u32 {
                    let msg = [t, (i % 251) as u8, 7];
                    assert_eq!(c.call_id(echo, &msg, CT_RAW, T).unwrap().data(), msg);
                }
            });
        }
    });
    let n = c.call("count", b"", CT_RAW, T).unwrap();
    assert_eq!(n.data(), 1u32.to_le_bytes());
}

#[test]
fn serve_on_this_thread_until_stopped() {
    let dir = RuntimeDir::new();
    let server = dir.node("rs-server");
    serve_demo(&server);
    let client_node = dir.node("rs-client");
    std::thread::scope(|s| {
        let srv = &server;
        s.spawn(move || srv.serve(None).unwrap());
        let c = client_node.connect("rs.demo", "^1").unwrap();
        assert_eq!(c.call("echo", b"x", CT_RAW, T).unwrap().data(), b"x");
        // a second serving thread is refused by the core
        let e = server.serve(Some(Duration::from_millis(10))).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        server.stop();
    });
    // serve with a timeout returns Ok after the timeout. On a fresh node: after a stop() that races
    // with the serving loop's exit, the core can leave a stale wake-up in its stop eventfd that makes
    // the node's next serve() return at once (hms_node_stop sets stop_requested before writing
    // stop_fd; hms_node_serve may see the flag, drain the still-empty fd and clear the flag in
    // between). Reported to the lead; seen about 1 run in 30 here.
    let fresh = dir.node("rs-fresh");
    let t0 = Instant::now();
    fresh.serve(Some(Duration::from_millis(30))).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(25), "{:?}", t0.elapsed());
    server.serve(Some(Duration::from_millis(1))).unwrap();
}

#[test]
fn publish_and_subscribe() {
    let dir = RuntimeDir::new();
    let node = dir.node("rs-pubsub");
    let sub = node.subscribe("orders.*").unwrap();
    let exact = node.subscribe("orders.created").unwrap();
    let publisher = node.publisher("orders.created").unwrap();
    assert_eq!(publisher.topic(), "orders.created");
    // the subscriptions connect to the new publisher through the directory watch
    let t0 = Instant::now();
    while publisher.subscriber_count() < 2 {
        let _ = sub.recv(Some(Duration::from_millis(10))).unwrap();
        let _ = exact.recv(Some(Duration::from_millis(10))).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "subscribers never connected");
    }
    let mut seqs = Vec::new();
    for i in 0..10u64 {
        seqs.push(publisher.publish(&cbor::encode(&Value::from(i)), CT_CBOR).unwrap());
    }
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    assert_eq!(publisher.last_seq(), 10);
    for s in [&sub, &exact] {
        for i in 0..10u64 {
            let m = s.recv(T).unwrap().expect("a message");
            assert_eq!(m.topic(), "orders.created");
            assert_eq!(m.seq(), i + 1);
            assert_eq!(m.missed(), 0);
            assert_eq!(m.publisher_pid(), std::process::id() as i32);
            assert_eq!(cbor::decode(m.data()).unwrap(), Value::from(i));
            assert_eq!(m.content_type(), CT_CBOR);
        }
        assert!(s.recv(Some(Duration::ZERO)).unwrap().is_none(), "nothing more");
    }
    // too large a message is refused with RESOURCE_EXHAUSTED
    let big = vec![0u8; publisher.max_message() + 1];
    assert_eq!(publisher.publish(&big, CT_RAW).unwrap_err().code(), Code::ResourceExhausted);
    // interrupt from another thread wakes a blocked recv with CANCELLED
    std::thread::scope(|s| {
        let h = s.spawn(|| sub.recv(None));
        std::thread::sleep(Duration::from_millis(50));
        sub.interrupt();
        assert_eq!(h.join().unwrap().unwrap_err().code(), Code::Cancelled);
    });
    // the publisher goes away: the exact subscription sees UNAVAILABLE
    drop(publisher);
    let e = exact.recv(T).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
}

#[test]
fn handles_are_send_and_sync_where_the_header_allows() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Node>();
    send_sync::<hms_ffi::Client<'static>>();
    send_sync::<hms_ffi::Publisher<'static>>();
    send_sync::<hms_ffi::Subscription<'static>>();
    send_sync::<hms_ffi::Payload>();
    send_sync::<hms_ffi::Message>();
    send::<hms_ffi::Stream<'static>>();
}

#[test]
fn one_way_calls_reach_a_batch_handler_in_order_with_normal_calls() {
    use std::sync::atomic::AtomicU64;
    let dir = RuntimeDir::new();
    let server = dir.node("rs-server");
    let svc = server.service("rs.sink", "1.0.0").unwrap();
    let (sum, items, runs) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let s2 = sum.clone();
    let i2 = items.clone();
    svc.function("sink", move |call| {
        // a normal call reports what the batches delivered before it
        call.reply(&[s2.load(Ordering::SeqCst).to_le_bytes(), i2.load(Ordering::SeqCst).to_le_bytes()].concat(), CT_RAW)
    })
    .unwrap();
    let (s3, i3, r3) = (sum.clone(), items.clone(), runs.clone());
    svc.batch_handler("sink", move |batch| {
        r3.fetch_add(1, Ordering::SeqCst);
        assert!(!batch.is_empty());
        assert_eq!(batch.peer().0, std::process::id() as i32);
        for (i, item) in batch.items().enumerate() {
            assert_eq!(batch.content_type(i), CT_RAW);
            s3.fetch_add(u64::from_le_bytes(item.try_into().unwrap()), Ordering::SeqCst);
            i3.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    assert_eq!(svc.batch_handler("absent", |_| {}).unwrap_err().code(), Code::NotFound);
    server.start().unwrap();
    let node = dir.node("rs-client");
    let c = node.connect("rs.sink", "^1").unwrap();
    let id = c.function_id("sink").unwrap();
    for i in 1..=2000u64 {
        c.send_oneway(id, &i.to_le_bytes(), CT_RAW).unwrap();
    }
    let r = c.call_id(id, b"", CT_RAW, T).unwrap();
    let got_sum = u64::from_le_bytes(r.data()[..8].try_into().unwrap());
    let got_items = u64::from_le_bytes(r.data()[8..].try_into().unwrap());
    assert_eq!((got_items, got_sum), (2000, 2000 * 2001 / 2));
    assert!(runs.load(Ordering::SeqCst) >= 1);
}
