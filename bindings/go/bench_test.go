package hms

import (
	"bytes"
	"context"
	"testing"
)

// BenchmarkEchoGoToGo: 64-byte raw round trips to a Go server (another node in this process).
func BenchmarkEchoGoToGo(b *testing.B) {
	dir := runtimeDir(b)
	startGoServer(b, dir)
	c := connect(b, dir, "go.test")
	fn, err := c.FunctionID("echo")
	if err != nil {
		b.Fatal(err)
	}
	msg := RawPayload(bytes.Repeat([]byte{'x'}, 64))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.CallID(context.Background(), fn, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCBORRoundTrip: decode and re-encode the "order" vector.
func BenchmarkCBORRoundTrip(b *testing.B) {
	var raw []byte
	for _, v := range loadVectors(b) {
		if v.Name == "order" {
			raw = v.raw
		}
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		v, err := DecodeCBOR(raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := EncodeCBOR(v); err != nil {
			b.Fatal(err)
		}
	}
}

// The synchronous call path allocates only its result (the rest lives in pooled C memory).
func TestCallAllocations(t *testing.T) {
	dir := runtimeDir(t)
	startGoServer(t, dir)
	c := connect(t, dir, "go.test")
	fn, err := c.FunctionID("echo")
	if err != nil {
		t.Fatal(err)
	}
	msg := RawPayload(bytes.Repeat([]byte{'x'}, 64))
	allocs := testing.AllocsPerRun(2000, func() {
		if _, err := c.CallID(context.Background(), fn, msg); err != nil {
			t.Fatal(err)
		}
	})
	// The client's reply copy, plus the server's request copy and per-call state: this process
	// serves too. Measured 3 when written.
	if allocs > 4 {
		t.Fatalf("%v allocations per call and reply", allocs)
	}
	t.Logf("%v allocations per round trip (client and server in this process)", allocs)
}
