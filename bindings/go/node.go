package hms

/*
#include <stdlib.h>
#include <hms_ffi/hms_ffi.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// ContentType says how a payload is encoded (HMS_CT_*); it travels in every frame.
type ContentType uint32

const (
	None     ContentType = C.HMS_CT_NONE
	Raw      ContentType = C.HMS_CT_RAW
	CBOR     ContentType = C.HMS_CT_CBOR
	JSON     ContentType = C.HMS_CT_JSON
	Protobuf ContentType = C.HMS_CT_PROTOBUF
	Arrow    ContentType = C.HMS_CT_ARROW
	NDArray  ContentType = C.HMS_CT_NDARRAY // numpy wire format (DecodeNDArray)
	User     ContentType = C.HMS_CT_USER    // first value free for applications
)

// Payload is a byte range plus its content type. Payloads the binding hands out own their Data
// (a Go copy), except the request of an FnInPlace handler and HeldPayload.Payload(): their Data is a
// read-only view of the library's memory (see FnInPlace).
type Payload struct {
	Data []byte
	Type ContentType
	src  *payloadSrc // where an in-place Data lives (nil: Go memory); see view.go
}

// RawPayload wraps bytes as a Raw payload.
func RawPayload(b []byte) Payload { return Payload{Data: b, Type: Raw} }

// CBORPayload encodes v with EncodeCBOR.
func CBORPayload(v any) (Payload, error) {
	b, err := EncodeCBOR(v)
	return Payload{Data: b, Type: CBOR}, err
}

// NodeOptions configure OpenNode. The zero value is the defaults.
type NodeOptions struct {
	Name       string        // node name for listings; "" = "node-<pid>"
	RuntimeDir string        // "" = $HMS_FFI_RUNTIME_DIR, else $XDG_RUNTIME_DIR/hms-ffi, else /tmp/hms-ffi-<uid>
	Spin       time.Duration // busy-wait before sleeping; 0 = default (50 µs), < 0 = never spin
	RingBytes  uint64        // per-direction ring size of connections this node serves; 0 = default
}

func spinNs(d time.Duration) C.int64_t {
	switch {
	case d == 0:
		return -1
	case d < 0:
		return 0
	}
	return C.int64_t(d)
}

// Node is a process's presence in the runtime directory: it owns services, client connections,
// publishers and subscriptions. Close it when done; closing it closes what it still owns.
//
// Thread-safety: every method may be called from any goroutine.
type Node struct {
	mu       sync.Mutex
	ptr      *C.hms_node_t
	spin     time.Duration
	children map[unsafe.Pointer]func() // C handle -> closer, for what is still open at Close
	handles  []cgo.Handle              // handler handles, deleted at Close
	serving  chan struct{}             // closed when the running Serve returns
	serveTID atomic.Int64              // OS thread of the running Serve (handlers run on it), 0 when none
}

// OpenNode opens a node (refusing a libhms_ffi whose ABI version differs from the header's).
func OpenNode(opts *NodeOptions) (*Node, error) {
	if err := CheckABI(); err != nil {
		return nil, err
	}
	var o C.hms_node_options_t
	C.hms_node_options_init(&o)
	var n Node
	if opts != nil {
		if opts.Name != "" {
			o.name = C.CString(opts.Name)
			defer C.free(unsafe.Pointer(o.name))
		}
		if opts.RuntimeDir != "" {
			o.runtime_dir = C.CString(opts.RuntimeDir)
			defer C.free(unsafe.Pointer(o.runtime_dir))
		}
		o.spin_ns = spinNs(opts.Spin)
		o.ring_bytes = C.uint64_t(opts.RingBytes)
		n.spin = opts.Spin
	}
	var e C.hms_error_t
	if st := C.hms_node_open(&o, &n.ptr, &e); st != C.HMS_OK {
		return nil, errorFrom(st, &e)
	}
	n.children = map[unsafe.Pointer]func(){}
	runtime.SetFinalizer(&n, (*Node).Close)
	return &n, nil
}

func closedErr(what string) error {
	return &Error{Code: FailedPrecondition, Message: what + " is closed: open a new one"}
}

// adopt records a child handle so Close can close it if its owner did not.
func (n *Node) adopt(p unsafe.Pointer, closer func()) {
	n.mu.Lock()
	n.children[p] = closer
	n.mu.Unlock()
}

// release forgets a child; it returns false when the node already closed it.
func (n *Node) release(p unsafe.Pointer) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.children[p]; !ok {
		return false
	}
	delete(n.children, p)
	return true
}

// RuntimeDir returns the runtime directory the node uses.
func (n *Node) RuntimeDir() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ptr == nil {
		return ""
	}
	return C.GoString(C.hms_node_runtime_dir(n.ptr))
}

// Close stops serving, closes every client, stream, publisher and subscription the node still
// owns, unregisters its services (peers see UNAVAILABLE) and frees the node. Closing twice is a
// no-op. A handler cannot close its own node (FAILED_PRECONDITION): Stop it instead.
func (n *Node) Close() error {
	if tid := n.serveTID.Load(); tid != 0 && tid == currentThreadID() {
		return &Error{Code: FailedPrecondition, Message: "a handler cannot close its own node while the node " +
			"serves it: call Stop from the handler and Close after Serve returned"}
	}
	n.Stop()
	n.mu.Lock()
	if n.ptr == nil {
		n.mu.Unlock()
		return nil
	}
	closers := make([]func(), 0, len(n.children))
	for p, f := range n.children {
		closers = append(closers, f)
		delete(n.children, p)
	}
	n.mu.Unlock()
	for _, f := range closers {
		f()
	}
	n.mu.Lock()
	C.hms_node_close(n.ptr)
	n.ptr = nil
	for _, h := range n.handles {
		h.Delete()
	}
	n.handles = nil
	n.mu.Unlock()
	runtime.SetFinalizer(n, nil)
	return nil
}

// Serve runs the dispatch loop on the calling goroutine, locked to its OS thread, until ctx ends or
// Stop is called; handlers run on that thread. It returns nil after Stop, ctx.Err() when ctx ended.
func (n *Node) Serve(ctx context.Context) error {
	ptr, done, err := n.beginServe()
	if err != nil {
		return err
	}
	return n.runServe(ctx, ptr, done)
}

// Start serves in a background goroutine (see Serve) until Stop or Close.
func (n *Node) Start() error {
	ptr, done, err := n.beginServe()
	if err != nil {
		return err
	}
	go n.runServe(context.Background(), ptr, done) // returns when Stop or Close ends the loop
	return nil
}

// beginServe marks the node as served (so Stop right after Start already waits for the loop).
func (n *Node) beginServe() (*C.hms_node_t, chan struct{}, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ptr == nil {
		return nil, nil, closedErr("node")
	}
	if n.serving != nil {
		return nil, nil, &Error{Code: FailedPrecondition, Message: "the node is already being served (one dispatcher per node)"}
	}
	n.serving = make(chan struct{})
	return n.ptr, n.serving, nil
}

func (n *Node) runServe(ctx context.Context, ptr *C.hms_node_t, done chan struct{}) error {
	defer func() {
		n.mu.Lock()
		n.serving = nil
		n.mu.Unlock()
		close(done)
	}()
	stop := context.AfterFunc(ctx, func() { C.hms_node_stop(ptr) })
	defer stop()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n.serveTID.Store(currentThreadID())
	defer n.serveTID.Store(0)
	var e C.hms_error_t
	st := C.hms_go_serve(ptr, &e)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errorFrom(st, &e)
}

// Stop asks the dispatch loop to return and waits until it has. Safe from any goroutine; from a
// handler it only asks (the loop returns after the handler).
func (n *Node) Stop() {
	n.mu.Lock()
	ptr, done := n.ptr, n.serving
	n.mu.Unlock()
	if ptr == nil || done == nil {
		return
	}
	C.hms_node_stop(ptr)
	if tid := n.serveTID.Load(); tid != 0 && tid == currentThreadID() {
		return // called by a handler on the dispatcher thread: the loop returns after it
	}
	<-done
}
