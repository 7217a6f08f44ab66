// Command hms-go-peer is the Go side of the cross-language test matrix:
//
//	hms-go-peer serve SERVICE              serve SERVICE@1.0.0 (echo, fail, count_to, arrow_sum, arrow_keep,
//	                                       arrow_kept, arrow_make, ndarray_sum) until SIGTERM/SIGINT
//	hms-go-peer call SERVICE VECTORS_JSON  send every CBOR vector to SERVICE's echo, then fail [5, "nope"]
//	hms-go-peer bench SERVICE N            N round trips of 64 raw bytes to echo: "p50_ns p99_ns calls_per_s"
//
// The runtime directory comes from HMS_FFI_RUNTIME_DIR. HMS_GO_PEER_SPIN_NS sets the nodes' busy-wait
// budget in nanoseconds (default: the library's, 50 µs; 0 = never spin), like hms_ctest's SPIN_NS.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"syscall"
	"time"

	hms "github.com/hms-ffi/hms-ffi-native/bindings/go"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: hms-go-peer serve SERVICE | call SERVICE VECTORS_JSON | bench SERVICE N")
	os.Exit(64)
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2])
	case "call":
		if len(os.Args) < 4 {
			usage()
		}
		var ok bool
		ok, err = call(os.Args[2], os.Args[3])
		if err == nil && !ok {
			os.Exit(1)
		}
	case "bench":
		if len(os.Args) < 4 {
			usage()
		}
		n, perr := strconv.Atoi(os.Args[3])
		if perr != nil || n < 10 {
			fmt.Fprintf(os.Stderr, "bench: N must be an integer >= 10, not %q\n", os.Args[3])
			os.Exit(64)
		}
		err = bench(os.Args[2], n)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hms-go-peer:", err)
		os.Exit(2)
	}
}

// echo proves the CBOR round trip: decode into Go values, encode again. Raw comes back unchanged.
func echo(_ *hms.Call, req hms.Payload) (hms.Payload, error) {
	if req.Type != hms.CBOR {
		return req, nil
	}
	v, err := hms.DecodeCBOR(req.Data)
	if err != nil {
		return hms.Payload{}, hms.Errorf(hms.InvalidArgument, "echo: the request is not valid CBOR: %v", err)
	}
	return hms.CBORPayload(v)
}

// fail returns the status code and message it is given as CBOR [code, message].
func fail(_ *hms.Call, req hms.Payload) (hms.Payload, error) {
	v, err := hms.DecodeCBOR(req.Data)
	args, ok := v.([]any)
	if err != nil || !ok || len(args) < 2 {
		return hms.Payload{}, hms.Errorf(hms.InvalidArgument, "fail wants CBOR [code, message], got %v (%v)", v, err)
	}
	code, ok1 := args[0].(uint64)
	msg, ok2 := args[1].(string)
	if !ok1 || !ok2 || code == 0 || code > uint64(hms.Unauthenticated) {
		return hms.Payload{}, hms.Errorf(hms.InvalidArgument, "fail wants [code 1..16, message], got %v", args)
	}
	return hms.Payload{}, &hms.Error{Code: hms.Code(code), Message: msg}
}

// countTo streams the integers 0..n-1 as CBOR.
func countTo(c *hms.Call, req hms.Payload) (hms.Payload, error) {
	v, err := hms.DecodeCBOR(req.Data)
	n, ok := v.(uint64)
	if err != nil || !ok {
		return hms.Payload{}, hms.Errorf(hms.InvalidArgument, "count_to wants a CBOR unsigned integer")
	}
	for i := uint64(0); i < n; i++ {
		p, _ := hms.CBORPayload(i)
		if err := c.Send(p); err != nil {
			return hms.Payload{}, err
		}
	}
	return hms.Payload{}, nil
}

// nodeOptions reads HMS_GO_PEER_SPIN_NS.
func nodeOptions() *hms.NodeOptions {
	o := &hms.NodeOptions{Name: "hms-go-peer"}
	if v := os.Getenv("HMS_GO_PEER_SPIN_NS"); v != "" {
		ns, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "HMS_GO_PEER_SPIN_NS=%q is not an integer\n", v)
			os.Exit(64)
		}
		o.Spin = time.Duration(ns)
		if ns == 0 {
			o.Spin = -1 // never spin
		}
	}
	return o
}

