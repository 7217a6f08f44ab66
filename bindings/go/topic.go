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
	"sync"
	"time"
	"unsafe"
)

// PublisherOptions configure Node.Publisher. The zero value is the defaults.
type PublisherOptions struct {
	// Block makes Publish wait (bounded by its context) for lagging subscribers instead of
	// overwriting messages they have not read yet.
	Block          bool
	Capacity       uint32 // messages kept (rounded up to a power of two); 0 = default (1024)
	MaxSubscribers uint32 // 0 = default (64)
	RingBytes      uint64 // payload bytes kept (power of two); 0 = default (1 MiB); max message = RingBytes/4
}

type pubState struct {
	mu  sync.Mutex // Publish holds it; the C API forbids close concurrent with publish
	ptr *C.hms_publisher_t
}

func (s *pubState) close() {
	s.mu.Lock()
	if s.ptr != nil {
		C.hms_publisher_close(s.ptr)
		s.ptr = nil
	}
	s.mu.Unlock()
}

// Publisher publishes messages on one topic. Safe for concurrent use.
type Publisher struct {
	node *Node
	st   *pubState
}

// Publisher opens a publisher on topic (1-127 characters of [A-Za-z0-9_.-]) and makes it
// discoverable. Several publishers, in one or many processes, may share a topic.
func (n *Node) Publisher(topic string, opts *PublisherOptions) (*Publisher, error) {
	n.mu.Lock()
	ptr := n.ptr
	n.mu.Unlock()
	if ptr == nil {
		return nil, closedErr("node")
	}
	var o C.hms_publisher_options_t
	C.hms_publisher_options_init(&o)
	if opts != nil {
		if opts.Block {
			o.flags |= C.HMS_PUBLISHER_BLOCK
		}
		o.capacity = C.uint32_t(opts.Capacity)
		o.max_subscribers = C.uint32_t(opts.MaxSubscribers)
		o.ring_bytes = C.uint64_t(opts.RingBytes)
	}
	ct := C.CString(topic)
	defer C.free(unsafe.Pointer(ct))
	var p *C.hms_publisher_t
	var e C.hms_error_t
	if st := C.hms_publisher_open(ptr, ct, &o, &p, &e); st != C.HMS_OK {
		return nil, errorFrom(st, &e)
	}
	pub := &Publisher{node: n, st: &pubState{ptr: p}}
	n.adopt(unsafe.Pointer(p), pub.st.close)
	runtime.SetFinalizer(pub, (*Publisher).Close)
	return pub, nil
}

// Publish publishes one message (copied) and returns its sequence number. Without Block it never
// waits; with Block it waits for lagging subscribers until ctx's deadline (forever without one).
// event marks the payload as an event envelope (HMS_MSG_EVENT).
func (p *Publisher) Publish(ctx context.Context, msg Payload, event bool) (uint64, error) {
	timeout := int64(-1)
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(int64(time.Until(dl)), 0)
	}
	var flags C.uint32_t
	if event {
		flags = C.HMS_MSG_EVENT
	}
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	if p.st.ptr == nil {
		return 0, closedErr("publisher")
	}
	var seq C.uint64_t
	var e C.hms_error_t
	st := C.hms_publish(p.st.ptr, bytesPtr(msg.Data), C.size_t(len(msg.Data)), C.uint32_t(msg.Type), flags,
		C.int64_t(timeout), &seq, &e)
	return uint64(seq), errorFrom(st, &e)
}

// Subscribers is the number of subscribers connected now.
func (p *Publisher) Subscribers() int {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	if p.st.ptr == nil {
		return 0
	}
	return int(C.hms_publisher_subscriber_count(p.st.ptr))
}

// MaxMessage is the largest payload Publish accepts.
func (p *Publisher) MaxMessage() int {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	if p.st.ptr == nil {
		return 0
	}
	return int(C.hms_publisher_max_message(p.st.ptr))
}

// Close unregisters the topic entry and closes the publisher; subscribers drain what is left.
func (p *Publisher) Close() error {
	p.st.mu.Lock()
	ptr := p.st.ptr
	p.st.mu.Unlock()
	if ptr != nil && p.node.release(unsafe.Pointer(ptr)) {
		p.st.close()
	}
	runtime.SetFinalizer(p, nil)
	return nil
}

// SubscribeOptions configure Node.Subscribe. The zero value is the defaults.
type SubscribeOptions struct {
	// KeepWaiting: an exact topic whose publishers all went away keeps waiting for new ones instead
	// of failing with UNAVAILABLE.
	KeepWaiting bool
	Spin        time.Duration // busy-wait in Recv before sleeping; 0 = the node's, < 0 = never
}

// Message is one received message.
type Message struct {
	Topic        string
	Payload      Payload
	Event        bool   // the payload is an event envelope
	PublisherPID int32  // as verified by the kernel
	PublisherID  uint64 // distinguishes publishers
	Seq          uint64 // this publisher's sequence number, from 1
	Missed       uint64 // messages of this publisher lost just before this one
	PublishTime  int64  // CLOCK_MONOTONIC nanoseconds at publish
}

