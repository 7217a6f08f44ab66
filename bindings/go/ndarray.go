package hms

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// NDArrayData is an HMS_CT_NDARRAY payload (a numpy array sent by Python, layout in hms_ffi.h's arena
// section) read IN PLACE: the header is copied out and checked (magic, sizes, dtype, and that every
// element the shape and strides reach lies inside the data), the data is a view of the payload's
// memory. Lifetime as ArrowData: it holds its own reference to the payload; Release gives it back.
type NDArrayData struct {
	Dtype    string  // numpy array-interface type string: "<f8", "|u1", "<i4", ...
	Shape    []int64 // elements per dimension
	Strides  []int64 // bytes per step in each dimension (may be negative or 0)
	ItemSize int     // bytes per element (from Dtype)

	mu       sync.RWMutex
	held     *HeldPayload
	data     []byte // the data region [H, H + data bytes)
	base     int64  // byte offset of element [0, 0, ...] within data (negative strides move it)
	released bool
}

const ndHeaderFixed = 40

// DecodeNDArray decodes an HMS_CT_NDARRAY payload without copying its data (same ownership rules
// as DecodeArrow: zero copy for an FnInPlace request or a HeldPayload's Payload(), one copy of a Go
// payload). Errors wrap ErrInvalidArgument for a malformed header.
func DecodeNDArray(p Payload) (*NDArrayData, error) {
	if p.Type != NDArray && p.Type != None && p.Type != Raw {
		return nil, Errorf(InvalidArgument, "DecodeNDArray: the payload's content type is %d, not NDArray (%d)", p.Type, NDArray)
	}
	if len(p.Data) < ndHeaderFixed {
		return nil, Errorf(InvalidArgument, "DecodeNDArray: %d bytes cannot hold an ndarray header (at least %d)", len(p.Data), ndHeaderFixed)
	}
	h, err := retain(p)
	if err != nil {
		return nil, err
	}
	a, err := parseNDArray(h.data)
	if err != nil {
		h.unref()
		return nil, err
	}
	a.held = h
	return a, nil
}

func parseNDArray(b []byte) (*NDArrayData, error) {
	bad := func(format string, args ...any) (*NDArrayData, error) {
		return nil, Errorf(InvalidArgument, "DecodeNDArray: "+format, args...)
	}
	// Copy the header out once: the payload may be shared memory its writer still changes.
	var fixed [ndHeaderFixed]byte
	copy(fixed[:], b)
	if string(fixed[0:4]) != "HMND" {
		return bad("bad magic %q (want \"HMND\")", fixed[0:4])
	}
	hdr := int(binary.LittleEndian.Uint16(fixed[4:]))
	ndim := int(binary.LittleEndian.Uint16(fixed[6:]))
	if ndim > 32 {
		return bad("ndim %d is more than 32", ndim)
	}
	if hdr%64 != 0 || hdr < ndHeaderFixed+16*ndim || hdr > len(b) {
		return bad("header size %d is not a multiple of 64 in [%d, %d]", hdr, ndHeaderFixed+16*ndim, len(b))
	}
	dt := fixed[8:24]
	if i := strings.IndexByte(string(dt), 0); i >= 0 {
		for _, c := range dt[i:] {
			if c != 0 {
				return bad("dtype %q is not NUL-padded", dt)
			}
		}
		dt = dt[:i]
	}
	dtype := string(dt)
	itemsize, err := dtypeItemSize(dtype)
	if err != nil {
		return bad("%v", err)
	}
	dataOff := binary.LittleEndian.Uint64(fixed[24:])
	dataLen := binary.LittleEndian.Uint64(fixed[32:])
	if dataOff != uint64(hdr) {
		return bad("data offset %d is not the header size %d", dataOff, hdr)
	}
	if dataLen > uint64(len(b)-hdr) {
		return bad("%d data bytes do not fit the %d bytes after the header", dataLen, len(b)-hdr)
	}
	dims := make([]byte, 16*ndim)
	copy(dims, b[ndHeaderFixed:])
	a := &NDArrayData{Dtype: dtype, ItemSize: itemsize, Shape: make([]int64, ndim), Strides: make([]int64, ndim)}
	// Every element must lie inside the data: lowest and highest byte any index reaches.
	var lo, hi int64 // offsets of the first byte of the lowest/highest element from element [0,...]
	empty := false
	count := uint64(1)
	for i := 0; i < ndim; i++ {
		n := int64(binary.LittleEndian.Uint64(dims[8*i:]))
		s := int64(binary.LittleEndian.Uint64(dims[8*(ndim+i):]))
		if n < 0 {
			return bad("dimension %d has negative size %d", i, n)
		}
		a.Shape[i], a.Strides[i] = n, s
		if n == 0 {
			empty = true
			continue
		}
		over, prod := bits.Mul64(count, uint64(n))
		if over != 0 || prod > 1<<62 {
			return bad("shape %v overflows", a.Shape[:i+1])
		}
		count = prod
		if s > 1<<40 || s < -(1<<40) || n > 1<<48 {
			return bad("dimension %d: size %d with stride %d is out of range", i, n, s)
		}
		step := s * (n - 1) // |s| <= 2^40, n <= 2^48: may overflow int64 -> checked below
		if n > 1 && step/(n-1) != s {
			return bad("dimension %d: size %d with stride %d overflows", i, n, s)
		}
		if s >= 0 {
			if hi > (1<<62)-step {
				return bad("strides reach past 2^62 bytes")
			}
			hi += step
		} else {
			if lo < -(1<<62)-step {
				return bad("strides reach past -2^62 bytes")
			}
			lo += step
		}
	}
	if !empty {
		// Element [0,...] sits at -lo from the data start; the highest element ends at -lo + hi + itemsize.
		if uint64(hi-lo)+uint64(itemsize) > dataLen {
			return bad("shape %v with strides %v and itemsize %d reaches %d bytes, the data has %d",
				a.Shape, a.Strides, itemsize, hi-lo+int64(itemsize), dataLen)
		}
		a.base = -lo
	}
	a.data = b[hdr : hdr+int(dataLen)]
	return a, nil
}