func serve(service string) error {
	node, err := hms.OpenNode(nodeOptions())
	if err != nil {
		return err
	}
	defer node.Close()
	svc, err := node.AddService(service, "1.0.0")
	if err != nil {
		return err
	}
	if err := svc.Handle("echo", echo, hms.FnIdempotent); err != nil {
		return err
	}
	if err := svc.Handle("fail", fail); err != nil {
		return err
	}
	if err := svc.Handle("count_to", countTo, hms.FnStream); err != nil {
		return err
	}
	for name, h := range map[string]hms.Handler{"arrow_sum": arrowSum, "arrow_keep": arrowKeep, "ndarray_sum": ndarraySum} {
		if err := svc.Handle(name, h, hms.FnInPlace); err != nil { // read in place: no copy
			return err
		}
	}
	if err := svc.Handle("arrow_kept", arrowKept); err != nil {
		return err
	}
	if err := svc.Handle("arrow_make", arrowMake); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("ready") // os.Stdout is unbuffered
	if err := node.Serve(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func connect(service string) (*hms.Node, *hms.Client, error) {
	node, err := hms.OpenNode(nodeOptions())
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := node.Connect(ctx, service, "^1", nil)
	if err != nil {
		node.Close()
		return nil, nil, err
	}
	return node, c, nil
}

func call(service, vectorsPath string) (bool, error) {
	data, err := os.ReadFile(vectorsPath)
	if err != nil {
		return false, err
	}
	var file struct {
		Vectors []struct{ Name, Hex string }
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return false, fmt.Errorf("%s: %w", vectorsPath, err)
	}
	node, c, err := connect(service)
	if err != nil {
		return false, err
	}
	defer node.Close()
	ok := true
	for _, v := range file.Vectors {
		raw, err := hex.DecodeString(v.Hex)
		if err != nil {
			return false, fmt.Errorf("vector %s: %w", v.Name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := c.Call(ctx, "echo", hms.Payload{Data: raw, Type: hms.CBOR})
		cancel()
		switch {
		case err != nil:
			fmt.Printf("%s: %v\n", v.Name, err)
			ok = false
		case !bytes.Equal(got.Data, raw) || got.Type != hms.CBOR:
			fmt.Printf("%s: sent %s, got %x (content type %d)\n", v.Name, v.Hex, got.Data, got.Type)
			ok = false
		}
	}
	req, _ := hms.CBORPayload([]any{uint64(hms.NotFound), "nope"})
	_, err = c.Call(context.Background(), "fail", req)
	var he *hms.Error
	if !errors.As(err, &he) || !errors.Is(err, hms.ErrNotFound) || he.Message != "nope" || !he.Remote {
		fmt.Printf("fail: want a remote NOT_FOUND \"nope\", got %v\n", err)
		ok = false
	}
	if ok {
		fmt.Printf("ok %d\n", len(file.Vectors))
	}
	return ok, nil
}

func bench(service string, n int) error {
	node, c, err := connect(service)
	if err != nil {
		return err
	}
	defer node.Close()
	fn, err := c.FunctionID("echo")
	if err != nil {
		return err
	}
	msg := hms.RawPayload(bytes.Repeat([]byte{'x'}, 64))
	ctx := context.Background() // no deadline: the synchronous path, as hms_ctest bench
	for i := 0; i < n/10+100; i++ {
		if _, err := c.CallID(ctx, fn, msg); err != nil {
			return err
		}
	}
	lat := make([]int64, n)
	start := time.Now()
	for i := range lat {
		t0 := time.Now()
		got, err := c.CallID(ctx, fn, msg)
		lat[i] = int64(time.Since(t0))
		if err != nil {
			return err
		}
		if len(got.Data) != 64 {
			return fmt.Errorf("echo returned %d bytes, want 64", len(got.Data))
		}
	}
	total := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("%d %d %.0f\n", lat[n/2], lat[int(float64(n)*0.99)], float64(n)/total.Seconds())
	return nil
}
