/* Tests of the Arrow codec (csrc/arrow.c): round trips of hand-built layouts of every supported
 * kind, release/refcount rules of the C Data Interface, and hostile input — mutated, truncated and
 * random layouts, and a writer thread scribbling over a layout while it is decoded. Meant to run
 * under ASan/UBSan: every decoded layout is read by a "trusting consumer" that follows offsets, type
 * ids, dictionary indices and run ends without checking them, from an exact-size heap copy, so any
 * read the validation let through outside the region is an ASan report.
 *
 *   hms_arrow_test [fuzz_iterations]     (default 20000, or $HMS_ARROW_FUZZ_ITERS; $HMS_ARROW_SEED)
 *   hms_arrow_test write-corpus DIR      writes the valid layouts as libFuzzer seeds */
#define _GNU_SOURCE 1
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "hms_ffi/hms_ffi.h"

static int failures;
#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                          \
      fprintf(stderr, "\n");                                                 \
      failures++;                                                            \
    }                                                                        \
  } while (0)

/* ---------------------------------------------------------------- a tiny producer */
static void *allocs[4096];
static int n_allocs;
static void *tmalloc(size_t n) {
  void *p = calloc(1, n ? n : 1);
  if (!p || n_allocs == 4096) abort();
  allocs[n_allocs++] = p;
  return p;
}
static void tfree_all(void) {
  while (n_allocs) free(allocs[--n_allocs]);
}
static void producer_schema_release(struct ArrowSchema *s) { s->release = NULL; }
static void producer_array_release(struct ArrowArray *a) { a->release = NULL; }

static struct ArrowSchema *S(const char *fmt, const char *name, int n, ...) {
  struct ArrowSchema *s = tmalloc(sizeof(*s));
  s->format = fmt;
  s->name = name;
  s->flags = ARROW_FLAG_NULLABLE;
  s->n_children = n;
  s->children = tmalloc(sizeof(void *) * (size_t)n);
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++) s->children[i] = va_arg(ap, struct ArrowSchema *);
  va_end(ap);
  s->release = producer_schema_release;
  return s;
}

/* A(length, null_count, offset, n_buffers, n_children, buffers..., children...) */
static struct ArrowArray *A(int64_t len, int64_t nulls, int64_t off, int nb, int nc, ...) {
  struct ArrowArray *a = tmalloc(sizeof(*a));
  a->length = len;
  a->null_count = nulls;
  a->offset = off;
  a->n_buffers = nb;
  a->n_children = nc;
  a->buffers = tmalloc(sizeof(void *) * (size_t)nb);
  a->children = tmalloc(sizeof(void *) * (size_t)nc);
  va_list ap;
  va_start(ap, nc);
  for (int i = 0; i < nb; i++) a->buffers[i] = va_arg(ap, const void *);
  for (int i = 0; i < nc; i++) a->children[i] = va_arg(ap, struct ArrowArray *);
  va_end(ap);
  a->release = producer_array_release;
  return a;
}

static const void *mem(const void *src, size_t n) {
  void *p = tmalloc(n);
  memcpy(p, src, n);
  return p;
}
#define BUF(type, ...) mem((const type[]){__VA_ARGS__}, sizeof((const type[]){__VA_ARGS__}))

static const char metadata_kv[] = {1, 0, 0, 0, 3, 0, 0, 0, 'k', 'e', 'y', 5, 0, 0, 0, 'v', 'a', 'l', 'u', 'e'};

typedef struct {
  const char *name;
  uint32_t kind;
  struct ArrowSchema *schema;
  struct ArrowArray *arrays[4];
  size_t n_arrays;
} sample_t;