// dtypeItemSize reads the item size of a numpy type string: byte order, kind, size ("<f8", "|u1",
// "<M8[ns]", "|S5", "<U3" = 3 UCS-4 characters).
func dtypeItemSize(dt string) (int, error) {
	if len(dt) < 3 || strings.IndexByte("<>|=", dt[0]) < 0 {
		return 0, Errorf(InvalidArgument, "dtype %q is not a numpy type string", dt)
	}
	if dt[1] == 'O' {
		return 0, Errorf(InvalidArgument, "dtype %q (Python objects) cannot cross processes", dt)
	}
	digits := dt[2:]
	if i := strings.IndexByte(digits, '['); i >= 0 {
		digits = digits[:i]
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n <= 0 || n > 1<<20 {
		return 0, Errorf(InvalidArgument, "dtype %q has no valid item size", dt)
	}
	if dt[1] == 'U' {
		n *= 4
	}
	return n, nil
}

// Len is the number of elements (the product of Shape).
func (a *NDArrayData) Len() int64 {
	n := int64(1)
	for _, d := range a.Shape {
		n *= d
	}
	return n
}

// CContiguous reports row-major data with no gaps (what Python always sends).
func (a *NDArrayData) CContiguous() bool {
	want := int64(a.ItemSize)
	for i := len(a.Shape) - 1; i >= 0; i-- {
		if a.Shape[i] == 0 {
			return true
		}
		if a.Shape[i] != 1 && a.Strides[i] != want {
			return false
		}
		want *= a.Shape[i]
	}
	return true
}

// Data is the data region (read-only, in place; with its strides): valid until Release.
func (a *NDArrayData) Data() []byte {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.data
}

// Held is the payload the array lives in. Valid until Release.
func (a *NDArrayData) Held() *HeldPayload { return a.held }

// Release drops the payload reference. Idempotent; slices obtained before are invalid afterwards.
func (a *NDArrayData) Release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.released {
		return
	}
	a.released = true
	a.data = nil
	a.held.unref()
}

func ndDtypeOf[T ArrowPrimitive]() string {
	var z T
	switch any(z).(type) {
	case int8:
		return "i1"
	case uint8:
		return "u1"
	case int16:
		return "i2"
	case uint16:
		return "u2"
	case int32:
		return "i4"
	case uint32:
		return "u4"
	case int64:
		return "i8"
	case uint64:
		return "u8"
	case float32:
		return "f4"
	default:
		return "f8"
	}
}

// NDArrayValues returns the elements of a C-contiguous array of a little-endian (or, for one byte,
// order-less) dtype matching T, in row-major order, as a slice over the payload's memory (no copy;
// read-only; valid until Release). Other layouts: read Data() with Strides.
func NDArrayValues[T ArrowPrimitive](a *NDArrayData) ([]T, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.released {
		return nil, &Error{Code: FailedPrecondition, Message: "the NDArray was released"}
	}
	want := ndDtypeOf[T]()
	order := a.Dtype[0]
	if a.Dtype[1:] != want || !(order == '<' || order == '=' || (order == '|' && len(want) == 2 && want[1] == '1')) {
		var z T
		return nil, Errorf(InvalidArgument, "the array's dtype is %q; %T needs \"<%s\"", a.Dtype, z, want)
	}
	if !a.CContiguous() {
		return nil, Errorf(FailedPrecondition, "the array (shape %v, strides %v) is not C-contiguous: read Data() with its strides",
			a.Shape, a.Strides)
	}
	n := a.Len()
	if n == 0 {
		return []T{}, nil
	}
	p := unsafe.Pointer(&a.data[a.base])
	if uintptr(p)%uintptr(a.ItemSize) != 0 {
		return nil, Errorf(InvalidArgument, "the array's data is not %d-byte aligned", a.ItemSize)
	}
	return unsafe.Slice((*T)(p), int(n)), nil
}

// Float64s is NDArrayValues[float64]: a C-contiguous "<f8" array in place.
func (a *NDArrayData) Float64s() ([]float64, error) { return NDArrayValues[float64](a) }
