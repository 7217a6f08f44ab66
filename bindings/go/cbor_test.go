package hms

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type vector struct {
	Name, Type, Hex string
	raw             []byte
}

// repoRoot finds the repository root from the package directory (bindings/go).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "tests", "vectors", "cbor.json")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "tests", "vectors", "cbor.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []vector }
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) < 40 {
		t.Fatalf("only %d vectors in cbor.json", len(f.Vectors))
	}
	for i := range f.Vectors {
		if f.Vectors[i].raw, err = hex.DecodeString(f.Vectors[i].Hex); err != nil {
			t.Fatal(err)
		}
	}
	return f.Vectors
}

func TestCBORVectorsRoundTrip(t *testing.T) {
	for _, v := range loadVectors(t) {
		val, err := DecodeCBOR(v.raw)
		if err != nil {
			t.Errorf("%s: decode: %v", v.Name, err)
			continue
		}
		// The native Go type each vector type must decode to.
		ok := true
		switch v.Type {
		case "uint":
			_, ok = val.(uint64)
		case "int":
			_, ok = val.(int64)
		case "float":
			_, ok = val.(float64)
		case "bool":
			_, ok = val.(bool)
		case "null":
			ok = val == nil
		case "str":
			_, ok = val.(string)
		case "bytes":
			_, ok = val.([]byte)
		case "timestamp":
			_, ok = val.(time.Time)
		case "list":
			_, ok = val.([]any)
		case "map":
			_, ok = val.(Map)
		case "set":
			_, ok = val.(Set)
		default:
			t.Errorf("%s: unknown vector type %q", v.Name, v.Type)
		}
		if !ok {
			t.Errorf("%s: decoded to %T, not the native type for %s", v.Name, val, v.Type)
		}
		out, err := EncodeCBOR(val)
		if err != nil {
			t.Errorf("%s: encode: %v", v.Name, err)
			continue
		}
		if !bytes.Equal(out, v.raw) {
			t.Errorf("%s: re-encoded to %x, want %s", v.Name, out, v.Hex)
		}
	}
}

func TestCBORNativeValues(t *testing.T) {
	vs := map[string][]byte{}
	for _, v := range loadVectors(t) {
		vs[v.Name] = v.raw
	}
	dec := func(name string) any {
		val, err := DecodeCBOR(vs[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return val
	}
	if got := dec("uint64_max"); got != uint64(math.MaxUint64) {
		t.Errorf("uint64_max decoded to %v (%T)", got, got)
	}
	if got := dec("int64_min"); got != int64(math.MinInt64) {
		t.Errorf("int64_min decoded to %v (%T)", got, got)
	}
	want := time.Date(1999, 12, 31, 23, 59, 59, 123456000, time.UTC)
	if got := dec("timestamp_micro").(time.Time); !got.Equal(want) {
		t.Errorf("timestamp_micro decoded to %v, want %v", got, want)
	}
	set := dec("set_ints").(Set)
	if len(set) != 3 || set[0] != uint64(1) || set[2] != uint64(3) {
		t.Errorf("set_ints decoded to %#v", set)
	}
	order := dec("order").(Map)
	keys := []string{}
	for _, e := range order {
		keys = append(keys, e.Key.(string))
	}
	if keys[0] != "order_id" || keys[len(keys)-1] != "signature" {
		t.Errorf("order keys out of order: %v", keys)
	}
	if v, _ := order.Get("customer_id"); v != uint64(1<<40) {
		t.Errorf("order.customer_id = %v", v)
	}
	if v, _ := order.Get("flags"); len(v.(Set)) != 1 || v.(Set)[0] != "rush" {
		t.Errorf("order.flags = %#v", v)
	}
}

func TestCBOREncodeGoValues(t *testing.T) {
	cases := []struct {
		v    any
		want string
	}{
		{map[string]any{"b": 1, "a": []any{}}, "a2616180616201"}, // Go maps: sorted keys
		{[]any(nil), "80"},
		{[]byte(nil), "40"},
		{math.NaN(), "f97e00"},
		{math.Inf(-1), "f9fc00"},
		{time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC), "c0781b323032362d30312d30325430333a30343a30352e3132303030305a"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 2*3600)), "c0781932303236"},
		{Map{{"z", 1}, {"a", 2}}, "a2617a01616102"},
		{Set{"x"}, "d90102816178"},
		{-1, "20"},
	}
	for _, c := range cases {
		got, err := EncodeCBOR(c.v)
		if err != nil {
			t.Errorf("%#v: %v", c.v, err)
			continue
		}
		if !bytes.HasPrefix([]byte(hex.EncodeToString(got)), []byte(c.want)) {
			t.Errorf("%#v encoded to %x, want %s", c.v, got, c.want)
		}
	}
	// An offset time keeps its offset, as Python's isoformat writes it.
	b, _ := EncodeCBOR(time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 2*3600)))
	if !bytes.HasSuffix(b, []byte("+02:00")) {
		t.Errorf("offset time encoded as %q", b)
	}
}

func TestCBORRejectsBadInput(t *testing.T) {
	for _, h := range []string{"", "82", "1b00", "a1", "d90102", "d9010201", "9f01", "0000", "1c"} {
		raw, _ := hex.DecodeString(h)
		if v, err := DecodeCBOR(raw); err == nil {
			t.Errorf("%q decoded to %#v, want an error", h, v)
		}
	}
	deep := bytes.Repeat([]byte{0x81}, 100000)
	if _, err := DecodeCBOR(append(deep, 0)); err == nil {
		t.Error("100000 nested arrays decoded, want a depth error")
	}
}