static int make_samples(sample_t *out) {
  int n = 0;
  /* int32 with nulls, sliced */
  {
    struct ArrowSchema *s = S("i", "ints", 0);
    s->metadata = metadata_kv;
    out[n++] = (sample_t){"int32 sliced", HMS_ARROW_KIND_ARRAY, s,
                          {A(5, 1, 2, 2, 0, BUF(uint8_t, 0xEF), BUF(int32_t, 1, 2, 3, 4, 5, 6, 7))}, 1};
  }
  out[n++] = (sample_t){"utf8", HMS_ARROW_KIND_ARRAY, S("u", "s", 0),
                        {A(4, 1, 0, 3, 0, BUF(uint8_t, 0x0B), BUF(int32_t, 0, 3, 3, 3, 8), "abcdefgh")}, 1};
  out[n++] = (sample_t){"large binary sliced", HMS_ARROW_KIND_ARRAY, S("Z", NULL, 0),
                        {A(2, 0, 1, 3, 0, NULL, BUF(int64_t, 0, 2, 5, 9), "0123456789")}, 1};
  out[n++] = (sample_t){"empty utf8 without offsets", HMS_ARROW_KIND_ARRAY, S("u", "e", 0), {A(0, 0, 0, 3, 0, NULL, NULL, NULL)}, 1};
  out[n++] = (sample_t){"bool", HMS_ARROW_KIND_ARRAY, S("b", "b", 0), {A(10, 0, 3, 2, 0, NULL, BUF(uint8_t, 0xAA, 0x55))}, 1};
  out[n++] = (sample_t){"null", HMS_ARROW_KIND_ARRAY, S("n", "n", 0), {A(7, 7, 0, 0, 0)}, 1};
  out[n++] = (sample_t){"decimal128", HMS_ARROW_KIND_ARRAY, S("d:10,2", "d", 0), {A(2, 0, 0, 2, 0, NULL, BUF(int64_t, 1, 0, -1, -1))}, 1};
  out[n++] = (sample_t){"timestamp tz", HMS_ARROW_KIND_ARRAY, S("tsu:Europe/Paris", "t", 0), {A(2, 0, 0, 2, 0, NULL, BUF(int64_t, 1, 2))}, 1};
  out[n++] = (sample_t){"fixed-size binary", HMS_ARROW_KIND_ARRAY, S("w:3", "w", 0), {A(2, 0, 0, 2, 0, NULL, "abcdef")}, 1};
  out[n++] = (sample_t){"list<int64>", HMS_ARROW_KIND_ARRAY, S("+l", "l", 1, S("l", "item", 0)),
                        {A(3, 1, 0, 2, 1, BUF(uint8_t, 0x05), BUF(int32_t, 0, 2, 2, 5),
                           A(5, 0, 0, 2, 0, NULL, BUF(int64_t, 1, 2, 3, 4, 5)))}, 1};
  out[n++] = (sample_t){"large list of utf8, child sliced", HMS_ARROW_KIND_ARRAY, S("+L", "L", 1, S("u", "item", 0)),
                        {A(2, 0, 0, 2, 1, NULL, BUF(int64_t, 0, 1, 3),
                           A(3, 0, 1, 3, 0, NULL, BUF(int32_t, 0, 1, 2, 3, 4), "wxyz"))}, 1};
  out[n++] = (sample_t){"list view", HMS_ARROW_KIND_ARRAY, S("+vl", "lv", 1, S("s", "item", 0)),
                        {A(3, 0, 0, 3, 1, NULL, BUF(int32_t, 2, 0, 1), BUF(int32_t, 1, 2, 0),
                           A(3, 0, 0, 2, 0, NULL, BUF(int16_t, 7, 8, 9)))}, 1};
  out[n++] = (sample_t){"fixed-size list", HMS_ARROW_KIND_ARRAY, S("+w:2", "fsl", 1, S("S", "item", 0)),
                        {A(2, 0, 0, 1, 1, NULL, A(4, 0, 0, 2, 0, NULL, BUF(uint16_t, 1, 2, 3, 4)))}, 1};
  {
    struct ArrowSchema *s = S("+m", "m", 1, S("+s", "entries", 2, S("u", "key", 0), S("i", "value", 0)));
    struct ArrowArray *entries = A(3, 0, 0, 1, 2, NULL, A(3, 0, 0, 3, 0, NULL, BUF(int32_t, 0, 1, 2, 3), "abc"),
                                   A(3, 0, 0, 2, 0, NULL, BUF(int32_t, 10, 20, 30)));
    out[n++] = (sample_t){"map", HMS_ARROW_KIND_ARRAY, s, {A(2, 0, 0, 2, 1, NULL, BUF(int32_t, 0, 1, 3), entries)}, 1};
  }
  {
    struct ArrowSchema *s = S("+us:3,7", "su", 2, S("i", "a", 0), S("u", "b", 0));
    out[n++] = (sample_t){"sparse union", HMS_ARROW_KIND_ARRAY, s,
                          {A(3, 0, 0, 1, 2, BUF(int8_t, 3, 7, 3), A(3, 0, 0, 2, 0, NULL, BUF(int32_t, 1, 2, 3)),
                             A(3, 0, 0, 3, 0, NULL, BUF(int32_t, 0, 1, 2, 3), "xyz"))}, 1};
  }
  {
    struct ArrowSchema *s = S("+ud:0,1", "du", 2, S("i", "a", 0), S("u", "b", 0));
    out[n++] = (sample_t){"dense union", HMS_ARROW_KIND_ARRAY, s,
                          {A(3, 0, 0, 2, 2, BUF(int8_t, 0, 1, 0), BUF(int32_t, 0, 0, 1),
                             A(2, 0, 0, 2, 0, NULL, BUF(int32_t, 5, 6)), A(1, 0, 0, 3, 0, NULL, BUF(int32_t, 0, 2), "hi"))}, 1};
  }
  {
    struct ArrowSchema *s = S("c", "dict", 0);
    s->dictionary = S("u", NULL, 0);
    struct ArrowArray *a = A(4, 1, 0, 2, 0, BUF(uint8_t, 0x0D), BUF(int8_t, 1, 99, 0, 1));
    a->dictionary = A(2, 0, 0, 3, 0, NULL, BUF(int32_t, 0, 3, 6), "foobar");
    out[n++] = (sample_t){"dictionary", HMS_ARROW_KIND_ARRAY, s, {a}, 1};
  }
  out[n++] = (sample_t){"run-end encoded", HMS_ARROW_KIND_ARRAY, S("+r", "ree", 2, S("i", "run_ends", 0), S("g", "values", 0)),
                        {A(6, 0, 1, 0, 2, A(3, 0, 0, 2, 0, NULL, BUF(int32_t, 2, 5, 7)),
                           A(3, 1, 0, 2, 0, BUF(uint8_t, 0x05), BUF(double, 1.5, 0, 2.5)))}, 1};
  {
    /* views: "short" inline, one of 20 bytes in data buffer 0 at offset 4 */
    int32_t views[8] = {5, 0, 0, 0, 20, 0, 0, 4};
    memcpy(&views[1], "short", 4);
    memcpy((char *)&views[2], "t\0\0\0", 4);
    memcpy(&views[5], "0123", 4);
    out[n++] = (sample_t){"utf8 view", HMS_ARROW_KIND_ARRAY, S("vu", "v", 0),
                          {A(2, 0, 0, 4, 0, NULL, mem(views, sizeof(views)), "....0123456789abcdefghij", BUF(int64_t, 24))}, 1};
  }
  {
    struct ArrowSchema *s = S("+s", NULL, 2, S("i", "a", 0), S("u", "b", 0));
    struct ArrowArray *b1 = A(2, 0, 0, 1, 2, NULL, A(2, 0, 0, 2, 0, NULL, BUF(int32_t, 1, 2)),
                              A(2, 0, 0, 3, 0, NULL, BUF(int32_t, 0, 1, 3), "abc"));
    out[n++] = (sample_t){"record batch", HMS_ARROW_KIND_RECORD_BATCH, s, {b1}, 1};
    struct ArrowArray *b2 = A(1, 0, 1, 1, 2, NULL, A(2, 0, 0, 2, 0, NULL, BUF(int32_t, 3, 4)),
                              A(2, 1, 0, 3, 0, BUF(uint8_t, 1), BUF(int32_t, 0, 1, 1), "z"));
    struct ArrowArray *b3 = A(0, 0, 0, 1, 2, NULL, A(0, 0, 0, 2, 0, NULL, NULL), A(0, 0, 0, 3, 0, NULL, NULL, NULL));
    out[n++] = (sample_t){"table of three batches", HMS_ARROW_KIND_TABLE, s, {b1, b2, b3}, 3};
    out[n++] = (sample_t){"empty table", HMS_ARROW_KIND_TABLE, s, {NULL}, 0};
  }
  out[n++] = (sample_t){"chunked array", HMS_ARROW_KIND_CHUNKED_ARRAY, S("f", "x", 0),
                        {A(2, 0, 0, 2, 0, NULL, BUF(float, 1, 2)), A(1, 0, 0, 2, 0, NULL, BUF(float, 3))}, 2};
  return n;
}

