//! The in-place decoders against layouts made by hms_arrow_encode (encode_record_batch) and by hand
//! (the numpy header), and against corrupted ones: errors are InvalidArgument, never a crash.
use hms_ffi::{encode_record_batch, ndarray_f64, words_as_bytes, ArrowData, ArrowKind, Code, ColumnRef, NdArray};

fn batch(n: usize) -> (Vec<u64>, usize, Vec<f64>, Vec<f64>, Vec<i64>) {
    let x: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
    let y: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let z: Vec<i64> = (0..n as i64).map(|i| i - 3).collect();
    let mut valid = vec![0u8; n.div_ceil(8)];
    for i in (0..n).filter(|i| i % 7 != 0) {
        valid[i / 8] |= 1 << (i % 8);
    }
    let (w, len) = encode_record_batch(&[
        ("x", ColumnRef::F64(&x), None),
        ("y", ColumnRef::F64(&y), Some(&valid)),
        ("z", ColumnRef::I64(&z), None),
    ])
    .unwrap();
    (w, len, x, y, z)
}

#[test]
fn decodes_an_encoded_batch_in_place() {
    let (w, len, x, y, z) = batch(1000);
    let src = words_as_bytes(&w, len);
    let a = ArrowData::decode(src).unwrap();
    assert_eq!((a.kind(), a.num_batches(), a.num_rows()), (ArrowKind::RecordBatch, 1, 1000));
    let names: Vec<_> = a.fields().iter().map(|f| (f.name.as_str(), f.format.as_str())).collect();
    assert_eq!(names, [("x", "g"), ("y", "g"), ("z", "l")]);
    assert_eq!(a.column_index("z"), Some(2));
    let xs = a.float64_column(0).unwrap();
    assert_eq!(xs, &x[..]);
    let range = src.as_ptr_range();
    assert!(range.contains(&(xs.as_ptr() as *const u8)), "x is not inside the layout: copied");
    let (ys, valid) = a.values::<f64>(0, 1).unwrap();
    assert_eq!(valid.null_count(), 143);
    for i in 0..1000 {
        assert_eq!(valid.is_valid(i), i % 7 != 0);
        if valid.is_valid(i) {
            assert_eq!(ys[i], y[i]);
        }
    }
    assert!(a.validity(0).unwrap().all_valid());
    assert_eq!(a.int64_column(2).unwrap(), &z[..]);
    assert_eq!(a.int64_column(0).unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(a.values::<f32>(0, 0).unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(a.values::<f64>(1, 0).unwrap_err().code(), Code::OutOfRange);
    assert_eq!(a.float64_column(3).unwrap_err().code(), Code::OutOfRange);
}

#[test]
fn bogus_layouts_are_invalid_argument() {
    let (w, len, ..) = batch(300);
    let good = words_as_bytes(&w, len).to_vec();
    let meta = u64::from_ne_bytes(good[24..32].try_into().unwrap()) as usize;
    let check = |what: &str, b: &[u64], n: usize| match ArrowData::decode(words_as_bytes(b, n)) {
        Err(e) => assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e}"),
        Ok(a) => {
            for bi in 0..a.num_batches() {
                for c in 0..a.fields().len() {
                    if let Ok((v, valid)) = a.values::<f64>(bi, c) {
                        let _: f64 = v.iter().enumerate().filter(|(i, _)| valid.is_valid(*i)).map(|(_, x)| x).sum();
                    }
                    let _ = a.values::<i64>(bi, c);
                }
            }
        }
    };
    for i in 0..meta {
        for x in [0xffu8, 0x01, 0x80] {
            let mut bytes = good.clone();
            bytes[i] ^= x;
            check("flip", &words(&bytes), len);
        }
    }
    for n in [0, 8, 63, 64, meta - 1, meta, len - 1] {
        check("truncated", &w, n);
    }
    let mut seed = 12345u64;
    for i in 0..200 {
        let words = 8 + (i * 37) % 500;
        let mut b: Vec<u64> = (0..words)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            })
            .collect();
        if i % 2 == 0 {
            b[0] = w[0];
            b[1] = w[1];
        }
        check("noise", &b, words * 8);
    }
    // Misaligned: refused, not read.
    let mut shifted_bytes = vec![0u8; len + 1];
    shifted_bytes[1..].copy_from_slice(&good);
    let shifted = words(&shifted_bytes);
    let s = &words_as_bytes(&shifted, len + 1)[1..];
    assert_eq!(ArrowData::decode(s).unwrap_err().code(), Code::InvalidArgument);
}

/// Bytes -> an 8-byte aligned u64 buffer (zero-padded).
fn words(b: &[u8]) -> Vec<u64> {
    b.chunks(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a[..c.len()].copy_from_slice(c);
            u64::from_ne_bytes(a)
        })
        .collect()
}

