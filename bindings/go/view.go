package hms

/*
#include <stdlib.h>
#include <string.h>
#include <hms_ffi/hms_ffi.h>
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// HeldPayload is a received payload kept where it lies, outside the Go heap: the sender's arena
// block (mapped read-only; no copy) or, for a payload that was not in the arena, one copy in C
// memory. It is reference-counted: DecodeArrow / DecodeNDArray take a reference of their own, so
// releasing the HeldPayload early never pulls memory from under them. Release gives the block back
// to its sender once the last reference is gone. There is no finalizer: a forgotten HeldPayload
// keeps its block (and the sender's arena quota) until the process exits — never a dangling slice.
type HeldPayload struct {
	mu     sync.Mutex
	refs   int
	p      *C.hms_payload_t // a library payload (hms_call_take_request), C memory; nil for copies
	copy   unsafe.Pointer   // our aligned C copy, or nil
	data   []byte
	ct     ContentType
	src    *payloadSrc // lets Payload() values find their way back here
	inArea bool
}

// Data is the payload's bytes: read-only (writing to an arena block crashes the process) and valid
// until the last reference is released.
func (h *HeldPayload) Data() []byte { return h.data }

// Type is the payload's content type.
func (h *HeldPayload) Type() ContentType { return h.ct }

// ZeroCopy reports whether the bytes are the sender's arena block itself (not a copy).
func (h *HeldPayload) ZeroCopy() bool { return h.inArea }

// Payload returns a view of the held bytes that DecodeArrow / DecodeNDArray decode without a copy
// (they take a reference of their own).
func (h *HeldPayload) Payload() Payload { return Payload{Data: h.data, Type: h.ct, src: h.src} }

// Release drops this reference; the memory goes when the last one is released. Idempotent per
// holder is the caller's business: call it once for each HeldPayload you were given.
func (h *HeldPayload) Release() { h.unref() }

func (h *HeldPayload) ref() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs <= 0 {
		return &Error{Code: FailedPrecondition, Message: "the held payload was already released: decode it before releasing it"}
	}
	h.refs++
	return nil
}

func (h *HeldPayload) unref() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs <= 0 {
		return
	}
	h.refs--
	if h.refs > 0 {
		return
	}
	h.data = nil
	if h.p != nil {
		C.hms_payload_release(h.p)
		C.free(unsafe.Pointer(h.p))
		h.p = nil
	}
	if h.copy != nil {
		C.free(h.copy)
		h.copy = nil
	}
}

// heldCopy copies b once into 64-byte aligned C memory (the decoders need aligned buffers and C
// structs must not point into the Go heap).
func heldCopy(b []byte, ct ContentType) (*HeldPayload, error) {
	n := len(b)
	var mem unsafe.Pointer
	if C.posix_memalign(&mem, 64, C.size_t(max(n, 1))) != 0 || mem == nil {
		return nil, &Error{Code: ResourceExhausted, Message: fmt.Sprintf("cannot allocate %d bytes for a payload copy", n)}
	}
	if n > 0 {
		C.memcpy(mem, unsafe.Pointer(&b[0]), C.size_t(n))
	}
	h := &HeldPayload{refs: 1, copy: mem, ct: ct, data: unsafe.Slice((*byte)(mem), n)}
	h.src = &payloadSrc{held: h}
	return h, nil
}

// payloadSrc ties an in-place Payload to where its bytes live: the running call (until the handler
// returns) and, once taken, the HeldPayload.
type payloadSrc struct {
	mu   sync.Mutex
	call *Call        // nil once the handler returned
	held *HeldPayload // set once taken; the src owns one reference until the handler returns
}

// callOver runs when the handler returns: the call's memory is no longer ours.
func (s *payloadSrc) callOver() {
	s.mu.Lock()
	h := s.held
	wasCall := s.call != nil
	s.call = nil
	s.mu.Unlock()
	if h != nil && wasCall {
		h.unref() // the reference the src held for the duration of the call
	}
}

// retain returns p's bytes as a HeldPayload with one new reference for the caller: without a copy
// when p is an in-place request that came through the arena (or a HeldPayload's view), else one copy.
func retain(p Payload) (*HeldPayload, error) {
	s := p.src
	if s == nil {
		return heldCopy(p.Data, p.Type)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held != nil {
		if err := s.held.ref(); err != nil {
			return nil, err
		}
		return s.held, nil
	}
	c := s.call
	if c == nil || c.ptr == nil {
		return nil, &Error{Code: FailedPrecondition, Message: "an in-place request (FnInPlace) was used after its " +
			"handler returned: decode it, or keep it with Call.TakeRequest, inside the handler"}
	}
	h, err := takeRequest(c)
	if err != nil {
		return nil, err
	}
	h.src = s
	h.refs = 2 // one for the caller, one for the src until the handler returns
	s.held = h
	return h, nil
}

// takeRequest keeps the running call's request: the arena block itself when it came through the
// arena, else a copy of the inline bytes (valid only during the call).
func takeRequest(c *Call) (*HeldPayload, error) {
	pp := (*C.hms_payload_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.hms_payload_t{}))))
	if pp == nil {
		return nil, &Error{Code: ResourceExhausted, Message: "cannot allocate a payload"}
	}
	var e C.hms_error_t
	st := C.hms_call_take_request(c.ptr, pp, &e)
	if st == C.HMS_OK {
		h := &HeldPayload{refs: 1, p: pp, ct: ContentType(pp.content_type), inArea: true}
		if pp.len > 0 && pp.data != nil {
			h.data = unsafe.Slice((*byte)(pp.data), int(pp.len))
		}
		return h, nil
	}
	C.free(unsafe.Pointer(pp))
	if st != C.HMS_FAILED_PRECONDITION || c.reqC == nil {
		return nil, errorFrom(st, &e)
	}
	// Inline in the ring (small): copy it while the call still owns it.
	r := c.reqC
	var b []byte
	if r.len > 0 && r.data != nil {
		b = unsafe.Slice((*byte)(r.data), int(r.len))
	}
	return heldCopy(b, ContentType(r.content_type))
}

// TakeRequest keeps the request past the handler: the arena block itself (no copy) when the request
// came through the arena, else one copy. Release the result when done (from any goroutine). For an
// FnInPlace function it is the same memory req.Data views; without FnInPlace the binding has already
// copied the request into req.Data, so prefer FnInPlace for large payloads.
func (c *Call) TakeRequest() (*HeldPayload, error) {
	if err := c.live(); err != nil {
		return nil, err
	}
	if c.req != nil {
		return retain(Payload{src: c.req})
	}
	c.req = &payloadSrc{call: c}
	return retain(Payload{src: c.req})
}