/* ---------------------------------------------------------------- a trusting consumer */
/* Reads element j of a decoded array the way a consumer would: following offsets, type ids,
 * dictionary indices and run ends without checking them. Returns a checksum so nothing is skipped. */
static uint64_t touch(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t j);

static uint64_t touch_bytes(const uint8_t *p, int64_t n) {
  uint64_t h = 0;
  for (int64_t i = 0; i < n; i++) h = h * 31 + p[i];
  return h;
}

static int fixed_bytes(const char *f) {
  switch (f[0]) {
    case 'c': case 'C': return 1;
    case 's': case 'S': case 'e': return 2;
    case 'i': case 'I': case 'f': return 4;
    case 'l': case 'L': case 'g': return 8;
    case 'd': { const char *c = strrchr(f, ','); const char *c1 = strchr(f, ','); return c != c1 ? atoi(c + 1) / 8 : 16; }
    case 't':
      if (f[1] == 's' || f[1] == 'D') return 8;
      if (!strcmp(f, "tdD") || !strcmp(f, "tts") || !strcmp(f, "ttm") || !strcmp(f, "tiM")) return 4;
      if (!strcmp(f, "tin")) return 16;
      return 8;
  }
  return 0;
}

static int64_t read_int(const void *buf, int64_t i, int bytes) {
  switch (bytes) {
    case 1: return ((const int8_t *)buf)[i];
    case 2: return ((const int16_t *)buf)[i];
    case 4: return ((const int32_t *)buf)[i];
    default: return ((const int64_t *)buf)[i];
  }
}

