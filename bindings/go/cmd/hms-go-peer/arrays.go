package main

// Functions that read Arrow tables and numpy arrays in place (FnInPlace + DecodeArrow/DecodeNDArray)
// and report where the data lay, so the test driver can check that nothing was copied.

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	hms "github.com/hms-ffi/hms-ffi-native/bindings/go"
)

// mappingOf returns "PERMS PATH" of the /proc/self/maps line holding addr ("" when none does).
func mappingOf(addr uintptr) string {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || uint64(addr) < a || uint64(addr) >= b {
			continue
		}
		path := ""
		if len(fields) >= 6 {
			path = strings.Join(fields[5:], " ")
		}
		return fields[1] + " " + path
	}
	return ""
}

func addrOf(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// arrowReport sums every float64 column of a (all batches) and counts the nulls of every primitive
// float64/int64 column, with the addresses of the value buffers read.
func arrowReport(a *hms.ArrowData) (hms.Map, error) {
	cols := hms.Map{}
	var buffers []any
	for ci, f := range a.Fields() {
		switch f.Format {
		case "g":
			sum, nulls := 0.0, 0
			for b := 0; b < a.NumBatches(); b++ {
				vals, valid, err := hms.ArrowValues[float64](a, b, ci)
				if err != nil {
					return nil, err
				}
				for i, v := range vals {
					if valid.IsValid(i) {
						sum += v
					}
				}
				nulls += valid.NullCount()
				if len(vals) > 0 {
					buffers = append(buffers, uint64(uintptr(unsafe.Pointer(&vals[0]))))
				}
			}
			cols = append(cols, hms.MapEntry{Key: f.Name, Value: hms.Map{{Key: "sum", Value: sum}, {Key: "nulls", Value: uint64(nulls)}}})
		case "l":
			var sum int64
			nulls := 0
			for b := 0; b < a.NumBatches(); b++ {
				vals, valid, err := hms.ArrowValues[int64](a, b, ci)
				if err != nil {
					return nil, err
				}
				for i, v := range vals {
					if valid.IsValid(i) {
						sum += v
					}
				}
				nulls += valid.NullCount()
			}
			cols = append(cols, hms.MapEntry{Key: f.Name, Value: hms.Map{{Key: "sum", Value: sum}, {Key: "nulls", Value: uint64(nulls)}}})
		}
	}
	held := a.Held()
	return hms.Map{
		{Key: "kind", Value: a.Kind().String()},
		{Key: "rows", Value: a.NumRows()},
		{Key: "batches", Value: uint64(a.NumBatches())},
		{Key: "columns", Value: cols},
		{Key: "buffers", Value: buffers},
		{Key: "held_addr", Value: addrOf(held.Data())},
		{Key: "held_len", Value: uint64(len(held.Data()))},
		{Key: "zero_copy", Value: held.ZeroCopy()},
		{Key: "mapping", Value: mappingOf(uintptr(addrOf(held.Data())))},
	}, nil
}

// arrowSum: the request is Arrow data (a pyarrow Table...), read in place.
func arrowSum(_ *hms.Call, req hms.Payload) (hms.Payload, error) {
	a, err := hms.DecodeArrow(req)
	if err != nil {
		return hms.Payload{}, err
	}
	defer a.Release()
	rep, err := arrowReport(a)
	if err != nil {
		return hms.Payload{}, err
	}
	rep = append(rep, hms.MapEntry{Key: "req_addr", Value: addrOf(req.Data)}, hms.MapEntry{Key: "req_len", Value: uint64(len(req.Data))})
	return hms.CBORPayload(rep)
}

var (
	keptMu sync.Mutex
	kept   *hms.ArrowData
)

// arrowKeep decodes the request and keeps it past the handler (the ArrowData holds the block);
// arrowKept reports on it later and releases it.
func arrowKeep(_ *hms.Call, req hms.Payload) (hms.Payload, error) {
	a, err := hms.DecodeArrow(req)
	if err != nil {
		return hms.Payload{}, err
	}
	keptMu.Lock()
	defer keptMu.Unlock()
	if kept != nil {
		kept.Release()
	}
	kept = a
	return hms.CBORPayload(uint64(a.NumRows()))
}

func arrowKept(_ *hms.Call, _ hms.Payload) (hms.Payload, error) {
	keptMu.Lock()
	defer keptMu.Unlock()
	if kept == nil {
		return hms.Payload{}, hms.Errorf(hms.FailedPrecondition, "arrow_keep was not called")
	}
	rep, err := arrowReport(kept)
	kept.Release()
	kept = nil
	if err != nil {
		return hms.Payload{}, err
	}
	return hms.CBORPayload(rep)
}

// ndarraySum: the request is a numpy array (HMS_CT_NDARRAY), read in place.
func ndarraySum(_ *hms.Call, req hms.Payload) (hms.Payload, error) {
	a, err := hms.DecodeNDArray(req)
	if err != nil {
		return hms.Payload{}, err
	}
	defer a.Release()
	vals, err := a.Float64s()
	if err != nil {
		return hms.Payload{}, err
	}
	sum := 0.0
	for _, v := range vals {
		sum += v
	}
	shape := make([]any, len(a.Shape))
	for i, d := range a.Shape {
		shape[i] = d
	}
	held := a.Held()
	var dataAddr uint64
	if len(vals) > 0 {
		dataAddr = uint64(uintptr(unsafe.Pointer(&vals[0])))
	}
	return hms.CBORPayload(hms.Map{
		{Key: "sum", Value: sum},
		{Key: "shape", Value: shape},
		{Key: "dtype", Value: a.Dtype},
		{Key: "data_addr", Value: dataAddr},
		{Key: "req_addr", Value: addrOf(req.Data)},
		{Key: "req_len", Value: uint64(len(req.Data))},
		{Key: "held_addr", Value: addrOf(held.Data())},
		{Key: "held_len", Value: uint64(len(held.Data()))},
		{Key: "zero_copy", Value: held.ZeroCopy()},
		{Key: "mapping", Value: mappingOf(uintptr(dataAddr))},
	})
}

// arrowMake answers with a record batch built in Go: x = 0..n-1 (float64), y = i*2 (int64) with
// every third row null — Go-produced Arrow data for a Python caller.
func arrowMake(_ *hms.Call, req hms.Payload) (hms.Payload, error) {
	v, err := hms.DecodeCBOR(req.Data)
	n, ok := v.(uint64)
	if err != nil || !ok || n > 1<<24 {
		return hms.Payload{}, hms.Errorf(hms.InvalidArgument, "arrow_make wants a CBOR row count <= 2^24, got %v", v)
	}
	x := make([]float64, n)
	y := make([]int64, n)
	valid := make([]byte, (n+7)/8)
	for i := range x {
		x[i] = float64(i)
		y[i] = int64(i) * 2
		if i%3 != 0 {
			valid[i/8] |= 1 << (i % 8)
		}
	}
	b, err := hms.EncodeArrowRecordBatch([]hms.ArrowColumn{{Name: "x", Values: x}, {Name: "y", Values: y, Validity: valid}})
	if err != nil {
		return hms.Payload{}, fmt.Errorf("arrow_make: %w", err)
	}
	return hms.Payload{Data: b, Type: hms.Arrow}, nil
}
