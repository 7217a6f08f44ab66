package hms

/*
#include <stdlib.h>
#include <hms_ffi/hms_ffi.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
	"syscall"
	"time"
	"unsafe"
)

// FunctionFlag describes a function (HMS_FN_*).
type FunctionFlag uint32

const (
	FnIdempotent   FunctionFlag = C.HMS_FN_IDEMPOTENT    // safe to retry (informational)
	FnStream       FunctionFlag = C.HMS_FN_STREAM        // server-streaming: the handler sends items with Call.Send
	FnClientStream FunctionFlag = C.HMS_FN_CLIENT_STREAM // client-streaming: the handler reads items with Call.Recv

	// FnInPlace (Go only, not sent to the library) hands the handler its request WITHOUT copying it:
	// req.Data is a read-only view of the library's memory — for a large request the sender's arena
	// block, mapped read-only (writing to it crashes the process) — valid only until the handler
	// returns. DecodeArrow / DecodeNDArray / Call.TakeRequest keep it alive past the handler (zero
	// copy for an arena block); anything else derived from req.Data must be copied before returning.
	FnInPlace FunctionFlag = 1 << 31
)

// Handler serves one function. It runs on the node's dispatcher thread (see the package comment).
// req.Data is a private copy the handler may keep (unless the function has FnInPlace). The
// returned payload is the reply (an empty reply when its Data is nil and Type is None). A returned
// error becomes the caller's error: an *Error (or an error wrapping one, or wrapping an Err*
// sentinel) keeps its code, message and details; any other error becomes UNKNOWN with err.Error() as the message. A panic becomes
// INTERNAL and the server keeps running.
type Handler func(call *Call, req Payload) (Payload, error)

// Service is a named, versioned set of functions on a node.
type Service struct {
	node *Node
	ptr  *C.hms_service_t
	name string
}

// AddService adds a service (name of [A-Za-z0-9_.-], version "MAJOR.MINOR.PATCH") and makes it
// discoverable.
func (n *Node) AddService(name, version string) (*Service, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ptr == nil {
		return nil, closedErr("node")
	}
	cname, cver := C.CString(name), C.CString(version)
	defer C.free(unsafe.Pointer(cname))
	defer C.free(unsafe.Pointer(cver))
	var s *C.hms_service_t
	var e C.hms_error_t
	if st := C.hms_service_add(n.ptr, cname, cver, &s, &e); st != C.HMS_OK {
		return nil, errorFrom(st, &e)
	}
	return &Service{node: n, ptr: s, name: name}, nil
}

type registration struct {
	fn      Handler
	name    string
	service string
	inPlace bool
}

// Handle adds a function served by h. Functions may be added while the node serves; clients see
// the table as of their connect.
func (s *Service) Handle(name string, h Handler, flags ...FunctionFlag) error {
	var f uint32
	for _, x := range flags {
		f |= uint32(x)
	}
	n := s.node
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ptr == nil {
		return closedErr("node")
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	// The C side keeps only the handle's integer value: no Go pointer is stored in C memory.
	inPlace := f&uint32(FnInPlace) != 0
	f &^= uint32(FnInPlace)
	hd := cgo.NewHandle(&registration{fn: h, name: name, service: s.name, inPlace: inPlace})
	var e C.hms_error_t
	if st := C.hms_go_function_add(s.ptr, cname, C.uint32_t(f), C.uintptr_t(hd), &e); st != C.HMS_OK {
		hd.Delete()
		return errorFrom(st, &e)
	}
	n.handles = append(n.handles, hd)
	return nil
}

// Call is the running call a handler serves. It is valid only until the handler returns.
type Call struct {
	ptr     *C.hms_call_t
	replied bool
	req     *payloadSrc // the request, as an in-place view (FnInPlace) or nil
	reqC    *C.hms_payload_t
}

func (c *Call) live() error {
	if c.ptr == nil {
		return &Error{Code: FailedPrecondition, Message: "the call is over: a Call is valid only inside its handler"}
	}
	return nil
}

// ID is the call id (0 once the handler returned, as for every accessor below).
func (c *Call) ID() uint64 {
	if c.ptr == nil {
		return 0
	}
	return uint64(C.hms_call_id(c.ptr))
}

// Function is the name of the function called.
func (c *Call) Function() string {
	if c.ptr == nil {
		return ""
	}
	return C.GoString(C.hms_call_function_name(c.ptr))
}

// Service is the name of the service called.
func (c *Call) Service() string {
	if c.ptr == nil {
		return ""
	}
	return C.GoString(C.hms_call_service_name(c.ptr))
}

// Peer is the caller's identity as verified by the kernel (SO_PEERCRED).
func (c *Call) Peer() (pid int32, uid, gid uint32) {
	if c.ptr == nil {
		return 0, 0, 0
	}
	var p C.int32_t
	var u, g C.uint32_t
	C.hms_call_peer(c.ptr, &p, &u, &g)
	return int32(p), uint32(u), uint32(g)
}

// TimeLeft is the time until the caller's deadline; ok is false when the call has none.
func (c *Call) TimeLeft() (left time.Duration, ok bool) {
	if c.ptr == nil {
		return 0, true
	}
	ns := int64(C.hms_call_time_left_ns(c.ptr))
	if ns == int64(^uint64(0)>>1) {
		return 0, false
	}
	return time.Duration(ns), true
}

// Cancelled reports whether the caller cancelled the call or gave up on it; cheap enough to poll.
func (c *Call) Cancelled() bool { return c.ptr == nil || C.hms_call_is_cancelled(c.ptr) != 0 }

// OneWay reports a fire-and-forget call (its reply is discarded).
func (c *Call) OneWay() bool { return c.ptr != nil && C.hms_call_is_oneway(c.ptr) != 0 }

// IsStream reports whether the caller opened the call as a stream.
func (c *Call) IsStream() bool { return c.ptr != nil && C.hms_call_is_stream(c.ptr) != 0 }

// Send sends one item of a server stream. It blocks while the caller's ring is full. An error
// wrapping ErrCancelled means the caller cancelled, went away or passed its deadline: stop producing.
func (c *Call) Send(p Payload) error {
	if err := c.live(); err != nil {
		return err
	}
	var e C.hms_error_t
	st := C.hms_call_send(c.ptr, bytesPtr(p.Data), C.size_t(len(p.Data)), C.uint32_t(p.Type), &e)
	return errorFrom(st, &e)
}

// Recv receives the next item of a client stream, waiting up to timeout (< 0: until the call's
// deadline). end is true once the caller finished sending.
func (c *Call) Recv(timeout time.Duration) (item Payload, end bool, err error) {
	if err := c.live(); err != nil {
		return Payload{}, false, err
	}
	var p C.hms_payload_t
	var cend C.int
	var e C.hms_error_t
	st := C.hms_call_recv(c.ptr, &p, &cend, C.int64_t(timeoutNs(timeout)), &e)
	item = takePayload(&p)
	return item, cend != 0, errorFrom(st, &e)
}

func timeoutNs(d time.Duration) int64 {
	if d < 0 {
		return -1
	}
	return int64(d)
}

// bytesPtr passes a Go byte slice to C for the duration of one call (cgo pointer rules allow it:
// the memory holds no Go pointers).
func bytesPtr(b []byte) *C.char {
	if len(b) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(&b[0]))
}

// takePayload copies a payload the library filled into Go memory and releases it.
func takePayload(p *C.hms_payload_t) Payload {
	out := Payload{Type: ContentType(p.content_type)}
	if p.len > 0 && p.data != nil {
		out.Data = C.GoBytes(p.data, C.int(p.len))
	}
	C.hms_payload_release(p)
	return out
}

func currentThreadID() int64 { return int64(syscall.Gettid()) }

//export hmsGoDispatch
func hmsGoDispatch(call *C.hms_call_t, req *C.hms_payload_t, handle C.uintptr_t, reply *C.hms_go_reply_t) (status C.hms_status_t) {
	reg := cgo.Handle(handle).Value().(*registration)
	c := &Call{ptr: call, reqC: req}
	defer func() {
		c.ptr = nil
		c.reqC = nil
		if c.req != nil {
			c.req.callOver() // in-place views end here unless they were taken
		}
		if r := recover(); r != nil {
			// A panicking handler must not take the server down (and must not unwind through C).
			msg := C.CString(fmt.Sprintf("handler %s.%s panicked: %v", reg.service, reg.name, r))
			C.hms_call_set_error(call, C.HMS_INTERNAL, msg, nil, 0, 0)
			C.free(unsafe.Pointer(msg))
			status = C.HMS_INTERNAL
		}
	}()
	in := Payload{Type: ContentType(req.content_type)}
	if reg.inPlace {
		c.req = &payloadSrc{call: c}
		in.src = c.req
		if req.len > 0 && req.data != nil {
			in.Data = unsafe.Slice((*byte)(req.data), int(req.len))
		}
	} else if req.len > 0 && req.data != nil {
		// Copied: the request lives in shared memory a hostile peer could rewrite meanwhile.
		in.Data = C.GoBytes(req.data, C.int(req.len))
	}
	out, err := reg.fn(c, in)
	if err != nil {
		return setError(call, err)
	}
	if out.Data == nil && out.Type == None {
		return C.HMS_OK
	}
	if len(out.Data) <= int(reply.cap) {
		// Copy into the trampoline's C buffer: the trampoline sends it after we return.
		copy(unsafe.Slice((*byte)(unsafe.Pointer(reply.data)), int(reply.cap)), out.Data)
		reply.len = C.size_t(len(out.Data))
		reply.content_type = C.uint32_t(out.Type)
		reply.set = 1
		return C.HMS_OK
	}
	var e C.hms_error_t
	st := C.hms_call_reply(call, bytesPtr(out.Data), C.size_t(len(out.Data)), C.uint32_t(out.Type), &e)
	if st != C.HMS_OK {
		// Tell the caller why it gets no reply (e.g. larger than the connection's max message).
		msg := C.CString("handler reply not sent: " + C.GoString(&e.message[0]))
		C.hms_call_set_error(call, st, msg, nil, 0, 0)
		C.free(unsafe.Pointer(msg))
	}
	return st
}

func setError(call *C.hms_call_t, err error) C.hms_status_t {
	code := CodeOf(err)
	if code == OK {
		code = Unknown
	}
	msg := err.Error()
	var details []byte
	var dct ContentType
	if e, ok := err.(*Error); ok { // a bare *Error: send its own message, not the "hms: CODE" prefix
		msg, details, dct = e.Message, e.Details, e.DetailsType
	}
	cmsg := C.CString(msg)
	C.hms_call_set_error(call, C.hms_status_t(code), cmsg, bytesPtr(details), C.size_t(len(details)), C.uint32_t(dct))
	C.free(unsafe.Pointer(cmsg))
	return C.hms_status_t(code)
}