/* Arrays without buffers (null, run-end encoded, childless structs) may be valid and very long:
 * the consumer reads at most this many elements per decoded layout. */
static int64_t touch_budget;

static uint64_t touch(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t j) {
  const char *f = s->format;
  if (--touch_budget < 0) return 0;
  int64_t i = a->offset + j;
  uint64_t h = 0;
  if (a->n_buffers > 0 && a->buffers[0] && f[0] != '+' && strcmp(f, "n"))
    h += (((const uint8_t *)a->buffers[0])[i / 8] >> (i % 8)) & 1;
  if (s->dictionary) {
    int64_t k = read_int(a->buffers[1], i, fixed_bytes(f));
    if (a->buffers[0] && !((((const uint8_t *)a->buffers[0])[i / 8] >> (i % 8)) & 1)) return h;
    return h + touch(s->dictionary, a->dictionary, k);
  }
  if (!strcmp(f, "n")) return h;
  if (!strcmp(f, "b")) return h + ((((const uint8_t *)a->buffers[1])[i / 8] >> (i % 8)) & 1);
  if (!strcmp(f, "u") || !strcmp(f, "z") || !strcmp(f, "U") || !strcmp(f, "Z")) {
    int w = (f[0] == 'u' || f[0] == 'z') ? 4 : 8;
    int64_t o0 = read_int(a->buffers[1], i, w), o1 = read_int(a->buffers[1], i + 1, w);
    return h + touch_bytes((const uint8_t *)a->buffers[2] + o0, o1 - o0);
  }
  if (!strcmp(f, "vu") || !strcmp(f, "vz")) {
    const int32_t *v = (const int32_t *)a->buffers[1] + 4 * i;
    if (v[0] <= 12) return h + touch_bytes((const uint8_t *)(v + 1), v[0]);
    return h + touch_bytes((const uint8_t *)a->buffers[2 + v[2]] + v[3], v[0]);
  }
  if (f[0] == 'w' && f[1] == ':') return h + touch_bytes((const uint8_t *)a->buffers[1] + i * atoi(f + 2), atoi(f + 2));
  if (f[0] != '+') {
    int w = fixed_bytes(f);
    return h + touch_bytes((const uint8_t *)a->buffers[1] + i * w, w);
  }
  if (!strcmp(f, "+l") || !strcmp(f, "+L") || !strcmp(f, "+m")) {
    int w = f[1] == 'L' ? 8 : 4;
    for (int64_t k = read_int(a->buffers[1], i, w); k < read_int(a->buffers[1], i + 1, w); k++)
      h += touch(s->children[0], a->children[0], k);
    return h;
  }
  if (!strcmp(f, "+vl") || !strcmp(f, "+vL")) {
    int w = f[2] == 'L' ? 8 : 4;
    int64_t o = read_int(a->buffers[1], i, w), n = read_int(a->buffers[2], i, w);
    for (int64_t k = o; k < o + n; k++) h += touch(s->children[0], a->children[0], k);
    return h;
  }
  if (f[1] == 'w') {
    int64_t n = atoi(f + 3);
    for (int64_t k = i * n; k < (i + 1) * n; k++) h += touch(s->children[0], a->children[0], k);
    return h;
  }
  if (!strcmp(f, "+s")) {
    for (int64_t c = 0; c < a->n_children; c++) h += touch(s->children[c], a->children[c], i);
    return h;
  }
  if (f[1] == 'u') {
    int8_t id = ((const int8_t *)a->buffers[0])[i];
    int c = 0; /* the child of this type id, from the format's id list */
    for (const char *p = f + 4; *p; c++) {
      if (atoi(p) == id) break;
      while (*p && *p != ',') p++;
      if (*p) p++;
    }
    int64_t k = f[2] == 'd' ? ((const int32_t *)a->buffers[1])[i] : i;
    return h + touch(s->children[c], a->children[c], k);
  }
  if (!strcmp(f, "+r")) {
    const struct ArrowArray *ends = a->children[0];
    int w = fixed_bytes(s->children[0]->format);
    int64_t r = 0;
    while (read_int(ends->buffers[1], ends->offset + r, w) <= i) r++;
    return h + touch(s->children[1], a->children[1], r);
  }
  return h;
}

