// Command hms-orders-api is the API front end of examples/orders, in Go: it calls the OMS (Python,
// SQLite) through hms.order.v1.OrderService and OMSIntegrationService with protobuf payloads
// (content type 4), keeps its own view of every order's status, changed only by status events whose
// HMAC-SHA256 signature verifies, shows the errors the OMS returns across the language boundary,
// publishes one tampered event to show it rejected, and measures round trips.
//
//	HMS_ORDERS_HMAC_KEY_FILE=key.hex hms-orders-api [-report r.json] [-n 500] [-user alice]
//	hms-orders-api descriptors      # the compiled-in .proto descriptors (for the staleness test)
//
// The runtime directory comes from HMS_FFI_RUNTIME_DIR. The same steps as the Python front end
// (hms_ffi_native/_orders/frontend.py). Exit status 0 when every step did what it should.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	hms "github.com/hms-ffi/hms-ffi-native/bindings/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/hms-ffi/hms-ffi-native/examples/orders/go/orderpb"
)

const (
	serviceOrders = "hms.order.v1.OrderService"
	serviceOMS    = "hms.order.v1.OMSIntegrationService"
	callTimeout   = 2 * time.Second
	eventTimeout  = 2 * time.Second
)

func statusName(s pb.OrderStatus) string {
	return strings.TrimPrefix(s.String(), "ORDER_STATUS_")
}

func us(d time.Duration) string { return fmt.Sprintf("%d us", d.Microseconds()) }

type viewEntry struct {
	Status  string `json:"status"`
	Version int64  `json:"version"`
}

type rejection struct {
	ID           string `json:"id"`
	Reason       string `json:"reason"`
	PublisherPID int32  `json:"publisher_pid"`
}

type errorSeen struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details"`
}

type report struct {
	Frontend     string                        `json:"frontend"`
	PID          int                           `json:"pid"`
	Orders       map[string]viewEntry          `json:"orders"`
	Errors       map[string]errorSeen          `json:"errors"`
	Events       eventCounts                   `json:"events"`
	Latency      map[string]map[string]float64 `json:"latency_us"`
	ContentTypes []int                         `json:"content_types"`
	Tamper       map[string]any                `json:"tamper"`
}

type eventCounts struct {
	Verified   int         `json:"verified"`
	Applied    int         `json:"applied"`
	Rejected   int         `json:"rejected"`
	Stale      int         `json:"stale"`
	Rejections []rejection `json:"rejections"`
}

type frontEnd struct {
	key       []byte
	user      string
	nLatency  int
	node      *hms.Node
	orders    *hms.Client
	oms       *hms.Client
	sub       *hms.Subscription
	view      map[int64]viewEntry
	seen      map[string]bool
	lastEvent map[int64]*envelope
	rep       report
	cts       map[hms.ContentType]bool
	eventLat  []time.Duration
	ctx       context.Context
}

// call sends a protobuf request and decodes the protobuf reply into out; it returns the round trip.
func (f *frontEnd) call(c *hms.Client, fn string, req, out proto.Message) (time.Duration, error) {
	if f.ctx.Err() != nil {
		return 0, errInterrupted
	}
	data, err := proto.Marshal(req)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	reply, err := c.Call(context.Background(), fn, hms.Payload{Data: data, Type: hms.Protobuf})
	d := time.Since(t0)
	if err != nil {
		return d, err
	}
	f.cts[reply.Type] = true
	if reply.Type != hms.Protobuf {
		return d, fmt.Errorf("%s answered content type %d, not protobuf (4)", fn, reply.Type)
	}
	return d, proto.Unmarshal(reply.Data, out)
}

func (f *frontEnd) must(d time.Duration, err error) time.Duration {
	if err != nil {
		fail(err)
	}
	return d
}

// errInterrupted: SIGINT or SIGTERM arrived; the front end stops at its next call, quietly.
var errInterrupted = errors.New("interrupted")

