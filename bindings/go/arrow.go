package hms

/*
#include <stdlib.h>
#include <hms_ffi/hms_ffi.h>

// Release callbacks for the structs EncodeArrowRecordBatch builds: hms_arrow_encode only borrows
// them (and refuses released ones), the Go side frees their memory itself.
static void hms_go_arrow_schema_noop(struct ArrowSchema *s) { s->release = NULL; }
static void hms_go_arrow_array_noop(struct ArrowArray *a) { a->release = NULL; }
static void hms_go_arrow_set_release(struct ArrowSchema *s, struct ArrowArray *a) {
  if (s) s->release = hms_go_arrow_schema_noop;
  if (a) a->release = hms_go_arrow_array_noop;
}
static void hms_go_arrow_release(struct ArrowSchema *s, struct ArrowArray *a, size_t n) {
  if (s && s->release) s->release(s);
  for (size_t i = 0; i < n; i++)
    if (a[i].release) a[i].release(&a[i]);
}
*/
import "C"

import (
	"fmt"
	"math/bits"
	"runtime"
	"sync"
	"unsafe"
)

// ArrowKind says what an Arrow payload was made from (HMS_ARROW_KIND_*).
type ArrowKind uint32

const (
	ArrowUnspecified  ArrowKind = C.HMS_ARROW_KIND_UNSPECIFIED
	ArrowArray        ArrowKind = C.HMS_ARROW_KIND_ARRAY         // one array (pyarrow.Array)
	ArrowChunkedArray ArrowKind = C.HMS_ARROW_KIND_CHUNKED_ARRAY // arrays of one type (pyarrow.ChunkedArray)
	ArrowRecordBatch  ArrowKind = C.HMS_ARROW_KIND_RECORD_BATCH  // one struct array of columns
	ArrowTable        ArrowKind = C.HMS_ARROW_KIND_TABLE         // record batches of one schema (pyarrow.Table)
)

func (k ArrowKind) String() string {
	switch k {
	case ArrowArray:
		return "Array"
	case ArrowChunkedArray:
		return "ChunkedArray"
	case ArrowRecordBatch:
		return "RecordBatch"
	case ArrowTable:
		return "Table"
	}
	return "unspecified"
}

// ArrowField describes one node of an Arrow schema (Go copies of the decoded schema's strings).
type ArrowField struct {
	Name       string
	Format     string // the C Data Interface format string: "g" float64, "l" int64, "u" utf8, "+s" struct, ...
	Nullable   bool
	Children   []ArrowField
	Dictionary *ArrowField // the value type of a dictionary-encoded field (Format is then the index type)
}

// ArrowData is an Arrow payload (HMS_CT_ARROW: a pyarrow Array, ChunkedArray, RecordBatch or Table
// sent by any binding) decoded IN PLACE: hms_arrow_decode validated the whole layout, and every
// column slice this type hands out points into the payload's memory — for a large payload the
// sender's arena block, mapped read-only — nothing is copied.
//
// Lifetime: an ArrowData holds its own reference to the payload (see DecodeArrow), so it stays valid
// after the handler returned; Release gives the memory back. Slices obtained from it are valid until
// Release and must not be written to (the memory is read-only). There is no finalizer: forgetting
// Release keeps the block out of the sender's quota, it never leaves a dangling slice.
// Methods may be called from several goroutines; Release must not race with the use of slices.
type ArrowData struct {
	mu       sync.RWMutex
	held     *HeldPayload
	schema   *C.struct_ArrowSchema
	arrays   *C.struct_ArrowArray
	n        int
	kind     ArrowKind
	root     ArrowField
	released bool
}

