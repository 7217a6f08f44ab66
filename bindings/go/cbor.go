package hms

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"sort"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// The CBOR codec (content type CBOR), built on github.com/fxamacker/cbor/v2 and configured so that
// every value the other hms-ffi bindings produce decodes into Go values that encode back to the
// same bytes (tests/vectors/cbor.json):
//
//	CBOR                      Go (DecodeCBOR)                 encoded back as
//	unsigned / negative int   uint64 / int64 (*big.Int past int64; big.Int re-encodes as an int when it fits 64 bits)
//	float (any width)         float64                         always float64 (NaN f97e00, ±Inf f97c00/f9fc00, as cbor2)
//	text / byte string        string / []byte
//	array                     []any                           (a nil []any encodes as an empty array)
//	map                       Map (keys in received order)    in Map order; Go maps sorted by encoded key (RFC 8949 §4.2.1)
//	tag 0 / tag 1 timestamp   time.Time                       tag 0 RFC 3339: fraction of 6 digits when whole
//	                                                          microseconds, else 9; "Z" for UTC (as Python's isoformat)
//	tag 258 set               Set (elements in received order)
//	other tags                cbor.Tag{Number, Content}
//	null / undefined          nil                             null
var (
	cborEnc cbor.EncMode
	cborDec cbor.DecMode
)