func fail(err error) {
	if !errors.Is(err, errInterrupted) {
		fmt.Fprintf(os.Stderr, "front end: %v\n", err)
	}
	panic(exitError{err})
}

type exitError struct{ err error }

func (f *frontEnd) reqCtx(corr string) *pb.RequestContext {
	return &pb.RequestContext{CorrelationId: corr, UserId: f.user}
}

// handle verifies and applies one received message; it returns the change when it was applied.
func (f *frontEnd) handle(m *hms.Message) *pb.OrderStatusChanged {
	if !m.Event {
		log.Printf("WARNING ignored a non-event message on %s (seq %d)", m.Topic, m.Seq)
		return nil
	}
	if m.Missed > 0 {
		log.Printf("WARNING missed %d status events: syncing with the OMS", m.Missed)
		f.resync()
	}
	e, err := decodeEnvelope(m.Payload.Data)
	if err == nil {
		err = verify(f.key, e)
	}
	if err != nil {
		id := ""
		if e != nil {
			id = e.ID
		}
		f.rep.Events.Rejected++
		f.rep.Events.Rejections = append(f.rep.Events.Rejections, rejection{ID: id, Reason: err.Error(), PublisherPID: m.PublisherPID})
		log.Printf("WARNING REJECTED event %s from pid %d: %v; not applied", id, m.PublisherPID, err)
		return nil
	}
	f.rep.Events.Verified++
	var ch pb.OrderStatusChanged
	if err := proto.Unmarshal(e.Message, &ch); err != nil {
		log.Printf("WARNING signed event %s carries an undecodable message: %v", e.ID, err)
		return nil
	}
	known, ok := f.view[ch.OrderId]
	if f.seen[e.ID] || (ok && ch.Version <= known.Version) {
		f.rep.Events.Stale++
		log.Printf("INFO ignored stale event %s (order %d version %d)", e.ID, ch.OrderId, ch.Version)
		return nil
	}
	f.seen[e.ID] = true
	f.lastEvent[ch.OrderId] = e
	f.view[ch.OrderId] = viewEntry{Status: statusName(ch.NewStatus), Version: ch.Version}
	f.rep.Events.Applied++
	return &ch
}