type subState struct {
	mu  sync.Mutex // Recv holds it; the C API forbids close concurrent with recv
	ptr *C.hms_subscription_t
}

func (s *subState) close() {
	if p := s.peek(); p != nil {
		C.hms_subscription_interrupt(p) // a Recv blocked on another goroutine returns first
	}
	s.mu.Lock()
	if s.ptr != nil {
		C.hms_subscription_close(s.ptr)
		peekMu.Lock()
		s.ptr = nil
		peekMu.Unlock()
	}
	s.mu.Unlock()
}

// peekMu guards reading ptr without waiting for a blocked Recv (interrupt is safe from any thread).
var peekMu sync.Mutex

func (s *subState) peek() *C.hms_subscription_t {
	peekMu.Lock()
	defer peekMu.Unlock()
	return s.ptr
}

// Subscription receives the messages of the topics matching a pattern. One goroutine at a time may
// call Recv (calls are serialized); Close may be called from any goroutine.
type Subscription struct {
	node *Node
	st   *subState
	// stale is set when a context's interrupt may still be latched in the C subscription after the
	// Recv it was meant for returned; the next Recv then ignores one CANCELLED.
	stale bool
}

// Subscribe subscribes to an exact topic or a glob ("order.*", "*.created"). Only messages
// published after this call are delivered.
func (n *Node) Subscribe(pattern string, opts *SubscribeOptions) (*Subscription, error) {
	n.mu.Lock()
	ptr := n.ptr
	n.mu.Unlock()
	if ptr == nil {
		return nil, closedErr("node")
	}
	var o C.hms_subscribe_options_t
	C.hms_subscribe_options_init(&o)
	if opts != nil {
		if opts.KeepWaiting {
			o.flags |= C.HMS_SUBSCRIBE_KEEP_WAITING
		}
		if opts.Spin != 0 {
			o.spin_ns = spinNs(opts.Spin)
		}
	}
	cp := C.CString(pattern)
	defer C.free(unsafe.Pointer(cp))
	var s *C.hms_subscription_t
	var e C.hms_error_t
	if st := C.hms_subscribe(ptr, cp, &o, &s, &e); st != C.HMS_OK {
		return nil, errorFrom(st, &e)
	}
	sub := &Subscription{node: n, st: &subState{ptr: s}}
	n.adopt(unsafe.Pointer(s), sub.st.close)
	runtime.SetFinalizer(sub, (*Subscription).Close)
	return sub, nil
}

// Recv waits for the next message until ctx's deadline or cancellation (an error wrapping ctx's
// error). Other errors: ErrUnavailable when an exact topic's publishers all went away and
// everything was delivered; ErrDataLoss / ErrResourceExhausted / ErrFailedPrecondition once per
// publisher that could not be used (later calls go on with the others).
func (s *Subscription) Recv(ctx context.Context) (*Message, error) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	ptr := s.st.ptr
	if ptr == nil {
		return nil, closedErr("subscription")
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, ctxError(err, "receive")
		}
		timeout := int64(-1)
		if dl, ok := ctx.Deadline(); ok {
			timeout = max(int64(time.Until(dl)), 0)
		}
		var m C.hms_message_t
		var e C.hms_error_t
		var st C.hms_status_t
		if ctx.Done() == nil {
			st = C.hms_go_sub_recv(ptr, &m, C.int64_t(timeout), &e)
		} else {
			fired := make(chan struct{})
			stop := context.AfterFunc(ctx, func() {
				C.hms_subscription_interrupt(ptr)
				close(fired)
			})
			st = C.hms_go_sub_recv(ptr, &m, C.int64_t(timeout), &e)
			if !stop() {
				<-fired
				if st != C.HMS_CANCELLED {
					s.stale = true // the interrupt arrived too late for this Recv: it is still latched
				}
			}
		}
		if st == C.HMS_OK {
			msg := &Message{
				Topic:        C.GoString(&m.topic[0]),
				Event:        m.flags&C.HMS_MSG_EVENT != 0,
				PublisherPID: int32(m.publisher_pid),
				PublisherID:  uint64(m.publisher_id),
				Seq:          uint64(m.seq),
				Missed:       uint64(m.missed),
				PublishTime:  int64(m.publish_time_ns),
			}
			msg.Payload = takePayload(&m.payload)
			return msg, nil
		}
		C.hms_message_release(&m)
		if st == C.HMS_CANCELLED || st == C.HMS_DEADLINE_EXCEEDED {
			if cerr := ctxDone(ctx); cerr != nil {
				return nil, ctxError(cerr, "receive")
			}
		}
		if st == C.HMS_CANCELLED && s.stale {
			s.stale = false // an old context's interrupt, not ours
			continue
		}
		return nil, errorFrom(st, &e)
	}
}

// Close closes the subscription (a Recv blocked on another goroutine returns first).
func (s *Subscription) Close() error {
	ptr := s.st.peek()
	if ptr != nil && s.node.release(unsafe.Pointer(ptr)) {
		s.st.close()
	}
	runtime.SetFinalizer(s, nil)
	return nil
}