// DecodeArrow decodes an HMS_CT_ARROW payload without copying its data. p is, best, the request of
// an FnInPlace handler or a HeldPayload's Payload(): the ArrowData then takes a reference of its
// own (hms_call_take_request under the hood: the arena block stays mapped until Release, also past
// the handler). A payload in Go memory (an ordinary handler's request, a client reply, your own
// bytes) is copied once into C memory first. Errors: ErrInvalidArgument (wrapped in *Error) for
// anything that is not a valid layout — nothing is read before the layout is validated completely.
func DecodeArrow(p Payload) (*ArrowData, error) {
	if p.Type != Arrow && p.Type != None && p.Type != Raw {
		return nil, Errorf(InvalidArgument, "DecodeArrow: the payload's content type is %d, not Arrow (%d)", p.Type, Arrow)
	}
	if len(p.Data) < C.HMS_ARROW_HEADER_BYTES {
		return nil, Errorf(InvalidArgument, "DecodeArrow: %d bytes cannot hold an Arrow layout (the header alone is %d)",
			len(p.Data), C.HMS_ARROW_HEADER_BYTES)
	}
	h, err := retain(p)
	if err != nil {
		return nil, err
	}
	a, err := decodeArrowHeld(h)
	if err != nil {
		h.unref()
		return nil, err
	}
	return a, nil
}

func decodeArrowHeld(h *HeldPayload) (*ArrowData, error) {
	src := (*C.uint8_t)(unsafe.Pointer(&h.data[0]))
	ln := C.size_t(len(h.data))
	var kind C.uint32_t
	var count C.size_t
	var e C.hms_error_t
	if st := C.hms_arrow_peek(src, ln, &kind, &count, &e); st != C.HMS_OK {
		return nil, errorFrom(st, &e)
	}
	if count > C.HMS_ARROW_MAX_NODES {
		return nil, Errorf(InvalidArgument, "DecodeArrow: the layout claims %d arrays (at most %d nodes are allowed)",
			uint64(count), C.HMS_ARROW_MAX_NODES)
	}
	n := int(count)
	schema := (*C.struct_ArrowSchema)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_ArrowSchema{}))))
	arrays := (*C.struct_ArrowArray)(C.calloc(C.size_t(max(n, 1)), C.size_t(unsafe.Sizeof(C.struct_ArrowArray{}))))
	if schema == nil || arrays == nil {
		C.free(unsafe.Pointer(schema))
		C.free(unsafe.Pointer(arrays))
		return nil, Errorf(ResourceExhausted, "DecodeArrow: cannot allocate %d array structs", n)
	}
	var got C.size_t
	st := C.hms_arrow_decode(src, ln, nil, nil, schema, arrays, C.size_t(n), &got, &e)
	if st != C.HMS_OK {
		C.free(unsafe.Pointer(schema))
		C.free(unsafe.Pointer(arrays))
		return nil, errorFrom(st, &e)
	}
	a := &ArrowData{held: h, schema: schema, arrays: arrays, n: int(got), kind: ArrowKind(kind)}
	a.root = fieldOf(schema, 0)
	if (a.kind == ArrowRecordBatch || a.kind == ArrowTable) && a.root.Format != "+s" {
		a.Release()
		return nil, Errorf(InvalidArgument, "DecodeArrow: a %s needs a struct schema, the layout has format %q", a.kind, a.root.Format)
	}
	return a, nil
}

func fieldOf(s *C.struct_ArrowSchema, depth int) ArrowField {
	f := ArrowField{Format: C.GoString(s.format), Nullable: s.flags&C.ARROW_FLAG_NULLABLE != 0}
	if s.name != nil {
		f.Name = C.GoString(s.name)
	}
	if depth > C.HMS_ARROW_MAX_DEPTH { // the decoder bounds the depth already
		return f
	}
	if s.n_children > 0 {
		kids := unsafe.Slice(s.children, int(s.n_children))
		f.Children = make([]ArrowField, len(kids))
		for i, k := range kids {
			f.Children[i] = fieldOf(k, depth+1)
		}
	}
	if s.dictionary != nil {
		d := fieldOf(s.dictionary, depth+1)
		f.Dictionary = &d
	}
	return f
}