static uint64_t consume(const struct ArrowSchema *s, const struct ArrowArray *a) {
  uint64_t h = 0;
  touch_budget = 1 << 20;
  for (int64_t j = 0; j < a->length && touch_budget > 0; j++) h += touch(s, a, j);
  return h;
}

/* ---------------------------------------------------------------- helpers */
static void on_release(void *ctx) { atomic_fetch_add((atomic_int *)ctx, 1); }

static uint8_t *encode(const sample_t *smp, size_t *len) {
  size_t size = 0, written = 0;
  hms_error_t err;
  hms_status_t st = hms_arrow_encoded_size(smp->schema, (const struct ArrowArray *const *)smp->arrays, smp->n_arrays, &size, &err);
  CHECK(st == HMS_OK, "%s: encoded_size: %s", smp->name, err.message);
  if (st) return NULL;
  uint8_t *buf = aligned_alloc(64, (size + 63) / 64 * 64);
  st = hms_arrow_encode(smp->schema, (const struct ArrowArray *const *)smp->arrays, smp->n_arrays, smp->kind, buf, size - 1, &written, &err);
  CHECK(st == HMS_OUT_OF_RANGE && written == size, "%s: a short buffer gives OUT_OF_RANGE (%d)", smp->name, st);
  st = hms_arrow_encode(smp->schema, (const struct ArrowArray *const *)smp->arrays, smp->n_arrays, smp->kind, buf, size, &written, &err);
  CHECK(st == HMS_OK && written == size, "%s: encode: %s", smp->name, err.message);
  *len = size;
  return buf;
}

/* Equal arrays: same structure, and every buffer equal in the range the array uses. */
static void check_same(const char *what, const struct ArrowSchema *s0, const struct ArrowArray *a0,
                       const struct ArrowSchema *s1, const struct ArrowArray *a1, const uint8_t *region, size_t len) {
  CHECK(!strcmp(s0->format, s1->format), "%s: format %s != %s", what, s0->format, s1->format);
  CHECK((!s0->name && !s1->name) || (s0->name && s1->name && !strcmp(s0->name, s1->name)), "%s: name", what);
  CHECK((!s0->metadata && !s1->metadata) || (s0->metadata && s1->metadata && !memcmp(s0->metadata, s1->metadata, sizeof(metadata_kv))),
        "%s: metadata", what);
  CHECK(a0->length == a1->length && a0->offset == a1->offset && a0->null_count == a1->null_count &&
            a0->n_buffers == a1->n_buffers && a0->n_children == a1->n_children,
        "%s: array fields", what);
  CHECK(consume(s0, a0) == consume(s1, a1), "%s: values differ", what);
  int views = s1->format[0] == 'v';
  for (int64_t i = 0; i < a1->n_buffers; i++) {
    const uint8_t *p = a1->buffers[i];
    if (views && i == a1->n_buffers - 1 && i > 2) { /* the sizes of the data buffers: a private, validated copy */
      CHECK(p && (p < region || p >= region + len) && !memcmp(p, a0->buffers[i], 8 * (size_t)(i - 2)),
            "%s: view sizes are a private copy", what);
      continue;
    }
    CHECK(!p || (p >= region && p <= region + len), "%s: buffer %lld points outside the region", what, (long long)i);
    CHECK(!p || (uintptr_t)(p - region) % 64 == 0, "%s: buffer %lld is not 64-byte aligned", what, (long long)i);
    CHECK(!a0->buffers[i] == !p || (i == 1 && a0->length + a0->offset == 0), "%s: buffer %lld presence", what, (long long)i);
  }
  for (int64_t c = 0; c < a1->n_children && c < a0->n_children; c++)
    check_same(what, s0->children[c], a0->children[c], s1->children[c], a1->children[c], region, len);
  if (a0->dictionary && a1->dictionary) check_same(what, s0->dictionary, a0->dictionary, s1->dictionary, a1->dictionary, region, len);
}

