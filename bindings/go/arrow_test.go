package hms

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// testBatch encodes x (float64, no nulls), y (float64, every 7th row null) and z (int64).
func testBatch(t testing.TB, n int) (raw []byte, x, y []float64, z []int64, valid []byte) {
	t.Helper()
	x, y, z = make([]float64, n), make([]float64, n), make([]int64, n)
	valid = make([]byte, (n+7)/8)
	for i := 0; i < n; i++ {
		x[i] = float64(i) * 0.5
		y[i] = float64(i)
		z[i] = int64(i) - 3
		if i%7 != 0 {
			valid[i/8] |= 1 << (i % 8)
		}
	}
	raw, err := EncodeArrowRecordBatch([]ArrowColumn{{Name: "x", Values: x}, {Name: "y", Values: y, Validity: valid},
		{Name: "z", Values: z}})
	if err != nil {
		t.Fatal(err)
	}
	return raw, x, y, z, valid
}

func TestArrowDecodeEncoded(t *testing.T) {
	raw, x, y, z, _ := testBatch(t, 1000)
	a, err := DecodeArrow(Payload{Data: raw, Type: Arrow})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if a.Kind() != ArrowRecordBatch || a.NumBatches() != 1 || a.NumRows() != 1000 {
		t.Fatalf("kind %v batches %d rows %d", a.Kind(), a.NumBatches(), a.NumRows())
	}
	f := a.Fields()
	if len(f) != 3 || f[0].Name != "x" || f[0].Format != "g" || f[1].Name != "y" || f[2].Format != "l" || !f[1].Nullable {
		t.Fatalf("fields %+v", f)
	}
	if a.ColumnIndex("z") != 2 || a.ColumnIndex("nope") != -1 {
		t.Fatal("ColumnIndex")
	}
	xs, xv, err := a.Float64Column(0)
	if err != nil || len(xs) != 1000 || !xv.AllValid() || xv.NullCount() != 0 {
		t.Fatalf("x: %d values, %v", len(xs), err)
	}
	for i := range xs {
		if xs[i] != x[i] {
			t.Fatalf("x[%d] = %v, want %v", i, xs[i], x[i])
		}
	}
	// In place: the values lie inside the decoded payload (a C copy of raw: it was Go memory).
	held := a.Held().Data()
	lo, hi := uintptr(unsafe.Pointer(&held[0])), uintptr(unsafe.Pointer(&held[0]))+uintptr(len(held))
	if p := uintptr(unsafe.Pointer(&xs[0])); p < lo || p+8000 > hi {
		t.Fatalf("x values at %#x are outside the payload [%#x, %#x)", p, lo, hi)
	}
	ys, yv, err := a.Float64Column(1)
	if err != nil || yv.AllValid() || yv.Len() != 1000 || yv.NullCount() != 143 {
		t.Fatalf("y: nulls %d, %v", yv.NullCount(), err)
	}
	for i := range ys {
		if yv.IsValid(i) != (i%7 != 0) || (yv.IsValid(i) && ys[i] != y[i]) {
			t.Fatalf("y[%d]: valid %v value %v", i, yv.IsValid(i), ys[i])
		}
	}
	zs, _, err := a.Int64Column(2)
	if err != nil || zs[999] != z[999] || zs[0] != -3 {
		t.Fatalf("z: %v", err)
	}
	// Wrong types and indices are errors, never a misread.
	if _, _, err := a.Int64Column(0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("int64 over a float64 column: %v", err)
	}
	if _, _, err := ArrowValues[float32](a, 0, 0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("float32 over a float64 column: %v", err)
	}
	if _, _, err := ArrowValues[float64](a, 1, 0); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("batch 1: %v", err)
	}
	if _, _, err := a.Float64Column(3); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("column 3: %v", err)
	}
	a.Release()
	a.Release() // idempotent
	if _, _, err := a.Float64Column(0); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("after Release: %v", err)
	}
}