// Release frees the decoded structs and drops the payload reference (the arena block goes back to
// its sender once nothing else holds it). Idempotent. Slices obtained before are invalid afterwards.
func (a *ArrowData) Release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.released {
		return
	}
	a.released = true
	C.hms_go_arrow_release(a.schema, a.arrays, C.size_t(a.n))
	C.free(unsafe.Pointer(a.schema))
	C.free(unsafe.Pointer(a.arrays))
	a.schema, a.arrays = nil, nil
	a.held.unref()
	a.held = nil
}

// Kind is what the sender encoded (Table, RecordBatch, Array, ChunkedArray).
func (a *ArrowData) Kind() ArrowKind { return a.kind }

// Schema is the root of the schema: a struct ("+s") whose children are the columns for a Table or
// RecordBatch, the array's type otherwise.
func (a *ArrowData) Schema() ArrowField { return a.root }

// Fields are the columns: the root's children for a Table or RecordBatch, the root itself otherwise.
func (a *ArrowData) Fields() []ArrowField {
	if a.kind == ArrowTable || a.kind == ArrowRecordBatch {
		return a.root.Children
	}
	return []ArrowField{a.root}
}

// ColumnIndex returns the index of the column named name, -1 when there is none.
func (a *ArrowData) ColumnIndex(name string) int {
	for i, f := range a.Fields() {
		if f.Name == name {
			return i
		}
	}
	return -1
}

// NumBatches is the number of top-level arrays: record batches of a Table, chunks of a
// ChunkedArray, 1 for a RecordBatch or an Array.
func (a *ArrowData) NumBatches() int { return a.n }

// NumRows is the total length over all batches.
func (a *ArrowData) NumRows() int64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.released {
		return 0
	}
	var t int64
	for _, x := range unsafe.Slice(a.arrays, a.n) {
		t += int64(x.length)
	}
	return t
}

// Held is the payload the data lives in (its Data() is the whole layout), e.g. to check that a
// column lies inside it. Valid until Release.
func (a *ArrowData) Held() *HeldPayload { return a.held }

// column finds column col of batch `batch`: the array, the first element it uses and the length.
func (a *ArrowData) column(batch, col int) (arr *C.struct_ArrowArray, start, length int64, f ArrowField, err error) {
	if a.released {
		return nil, 0, 0, f, &Error{Code: FailedPrecondition, Message: "the ArrowData was released"}
	}
	if batch < 0 || batch >= a.n {
		return nil, 0, 0, f, Errorf(OutOfRange, "batch %d does not exist (the payload has %d)", batch, a.n)
	}
	fields := a.Fields()
	if col < 0 || col >= len(fields) {
		return nil, 0, 0, f, Errorf(OutOfRange, "column %d does not exist (the payload has %d)", col, len(fields))
	}
	f = fields[col]
	root := (*C.struct_ArrowArray)(unsafe.Add(unsafe.Pointer(a.arrays), uintptr(batch)*unsafe.Sizeof(*a.arrays)))
	if a.kind != ArrowTable && a.kind != ArrowRecordBatch {
		return root, int64(root.offset), int64(root.length), f, nil
	}
	if int(root.n_children) != len(fields) {
		return nil, 0, 0, f, Errorf(InvalidArgument, "batch %d has %d columns, the schema %d", batch, root.n_children, len(fields))
	}
	if root.null_count != 0 {
		return nil, 0, 0, f, Errorf(InvalidArgument, "batch %d: a record batch with null rows is not supported", batch)
	}
	child := unsafe.Slice(root.children, int(root.n_children))[col]
	// A struct's offset and length select the rows of its children (C Data Interface rules).
	if int64(root.offset)+int64(root.length) > int64(child.length) {
		return nil, 0, 0, f, Errorf(InvalidArgument, "batch %d: rows %d..%d are past column %q's %d values",
			batch, root.offset, int64(root.offset)+int64(root.length), f.Name, child.length)
	}
	return child, int64(child.offset) + int64(root.offset), int64(root.length), f, nil
}

