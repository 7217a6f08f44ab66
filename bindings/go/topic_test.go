package hms

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestPublishSubscribe(t *testing.T) {
	dir := runtimeDir(t)
	pubNode := openNode(t, dir, "go-pub")
	subNode := openNode(t, dir, "go-sub")
	pub, err := pubNode.Publisher("order.created", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := subNode.Subscribe("order.*", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	waitFor(t, "the subscriber to connect", func() bool { return pub.Subscribers() == 1 })

	const n = 100
	for i := 0; i < n; i++ {
		p, _ := CBORPayload(Map{{"n", uint64(i)}, {"id", fmt.Sprintf("ord-%d", i)}})
		seq, err := pub.Publish(context.Background(), p, i%10 == 0)
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i+1) {
			t.Fatalf("message %d got sequence number %d", i, seq)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		m, err := sub.Recv(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		v, err := DecodeCBOR(m.Payload.Data)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := v.(Map).Get("n")
		if m.Topic != "order.created" || m.Seq != uint64(i+1) || got != uint64(i) || m.Missed != 0 ||
			m.Payload.Type != CBOR || m.Event != (i%10 == 0) {
			t.Fatalf("message %d: topic %q seq %d n %v missed %d type %v event %v", i, m.Topic, m.Seq, got,
				m.Missed, m.Payload.Type, m.Event)
		}
	}
	// Nothing more: the deadline ends Recv with an error that wraps both forms.
	short, cancel2 := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel2()
	if _, err := sub.Recv(short); !errors.Is(err, ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("empty topic: %v", err)
	}
	// Cancelling a blocked Recv from another goroutine returns promptly.
	cctx, cancel3 := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel3)
	t0 := time.Now()
	if _, err := sub.Recv(cctx); !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled receive: %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	// The subscription still works afterwards (no stale interrupt swallows a message).
	if _, err := pub.Publish(context.Background(), RawPayload([]byte("after")), false); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Recv(ctx)
	if err != nil || string(m.Payload.Data) != "after" {
		t.Fatalf("after a cancel: %v %v", m, err)
	}
	// Closing the publisher ends an exact subscription with UNAVAILABLE once everything was read.
	exact, err := subNode.Subscribe("order.created", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the exact subscriber", func() bool { return pub.Subscribers() == 2 })
	pub.Close()
	if _, err := exact.Recv(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("after the publisher closed: %v", err)
	}
	exact.Close()
}

func TestSubscriptionCloseUnblocksRecv(t *testing.T) {
	dir := runtimeDir(t)
	n := openNode(t, dir, "go-sub")
	sub, err := n.Subscribe("nothing.here", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := sub.Recv(context.Background())
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	sub.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Recv on a closed subscription returned a message")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not unblock Recv")
	}
}
