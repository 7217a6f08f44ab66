package hms

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startPython runs `python tests/_servers.py echo` (service py.echo) in dir. The interpreter is
// $HMS_GO_TEST_PYTHON (the pytest driver passes sys.executable) or python3; $HMS_GO_TEST_PYTHONPATH
// is prepended to PYTHONPATH so the child imports the same hms_ffi_native. When no interpreter can
// import hms_ffi_native the test is skipped, or fails under HMS_REQUIRE_BINDINGS=1 (CI).
func startPython(t testing.TB, dir string) {
	t.Helper()
	startPythonArgs(t, dir, filepath.Join(repoRoot(t), "tests", "_servers.py"), "echo")
}

// startPythonArgs runs the interpreter with args in dir and waits for its "ready" line.
func startPythonArgs(t testing.TB, dir string, args ...string) {
	t.Helper()
	py := os.Getenv("HMS_GO_TEST_PYTHON")
	if py == "" {
		py = "python3"
	}
	env := append(os.Environ(), "HMS_FFI_RUNTIME_DIR="+dir, "PYTHONSAFEPATH=1")
	if pp := os.Getenv("HMS_GO_TEST_PYTHONPATH"); pp != "" {
		env = append(env, "PYTHONPATH="+pp+string(os.PathListSeparator)+os.Getenv("PYTHONPATH"))
	}
	probe := exec.Command(py, "-c", "import hms_ffi_native")
	probe.Env, probe.Dir = env, dir
	if out, err := probe.CombinedOutput(); err != nil {
		msg := "no Python peer: " + py + " cannot import hms_ffi_native (" + strings.TrimSpace(string(out)) +
			"); pip install -e . or set HMS_GO_TEST_PYTHON / HMS_GO_TEST_PYTHONPATH"
		if os.Getenv("HMS_REQUIRE_BINDINGS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	cmd := exec.Command(py, args...)
	cmd.Env, cmd.Dir = env, dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case l := <-line:
		if l != "ready" {
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			t.Fatalf("python %v did not start: %q %s", args, l, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("python %v not ready after 30 s: %s", args, stderr.String())
	}
}

func TestGoCallsPython(t *testing.T) {
	dir := runtimeDir(t)
	startPython(t, dir)
	c := connect(t, dir, "py.echo")
	ctx := context.Background()

	got, err := c.Call(ctx, "echo", RawPayload([]byte("raw bytes")))
	if err != nil || string(got.Data) != "raw bytes" || got.Type != Raw {
		t.Fatalf("raw echo: %q %v %v", got.Data, got.Type, err)
	}
	// Every shared vector through Python's cbor2 and back: identical bytes, and Go decodes the reply.
	for _, v := range loadVectors(t) {
		got, err := c.Call(ctx, "echo", Payload{Data: v.raw, Type: CBOR})
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		if !bytes.Equal(got.Data, v.raw) || got.Type != CBOR {
			t.Errorf("%s: python replied %x (type %v), want %s", v.Name, got.Data, got.Type, v.Hex)
			continue
		}
		val, err := DecodeCBOR(got.Data)
		if err != nil {
			t.Errorf("%s: %v", v.Name, err)
			continue
		}
		back, _ := EncodeCBOR(val)
		if !bytes.Equal(back, v.raw) {
			t.Errorf("%s: Go re-encoded python's reply to %x", v.Name, back)
		}
	}
	// A Python exception arrives as an *Error with the code, message and remote origin.
	req, _ := CBORPayload([]any{uint64(NotFound), "nope"})
	_, err = c.Call(ctx, "fail", req)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrNotFound) || e.Message != "nope" || !e.Remote {
		t.Fatalf("fail(5, nope): %#v", err)
	}
	_, err = c.Call(ctx, "crash", Payload{Type: CBOR, Data: []byte{0xf6}})
	if !errors.As(err, &e) || !e.Remote || (e.Code != Internal && e.Code != Unknown) {
		t.Fatalf("crash: %v", err)
	}
}

func TestGoReadsPythonServerStream(t *testing.T) {
	dir := runtimeDir(t)
	startPython(t, dir)
	c := connect(t, dir, "py.echo")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := CBORPayload(uint64(100))
	s, err := c.Stream(ctx, "count_to", req)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := uint64(0)
	for ; ; n++ {
		p, err := s.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("item %d: %v", n, err)
		}
		if v, err := DecodeCBOR(p.Data); err != nil || v != n {
			t.Fatalf("item %d is %v (%v)", n, v, err)
		}
	}
	if n != 100 {
		t.Fatalf("%d items, want 100", n)
	}
	// A stream that fails after k items: the items, then the handler's error with its details.
	req, _ = CBORPayload(uint64(3))
	s2, err := c.Stream(ctx, "fail_after", req)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for i := 0; i < 3; i++ {
		if _, err := s2.Next(ctx); err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	_, err = s2.Next(ctx)
	var e *Error
	if !errors.As(err, &e) || e.Code != InvalidArgument || !strings.Contains(e.Message, "failed after 3") || len(e.Details) == 0 {
		t.Fatalf("fail_after: %v", err)
	}
	if d, err := DecodeCBOR(e.Details); err != nil {
		t.Fatalf("details %x: %v", e.Details, err)
	} else if k, _ := d.(Map).Get("k"); k != uint64(3) {
		t.Fatalf("details %v", d)
	}
	// Cancelling the context of an endless stream ends it, and the Python generator is stopped.
	cctx, ccancel := context.WithCancel(context.Background())
	s3, err := c.Stream(cctx, "endless", Payload{Type: CBOR, Data: []byte{0xf6}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := s3.Next(cctx); err != nil {
			t.Fatal(err)
		}
	}
	ccancel()
	for {
		_, err = s3.Next(cctx)
		if err != nil {
			break
		}
	}
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled stream: %v", err)
	}
	s3.Close()
	waitFor(t, "the python generator to stop", func() bool {
		p, err := c.Call(ctx, "stream_stops", Payload{Type: CBOR, Data: []byte{0xf6}})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := DecodeCBOR(p.Data)
		return v == uint64(1)
	})
}

func TestGoCancelsPythonCall(t *testing.T) {
	dir := runtimeDir(t)
	startPython(t, dir)
	c := connect(t, dir, "py.echo")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	arg, _ := CBORPayload(3.0)
	t0 := time.Now()
	_, err := c.Call(ctx, "wait_cancel", arg)
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	waitFor(t, "the python handler to see the cancellation", func() bool {
		p, err := c.Call(context.Background(), "cancels", Payload{Type: CBOR, Data: []byte{0xf6}})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := DecodeCBOR(p.Data)
		return v == uint64(1)
	})
}

func TestGoClientStreamsToPython(t *testing.T) {
	dir := runtimeDir(t)
	startPython(t, dir)
	c := connect(t, dir, "py.echo")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Client stream: 100 CBOR integers to total(items) -> their sum, then the end.
	s, err := c.OpenStream(ctx, "total", Payload{}, StreamClient)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := uint64(0)
	for i := uint64(1); i <= 100; i++ {
		p, _ := CBORPayload(i)
		if err := s.Send(p); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		want += i
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	p, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := DecodeCBOR(p.Data); v != want {
		t.Fatalf("total = %v, want %d", v, want)
	}
	if _, err := s.Next(ctx); err != io.EOF {
		t.Fatalf("after the reply: %v, want io.EOF", err)
	}
	if err := s.Send(p); err == nil {
		t.Fatal("Send after CloseSend succeeded")
	}
	// Bidirectional: chat doubles integers; sends and receives on two goroutines.
	b, err := c.OpenStream(ctx, "chat", Payload{}, StreamBidi)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	go func() {
		for i := uint64(0); i < 50; i++ {
			p, _ := CBORPayload(i)
			if b.Send(p) != nil {
				return
			}
		}
		b.CloseSend()
	}()
	for i := uint64(0); ; i++ {
		p, err := b.Next(ctx)
		if err == io.EOF {
			if i != 50 {
				t.Fatalf("chat ended after %d replies", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := DecodeCBOR(p.Data); v != 2*i {
			t.Fatalf("chat reply %d = %v", i, v)
		}
	}
}

// pyPublisher publishes 20 CBOR maps on py.events once a subscriber is there, then waits.
const pyPublisher = `
import sys, time, datetime
import hms_ffi_native as hms
node = hms.Node("py-pub")
pub = node.publisher("py.events")
print("ready", flush=True)
assert pub.wait_for_subscribers(1, timeout=10), "no subscriber"
for i in range(20):
    pub.publish({"i": i, "at": datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc), "tags": {"x"}})
time.sleep(30)
`

func TestPythonPublishesGoSubscribes(t *testing.T) {
	dir := runtimeDir(t)
	n := openNode(t, dir, "go-sub")
	sub, err := n.Subscribe("py.*", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	startPythonArgs(t, dir, "-c", pyPublisher)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := uint64(0); i < 20; i++ {
		m, err := sub.Recv(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.Topic != "py.events" || m.Payload.Type != CBOR || m.Seq != i+1 {
			t.Fatalf("message %d: topic %q type %v seq %d", i, m.Topic, m.Payload.Type, m.Seq)
		}
		v, err := DecodeCBOR(m.Payload.Data)
		if err != nil {
			t.Fatal(err)
		}
		mv := v.(Map)
		got, _ := mv.Get("i")
		at, _ := mv.Get("at")
		tags, _ := mv.Get("tags")
		if got != i || !at.(time.Time).Equal(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)) || len(tags.(Set)) != 1 {
			t.Fatalf("message %d decoded to %#v", i, mv)
		}
		if back, _ := EncodeCBOR(v); !bytes.Equal(back, m.Payload.Data) {
			t.Fatalf("message %d: re-encoded %x, python sent %x", i, back, m.Payload.Data)
		}
	}
}