// ArrowPrimitive are the Go types of primitive Arrow columns.
type ArrowPrimitive interface {
	int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | float32 | float64
}

func arrowFormatOf[T ArrowPrimitive]() (format string, size int) {
	var z T
	switch any(z).(type) {
	case int8:
		return "c", 1
	case uint8:
		return "C", 1
	case int16:
		return "s", 2
	case uint16:
		return "S", 2
	case int32:
		return "i", 4
	case uint32:
		return "I", 4
	case int64:
		return "l", 8
	case uint64:
		return "L", 8
	case float32:
		return "f", 4
	default:
		return "g", 8
	}
}

// Bitmap is an Arrow validity bitmap (bit i set = row i valid), possibly starting mid-byte.
// The zero Bitmap means every row is valid.
type Bitmap struct {
	bits   []byte
	offset int64
	n      int64
}

// Len is the number of rows the bitmap covers (0 for the all-valid zero Bitmap).
func (b Bitmap) Len() int { return int(b.n) }

// AllValid reports a column without a validity buffer (no nulls).
func (b Bitmap) AllValid() bool { return b.bits == nil }

// IsValid reports whether row i holds a value (not null).
func (b Bitmap) IsValid(i int) bool {
	if b.bits == nil {
		return true
	}
	j := b.offset + int64(i)
	return b.bits[j>>3]>>(j&7)&1 != 0
}

// NullCount counts the unset bits.
func (b Bitmap) NullCount() int {
	if b.bits == nil {
		return 0
	}
	valid := 0
	i, end := b.offset, b.offset+b.n
	for ; i < end && i&7 != 0; i++ {
		valid += int(b.bits[i>>3] >> (i & 7) & 1)
	}
	for ; i+8 <= end; i += 8 {
		valid += bits.OnesCount8(b.bits[i>>3])
	}
	for ; i < end; i++ {
		valid += int(b.bits[i>>3] >> (i & 7) & 1)
	}
	return int(b.n) - valid
}

// Bytes returns the raw bitmap bytes (read-only, in place) and the bit offset of the first row.
func (b Bitmap) Bytes() (bitmap []byte, bitOffset int) { return b.bits, int(b.offset) }

// ArrowValues returns column col of batch `batch` as a typed slice over the payload's memory (no
// copy; the array's offset and length applied) and its validity. T must match the column's format
// exactly (float64 for "g", int64 for "l", ...); a null slot's value is unspecified. Valid until
// a.Release(); read-only.
func ArrowValues[T ArrowPrimitive](a *ArrowData, batch, col int) ([]T, Bitmap, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	arr, start, length, f, err := a.column(batch, col)
	if err != nil {
		return nil, Bitmap{}, err
	}
	want, size := arrowFormatOf[T]()
	if f.Format != want || f.Dictionary != nil {
		var z T
		return nil, Bitmap{}, Errorf(InvalidArgument, "column %d (%q) has Arrow format %q; %T needs %q",
			col, f.Name, f.Format, z, want)
	}
	if arr.n_buffers != 2 {
		return nil, Bitmap{}, Errorf(InvalidArgument, "column %q has %d buffers, a primitive array 2", f.Name, arr.n_buffers)
	}
	bufs := unsafe.Slice(arr.buffers, 2)
	var bm Bitmap
	if bufs[0] != nil && length > 0 {
		bm = Bitmap{bits: unsafe.Slice((*byte)(bufs[0]), int((start+length+7)/8)), offset: start, n: length}
	}
	if length == 0 {
		return []T{}, bm, nil
	}
	if bufs[1] == nil {
		return nil, Bitmap{}, Errorf(InvalidArgument, "column %q has %d rows but no values buffer", f.Name, length)
	}
	p := unsafe.Add(bufs[1], uintptr(start)*uintptr(size))
	if uintptr(p)%uintptr(size) != 0 {
		return nil, Bitmap{}, Errorf(InvalidArgument, "column %q's values are not %d-byte aligned", f.Name, size)
	}
	return unsafe.Slice((*T)(p), int(length)), bm, nil
}