func TestArrowEncodeErrors(t *testing.T) {
	if _, err := EncodeArrowRecordBatch([]ArrowColumn{{Name: "s", Values: []string{"a"}}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("strings: %v", err)
	}
	if _, err := EncodeArrowRecordBatch([]ArrowColumn{{Name: "a", Values: []float64{1, 2}}, {Name: "b", Values: []int64{1}}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ragged: %v", err)
	}
	if _, err := EncodeArrowRecordBatch([]ArrowColumn{{Name: "a", Values: make([]float64, 20), Validity: []byte{1}}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("short validity: %v", err)
	}
	raw, err := EncodeArrowRecordBatch([]ArrowColumn{{Name: "empty", Values: []float64{}}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := DecodeArrow(Payload{Data: raw, Type: Arrow})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if v, _, err := a.Float64Column(0); err != nil || len(v) != 0 {
		t.Fatalf("empty column: %v %v", v, err)
	}
}

// Bogus layouts: every single-byte corruption of the metadata, truncations and noise decode to a
// clean INVALID_ARGUMENT (or, for bytes the decoder does not depend on, still-safe data) — never a
// crash. Whatever decodes is read completely.
func TestArrowBogusLayouts(t *testing.T) {
	raw, _, _, _, _ := testBatch(t, 300)
	try := func(what string, b []byte) {
		a, err := DecodeArrow(Payload{Data: b, Type: Arrow})
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("%s: %v is not INVALID_ARGUMENT", what, err)
			}
			return
		}
		for b := 0; b < a.NumBatches(); b++ {
			for c := range a.Fields() {
				if v, bm, err := ArrowValues[float64](a, b, c); err == nil {
					s := 0.0
					for i := range v {
						if bm.IsValid(i) {
							s += v[i]
						}
					}
					_ = bm.NullCount()
				}
				_, _, _ = ArrowValues[int64](a, b, c)
			}
		}
		a.Release()
	}
	meta := int(binary.LittleEndian.Uint64(raw[24:])) // meta_end
	for i := 0; i < meta; i++ {
		for _, x := range []byte{0xff, 0x01, 0x80} {
			b := append([]byte(nil), raw...)
			b[i] ^= x
			try("flip", b)
		}
	}
	for _, n := range []int{0, 8, 63, 64, meta - 1, meta, len(raw) - 1} {
		try("truncated", raw[:n])
	}
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 200; i++ {
		b := make([]byte, 64+rng.Intn(4096))
		rng.Read(b)
		if i%2 == 0 {
			copy(b, raw[:16]) // a valid magic and version, garbage after
		}
		try("noise", b)
	}
	if _, err := DecodeArrow(Payload{Data: raw, Type: CBOR}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("CBOR content type: %v", err)
	}
}

// ndHeader writes the HMS_CT_NDARRAY layout documented in hms_ffi.h.
func ndHeader(dtype string, shape, strides []int64, data []byte) []byte {
	h := 64 * ((40 + 16*len(shape) + 63) / 64)
	b := make([]byte, h+len(data))
	copy(b, "HMND")
	binary.LittleEndian.PutUint16(b[4:], uint16(h))
	binary.LittleEndian.PutUint16(b[6:], uint16(len(shape)))
	copy(b[8:24], dtype)
	binary.LittleEndian.PutUint64(b[24:], uint64(h))
	binary.LittleEndian.PutUint64(b[32:], uint64(len(data)))
	for i := range shape {
		binary.LittleEndian.PutUint64(b[40+8*i:], uint64(shape[i]))
		binary.LittleEndian.PutUint64(b[40+8*(len(shape)+i):], uint64(strides[i]))
	}
	copy(b[h:], data)
	return b
}

func f64bytes(v []float64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64FromFloat(x))
	}
	return b
}

func uint64FromFloat(f float64) uint64 { return *(*uint64)(unsafe.Pointer(&f)) }

func TestNDArrayDecode(t *testing.T) {
	vals := []float64{1, 2, 3, 4, 5, 6}
	a, err := DecodeNDArray(Payload{Data: ndHeader("<f8", []int64{2, 3}, []int64{24, 8}, f64bytes(vals)), Type: NDArray})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Float64s()
	if err != nil || len(got) != 6 || got[5] != 6 || a.Len() != 6 || !a.CContiguous() || a.Dtype != "<f8" {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := NDArrayValues[int64](a); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("int64 over <f8: %v", err)
	}
	a.Release()
	a.Release()
	if _, err := a.Float64s(); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("after Release: %v", err)
	}
	// Transposed (valid, not contiguous): decodes, typed access refused, Data() + Strides usable.
	tr, err := DecodeNDArray(Payload{Data: ndHeader("<f8", []int64{3, 2}, []int64{8, 24}, f64bytes(vals)), Type: NDArray})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Float64s(); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("transposed: %v", err)
	}
	tr.Release()
	// Negative strides inside the data are valid.
	rv, err := DecodeNDArray(Payload{Data: ndHeader("<f8", []int64{6}, []int64{-8}, f64bytes(vals)), Type: NDArray})
	if err != nil {
		t.Fatal(err)
	}
	rv.Release()
	// uint8 with no byte order, an empty array.
	u, err := DecodeNDArray(Payload{Data: ndHeader("|u1", []int64{4}, []int64{1}, []byte{1, 2, 3, 4}), Type: NDArray})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := NDArrayValues[uint8](u); err != nil || b[3] != 4 {
		t.Fatalf("u1: %v %v", b, err)
	}
	u.Release()
	e, err := DecodeNDArray(Payload{Data: ndHeader("<f8", []int64{0, 5}, []int64{40, 8}, nil), Type: NDArray})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := e.Float64s(); err != nil || len(v) != 0 {
		t.Fatalf("empty: %v %v", v, err)
	}
	e.Release()

	good := ndHeader("<f8", []int64{2, 3}, []int64{24, 8}, f64bytes(vals))
	bad := map[string][]byte{
		"magic":       append([]byte("XMND"), good[4:]...),
		"short":       good[:39],
		"strides out": ndHeader("<f8", []int64{2, 3}, []int64{32, 8}, f64bytes(vals)),
		"neg out":     ndHeader("<f8", []int64{6}, []int64{8}, f64bytes(vals[:5])),
		"neg stride":  ndHeader("<f8", []int64{7}, []int64{-8}, f64bytes(vals)),
		"shape<0":     ndHeader("<f8", []int64{-1}, []int64{8}, f64bytes(vals)),
		"objects":     ndHeader("|O8", []int64{1}, []int64{8}, f64bytes(vals[:1])),
		"dtype":       ndHeader("f8", []int64{1}, []int64{8}, f64bytes(vals[:1])),
		"huge shape":  ndHeader("<f8", []int64{1 << 40, 1 << 40}, []int64{8, 8}, f64bytes(vals)),
		"huge stride": ndHeader("<f8", []int64{2}, []int64{1 << 62}, f64bytes(vals)),
		"ndim 33":     func() []byte { b := append([]byte(nil), good...); binary.LittleEndian.PutUint16(b[6:], 33); return b }(),
		"hdr not 64":  func() []byte { b := append([]byte(nil), good...); binary.LittleEndian.PutUint16(b[4:], 40); return b }(),
		"data offset": func() []byte { b := append([]byte(nil), good...); binary.LittleEndian.PutUint64(b[24:], 0); return b }(),
		"data too big": func() []byte {
			b := append([]byte(nil), good...)
			binary.LittleEndian.PutUint64(b[32:], 1<<40)
			return b
		}(),
	}
	for name, b := range bad {
		if a, err := DecodeNDArray(Payload{Data: b, Type: NDArray}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v is not INVALID_ARGUMENT", name, err)
			if a != nil {
				a.Release()
			}
		}
	}
	rng := rand.New(rand.NewSource(3))
	for i := 0; i < 2000; i++ { // random corruption of the header: an error or a safe array
		b := append([]byte(nil), good...)
		b[rng.Intn(64+16)] ^= byte(1 + rng.Intn(255))
		if a, err := DecodeNDArray(Payload{Data: b, Type: NDArray}); err == nil {
			d := a.Data()
			if v, err := a.Float64s(); err == nil && len(v) > 0 {
				lo, end := uintptr(unsafe.Pointer(&d[0])), uintptr(unsafe.Pointer(&d[0]))+uintptr(len(d))
				if p := uintptr(unsafe.Pointer(&v[len(v)-1])); p < lo || p+8 > end {
					t.Fatalf("corruption %d: the last element at %#x is outside the data [%#x, %#x)", i, p, lo, end)
				}
			}
			a.Release()
		} else if !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("corruption %d: %v", i, err)
		}
	}
}