static void test_round_trips(sample_t *smp, int n) {
  for (int k = 0; k < n; k++) {
    size_t len;
    uint8_t *buf = encode(&smp[k], &len);
    if (!buf) continue;
    struct ArrowSchema schema;
    struct ArrowArray arrays[4];
    size_t count = 0;
    uint32_t kind = 99;
    hms_error_t err;
    CHECK(hms_arrow_peek(buf, len, &kind, &count, &err) == HMS_OK && kind == smp[k].kind && count == smp[k].n_arrays,
          "%s: peek", smp[k].name);
    if (smp[k].n_arrays)
      CHECK(hms_arrow_decode(buf, len, NULL, NULL, &schema, arrays, smp[k].n_arrays - 1, &count, &err) == HMS_OUT_OF_RANGE &&
                count == smp[k].n_arrays && !schema.release,
            "%s: too few out arrays", smp[k].name);
    atomic_int rel = 0;
    hms_status_t st = hms_arrow_decode(buf, len, on_release, &rel, &schema, arrays, 4, &count, &err);
    CHECK(st == HMS_OK, "%s: decode: %s", smp[k].name, err.message);
    if (st) {
      free(buf);
      continue;
    }
    CHECK(count == smp[k].n_arrays, "%s: %zu arrays", smp[k].name, count);
    for (size_t i = 0; i < count; i++) check_same(smp[k].name, smp[k].schema, smp[k].arrays[i], &schema, &arrays[i], buf, len);
    /* Move a child (or the dictionary) out, release everything else, then the moved one last. */
    struct ArrowSchema moved_s = {0};
    struct ArrowArray moved_a = {0};
    if (schema.n_children) {
      moved_s = *schema.children[0];
      schema.children[0]->release = NULL;
    } else if (schema.dictionary) {
      moved_s = *schema.dictionary;
      schema.dictionary->release = NULL;
    }
    if (count && arrays[0].n_children) {
      moved_a = *arrays[0].children[0];
      arrays[0].children[0]->release = NULL;
    }
    schema.release(&schema);
    CHECK(schema.release == NULL, "%s: release marks released", smp[k].name);
    for (size_t i = 0; i < count; i++) arrays[i].release(&arrays[i]);
    if (moved_a.release) {
      CHECK(atomic_load(&rel) == 0, "%s: on_release while a moved child lives", smp[k].name);
      if (moved_s.release) consume(&moved_s, &moved_a);
      moved_a.release(&moved_a);
    }
    if (moved_s.release) {
      CHECK(atomic_load(&rel) == 0, "%s: on_release while a moved schema lives", smp[k].name);
      moved_s.release(&moved_s);
    }
    CHECK(atomic_load(&rel) == 1, "%s: on_release called %d times", smp[k].name, atomic_load(&rel));
    free(buf);
  }
}

static void test_bad_producers(void) {
  hms_error_t err;
  size_t size;
  struct ArrowSchema *s = S("i", "x", 0);
  struct ArrowArray *a = A(3, 1, 0, 2, 0, NULL, BUF(int32_t, 1, 2, 3)); /* nulls but no validity */
  const struct ArrowArray *arrs[1] = {a};
  CHECK(hms_arrow_encoded_size(s, arrs, 1, &size, &err) == HMS_INVALID_ARGUMENT && strstr(err.message, "validity"), "%s", err.message);
  a->null_count = 0;
  a->n_buffers = 3;
  CHECK(hms_arrow_encoded_size(s, arrs, 1, &size, &err) == HMS_INVALID_ARGUMENT && strstr(err.message, "buffers"), "%s", err.message);
  struct ArrowSchema *bad = S("q", "bad", 0);
  CHECK(hms_arrow_encoded_size(bad, NULL, 0, &size, &err) == HMS_INVALID_ARGUMENT && strstr(err.message, "unsupported format"),
        "%s", err.message);
  struct ArrowSchema *u = S("+us:1,1", "u", 2, S("i", "a", 0), S("i", "b", 0));
  CHECK(hms_arrow_encoded_size(u, NULL, 0, &size, &err) == HMS_INVALID_ARGUMENT, "duplicate union ids");
  a->n_buffers = 2;
  uint8_t buf[4096];
  CHECK(hms_arrow_encode(s, arrs, 1, HMS_ARROW_KIND_RECORD_BATCH, buf, sizeof(buf), &size, &err) == HMS_INVALID_ARGUMENT,
        "a record batch needs a struct schema");
  CHECK(hms_arrow_encode(s, arrs, 1, 77, buf, sizeof(buf), &size, &err) == HMS_INVALID_ARGUMENT, "unknown kind");
  /* deep nesting */
  struct ArrowSchema *deep = S("i", "leaf", 0);
  for (int i = 0; i < HMS_ARROW_MAX_DEPTH + 2; i++) deep = S("+l", "l", 1, deep);
  CHECK(hms_arrow_encoded_size(deep, NULL, 0, &size, &err) == HMS_INVALID_ARGUMENT && strstr(err.message, "deeper"), "%s", err.message);
}

