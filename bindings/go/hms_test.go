package hms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// runtimeDir gives each test its own short runtime directory (Unix socket paths hold 107 bytes).
func runtimeDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "hmsgo-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func openNode(t testing.TB, dir, name string) *Node {
	t.Helper()
	n, err := OpenNode(&NodeOptions{Name: name, RuntimeDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

type goServer struct {
	node      *Node
	cancelled atomic.Int32 // handler calls that saw their caller cancel
	started   chan struct{}
}

// startGoServer serves "go.test"@1.0.0 from a Go node in this process.
func startGoServer(t testing.TB, dir string) *goServer {
	t.Helper()
	s := &goServer{node: openNode(t, dir, "go-server"), started: make(chan struct{}, 16)}
	svc, err := s.node.AddService("go.test", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(svc.Handle("echo", func(_ *Call, req Payload) (Payload, error) { return req, nil }, FnIdempotent))
	must(svc.Handle("fail", func(_ *Call, req Payload) (Payload, error) {
		v, err := DecodeCBOR(req.Data)
		if err != nil {
			return Payload{}, Errorf(InvalidArgument, "fail wants CBOR [code, message]: %v", err)
		}
		args := v.([]any)
		return Payload{}, &Error{Code: Code(args[0].(uint64)), Message: args[1].(string),
			Details: []byte("why"), DetailsType: Raw}
	}))
	must(svc.Handle("wrapped", func(_ *Call, _ Payload) (Payload, error) {
		return Payload{}, fmt.Errorf("looking up the order: %w", ErrNotFound)
	}))
	must(svc.Handle("plain", func(_ *Call, _ Payload) (Payload, error) {
		return Payload{}, errors.New("a plain Go error")
	}))
	must(svc.Handle("panic", func(_ *Call, _ Payload) (Payload, error) {
		var m map[string]int
		m["boom"]++ // nil map: a runtime panic
		return Payload{}, nil
	}))
	must(svc.Handle("wait_cancel", func(c *Call, _ Payload) (Payload, error) {
		s.started <- struct{}{}
		end := time.Now().Add(3 * time.Second)
		for time.Now().Before(end) {
			if c.Cancelled() {
				s.cancelled.Add(1)
				return Payload{}, Errorf(Cancelled, "saw the cancellation")
			}
			time.Sleep(2 * time.Millisecond)
		}
		return RawPayload([]byte("not cancelled")), nil
	}))
	must(svc.Handle("count_to", func(c *Call, req Payload) (Payload, error) {
		v, err := DecodeCBOR(req.Data)
		if err != nil {
			return Payload{}, err
		}
		for i := uint64(0); i < v.(uint64); i++ {
			p, _ := CBORPayload(i)
			if err := c.Send(p); err != nil {
				return Payload{}, err
			}
		}
		return Payload{}, nil
	}, FnStream))
	must(s.node.Start())
	return s
}

func connect(t testing.TB, dir, service string) *Client {
	t.Helper()
	n := openNode(t, dir, "go-client")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n.Connect(ctx, service, "^1", nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestABIVersionCheck(t *testing.T) {
	if err := CheckABI(); err != nil {
		t.Fatalf("the loaded library should match the header: %v", err)
	}
	if LibraryABIVersion() != HeaderABIVersion {
		t.Fatalf("library ABI %d, header %d", LibraryABIVersion(), HeaderABIVersion)
	}
	err := checkABI(HeaderABIVersion+1, HeaderABIVersion)
	if err == nil {
		t.Fatal("a mismatched ABI version was accepted")
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprint(HeaderABIVersion + 1), fmt.Sprint(HeaderABIVersion), "ABI"} {
		if !strings.Contains(msg, want) {
			t.Errorf("ABI error %q does not name %q", msg, want)
		}
	}
	if !errors.Is(err, ErrFailedPrecondition) {
		t.Errorf("ABI error is not FAILED_PRECONDITION: %v", err)
	}
}

func TestGoCallsGo(t *testing.T) {
	dir := runtimeDir(t)
	startGoServer(t, dir)
	c := connect(t, dir, "go.test")
	ctx := context.Background()

	got, err := c.Call(ctx, "echo", RawPayload([]byte("hello")))
	if err != nil || string(got.Data) != "hello" || got.Type != Raw {
		t.Fatalf("echo: %q %v %v", got.Data, got.Type, err)
	}
	// The context path (cancellable wait) gives the same reply.
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got, err = c.Call(tctx, "echo", RawPayload([]byte("with a deadline")))
	if err != nil || string(got.Data) != "with a deadline" {
		t.Fatalf("echo with deadline: %q %v", got.Data, err)
	}
	_, err = c.Call(ctx, "no_such_function", Payload{})
	var he *Error
	if !errors.As(err, &he) || he.Code != NotFound || he.Remote {
		t.Fatalf("unknown function: want a local NOT_FOUND, got %v", err)
	}
}

func TestErrorsIsForEveryCode(t *testing.T) {
	dir := runtimeDir(t)
	startGoServer(t, dir)
	c := connect(t, dir, "go.test")
	for code := Cancelled; code <= Unauthenticated; code++ {
		req, _ := CBORPayload([]any{uint64(code), "msg " + code.String()})
		_, err := c.Call(context.Background(), "fail", req)
		if !errors.Is(err, Sentinel(code)) {
			t.Errorf("code %v: errors.Is(err, Err%v) is false for %v", code, code, err)
		}
		for other := Cancelled; other <= Unauthenticated; other++ {
			if other != code && errors.Is(err, Sentinel(other)) {
				t.Errorf("code %v: errors.Is also matches %v", code, other)
			}
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("code %v: not an *Error: %T %v", code, err, err)
		}
		if e.Code != code || e.Message != "msg "+code.String() || !e.Remote || string(e.Details) != "why" {
			t.Errorf("code %v: got Code=%v Message=%q Remote=%v Details=%q", code, e.Code, e.Message, e.Remote, e.Details)
		}
		if CodeOf(err) != code {
			t.Errorf("CodeOf = %v, want %v", CodeOf(err), code)
		}
	}
	_, err := c.Call(context.Background(), "wrapped", Payload{})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "looking up the order") {
		t.Errorf("a handler error wrapping ErrNotFound arrived as %v", err)
	}
	_, err = c.Call(context.Background(), "plain", Payload{})
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "a plain Go error") {
		t.Errorf("a plain handler error arrived as %v", err)
	}
}

func TestHandlerPanicIsInternalAndServerSurvives(t *testing.T) {
	dir := runtimeDir(t)
	startGoServer(t, dir)
	c := connect(t, dir, "go.test")
	for i := 0; i < 3; i++ {
		_, err := c.Call(context.Background(), "panic", Payload{})
		var e *Error
		if !errors.As(err, &e) || e.Code != Internal || !e.Remote || !strings.Contains(e.Message, "panicked") {
			t.Fatalf("panic #%d: want a remote INTERNAL naming the panic, got %v", i, err)
		}
	}
	got, err := c.Call(context.Background(), "echo", RawPayload([]byte("still here")))
	if err != nil || string(got.Data) != "still here" {
		t.Fatalf("after panics the server must keep serving: %q %v", got.Data, err)
	}
}

func TestContextDeadlineAndCancel(t *testing.T) {
	dir := runtimeDir(t)
	srv := startGoServer(t, dir)
	c := connect(t, dir, "go.test")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := c.Call(ctx, "wait_cancel", Payload{})
	if !errors.Is(err, ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: got %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("the deadline was not honoured: the call took %v", d)
	}
	deadline := time.Now().Add(3 * time.Second)
	for srv.cancelled.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if srv.cancelled.Load() < 1 {
		t.Fatal("the handler never saw the caller give up at its deadline")
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() {
		<-srv.started
		<-srv.started // the first value came from the deadline test
		cancel2()
	}()
	t0 = time.Now()
	_, err = c.Call(ctx2, "wait_cancel", Payload{})
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: got %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("cancellation was not prompt: %v", d)
	}
	for srv.cancelled.Load() < 2 && time.Now().Before(deadline.Add(3*time.Second)) {
		time.Sleep(5 * time.Millisecond)
	}
	if srv.cancelled.Load() < 2 {
		t.Fatal("the handler never saw the cancellation")
	}
	// The client is still usable, on both paths.
	if _, err := c.Call(context.Background(), "echo", RawPayload([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	ctx3, cancel3 := context.WithTimeout(context.Background(), time.Second)
	defer cancel3()
	if _, err := c.Call(ctx3, "echo", RawPayload([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	// An already cancelled context fails without sending anything.
	done, cancel4 := context.WithCancel(context.Background())
	cancel4()
	if _, err := c.Call(done, "echo", Payload{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

func TestConcurrentCallsWithContexts(t *testing.T) {
	dir := runtimeDir(t)
	startGoServer(t, dir)
	c := connect(t, dir, "go.test")
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func(g int) {
			for i := 0; i < 200; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if g%2 == 0 {
					cancel()
					ctx = context.Background()
				}
				msg := fmt.Sprintf("%d-%d", g, i)
				got, err := c.Call(ctx, "echo", RawPayload([]byte(msg)))
				cancel()
				if err != nil || string(got.Data) != msg {
					errs <- fmt.Errorf("goroutine %d call %d: %q %v", g, i, got.Data, err)
					return
				}
			}
			errs <- nil
		}(g)
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestGoServerStream(t *testing.T) {
	dir := runtimeDir(t)
	startGoServer(t, dir)
	c := connect(t, dir, "go.test")
	req, _ := CBORPayload(uint64(50))
	s, err := c.Stream(context.Background(), "count_to", req)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := uint64(0); ; i++ {
		p, err := s.Next(context.Background())
		if err == io.EOF {
			if i != 50 {
				t.Fatalf("stream ended after %d items, want 50", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		v, _ := DecodeCBOR(p.Data)
		if v != i {
			t.Fatalf("item %d is %v", i, v)
		}
	}
}

func TestCloseIsIdempotentAndOrdered(t *testing.T) {
	dir := runtimeDir(t)
	startGoServer(t, dir)
	n, err := OpenNode(&NodeOptions{RuntimeDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c, err := n.Connect(context.Background(), "go.test", "^1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := CBORPayload(uint64(1000))
	s, err := c.Stream(context.Background(), "count_to", req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Closing the node closes the client and its stream; the Go handles then report closed.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(context.Background(), "echo", Payload{}); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("call on a closed client: %v", err)
	}
	if _, err := s.Next(context.Background()); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("next on a closed stream: %v", err)
	}
	s.Close()
	c.Close()
	c.Close()
	n.Close()
	if _, err := n.Connect(context.Background(), "go.test", "", nil); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("connect on a closed node: %v", err)
	}
}

func TestServerGoneIsUnavailable(t *testing.T) {
	dir := runtimeDir(t)
	srv := startGoServer(t, dir)
	c := connect(t, dir, "go.test")
	if _, err := c.Call(context.Background(), "echo", Payload{}); err != nil {
		t.Fatal(err)
	}
	srv.node.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Call(ctx, "echo", RawPayload([]byte("x")))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("call to a closed server: want UNAVAILABLE, got %v", err)
	}
}

func TestStopAndCloseFromHandler(t *testing.T) {
	dir := runtimeDir(t)
	n := openNode(t, dir, "go-stopper")
	svc, err := n.AddService("go.stopper", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	closeErr := make(chan error, 1)
	err = svc.Handle("stop", func(c *Call, _ Payload) (Payload, error) {
		closeErr <- n.Close() // refused: we are running on the node's dispatcher
		n.Stop()              // only asks; the loop returns after this handler
		return RawPayload([]byte("stopping")), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- n.Serve(context.Background()) }()
	c := connect(t, dir, "go.stopper")
	got, err := c.Call(context.Background(), "stop", Payload{})
	if err != nil || string(got.Data) != "stopping" {
		t.Fatalf("stop: %q %v", got.Data, err)
	}
	if err := <-closeErr; !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("Close from a handler: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop from a handler did not end Serve")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}