// In place across a connection (Go -> Go): a request larger than max_inline arrives as an arena
// block, DecodeArrow keeps it (no copy) past the handler, and a request payload used after its
// handler returned is refused instead of read.
func TestArrowInPlaceGoToGo(t *testing.T) {
	dir := runtimeDir(t)
	node := openNode(t, dir, "arrow-server")
	svc, err := node.AddService("go.arrow", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var keptData *ArrowData
	var stale Payload
	var reqAddr, reqLen uintptr
	err = svc.Handle("keep", func(_ *Call, req Payload) (Payload, error) {
		a, err := DecodeArrow(req)
		if err != nil {
			return Payload{}, err
		}
		mu.Lock()
		defer mu.Unlock()
		keptData, stale = a, req
		reqAddr, reqLen = uintptr(unsafe.Pointer(&req.Data[0])), uintptr(len(req.Data))
		return Payload{}, nil
	}, FnInPlace)
	if err != nil {
		t.Fatal(err)
	}
	var untaken Payload
	err = svc.Handle("peek", func(_ *Call, req Payload) (Payload, error) {
		mu.Lock()
		defer mu.Unlock()
		untaken = req // a mistake: kept without DecodeArrow / TakeRequest
		return Payload{}, nil
	}, FnInPlace)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer node.Stop()
	cl, err := node.Connect(context.Background(), "go.arrow", "^1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 1 << 20 // 3 columns x 8 MiB: through the arena
	raw, x, _, _, _ := testBatch(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cl.Call(ctx, "keep", Payload{Data: raw, Type: Arrow}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	a := keptData
	defer a.Release()
	if !a.Held().ZeroCopy() {
		t.Fatal("a request of 24 MiB did not arrive as an arena block")
	}
	xs, _, err := a.Float64Column(0)
	if err != nil {
		t.Fatal(err)
	}
	p := uintptr(unsafe.Pointer(&xs[0]))
	if p < reqAddr || p+8*n > reqAddr+reqLen {
		t.Fatalf("column x at %#x is not inside the request [%#x, %#x): copied", p, reqAddr, reqAddr+reqLen)
	}
	for i := 0; i < n; i += 4099 {
		if xs[i] != x[i] {
			t.Fatalf("x[%d] = %v after the handler returned, want %v", i, xs[i], x[i])
		}
	}
	// The handler's req after it returned: decodable because DecodeArrow took it (shared block)...
	if s, err := DecodeArrow(stale); err != nil || &s.Held().Data()[0] != &a.Held().Data()[0] {
		t.Fatalf("taken in-place request after its handler: %v", err)
	} else {
		s.Release()
	}
	mu.Unlock()
	if _, err := cl.Call(ctx, "peek", Payload{Data: raw, Type: Arrow}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	// ... but one nobody took is refused, not read.
	if _, err := DecodeArrow(untaken); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("stale in-place request: %v", err)
	}
	// Another decode of the same kept payload shares the block (a second reference).
	b2, err := DecodeArrow(a.Held().Payload())
	if err != nil {
		t.Fatal(err)
	}
	if &b2.Held().Data()[0] != &a.Held().Data()[0] {
		t.Fatal("decoding a held payload again copied it")
	}
	b2.Release()
	if v, _, err := a.Float64Column(0); err != nil || v[n-1] != x[n-1] {
		t.Fatalf("after releasing the second decode: %v", err)
	}
}