func (a *ArrowData) single(col int) error {
	if a.n != 1 {
		return Errorf(FailedPrecondition, "the %s has %d batches, not 1: read each with ArrowValues[T](a, batch, %d)",
			a.kind, a.n, col)
	}
	return nil
}

// Float64Column is column i of a single-batch payload (a RecordBatch, a one-batch Table or an
// Array with i == 0) as []float64 in place, with its validity. See ArrowValues for several batches.
func (a *ArrowData) Float64Column(i int) ([]float64, Bitmap, error) {
	if err := a.single(i); err != nil {
		return nil, Bitmap{}, err
	}
	return ArrowValues[float64](a, 0, i)
}

// Int64Column is Float64Column for int64 ("l") columns.
func (a *ArrowData) Int64Column(i int) ([]int64, Bitmap, error) {
	if err := a.single(i); err != nil {
		return nil, Bitmap{}, err
	}
	return ArrowValues[int64](a, 0, i)
}

// ArrowColumn is one primitive column for EncodeArrowRecordBatch.
type ArrowColumn struct {
	Name     string
	Values   any    // []float64, []float32, []int64, []int32, []int16, []int8, []uint64, ... []uint8
	Validity []byte // nil = no nulls; else bit i (LSB first) set = row i valid, at least (rows+7)/8 bytes
}

func columnFormat(v any) (format string, ptr unsafe.Pointer, n int, ok bool) {
	switch s := v.(type) {
	case []float64:
		return "g", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	case []float32:
		return "f", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	case []int64:
		return "l", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	case []int32:
		return "i", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	case []int16:
		return "s", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	case []int8:
		return "c", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	case []uint64:
		return "L", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	case []uint32:
		return "I", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	case []uint16:
		return "S", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	case []uint8:
		return "C", unsafe.Pointer(unsafe.SliceData(s)), len(s), true
	}
	return "", nil, 0, false
}