/// The HMS_CT_NDARRAY layout of hms_ffi.h, in a u64 buffer (aligned like an arena block).
fn nd(dtype: &str, shape: &[i64], strides: &[i64], data: &[u8]) -> (Vec<u64>, usize) {
    let h = 64 * (40 + 16 * shape.len()).div_ceil(64);
    let mut b = vec![0u8; h + data.len()];
    b[..4].copy_from_slice(b"HMND");
    b[4..6].copy_from_slice(&(h as u16).to_le_bytes());
    b[6..8].copy_from_slice(&(shape.len() as u16).to_le_bytes());
    b[8..8 + dtype.len()].copy_from_slice(dtype.as_bytes());
    b[24..32].copy_from_slice(&(h as u64).to_le_bytes());
    b[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
    for i in 0..shape.len() {
        b[40 + 8 * i..48 + 8 * i].copy_from_slice(&shape[i].to_le_bytes());
        let at = 40 + 8 * (shape.len() + i);
        b[at..at + 8].copy_from_slice(&strides[i].to_le_bytes());
    }
    b[h..].copy_from_slice(data);
    let len = b.len();
    (words(&b), len)
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn ndarray_in_place_and_bogus_headers() {
    let vals = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let (w, n) = nd("<f8", &[2, 3], &[24, 8], &f64s(&vals));
    let src = words_as_bytes(&w, n);
    let (v, shape) = ndarray_f64(src).unwrap();
    assert_eq!((v, shape), (&vals[..], vec![2, 3]));
    assert!(src.as_ptr_range().contains(&(v.as_ptr() as *const u8)));
    let a = NdArray::decode(src).unwrap();
    assert_eq!(a.values::<i64>().unwrap_err().code(), Code::InvalidArgument);
    let (w, n) = nd("<f8", &[3, 2], &[8, 24], &f64s(&vals));
    assert_eq!(NdArray::decode(words_as_bytes(&w, n)).unwrap().values::<f64>().unwrap_err().code(), Code::FailedPrecondition);
    let (w, n) = nd("<f8", &[6], &[-8], &f64s(&vals));
    assert!(NdArray::decode(words_as_bytes(&w, n)).is_ok());
    let (w, n) = nd("|u1", &[4], &[1], &[1, 2, 3, 4]);
    assert_eq!(NdArray::decode(words_as_bytes(&w, n)).unwrap().values::<u8>().unwrap(), &[1, 2, 3, 4]);
    let (w, n) = nd("<f8", &[0, 5], &[40, 8], &[]);
    assert!(ndarray_f64(words_as_bytes(&w, n)).unwrap().0.is_empty());

    let bad: Vec<(&str, (Vec<u64>, usize))> = vec![
        ("strides out", nd("<f8", &[2, 3], &[32, 8], &f64s(&vals))),
        ("short data", nd("<f8", &[6], &[8], &f64s(&vals[..5]))),
        ("negative stride out", nd("<f8", &[7], &[-8], &f64s(&vals))),
        ("negative shape", nd("<f8", &[-1], &[8], &f64s(&vals))),
        ("objects", nd("|O8", &[1], &[8], &f64s(&vals[..1]))),
        ("no byte order", nd("f8", &[1], &[8], &f64s(&vals[..1]))),
        ("huge shape", nd("<f8", &[1 << 40, 1 << 40], &[8, 8], &f64s(&vals))),
        ("huge stride", nd("<f8", &[2], &[1 << 62], &f64s(&vals))),
        ("i64::MIN stride", nd("<f8", &[2], &[i64::MIN], &f64s(&vals))),
    ];
    for (what, (w, n)) in &bad {
        let e = NdArray::decode(words_as_bytes(w, *n)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e}");
    }
    let (good, n) = nd("<f8", &[2, 3], &[24, 8], &f64s(&vals));
    let mut seed = 99u64;
    for i in 0..2000 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut b: Vec<u8> = words_as_bytes(&good, n).to_vec();
        b[(seed >> 33) as usize % 80] ^= 1 + (seed >> 20) as u8 % 255;
        let w = words(&b);
        let src = words_as_bytes(&w, n);
        match NdArray::decode(src) {
            Ok(a) => {
                if let Ok(v) = a.values::<f64>() {
                    if let Some(last) = v.last() {
                        assert!(src.as_ptr_range().contains(&(last as *const f64 as *const u8)), "corruption {i}");
                    }
                }
            }
            Err(e) => assert_eq!(e.code(), Code::InvalidArgument, "corruption {i}: {e}"),
        }
    }
    for (what, bytes) in [("magic", b"XMND".as_slice()), ("short", &[0u8; 39][..])] {
        let mut b: Vec<u8> = words_as_bytes(&good, 64).to_vec();
        b[..bytes.len()].copy_from_slice(bytes);
        let w = words(&b);
        let len = if what == "short" { 39 } else { 64 };
        assert_eq!(NdArray::decode(words_as_bytes(&w, len)).unwrap_err().code(), Code::InvalidArgument, "{what}");
    }
}