/* ---------------------------------------------------------------- hostile layouts */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int decoded_ok, decoded_bad;

/* Decodes len bytes (copied into an exact-size heap block) and, when accepted, reads every value. */
static void decode_hostile(const uint8_t *data, size_t len) {
  uint8_t *copy = malloc(len ? len : 1); /* exact size (and 16-byte aligned): ASan sees any read past it */
  memcpy(copy, data, len);
  struct ArrowSchema schema;
  struct ArrowArray arrays[8];
  size_t count = 0;
  hms_error_t err;
  atomic_int rel = 0;
  hms_status_t st = hms_arrow_decode(copy, len, on_release, &rel, &schema, arrays, 8, &count, &err);
  if (st == HMS_OK) {
    decoded_ok++;
    for (size_t i = 0; i < count; i++) consume(&schema, &arrays[i]);
    schema.release(&schema);
    for (size_t i = 0; i < count; i++) arrays[i].release(&arrays[i]);
    CHECK(atomic_load(&rel) == 1, "hostile: on_release called %d times", atomic_load(&rel));
  } else {
    decoded_bad++;
    CHECK(st == HMS_INVALID_ARGUMENT || st == HMS_OUT_OF_RANGE, "hostile: status %d (%s)", st, err.message);
    CHECK(!schema.release && (count > 8 || !arrays[0].release), "hostile: failed decode left live structs");
    CHECK(atomic_load(&rel) == 0, "hostile: on_release after a failed decode");
  }
  free(copy);
}

static void mutate(uint8_t *b, size_t *len) {
  size_t n = *len;
  if (!n) return;
  switch (rnd() % 6) {
    case 0: b[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8)); break;
    case 1: b[rnd() % n] = (uint8_t)rnd(); break;
    case 2: {
      static const uint64_t interesting[] = {0, 1, 7, 8, 63, 64, 0x7fffffff, 0x80000000ull, 0xffffffffull,
                                             UINT64_MAX, UINT64_MAX - 7, 1ull << 62, (uint64_t)INT64_MIN};
      size_t at = (rnd() % (n / 8 ? n / 8 : 1)) * 8;
      uint64_t v = rnd() % 3 ? interesting[rnd() % (sizeof(interesting) / sizeof(interesting[0]))] : (uint64_t)n - rnd() % 128;
      if (at + 8 <= n) memcpy(b + at, &v, 8);
      break;
    }
    case 3: *len = rnd() % n; break;
    case 4: { /* a small int32 somewhere (offsets, lengths, view fields) */
      size_t at = (rnd() % (n / 4 ? n / 4 : 1)) * 4;
      int32_t v = (int32_t)(rnd() % 40) - 8;
      if (at + 4 <= n) memcpy(b + at, &v, 4);
      break;
    }
    default: { /* copy a run of bytes from elsewhere in the layout */
      size_t from = rnd() % n, to = rnd() % n, k = rnd() % 64;
      if (from + k <= n && to + k <= n) memmove(b + to, b + from, k);
    }
  }
}