func (f *frontEnd) recv(timeout time.Duration) (*hms.Message, error) {
	ctx, cancel := context.WithTimeout(f.ctx, timeout)
	defer cancel()
	m, err := f.sub.Recv(ctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && f.ctx.Err() == nil {
		return nil, nil
	}
	return m, err
}

// awaitChange receives events until the one for (orderID, version) was verified and applied.
func (f *frontEnd) awaitChange(orderID, version int64, t0 time.Time) {
	end := time.Now().Add(eventTimeout)
	for time.Now().Before(end) {
		m, err := f.recv(time.Until(end))
		if err != nil {
			fail(err)
		}
		if m == nil {
			break
		}
		ch := f.handle(m)
		if ch != nil && ch.OrderId == orderID && ch.Version >= version {
			lat := time.Since(t0)
			f.eventLat = append(f.eventLat, lat)
			e := f.lastEvent[orderID]
			fmt.Printf("    event %s: order %d %s -> %s v%d, signature ok (key %s, user %s, correlation %s), applied %s after the call started\n",
				e.ID[:8], ch.OrderId, statusName(ch.OldStatus), statusName(ch.NewStatus), ch.Version, keyID(f.key),
				e.UserID, e.CorrelationID, us(lat))
			return
		}
	}
	fail(fmt.Errorf("no verified status event for order %d version %d within %s", orderID, version, eventTimeout))
}

func (f *frontEnd) resync() {
	for id, v := range f.view {
		var r pb.SyncOrderStatusResponse
		f.must(f.call(f.oms, "SyncOrderStatus", &pb.SyncOrderStatusRequest{OrderId: id,
			KnownStatus: pb.OrderStatus(pb.OrderStatus_value["ORDER_STATUS_"+v.Status]), KnownVersion: v.Version}, &r))
		f.view[id] = viewEntry{Status: statusName(r.Status), Version: r.Version}
	}
}

func (f *frontEnd) expectError(label string, c *hms.Client, fn string, req proto.Message, code hms.Code) {
	var out pb.OrderResponse // any reply type: the call must fail
	_, err := f.call(c, fn, req, &out)
	if err == nil {
		fail(fmt.Errorf("%s: expected %s, the call succeeded", label, code))
	}
	var he *hms.Error
	if !errors.As(err, &he) {
		fail(fmt.Errorf("%s: %v", label, err))
	}
	details := map[string]any{}
	shown := []string{}
	if len(he.Details) > 0 && he.DetailsType == hms.CBOR {
		if v, derr := hms.DecodeCBOR(he.Details); derr == nil {
			if m, ok := v.(hms.Map); ok {
				for _, ent := range m {
					if k, ok := ent.Key.(string); ok {
						details[k] = fmt.Sprint(ent.Value)
					}
				}
				for _, k := range []string{"field", "order_id"} {
					if v, ok := m.Get(k); ok {
						shown = append(shown, fmt.Sprintf("%s=%v", k, v))
					}
				}
			}
		}
	}
	extra := ""
	if len(shown) > 0 {
		extra = " (" + strings.Join(shown, ", ") + ")"
	}
	fmt.Printf("  %-40s -> %s: %s%s\n", label, he.Code, he.Message, extra)
	f.rep.Errors[label] = errorSeen{Code: he.Code.String(), Message: he.Message, Details: details}
	if he.Code != code {
		fail(fmt.Errorf("%s: expected %s, got %s", label, code, he.Code))
	}
}

func (f *frontEnd) run() {
	fmt.Printf("API front end (Go, pid %d): connected to %s and %s (OMS pid %d), subscribed to %s\n",
		os.Getpid(), serviceOrders, serviceOMS, f.orders.ServerPID(), statusTopic)
	corr := fmt.Sprintf("c-%08x", time.Now().UnixNano()&0xffffffff)
	fmt.Println("order flow (protobuf requests and replies, content type 4):")
	items := []*pb.OrderItemData{
		{Sku: "A-100", Name: "widget", Quantity: 2, UnitPriceCents: 1995},
		{Sku: "B-200", Name: "gadget", Quantity: 1, UnitPriceCents: 2000},
	}
	var r pb.OrderResponse
	t0 := time.Now()
	d := f.must(f.call(f.orders, "CreateOrder", &pb.CreateOrderRequest{CustomerId: "cust-1001", Items: items, Context: f.reqCtx(corr)}, &r))
	a := r.Order
	fmt.Printf("  %-40s -> order %d %s, total %.2f %s  [%s]\n", "CreateOrder(cust-1001, 2 items)", a.Id,
		statusName(a.Status), float64(a.TotalCents)/100, a.Currency, us(d))
	f.awaitChange(a.Id, a.Version, t0)
	var s pb.SendOrderToOMSResponse
	t0 = time.Now()
	d = f.must(f.call(f.oms, "SendOrderToOMS", &pb.SendOrderToOMSRequest{OrderId: a.Id, Context: f.reqCtx(corr)}, &s))
	fmt.Printf("  %-40s -> accepted as %s, %s  [%s]\n", fmt.Sprintf("SendOrderToOMS(%d)", a.Id), s.OmsReference,
		statusName(s.Status), us(d))
	f.awaitChange(a.Id, a.Version+1, t0)
	for _, step := range []struct {
		st     pb.OrderStatus
		reason string
	}{{pb.OrderStatus_ORDER_STATUS_PROCESSING, "picking"}, {pb.OrderStatus_ORDER_STATUS_SHIPPED, "carrier picked it up"}} {
		t0 = time.Now()
		d = f.must(f.call(f.orders, "UpdateOrder", &pb.UpdateOrderRequest{OrderId: a.Id, Status: step.st, Reason: step.reason,
			Context: f.reqCtx(corr)}, &r))
		fmt.Printf("  %-40s -> %s v%d  [%s]\n", fmt.Sprintf("UpdateOrder(%d, %s)", a.Id, statusName(step.st)),
			statusName(r.Order.Status), r.Order.Version, us(d))
		f.awaitChange(a.Id, r.Order.Version, t0)
	}
	corrB := fmt.Sprintf("c-%08x", (time.Now().UnixNano()>>8)&0xffffffff)
	t0 = time.Now()
	d = f.must(f.call(f.orders, "CreateOrder", &pb.CreateOrderRequest{CustomerId: "cust-1002",
		Items: []*pb.OrderItemData{{Sku: "C-300", Name: "gizmo", Quantity: 5, UnitPriceCents: 499}}, Context: f.reqCtx(corrB)}, &r))
	b := r.Order
	fmt.Printf("  %-40s -> order %d %s, total %.2f %s  [%s]\n", "CreateOrder(cust-1002, 1 item)", b.Id,
		statusName(b.Status), float64(b.TotalCents)/100, b.Currency, us(d))
	f.awaitChange(b.Id, b.Version, t0)
	t0 = time.Now()
	d = f.must(f.call(f.orders, "UpdateOrder", &pb.UpdateOrderRequest{OrderId: b.Id, Status: pb.OrderStatus_ORDER_STATUS_CANCELLED,
		Reason: "customer changed their mind", Context: f.reqCtx(corrB)}, &r))
	fmt.Printf("  %-40s -> %s v%d  [%s]\n", fmt.Sprintf("UpdateOrder(%d, CANCELLED)", b.Id), statusName(r.Order.Status),
		r.Order.Version, us(d))
	f.awaitChange(b.Id, r.Order.Version, t0)
	var g pb.OrderResponse
	d = f.must(f.call(f.orders, "GetOrder", &pb.GetOrderRequest{OrderId: a.Id}, &g))
	fmt.Printf("  %-40s -> %s v%d, %s, %d items, customer %s  [%s]\n", fmt.Sprintf("GetOrder(%d)", a.Id),
		statusName(g.Order.Status), g.Order.Version, g.Order.OmsReference, len(g.Order.Items), g.Order.CustomerId, us(d))
	v := f.view[a.Id]
	var y pb.SyncOrderStatusResponse
	d = f.must(f.call(f.oms, "SyncOrderStatus", &pb.SyncOrderStatusRequest{OrderId: a.Id,
		KnownStatus: pb.OrderStatus(pb.OrderStatus_value["ORDER_STATUS_"+v.Status]), KnownVersion: v.Version}, &y))
	sync := "OUT OF SYNC"
	if y.InSync {
		sync = "in sync"
	}
	fmt.Printf("  %-40s -> %s v%d, %s  [%s]\n", fmt.Sprintf("SyncOrderStatus(%d, known %s v%d)", a.Id, v.Status, v.Version),
		statusName(y.Status), y.Version, sync, us(d))

	fmt.Println("errors across the process boundary:")
	okItems := []*pb.OrderItemData{{Sku: "A-100", Quantity: 1, UnitPriceCents: 100}}
	f.expectError("CreateOrder(no customer)", f.orders, "CreateOrder", &pb.CreateOrderRequest{Items: okItems}, hms.InvalidArgument)
	f.expectError("CreateOrder(no items)", f.orders, "CreateOrder", &pb.CreateOrderRequest{CustomerId: "cust-1001"}, hms.InvalidArgument)
	f.expectError("CreateOrder(quantity -3)", f.orders, "CreateOrder", &pb.CreateOrderRequest{CustomerId: "cust-1001",
		Items: []*pb.OrderItemData{{Sku: "A-100", Quantity: -3, UnitPriceCents: 100}}}, hms.InvalidArgument)
	f.expectError("GetOrder(999)", f.orders, "GetOrder", &pb.GetOrderRequest{OrderId: 999}, hms.NotFound)
	f.expectError(fmt.Sprintf("UpdateOrder(%d, SHIPPED -> PENDING)", a.Id), f.orders, "UpdateOrder",
		&pb.UpdateOrderRequest{OrderId: a.Id, Status: pb.OrderStatus_ORDER_STATUS_PENDING}, hms.FailedPrecondition)
	f.expectError(fmt.Sprintf("SendOrderToOMS(%d) (cancelled)", b.Id), f.oms, "SendOrderToOMS",
		&pb.SendOrderToOMSRequest{OrderId: b.Id}, hms.FailedPrecondition)

	f.tamper(a.Id)

	fmt.Printf("latency (Go -> Python OMS, protobuf over shared memory, %d calls each):\n", f.nLatency)
	for _, c := range []struct {
		fn     string
		client *hms.Client
		req    proto.Message
		out    proto.Message
	}{{"GetOrder", f.orders, &pb.GetOrderRequest{OrderId: a.Id}, &pb.OrderResponse{}},
		{"SyncOrderStatus", f.oms, &pb.SyncOrderStatusRequest{OrderId: a.Id}, &pb.SyncOrderStatusResponse{}}} {
		lat := make([]time.Duration, 0, f.nLatency)
		for i := 0; i < f.nLatency; i++ {
			lat = append(lat, f.must(f.call(c.client, c.fn, c.req, c.out)))
		}
		p50, p99 := pct(lat, .5), pct(lat, .99)
		f.rep.Latency[c.fn] = map[string]float64{"p50": us64(p50), "p99": us64(p99), "n": float64(len(lat))}
		fmt.Printf("  %-16s round trip p50 %.1f us, p99 %.1f us\n", c.fn, us64(p50), us64(p99))
	}
	ev := append([]time.Duration(nil), f.eventLat...)
	sort.Slice(ev, func(i, j int) bool { return ev[i] < ev[j] })
	f.rep.Latency["event"] = map[string]float64{"p50": us64(pct(ev, .5)), "max": us64(ev[len(ev)-1]), "n": float64(len(ev))}
	fmt.Printf("  call -> signed status event verified and applied: p50 %.0f us, max %.0f us (%d events)\n",
		us64(pct(ev, .5)), us64(ev[len(ev)-1]), len(ev))
	for _, id := range []int64{a.Id, b.Id} {
		f.rep.Orders[fmt.Sprint(id)] = f.view[id]
	}
	fmt.Printf("front end done: %d orders, %d status events verified and applied, %d tampered event rejected\n",
		len(f.view), f.rep.Events.Applied, f.rep.Events.Rejected)
}

// tamper plays an attacker on the host: it re-publishes the last genuine event of orderID on
// order.status with new_status DELIVERED (and a higher version), keeping the original signature.
func (f *frontEnd) tamper(orderID int64) {
	fmt.Printf("tampering: a second publisher on order.status re-sends the last event of order %d with new_status DELIVERED and the original signature:\n", orderID)
	genuine := f.lastEvent[orderID]
	var ch pb.OrderStatusChanged
	if err := proto.Unmarshal(genuine.Message, &ch); err != nil {
		fail(err)
	}
	ch.OldStatus, ch.NewStatus, ch.Version = ch.NewStatus, pb.OrderStatus_ORDER_STATUS_DELIVERED, ch.Version+1
	forged, err := proto.Marshal(&ch)
	if err != nil {
		fail(err)
	}
	data := append(hms.Map(nil), genuine.data...)
	data.Set("message", forged)
	env := append(hms.Map(nil), genuine.raw...)
	env.Set("data", data)
	payload, err := hms.CBORPayload(env)
	if err != nil {
		fail(err)
	}
	pub, err := f.node.Publisher(statusTopic, nil)
	if err != nil {
		fail(err)
	}
	defer pub.Close()
	if _, err := pub.Publish(f.ctx, payload, true); err != nil {
		fail(err)
	}
	before := f.rep.Events.Rejected
	end := time.Now().Add(eventTimeout)
	for f.rep.Events.Rejected == before && time.Now().Before(end) {
		m, err := f.recv(time.Until(end))
		if err != nil {
			fail(err)
		}
		if m != nil {
			f.handle(m)
		}
	}
	if f.rep.Events.Rejected == before {
		fail(errors.New("the tampered event was not received"))
	}
	var y pb.SyncOrderStatusResponse
	f.must(f.call(f.oms, "SyncOrderStatus", &pb.SyncOrderStatusRequest{OrderId: orderID}, &y))
	fmt.Printf("  order %d stays %s in the front end's view (OMS says %s)\n", orderID, f.view[orderID].Status, statusName(y.Status))
	f.rep.Tamper = map[string]any{"order_id": orderID, "view_status": f.view[orderID].Status, "oms_status": statusName(y.Status)}
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if !sort.SliceIsSorted(sorted, func(i, j int) bool { return sorted[i] < sorted[j] }) {
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	}
	i := int(float64(len(sorted)) * p)
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func us64(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

// descriptors prints each compiled-in file descriptor as base64 of its FileDescriptorProto.
func descriptors() {
	for _, fd := range []protoreflect.FileDescriptor{pb.File_order_proto, pb.File_oms_integration_proto} {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(protodesc.ToFileDescriptorProto(fd))
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s %s\n", fd.Path(), base64.StdEncoding.EncodeToString(b))
	}
}

func main() {
	code := 0
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(exitError)
			if !ok {
				panic(r)
			}
			code = 1
			if errors.Is(e.err, errInterrupted) {
				code = 130
			}
		}
		os.Exit(code)
	}()
	if len(os.Args) > 1 && os.Args[1] == "descriptors" {
		descriptors()
		return
	}
	reportPath := flag.String("report", "", "write a JSON report of what happened to this file")
	n := flag.Int("n", 500, "round trips per latency measurement")
	user := flag.String("user", "alice", "the API user the calls are made for")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("  front end log: ")
	key, err := loadKey()
	if err != nil {
		fmt.Fprintf(os.Stderr, "front end: %v\n", err)
		code = 2
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	f := &frontEnd{key: key, user: *user, nLatency: max(10, *n), ctx: ctx, view: map[int64]viewEntry{},
		seen: map[string]bool{}, lastEvent: map[int64]*envelope{}, cts: map[hms.ContentType]bool{}}
	f.rep = report{Frontend: "go", PID: os.Getpid(), Orders: map[string]viewEntry{}, Errors: map[string]errorSeen{},
		Latency: map[string]map[string]float64{}, Events: eventCounts{Rejections: []rejection{}}}
	if f.node, err = hms.OpenNode(nil); err != nil {
		fail(err)
	}
	defer f.node.Close() // closes the clients, publisher and subscription it still owns
	defer func() {
		if *reportPath != "" {
			for ct := range f.cts {
				f.rep.ContentTypes = append(f.rep.ContentTypes, int(ct))
			}
			sort.Ints(f.rep.ContentTypes)
			if b, err := json.MarshalIndent(f.rep, "", "  "); err == nil {
				_ = os.WriteFile(*reportPath, b, 0o644)
			}
		}
	}()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if f.orders, err = f.node.Connect(cctx, serviceOrders, "^1", nil); err != nil {
		fail(err)
	}
	if f.oms, err = f.node.Connect(cctx, serviceOMS, "^1", nil); err != nil {
		fail(err)
	}
	if f.sub, err = f.node.Subscribe(statusTopic, nil); err != nil {
		fail(err)
	}
	f.run()
}