// EncodeArrowRecordBatch lays out primitive columns of equal length as one record batch
// (hms_arrow_encode: one copy of the data), ready to send as Payload{Data: b, Type: hms.Arrow}; a
// Python peer receives a pyarrow.RecordBatch. Errors wrap ErrInvalidArgument.
func EncodeArrowRecordBatch(cols []ArrowColumn) ([]byte, error) {
	n := len(cols)
	rows := -1
	var pin runtime.Pinner
	defer pin.Unpin()
	cstrs := []*C.char{}
	defer func() {
		for _, s := range cstrs {
			C.free(unsafe.Pointer(s))
		}
	}()
	cstr := func(s string) *C.char { p := C.CString(s); cstrs = append(cstrs, p); return p }

	sz := func(t uintptr, k int) C.size_t { return C.size_t(t) * C.size_t(max(k, 1)) }
	schemas := (*C.struct_ArrowSchema)(C.calloc(1, sz(unsafe.Sizeof(C.struct_ArrowSchema{}), n+1)))
	arrays := (*C.struct_ArrowArray)(C.calloc(1, sz(unsafe.Sizeof(C.struct_ArrowArray{}), n+1)))
	schemaKids := (**C.struct_ArrowSchema)(C.calloc(1, sz(unsafe.Sizeof(uintptr(0)), n)))
	arrayKids := (**C.struct_ArrowArray)(C.calloc(1, sz(unsafe.Sizeof(uintptr(0)), n)))
	buffers := (*unsafe.Pointer)(C.calloc(1, sz(unsafe.Sizeof(uintptr(0)), 2*n+1)))
	defer func() {
		for _, p := range []unsafe.Pointer{unsafe.Pointer(schemas), unsafe.Pointer(arrays), unsafe.Pointer(schemaKids),
			unsafe.Pointer(arrayKids), unsafe.Pointer(buffers)} {
			C.free(p)
		}
	}()
	if schemas == nil || arrays == nil || schemaKids == nil || arrayKids == nil || buffers == nil {
		return nil, Errorf(ResourceExhausted, "EncodeArrowRecordBatch: out of memory")
	}
	ss := unsafe.Slice(schemas, n+1)
	as := unsafe.Slice(arrays, n+1)
	sk := unsafe.Slice(schemaKids, max(n, 1))
	ak := unsafe.Slice(arrayKids, max(n, 1))
	bs := unsafe.Slice(buffers, 2*n+1)
	for i, c := range cols {
		format, ptr, length, ok := columnFormat(c.Values)
		if !ok {
			return nil, Errorf(InvalidArgument, "column %d (%q): Values is a %T, not a slice of a primitive type", i, c.Name, c.Values)
		}
		if rows >= 0 && length != rows {
			return nil, Errorf(InvalidArgument, "column %d (%q) has %d rows, column 0 has %d", i, c.Name, length, rows)
		}
		rows = length
		nulls := 0
		if c.Validity != nil {
			if len(c.Validity) < (length+7)/8 {
				return nil, Errorf(InvalidArgument, "column %d (%q): Validity has %d bytes, %d rows need %d", i, c.Name,
					len(c.Validity), length, (length+7)/8)
			}
			nulls = Bitmap{bits: c.Validity, n: int64(length)}.NullCount()
			if length > 0 {
				pin.Pin(&c.Validity[0])
				bs[1+2*i] = unsafe.Pointer(&c.Validity[0])
			}
		}
		if length > 0 {
			pin.Pin(ptr) // C memory points at it during hms_arrow_encode (runtime.Pinner rules)
			bs[2+2*i] = ptr
		}
		s := &ss[1+i]
		s.format, s.name = cstr(format), cstr(c.Name)
		s.flags = C.ARROW_FLAG_NULLABLE
		a := &as[1+i]
		a.length, a.null_count, a.n_buffers = C.int64_t(length), C.int64_t(nulls), 2
		a.buffers = (*unsafe.Pointer)(unsafe.Pointer(&bs[1+2*i]))
		C.hms_go_arrow_set_release(s, a)
		sk[i], ak[i] = s, a
	}
	if rows < 0 {
		rows = 0
	}
	ss[0].format, ss[0].name = cstr("+s"), cstr("")
	ss[0].n_children, ss[0].children = C.int64_t(n), schemaKids
	as[0].length, as[0].n_buffers, as[0].buffers = C.int64_t(rows), 1, buffers
	as[0].n_children, as[0].children = C.int64_t(n), arrayKids
	C.hms_go_arrow_set_release(&ss[0], &as[0])
	root := &as[0]
	table := (**C.struct_ArrowArray)(C.malloc(C.size_t(unsafe.Sizeof(uintptr(0)))))
	defer C.free(unsafe.Pointer(table))
	*table = root
	var size C.size_t
	var e C.hms_error_t
	if st := C.hms_arrow_encoded_size(&ss[0], table, 1, &size, &e); st != C.HMS_OK {
		return nil, errorFrom(st, &e)
	}
	out := make([]byte, int(size))
	var written C.size_t
	if st := C.hms_arrow_encode(&ss[0], table, 1, C.HMS_ARROW_KIND_RECORD_BATCH, (*C.uint8_t)(unsafe.Pointer(&out[0])),
		size, &written, &e); st != C.HMS_OK {
		return nil, errorFrom(st, &e)
	}
	return out[:int(written)], nil
}

func (f ArrowField) String() string { return fmt.Sprintf("%s:%s", f.Name, f.Format) }