func init() {
	var err error
	cborEnc, err = cbor.EncOptions{
		Sort:          cbor.SortCoreDeterministic, // Go maps (unordered) get a deterministic order
		ShortestFloat: cbor.ShortestFloatNone,     // float64 always, as the other bindings
		NaNConvert:    cbor.NaNConvert7e00,
		InfConvert:    cbor.InfConvertFloat16,
		BigIntConvert: cbor.BigIntConvertShortest,
		Time:          cbor.TimeRFC3339Nano,
		TimeTag:       cbor.EncTagRequired,
		NilContainers: cbor.NilContainerAsEmpty,
	}.EncMode()
	if err != nil {
		panic(err)
	}
	cborDec, err = cbor.DecOptions{
		IntDec:          cbor.IntDecConvertNone, // uint64 for unsigned, int64 for negative: 2^64-1 survives
		BigIntDec:       cbor.BigIntDecodePointer,
		DupMapKey:       cbor.DupMapKeyQuiet,
		MaxNestedLevels: 64,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// MapEntry is one key/value pair of a Map.
type MapEntry struct {
	Key, Value any
}

// Map is a CBOR map that keeps its entries in order (Go maps do not), so a decoded map encodes back
// to the same bytes. Build one with literal entries or Set.
type Map []MapEntry

// Get returns the value of key.
func (m Map) Get(key any) (any, bool) {
	for _, e := range m {
		if keyEqual(e.Key, key) {
			return e.Value, true
		}
	}
	return nil, false
}

// Set replaces the value of key, or appends the entry.
func (m *Map) Set(key, value any) {
	for i := range *m {
		if keyEqual((*m)[i].Key, key) {
			(*m)[i].Value = value
			return
		}
	}
	*m = append(*m, MapEntry{key, value})
}

func keyEqual(a, b any) bool {
	if as, ok := a.(string); ok {
		bs, ok := b.(string)
		return ok && as == bs
	}
	return reflect.DeepEqual(a, b)
}

// MarshalCBOR encodes the map with its entries in order.
func (m Map) MarshalCBOR() ([]byte, error) {
	buf := appendHead(nil, 5, uint64(len(m)))
	var err error
	for _, e := range m {
		if buf, err = appendValue(buf, e.Key, 0); err != nil {
			return nil, err
		}
		if buf, err = appendValue(buf, e.Value, 0); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// UnmarshalCBOR decodes a CBOR map (so Map also works as a field of a struct decoded by fxamacker).
func (m *Map) UnmarshalCBOR(data []byte) error {
	v, err := DecodeCBOR(data)
	if err != nil {
		return err
	}
	mv, ok := v.(Map)
	if !ok {
		return fmt.Errorf("hms: cbor: expected a map, got %T", v)
	}
	*m = mv
	return nil
}

// Set is a CBOR set (tag 258 around an array), elements in order.
type Set []any

// MarshalCBOR encodes tag 258 and the elements as an array.
func (s Set) MarshalCBOR() ([]byte, error) {
	return appendValue(appendHead(nil, 6, 258), []any(s), 0)
}

// UnmarshalCBOR decodes tag 258 (or a bare array) into the set.
func (s *Set) UnmarshalCBOR(data []byte) error {
	v, err := DecodeCBOR(data)
	if err != nil {
		return err
	}
	switch x := v.(type) {
	case Set:
		*s = x
	case []any:
		*s = x
	default:
		return fmt.Errorf("hms: cbor: expected a set (tag 258), got %T", v)
	}
	return nil
}

const maxDepth = 256

// EncodeCBOR encodes v. []any, Map, Set, map[string]any, map[any]any and time.Time are encoded by
// the rules above at any depth; other values (structs, typed slices, ...) by fxamacker/cbor.
func EncodeCBOR(v any) ([]byte, error) { return appendValue(nil, v, 0) }

func appendValue(buf []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("hms: cbor: nested deeper than %d levels", maxDepth)
	}
	switch x := v.(type) {
	case nil:
		return append(buf, 0xf6), nil
	case []any:
		buf = appendHead(buf, 4, uint64(len(x)))
		var err error
		for _, e := range x {
			if buf, err = appendValue(buf, e, depth+1); err != nil {
				return nil, err
			}
		}
		return buf, nil
	case Map:
		buf = appendHead(buf, 5, uint64(len(x)))
		var err error
		for _, e := range x {
			if buf, err = appendValue(buf, e.Key, depth+1); err != nil {
				return nil, err
			}
			if buf, err = appendValue(buf, e.Value, depth+1); err != nil {
				return nil, err
			}
		}
		return buf, nil
	case Set:
		return appendValue(appendHead(buf, 6, 258), []any(x), depth+1)
	case cbor.Tag:
		return appendValue(appendHead(buf, 6, x.Number), x.Content, depth+1)
	case map[string]any:
		m := make(Map, 0, len(x))
		for k, e := range x {
			m = append(m, MapEntry{k, e})
		}
		return appendSortedMap(buf, m, depth)
	case map[any]any:
		m := make(Map, 0, len(x))
		for k, e := range x {
			m = append(m, MapEntry{k, e})
		}
		return appendSortedMap(buf, m, depth)
	case time.Time:
		return appendText(appendHead(buf, 6, 0), formatTime(x)), nil
	case *time.Time:
		if x == nil {
			return append(buf, 0xf6), nil
		}
		return appendValue(buf, *x, depth)
	case string:
		return appendText(buf, x), nil
	case uint64:
		return appendHead(buf, 0, x), nil
	case int64:
		return appendInt(buf, x), nil
	case int:
		return appendInt(buf, int64(x)), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			break // fxamacker's NaN/Inf conversions, as cbor2 writes them
		}
		buf = append(buf, 0xfb)
		return binary.BigEndian.AppendUint64(buf, math.Float64bits(x)), nil
	case float32:
		return appendValue(buf, float64(x), depth) // float64 always, as the other bindings
	case bool:
		if x {
			return append(buf, 0xf5), nil
		}
		return append(buf, 0xf4), nil
	case []byte:
		return append(appendHead(buf, 2, uint64(len(x))), x...), nil
	}
	b, err := cborEnc.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(buf, b...), nil
}

// appendSortedMap writes a Go map's entries sorted by their encoded keys (bytewise), so the same map
// always encodes to the same bytes.
func appendSortedMap(buf []byte, m Map, depth int) ([]byte, error) {
	type kv struct{ k, v []byte }
	enc := make([]kv, len(m))
	for i, e := range m {
		k, err := appendValue(nil, e.Key, depth+1)
		if err != nil {
			return nil, err
		}
		v, err := appendValue(nil, e.Value, depth+1)
		if err != nil {
			return nil, err
		}
		enc[i] = kv{k, v}
	}
	sort.Slice(enc, func(i, j int) bool { return bytes.Compare(enc[i].k, enc[j].k) < 0 })
	buf = appendHead(buf, 5, uint64(len(enc)))
	for _, e := range enc {
		buf = append(append(buf, e.k...), e.v...)
	}
	return buf, nil
}

// formatTime writes RFC 3339 as Python's datetime.isoformat() does (what cbor2 sends): a fraction
// of exactly 6 digits when the time has whole microseconds, 9 when it has nanoseconds, none when
// zero; "Z" for UTC.
func formatTime(t time.Time) string {
	ns := t.Nanosecond()
	layout := "2006-01-02T15:04:05"
	switch {
	case ns == 0:
	case ns%1000 == 0:
		layout += ".000000"
	default:
		layout += ".000000000"
	}
	return t.Format(layout + "Z07:00")
}

func appendInt(buf []byte, x int64) []byte {
	if x >= 0 {
		return appendHead(buf, 0, uint64(x))
	}
	return appendHead(buf, 1, uint64(-(x + 1)))
}

func appendText(buf []byte, s string) []byte {
	return append(appendHead(buf, 3, uint64(len(s))), s...)
}

// appendHead writes a CBOR head with the shortest argument (preferred serialization).
func appendHead(buf []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(buf, m|byte(n))
	case n <= math.MaxUint8:
		return append(buf, m|24, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(buf, m|25), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(buf, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(buf, m|27), n)
}

// DecodeCBOR decodes exactly one CBOR data item (trailing bytes are an error) into the Go values
// of the table above.
func DecodeCBOR(data []byte) (any, error) {
	v, rest, err := decodeItem(data, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("hms: cbor: %d bytes after the data item", len(rest))
	}
	return v, nil
}

var errTruncated = fmt.Errorf("hms: cbor: truncated data item")

// readHead parses a head; indefinite is true for additional information 31.
func readHead(data []byte) (major byte, arg uint64, indefinite bool, rest []byte, err error) {
	if len(data) == 0 {
		return 0, 0, false, nil, errTruncated
	}
	major, ai := data[0]>>5, data[0]&31
	data = data[1:]
	switch {
	case ai < 24:
		return major, uint64(ai), false, data, nil
	case ai == 24 && len(data) >= 1:
		return major, uint64(data[0]), false, data[1:], nil
	case ai == 25 && len(data) >= 2:
		return major, uint64(binary.BigEndian.Uint16(data)), false, data[2:], nil
	case ai == 26 && len(data) >= 4:
		return major, uint64(binary.BigEndian.Uint32(data)), false, data[4:], nil
	case ai == 27 && len(data) >= 8:
		return major, binary.BigEndian.Uint64(data), false, data[8:], nil
	case ai == 31:
		return major, 0, true, data, nil
	case ai >= 28 && ai <= 30:
		return 0, 0, false, nil, fmt.Errorf("hms: cbor: reserved additional information %d", ai)
	}
	return 0, 0, false, nil, errTruncated
}

// decodeItem walks arrays, maps and tag 258 itself (fxamacker decodes maps into unordered Go maps);
// every other item is decoded by fxamacker.
func decodeItem(data []byte, depth int) (any, []byte, error) {
	if depth > maxDepth {
		return nil, nil, fmt.Errorf("hms: cbor: nested deeper than %d levels", maxDepth)
	}
	if len(data) == 0 {
		return nil, nil, errTruncated
	}
	switch data[0] >> 5 {
	case 4, 5:
		major, n, indef, rest, err := readHead(data)
		if err != nil {
			return nil, nil, err
		}
		if !indef && n > uint64(len(rest)) { // every element takes at least one byte
			return nil, nil, errTruncated
		}
		if major == 4 {
			out := make([]any, 0, min(n, 1024))
			for i := uint64(0); indef || i < n; i++ {
				if indef {
					if len(rest) == 0 {
						return nil, nil, errTruncated
					}
					if rest[0] == 0xff {
						rest = rest[1:]
						break
					}
				}
				var v any
				if v, rest, err = decodeItem(rest, depth+1); err != nil {
					return nil, nil, err
				}
				out = append(out, v)
			}
			return out, rest, nil
		}
		out := make(Map, 0, min(n, 1024))
		for i := uint64(0); indef || i < n; i++ {
			if indef {
				if len(rest) == 0 {
					return nil, nil, errTruncated
				}
				if rest[0] == 0xff {
					rest = rest[1:]
					break
				}
			}
			var k, v any
			if k, rest, err = decodeItem(rest, depth+1); err != nil {
				return nil, nil, err
			}
			if v, rest, err = decodeItem(rest, depth+1); err != nil {
				return nil, nil, err
			}
			out = append(out, MapEntry{k, v})
		}
		return out, rest, nil
	case 6:
		_, num, indef, rest, err := readHead(data)
		if err != nil {
			return nil, nil, err
		}
		if indef {
			return nil, nil, fmt.Errorf("hms: cbor: a tag cannot have indefinite length")
		}
		switch num {
		case 0, 1, 2, 3: // timestamps and bignums: fxamacker's types
		case 258:
			content, rest, err := decodeItem(rest, depth+1)
			if err != nil {
				return nil, nil, err
			}
			arr, ok := content.([]any)
			if !ok {
				return nil, nil, fmt.Errorf("hms: cbor: tag 258 (set) must enclose an array, not %T", content)
			}
			return Set(arr), rest, nil
		default:
			content, rest, err := decodeItem(rest, depth+1)
			if err != nil {
				return nil, nil, err
			}
			return cbor.Tag{Number: num, Content: content}, rest, nil
		}
	}
	var v any
	rest, err := cborDec.UnmarshalFirst(data, &v)
	if err != nil {
		return nil, nil, fmt.Errorf("hms: cbor: %w", err)
	}
	return v, rest, nil
}