static void test_hostile(sample_t *smp, int n, long iters) {
  size_t lens[64];
  uint8_t *bufs[64];
  for (int k = 0; k < n; k++) bufs[k] = encode(&smp[k], &lens[k]);
  for (long it = 0; it < iters; it++) {
    int k = (int)(rnd() % (uint64_t)n);
    if (!bufs[k]) continue;
    size_t len = lens[k];
    uint8_t *b = malloc(len);
    memcpy(b, bufs[k], len);
    int rounds = 1 + (int)(rnd() % 4);
    for (int r = 0; r < rounds; r++) mutate(b, &len);
    decode_hostile(b, len);
    free(b);
  }
  /* random bytes behind a valid header */
  for (long it = 0; it < iters / 10; it++) {
    size_t len = 64 + rnd() % 2048;
    uint8_t *b = malloc(len);
    for (size_t i = 0; i < len; i++) b[i] = (uint8_t)rnd();
    memcpy(b, bufs[0], 16);
    uint64_t total = len, meta = 64 + (rnd() % (len - 63)) / 8 * 8;
    memcpy(b + 16, &total, 8);
    memcpy(b + 24, &meta, 8);
    decode_hostile(b, len);
    free(b);
  }
  for (int k = 0; k < n; k++) free(bufs[k]);
}

typedef struct {
  uint8_t *buf;
  size_t len;
  atomic_int stop;
} scribbler_t;

static void *scribble(void *arg) {
  scribbler_t *s = arg;
  uint64_t x = 12345;
  while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    ((volatile uint8_t *)s->buf)[64 + x % (s->len - 64)] = (uint8_t)(x >> 32);
  }
  return NULL;
}

/* A writer changes the layout while it is decoded: decode must never read outside the region (the
 * values a consumer reads later are the sender's business, so they are not read here). */
static void test_concurrent_writer(sample_t *smp, int n) {
  for (int k = 0; k < n; k++) {
    size_t len;
    uint8_t *orig = encode(&smp[k], &len);
    if (!orig) continue;
    scribbler_t s = {.buf = malloc(len), .len = len};
    memcpy(s.buf, orig, len);
    pthread_t t;
    pthread_create(&t, NULL, scribble, &s);
    for (int i = 0; i < 200; i++) {
      struct ArrowSchema schema;
      struct ArrowArray arrays[8];
      size_t count;
      hms_error_t err;
      if (i % 20 == 0) memcpy(s.buf, orig, 64); /* keep the header mostly intact */
      if (hms_arrow_decode(s.buf, len, NULL, NULL, &schema, arrays, 8, &count, &err) == HMS_OK) {
        schema.release(&schema);
        for (size_t j = 0; j < count; j++) arrays[j].release(&arrays[j]);
      }
    }
    atomic_store(&s.stop, 1);
    pthread_join(t, NULL);
    free(s.buf);
    free(orig);
  }
}

static void write_corpus(sample_t *smp, int n, const char *dir) {
  mkdir(dir, 0755);
  for (int k = 0; k < n; k++) {
    size_t len;
    uint8_t *b = encode(&smp[k], &len);
    if (!b) continue;
    char path[4096];
    snprintf(path, sizeof(path), "%s/seed-%02d", dir, k);
    FILE *f = fopen(path, "wb");
    if (f) {
      fwrite(b, 1, len, f);
      fclose(f);
    }
    free(b);
  }
}

int main(int argc, char **argv) {
  sample_t smp[64];
  int n = make_samples(smp);
  if (argc == 3 && !strcmp(argv[1], "write-corpus")) {
    write_corpus(smp, n, argv[2]);
    tfree_all();
    return failures ? 1 : 0;
  }
  long iters = 20000;
  if (getenv("HMS_ARROW_FUZZ_ITERS")) iters = atol(getenv("HMS_ARROW_FUZZ_ITERS"));
  if (argc > 1) iters = atol(argv[1]);
  rng_state ^= getenv("HMS_ARROW_SEED") ? strtoull(getenv("HMS_ARROW_SEED"), NULL, 10) : (uint64_t)time(NULL);
  if (!rng_state) rng_state = 1;
  printf("seed %llu (HMS_ARROW_SEED)\n", (unsigned long long)(rng_state ^ 0x9E3779B97F4A7C15ull));
  test_round_trips(smp, n);
  test_bad_producers();
  test_hostile(smp, n, iters);
  test_concurrent_writer(smp, n);
  printf("%d samples, %ld hostile iterations (%d accepted, %d refused)\n", n, iters, decoded_ok, decoded_bad);
  tfree_all();
  if (failures) {
    printf("%d arrow checks FAILED\n", failures);
    return 1;
  }
  printf("all arrow tests passed\n");
  return 0;
}
