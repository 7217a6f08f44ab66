package hms

/*
#include <stdlib.h>
#include <hms_ffi/hms_ffi.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// ConnectOptions configure Node.Connect. The zero value is the defaults.
type ConnectOptions struct {
	Spin      time.Duration // busy-wait while waiting for replies; 0 = the node's, < 0 = never
	RingBytes uint64        // requested per-direction ring size (power of two); 0 = the server's choice
}

// clientState is shared by a Client and the closer its node keeps, so the node never holds the
// Client itself (that would keep the Client's finalizer from ever running).
type clientState struct {
	mu      sync.RWMutex // calls hold it shared; Close holds it exclusively
	ptr     *C.hms_client_t
	streams map[*C.hms_stream_t]struct{} // open streams, closed with the client
}

func (s *clientState) close() {
	s.mu.Lock()
	if s.ptr != nil {
		for st := range s.streams {
			C.hms_stream_close(st)
		}
		s.streams = nil
		C.hms_client_close(s.ptr)
		s.ptr = nil
	}
	s.mu.Unlock()
}

// Client is a connection to a service. Any number of goroutines may call through one Client.
type Client struct {
	node *Node
	st   *clientState
	spin int64
	ids  sync.Map // function name -> uint32 id
}

// Connect connects to the newest live service named service whose version satisfies versionReq
// ("^1", "~1.2", ">=1.2", "1.2.3", "" = any). ctx's deadline bounds the handshake (default 5 s).
func (n *Node) Connect(ctx context.Context, service, versionReq string, opts *ConnectOptions) (*Client, error) {
	n.mu.Lock()
	ptr := n.ptr
	n.mu.Unlock()
	if ptr == nil {
		return nil, closedErr("node")
	}
	var o C.hms_connect_options_t
	C.hms_connect_options_init(&o)
	spin := n.spin
	if opts != nil {
		if opts.Spin != 0 {
			o.spin_ns = spinNs(opts.Spin)
			spin = opts.Spin
		}
		o.ring_bytes = C.uint64_t(opts.RingBytes)
	}
	if dl, ok := ctx.Deadline(); ok {
		o.timeout_ns = C.int64_t(max(time.Until(dl), 0))
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError(err, "connect to "+service)
	}
	csvc := C.CString(service)
	defer C.free(unsafe.Pointer(csvc))
	var creq *C.char
	if versionReq != "" {
		creq = C.CString(versionReq)
		defer C.free(unsafe.Pointer(creq))
	}
	var cl *C.hms_client_t
	var e C.hms_error_t
	if st := C.hms_connect(ptr, csvc, creq, &o, &cl, &e); st != C.HMS_OK {
		return nil, errorFrom(st, &e)
	}
	c := &Client{node: n, st: &clientState{ptr: cl}}
	switch {
	case spin == 0:
		c.spin = 50_000
	case spin > 0:
		c.spin = int64(spin)
	}
	state := c.st
	n.adopt(unsafe.Pointer(cl), state.close)
	runtime.SetFinalizer(c, (*Client).Close)
	return c, nil
}

// Close closes the connection after the calls in flight on other goroutines have returned.
// Closing twice is a no-op.
func (c *Client) Close() error {
	c.st.mu.RLock()
	ptr := c.st.ptr
	c.st.mu.RUnlock()
	if ptr != nil && c.node.release(unsafe.Pointer(ptr)) {
		c.st.close()
	}
	runtime.SetFinalizer(c, nil)
	return nil
}

// Service, Version and ServerPID describe the connected service.
func (c *Client) Service() string {
	return c.info(func(p *C.hms_client_t) string { return C.GoString(C.hms_client_service_name(p)) })
}
func (c *Client) Version() string {
	return c.info(func(p *C.hms_client_t) string { return C.GoString(C.hms_client_service_version(p)) })
}

func (c *Client) info(f func(*C.hms_client_t) string) string {
	c.st.mu.RLock()
	defer c.st.mu.RUnlock()
	if c.st.ptr == nil {
		return ""
	}
	return f(c.st.ptr)
}

// ServerPID is the pid of the serving process.
func (c *Client) ServerPID() int {
	c.st.mu.RLock()
	defer c.st.mu.RUnlock()
	return int(C.hms_client_server_pid(c.st.ptr))
}

// MaxMessage is the largest payload one call can carry on this connection.
func (c *Client) MaxMessage() int {
	c.st.mu.RLock()
	defer c.st.mu.RUnlock()
	return int(C.hms_client_max_message(c.st.ptr))
}

// FunctionID looks a function id up by name (cached after the first lookup).
func (c *Client) FunctionID(name string) (uint32, error) {
	if v, ok := c.ids.Load(name); ok {
		return v.(uint32), nil
	}
	c.st.mu.RLock()
	defer c.st.mu.RUnlock()
	if c.st.ptr == nil {
		return 0, closedErr("client")
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var id C.uint32_t
	var e C.hms_error_t
	if st := C.hms_client_function_id(c.st.ptr, cname, &id, &e); st != C.HMS_OK {
		return 0, errorFrom(st, &e)
	}
	c.ids.Store(name, uint32(id))
	return uint32(id), nil
}

// Call calls function fn and waits for its reply. ctx's deadline becomes the call's deadline (the
// server sees it too); when ctx is cancelled the call is cancelled (the server skips it, or its
// handler sees Call.Cancelled) and Call returns an error wrapping both ErrCancelled and
// context.Canceled (ErrDeadlineExceeded and context.DeadlineExceeded for a passed deadline).
func (c *Client) Call(ctx context.Context, fn string, req Payload) (Payload, error) {
	id, err := c.FunctionID(fn)
	if err != nil {
		return Payload{}, err
	}
	return c.CallID(ctx, id, req)
}

// CallID is Call with a function id from FunctionID.
func (c *Client) CallID(ctx context.Context, fn uint32, req Payload) (Payload, error) {
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	s := sc.p
	c.st.mu.RLock()
	if c.st.ptr == nil {
		c.st.mu.RUnlock()
		return Payload{}, closedErr("client")
	}
	var st C.hms_status_t
	if ctx.Done() == nil {
		// No cancellation possible: the plain synchronous call (the fast path).
		st = C.hms_go_call(c.st.ptr, C.uint32_t(fn), bytesPtr(req.Data), C.size_t(len(req.Data)), C.uint32_t(req.Type), s)
		c.st.mu.RUnlock()
		runtime.KeepAlive(req.Data)
	} else {
		st = c.callCtx(ctx, fn, req, s)
		c.st.mu.RUnlock()
		if st == ctxEnded {
			return Payload{}, ctxError(ctxDone(ctx), "call")
		}
	}
	var out Payload
	if s.copied != 0 {
		out.Type = ContentType(s.resp.content_type)
		if n := int(s.resp.len); n > 0 {
			out.Data = make([]byte, n)
			copy(out.Data, unsafe.Slice((*byte)(unsafe.Pointer(&s.small[0])), n))
		}
	} else {
		out = takePayload(&s.resp)
	}
	if st != C.HMS_OK {
		err := errorFrom(st, &s.err).(*Error)
		err.Details, err.DetailsType = out.Data, out.Type
		return Payload{}, err
	}
	return out, nil
}

// ctxEnded is what callCtx returns when the context, not the call, ended it.
const ctxEnded = C.hms_status_t(-1)

// callCtx makes a call bound to ctx (deadline and cancellation) through the async API; the result is
// left in s like hms_go_call's. Called with the client's lock held shared.
func (c *Client) callCtx(ctx context.Context, fn uint32, req Payload, s *C.hms_go_scratch_t) C.hms_status_t {
	s.copied = 0
	if ctxDone(ctx) != nil {
		return ctxEnded
	}
	timeout := int64(-1)
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(int64(time.Until(dl)), 0)
	}
	w := C.hms_go_waiter_get()
	if w == nil {
		s.err.origin = C.HMS_ORIGIN_LOCAL
		msg := "out of memory for a call waiter"
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&s.err.message[0])), len(s.err.message)-1), msg)
		s.err.message[len(msg)] = 0
		return C.HMS_RESOURCE_EXHAUSTED
	}
	ptr := c.st.ptr
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		C.hms_go_waiter_cancel(w, ptr)
		close(cancelled)
	})
	st := C.hms_go_call_wait(w, ptr, C.uint32_t(fn), bytesPtr(req.Data), C.size_t(len(req.Data)),
		C.uint32_t(req.Type), C.int64_t(timeout), C.int64_t(c.spin), &s.resp, &s.err)
	runtime.KeepAlive(req.Data)
	if !stop() {
		<-cancelled // the cancel func ran (or runs): let it finish before the waiter is reused
	}
	C.hms_go_waiter_put(w)
	if st != C.HMS_OK && s.err.origin == C.HMS_ORIGIN_LOCAL && (st == C.HMS_CANCELLED || st == C.HMS_DEADLINE_EXCEEDED) &&
		ctxDone(ctx) != nil {
		C.hms_payload_release(&s.resp)
		return ctxEnded
	}
	return st
}

// scratch owns one C-allocated hms_go_scratch_t; the pool reuses them and a finalizer frees those
// the pool drops.
type scratch struct{ p *C.hms_go_scratch_t }

var scratchPool = sync.Pool{New: func() any {
	p := (*C.hms_go_scratch_t)(C.calloc(1, C.sizeof_hms_go_scratch_t))
	if p == nil {
		panic("hms: out of memory for call scratch space")
	}
	sc := &scratch{p: p}
	runtime.SetFinalizer(sc, func(sc *scratch) { C.free(unsafe.Pointer(sc.p)) })
	return sc
}}

// ctxDone is ctx.Err(), or context.DeadlineExceeded once ctx's deadline has passed even if its timer
// has not fired yet (the C side, timing the same deadline, may notice a moment earlier).
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// ctxError is the *Error for a call that a context ended; it wraps the context's error.
func ctxError(cerr error, what string) error {
	code := Cancelled
	if errors.Is(cerr, context.DeadlineExceeded) {
		code = DeadlineExceeded
	}
	return &Error{Code: code, Message: what + ": " + cerr.Error(), cause: cerr}
}

// Stream is a server stream being read (Client.Stream). One goroutine at a time may read it.
type Stream struct {
	client *Client
	ptr    *C.hms_stream_t
	done   bool
}

// streamSlice bounds each wait inside Next so a cancelled context is noticed promptly without
// touching the stream from another thread (the C API allows one thread per stream), and so
// Client.Close never waits long for a reader.
const streamSlice = 20 * time.Millisecond

// StreamDirection says who streams (HMS_STREAM_*).
type StreamDirection uint32

const (
	StreamServer StreamDirection = C.HMS_STREAM_SERVER // the handler sends items; read them with Next
	StreamClient StreamDirection = C.HMS_STREAM_CLIENT // we send items (Send, then CloseSend); Next returns the reply
	StreamBidi                   = StreamServer | StreamClient
)

// Stream opens a server stream on fn with the opening request req. ctx's deadline bounds the whole
// stream; cancelling ctx ends it (Next returns an error wrapping ErrCancelled).
func (c *Client) Stream(ctx context.Context, fn string, req Payload) (*Stream, error) {
	return c.OpenStream(ctx, fn, req, StreamServer)
}

// OpenStream opens a server, client or bidirectional stream on fn (req is the opening request, may
// be empty). With StreamClient, send items with Send, end them with CloseSend, and read the single
// reply with Next (then io.EOF). Send/CloseSend may run on one goroutine while Next runs on another.
func (c *Client) OpenStream(ctx context.Context, fn string, req Payload, dir StreamDirection) (*Stream, error) {
	id, err := c.FunctionID(fn)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError(err, "stream")
	}
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	if c.st.ptr == nil {
		return nil, closedErr("client")
	}
	timeout := int64(-1)
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(int64(time.Until(dl)), 0)
	}
	var s *C.hms_stream_t
	var e C.hms_error_t
	st := C.hms_stream_open(c.st.ptr, C.uint32_t(id), bytesPtr(req.Data), C.size_t(len(req.Data)),
		C.uint32_t(req.Type), C.uint32_t(dir), C.int64_t(timeout), &s, &e)
	if st != C.HMS_OK {
		return nil, errorFrom(st, &e)
	}
	stream := &Stream{client: c, ptr: s}
	if c.st.streams == nil {
		c.st.streams = map[*C.hms_stream_t]struct{}{}
	}
	c.st.streams[s] = struct{}{}
	runtime.SetFinalizer(stream, (*Stream).Close)
	return stream, nil
}

// Next returns the next item, io.EOF once the stream ended normally, or the error that ended it
// (the handler's, with its details; an error wrapping ctx's error when ctx ended).
func (s *Stream) Next(ctx context.Context) (Payload, error) {
	if s.ptr == nil {
		return Payload{}, closedErr("stream")
	}
	if s.done {
		return Payload{}, io.EOF
	}
	for {
		if err := ctx.Err(); err != nil {
			C.hms_stream_cancel(s.ptr)
			return Payload{}, ctxError(err, "stream")
		}
		slice := int64(streamSlice)
		if dl, ok := ctx.Deadline(); ok {
			slice = min(slice, max(int64(time.Until(dl)), 0))
		}
		var item C.hms_payload_t
		var end C.int
		var e C.hms_error_t
		cs := s.client.st
		cs.mu.RLock()
		if _, open := cs.streams[s.ptr]; !open {
			cs.mu.RUnlock()
			s.ptr = nil
			return Payload{}, closedErr("stream (its client)")
		}
		st := C.hms_stream_next(s.ptr, &item, &end, C.int64_t(slice), &e)
		cs.mu.RUnlock()
		p := takePayload(&item)
		switch {
		case st == C.HMS_OK && end != 0:
			s.done = true
			return Payload{}, io.EOF
		case st == C.HMS_OK:
			return p, nil
		case (st == C.HMS_DEADLINE_EXCEEDED || st == C.HMS_CANCELLED) && ctxDone(ctx) != nil:
			s.done = true
			return Payload{}, ctxError(ctxDone(ctx), "stream")
		case st == C.HMS_DEADLINE_EXCEEDED && end == 0:
			continue // our slice expired; the stream goes on
		}
		err := errorFrom(st, &e).(*Error)
		err.Details, err.DetailsType = p.Data, p.Type
		s.done = true
		return Payload{}, err
	}
}

// Send sends one item of a client or bidirectional stream; it blocks while the server's ring is
// full (flow control). ErrCancelled once the stream ended.
func (s *Stream) Send(p Payload) error {
	return s.sendFrame(func(ptr *C.hms_stream_t, e *C.hms_error_t) C.hms_status_t {
		return C.hms_stream_send(ptr, bytesPtr(p.Data), C.size_t(len(p.Data)), C.uint32_t(p.Type), e)
	})
}

// CloseSend tells the handler that no more items follow.
func (s *Stream) CloseSend() error {
	return s.sendFrame(func(ptr *C.hms_stream_t, e *C.hms_error_t) C.hms_status_t {
		return C.hms_stream_finish(ptr, e)
	})
}

func (s *Stream) sendFrame(f func(*C.hms_stream_t, *C.hms_error_t) C.hms_status_t) error {
	cs := s.client.st
	cs.mu.RLock()
	defer cs.mu.RUnlock()
	ptr := s.ptr
	if ptr == nil {
		return closedErr("stream")
	}
	if _, open := cs.streams[ptr]; !open {
		return closedErr("stream (its client)")
	}
	var e C.hms_error_t
	return errorFrom(f(ptr, &e), &e)
}

// Close cancels the stream if it has not ended and frees it. Closing twice is a no-op.
func (s *Stream) Close() error {
	if s.ptr != nil {
		cs := s.client.st
		cs.mu.Lock()
		if _, open := cs.streams[s.ptr]; open {
			delete(cs.streams, s.ptr)
			C.hms_stream_close(s.ptr)
		}
		cs.mu.Unlock()
	}
	s.ptr = nil
	runtime.SetFinalizer(s, nil)
	return nil
}
