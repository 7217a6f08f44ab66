package hms_test

import (
	"context"
	"errors"
	"fmt"

	hms "github.com/hms-ffi/hms-ffi-native/bindings/go"
)

// The README's example (compiled, not run: it needs a py.echo service).
func Example() {
	ctx := context.Background()
	node, _ := hms.OpenNode(nil) // server: a Go function other processes call
	defer node.Close()
	svc, _ := node.AddService("demo.echo", "1.0.0")
	svc.Handle("echo", func(c *hms.Call, req hms.Payload) (hms.Payload, error) { return req, nil })
	go node.Serve(ctx) // handlers run on this dispatcher thread

	cl, _ := node.Connect(ctx, "py.echo", "^1", nil) // client: any language's service
	reply, err := cl.Call(ctx, "echo", hms.RawPayload([]byte("hi")))
	if errors.Is(err, hms.ErrNotFound) { /* every status code has an Err* sentinel */
	}
	fmt.Println(string(reply.Data))
}
