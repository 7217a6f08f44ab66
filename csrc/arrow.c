/* Arrow C Data Interface <-> one flat, position-independent layout.
 *
 * The encoder walks an ArrowSchema and 0..n ArrowArrays of that schema and writes ONE layout that
 * refers to itself by offsets only, so it can be mapped at any address in any process. The decoder
 * validates a layout completely (it may sit in shared memory that a hostile peer rewrites while we
 * read it) and then hands out ArrowSchema/ArrowArray structs whose buffers point into the layout.
 *
 * Layout (integers in host byte order; every offset is from the start of the layout):
 *
 *   header (64 bytes)   u64 magic "HMSARRW1" | u32 version | u32 kind | u64 total_len | u64 meta_end
 *                       | u64 n_arrays | u64 schema_off | u64 arrays_off | u64 reserved (0)
 *   metadata section    [64, meta_end): 8-byte aligned items, in this order:
 *     schema tree       pre-order; each schema node is
 *                         node     i64 flags | u64 format_off | u64 name_off | u64 metadata_off
 *                                  | u64 n_children | u64 children_off | u64 dictionary_off
 *                         then its format string, name string (0 = NULL), metadata blob (0 = NULL),
 *                         children table (u64[n_children] node offsets), the children's subtrees,
 *                         the dictionary's subtree (0 = not dictionary-encoded)
 *                       strings: u64 len | len bytes | NUL (no NUL inside); metadata blob: u64 len |
 *                       len bytes in the C Data Interface metadata encoding
 *     arrays table      u64[n_arrays] root node offsets
 *     array trees       pre-order; each array node is
 *                         node     i64 length | i64 null_count | i64 offset | u64 n_buffers
 *                                  | u64 n_children | u64 buffers_off | u64 children_off
 *                                  | u64 dictionary_off
 *                         then its buffers table (n_buffers x {u64 off, u64 len}; off 0 = absent,
 *                         i.e. the producer's NULL), children table, children, dictionary
 *   buffers             [meta_end, total_len): each buffer at a multiple of 64, in tree order.
 *
 * Buffers are copied whole from their start up to the last element the array uses (offset +
 * length), and `offset` is kept: that is always correct (offsets buffers need no rebasing) at the
 * price of carrying the bytes before a slice's offset. Exactly one copy of the data is made.
 *
 * The decoder requires every item to lie at or after the end of the item before it (one cursor for
 * the metadata section, one for the buffers), in the order the encoder writes them. That makes the
 * walk O(layout size): no cycles, no shared subtrees, no buffer validated twice. Everything it reads
 * from the layout is copied into locals or private memory first and only then checked and used. */
#include "internal/hms_internal.h"

#define HMS__ARROW_MAGIC 0x3157525241534d48ull /* "HMSARRW1" */
#define HMS__ARROW_SNODE_BYTES 56
#define HMS__ARROW_ANODE_BYTES 64
#define HMS__ARROW_MAX_LENGTH (((int64_t)1) << 55) /* offset + length: byte sizes of up to 16 per element never overflow */
#define HMS__ARROW_MAX_VARIADIC 1048576

typedef struct {
  uint64_t magic;
  uint32_t version;
  uint32_t kind;
  uint64_t total_len;
  uint64_t meta_end;
  uint64_t n_arrays;
  uint64_t schema_off;
  uint64_t arrays_off;
  uint64_t reserved;
} hms__arrow_header_t;

typedef struct {
  int64_t flags;
  uint64_t format_off;
  uint64_t name_off;
  uint64_t metadata_off;
  uint64_t n_children;
  uint64_t children_off;
  uint64_t dictionary_off;
} hms__arrow_snode_t;

typedef struct {
  int64_t length;
  int64_t null_count;
  int64_t offset;
  uint64_t n_buffers;
  uint64_t n_children;
  uint64_t buffers_off;
  uint64_t children_off;
  uint64_t dictionary_off;
} hms__arrow_anode_t;

_Static_assert(sizeof(hms__arrow_header_t) == HMS_ARROW_HEADER_BYTES, "arrow header is 64 bytes");
_Static_assert(sizeof(hms__arrow_snode_t) == HMS__ARROW_SNODE_BYTES, "schema node size");
_Static_assert(sizeof(hms__arrow_anode_t) == HMS__ARROW_ANODE_BYTES, "array node size");

/* ---------------------------------------------------------------- formats */
typedef enum {
  HMS__AK_NULL,
  HMS__AK_FIXED,   /* fixed-width values of `bits` bits (>= 8): ints, floats, decimals, temporal */
  HMS__AK_BOOL,
  HMS__AK_BIN,     /* utf8/binary, 32-bit offsets */
  HMS__AK_LBIN,    /* large utf8/binary, 64-bit offsets */
  HMS__AK_VIEW,    /* utf8/binary views */
  HMS__AK_FSB,     /* fixed-size binary of `width` bytes */
  HMS__AK_LIST,    /* 32-bit offsets; also map */
  HMS__AK_LLIST,
  HMS__AK_LVIEW,   /* list view, 32-bit offsets and sizes */
  HMS__AK_LLVIEW,
  HMS__AK_FSL,     /* fixed-size list of `width` */
  HMS__AK_STRUCT,
  HMS__AK_SUNION,
  HMS__AK_DUNION,
  HMS__AK_REE
} hms__arrow_kind_t;

typedef struct {
  hms__arrow_kind_t k;
  uint32_t bits;       /* HMS__AK_FIXED */
  int64_t width;       /* HMS__AK_FSB bytes, HMS__AK_FSL list size */
  int32_t n_children;  /* required number of children; -1 = any (struct) */
  int is_int;          /* an integer type (usable as dictionary index or run end) */
  int is_map;
  int n_type_ids;      /* unions */
  int8_t child_of_id[128]; /* unions: type id -> child index, -1 = unused id */
} hms__arrow_fmt_t;

/* Parses a non-negative decimal integer at *p up to a non-digit; -1 when there is none or it
 * exceeds `max`. */
static int64_t hms__arrow_parse_uint(const char **p, int64_t max) {
  const char *s = *p;
  int64_t v = 0;
  if (*s < '0' || *s > '9') return -1;
  while (*s >= '0' && *s <= '9') {
    v = v * 10 + (*s - '0');
    if (v > max) return -1;
    s++;
  }
  *p = s;
  return v;
}

static int hms__arrow_fixed(hms__arrow_fmt_t *f, uint32_t bits, int is_int) {
  f->k = HMS__AK_FIXED;
  f->bits = bits;
  f->is_int = is_int;
  return 0;
}

/* Returns 0 and fills *f for a format hms supports, -1 otherwise. `fmt` is NUL-terminated private
 * memory. */
static int hms__arrow_parse_format(const char *fmt, hms__arrow_fmt_t *f) {
  memset(f, 0, sizeof(*f));
  f->n_children = 0;
  size_t n = strlen(fmt);
  if (n == 1) {
    switch (fmt[0]) {
      case 'n': f->k = HMS__AK_NULL; return 0;
      case 'b': f->k = HMS__AK_BOOL; return 0;
      case 'c': case 'C': return hms__arrow_fixed(f, 8, 1);
      case 's': case 'S': return hms__arrow_fixed(f, 16, 1);
      case 'i': case 'I': return hms__arrow_fixed(f, 32, 1);
      case 'l': case 'L': return hms__arrow_fixed(f, 64, 1);
      case 'e': return hms__arrow_fixed(f, 16, 0);
      case 'f': return hms__arrow_fixed(f, 32, 0);
      case 'g': return hms__arrow_fixed(f, 64, 0);
      case 'z': case 'u': f->k = HMS__AK_BIN; return 0;
      case 'Z': case 'U': f->k = HMS__AK_LBIN; return 0;
      default: return -1;
    }
  }
  if (!strcmp(fmt, "vz") || !strcmp(fmt, "vu")) {
    f->k = HMS__AK_VIEW;
    return 0;
  }
  if (fmt[0] == 'd' && fmt[1] == ':') { /* d:P,S[,bits] */
    const char *p = fmt + 2;
    if (hms__arrow_parse_uint(&p, 1000) < 1 || *p++ != ',') return -1;
    if (*p == '-') p++;
    if (hms__arrow_parse_uint(&p, 1000) < 0) return -1;
    uint32_t bits = 128;
    if (*p == ',') {
      p++;
      int64_t b = hms__arrow_parse_uint(&p, 256);
      if (b != 32 && b != 64 && b != 128 && b != 256) return -1;
      bits = (uint32_t)b;
    }
    if (*p) return -1;
    return hms__arrow_fixed(f, bits, 0);
  }
  if (fmt[0] == 'w' && fmt[1] == ':') {
    const char *p = fmt + 2;
    int64_t w = hms__arrow_parse_uint(&p, INT32_MAX);
    if (w < 1 || *p) return -1;
    f->k = HMS__AK_FSB;
    f->width = w;
    return 0;
  }
  if (fmt[0] == 't') {
    if (n == 3) {
      static const struct { const char *f; uint32_t bits; } t[] = {
          {"tdD", 32}, {"tdm", 64}, {"tts", 32}, {"ttm", 32}, {"ttu", 64}, {"ttn", 64}, {"tDs", 64},
          {"tDm", 64}, {"tDu", 64}, {"tDn", 64}, {"tiM", 32}, {"tiD", 64}, {"tin", 128}};
      for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (!strcmp(fmt, t[i].f)) return hms__arrow_fixed(f, t[i].bits, 0);
      return -1;
    }
    /* timestamps: ts[smun]:timezone (the timezone may be empty) */
    if (n >= 4 && fmt[1] == 's' && strchr("smun", fmt[2]) && fmt[2] && fmt[3] == ':') return hms__arrow_fixed(f, 64, 0);
    return -1;
  }
  if (fmt[0] != '+') return -1;
  if (!strcmp(fmt, "+l")) { f->k = HMS__AK_LIST; f->n_children = 1; return 0; }
  if (!strcmp(fmt, "+L")) { f->k = HMS__AK_LLIST; f->n_children = 1; return 0; }
  if (!strcmp(fmt, "+vl")) { f->k = HMS__AK_LVIEW; f->n_children = 1; return 0; }
  if (!strcmp(fmt, "+vL")) { f->k = HMS__AK_LLVIEW; f->n_children = 1; return 0; }
  if (!strcmp(fmt, "+s")) { f->k = HMS__AK_STRUCT; f->n_children = -1; return 0; }
  if (!strcmp(fmt, "+m")) { f->k = HMS__AK_LIST; f->is_map = 1; f->n_children = 1; return 0; }
  if (!strcmp(fmt, "+r")) { f->k = HMS__AK_REE; f->n_children = 2; return 0; }
  if (fmt[1] == 'w' && fmt[2] == ':') {
    const char *p = fmt + 3;
    int64_t w = hms__arrow_parse_uint(&p, INT32_MAX);
    if (w < 0 || *p) return -1;
    f->k = HMS__AK_FSL;
    f->width = w;
    f->n_children = 1;
    return 0;
  }
  if (fmt[1] == 'u' && (fmt[2] == 'd' || fmt[2] == 's') && fmt[3] == ':') {
    f->k = fmt[2] == 'd' ? HMS__AK_DUNION : HMS__AK_SUNION;
    memset(f->child_of_id, -1, sizeof(f->child_of_id));
    const char *p = fmt + 4;
    while (*p) {
      int64_t id = hms__arrow_parse_uint(&p, 127);
      if (id < 0 || f->child_of_id[id] >= 0) return -1;
      f->child_of_id[id] = (int8_t)f->n_type_ids++;
      if (*p == ',') {
        p++;
        if (!*p) return -1;
      } else if (*p) {
        return -1;
      }
    }
    f->n_children = f->n_type_ids;
    return 0;
  }
  return -1;
}

/* Number of buffers the C Data Interface gives an array of this format (VIEW: without variadic). */
static int64_t hms__arrow_fixed_buffers(const hms__arrow_fmt_t *f) {
  switch (f->k) {
    case HMS__AK_NULL: case HMS__AK_REE: return 0;
    case HMS__AK_FSL: case HMS__AK_STRUCT: case HMS__AK_SUNION: return 1;
    case HMS__AK_FIXED: case HMS__AK_BOOL: case HMS__AK_FSB: case HMS__AK_LIST: case HMS__AK_LLIST:
    case HMS__AK_DUNION: return 2;
    case HMS__AK_BIN: case HMS__AK_LBIN: case HMS__AK_LVIEW: case HMS__AK_LLVIEW: case HMS__AK_VIEW: return 3;
  }
  return -1;
}

static int hms__arrow_has_validity(const hms__arrow_fmt_t *f) {
  return f->k != HMS__AK_NULL && f->k != HMS__AK_REE && f->k != HMS__AK_SUNION && f->k != HMS__AK_DUNION;
}

static int hms__arrow_mul(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_mul_overflow(a, b, out) ? -1 : 0; }

/* Bytes buffer `i` needs for `e` = offset + length elements, for every buffer whose size follows
 * from the type alone: all but the data of utf8/binary and the variadic buffers of views (which the
 * caller sizes from the offsets / the sizes buffer). -1 on overflow. */
static int64_t hms__arrow_need(const hms__arrow_fmt_t *f, int64_t i, int64_t e, int64_t n_buffers) {
  uint64_t r, ue = (uint64_t)e;
  if (i == 0 && hms__arrow_has_validity(f)) return (e + 7) / 8;
  switch (f->k) {
    case HMS__AK_FIXED:
      if (hms__arrow_mul(ue, f->bits / 8, &r) || r > INT64_MAX) return -1;
      return (int64_t)r;
    case HMS__AK_BOOL: return (e + 7) / 8;
    case HMS__AK_FSB:
      if (hms__arrow_mul(ue, (uint64_t)f->width, &r) || r > INT64_MAX) return -1;
      return (int64_t)r;
    case HMS__AK_BIN: case HMS__AK_LIST: return i == 1 ? (e + 1) * 4 : 0;
    case HMS__AK_LBIN: case HMS__AK_LLIST: return i == 1 ? (e + 1) * 8 : 0;
    case HMS__AK_LVIEW: return e * 4;
    case HMS__AK_LLVIEW: return e * 8;
    case HMS__AK_SUNION: return e;
    case HMS__AK_DUNION: return i == 0 ? e : e * 4;
    case HMS__AK_VIEW:
      if (i == 1) return e * 16;
      if (i == n_buffers - 1) return (n_buffers - 3) * 8;
      return 0;
    default: return 0;
  }
}

/* Metadata in the C Data Interface encoding: int32 n, then n x (int32 len, key, int32 len, value).
 * Returns its size, or -1 when it is malformed or longer than `max`. */
static int64_t hms__arrow_metadata_len(const char *m, uint64_t max) {
  uint64_t pos = 4;
  int32_t n, l;
  if (max < 4) return -1;
  memcpy(&n, m, 4);
  if (n < 0) return -1;
  for (int64_t i = 0; i < 2 * (int64_t)n; i++) {
    if (max - pos < 4) return -1;
    memcpy(&l, m + pos, 4);
    pos += 4;
    if (l < 0 || (uint64_t)l > max - pos) return -1;
    pos += (uint64_t)l;
  }
  return (int64_t)pos;
}

/* ================================================================ encoder */
typedef struct {
  uint8_t *dst;   /* NULL while sizing */
  uint64_t meta;  /* next free metadata byte */
  uint64_t data;  /* next free buffer byte */
  uint64_t nodes;
  hms_error_t *err;
} hms__arrow_enc_t;

static uint64_t hms__align(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

static uint64_t hms__arrow_enc_meta(hms__arrow_enc_t *e, uint64_t bytes) {
  uint64_t off = e->meta;
  e->meta = hms__align(e->meta + bytes, 8);
  return off;
}

static uint64_t hms__arrow_enc_string(hms__arrow_enc_t *e, const char *s, size_t n) {
  uint64_t off = hms__arrow_enc_meta(e, 8 + n + 1);
  if (e->dst) {
    uint64_t len = n;
    memcpy(e->dst + off, &len, 8);
    memcpy(e->dst + off + 8, s, n);
    e->dst[off + 8 + n] = 0;
  }
  return off;
}

static hms_status_t hms__arrow_enc_schema(hms__arrow_enc_t *e, const struct ArrowSchema *s, int depth,
                                          uint64_t *out_off) {
  hms__arrow_fmt_t f;
  if (depth > HMS_ARROW_MAX_DEPTH)
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: schema nested deeper than %d levels", HMS_ARROW_MAX_DEPTH);
  if (++e->nodes > HMS_ARROW_MAX_NODES)
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: more than %d nodes", HMS_ARROW_MAX_NODES);
  if (!s || !s->release || !s->format)
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: a schema is NULL, released or has no format");
  size_t flen = strlen(s->format);
  if (flen > HMS_ARROW_MAX_FORMAT || hms__arrow_parse_format(s->format, &f))
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: unsupported format '%.64s' (field '%.64s')", s->format,
                     s->name ? s->name : "");
  if (s->n_children < 0 || (f.n_children >= 0 && s->n_children != f.n_children) || (s->n_children && !s->children))
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: format '%.64s' with %lld children", s->format,
                     (long long)s->n_children);
  if (s->dictionary && !f.is_int)
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: dictionary index type '%.64s' is not an integer", s->format);
  uint64_t node = hms__arrow_enc_meta(e, HMS__ARROW_SNODE_BYTES);
  hms__arrow_snode_t rec = {.flags = s->flags, .n_children = (uint64_t)s->n_children};
  rec.format_off = hms__arrow_enc_string(e, s->format, flen);
  if (s->name) rec.name_off = hms__arrow_enc_string(e, s->name, strlen(s->name));
  if (s->metadata) {
    int64_t mlen = hms__arrow_metadata_len(s->metadata, (uint64_t)1 << 40);
    if (mlen < 0) return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: malformed metadata on field '%.64s'", s->name ? s->name : "");
    rec.metadata_off = hms__arrow_enc_meta(e, 8 + (uint64_t)mlen);
    if (e->dst) {
      uint64_t l = (uint64_t)mlen;
      memcpy(e->dst + rec.metadata_off, &l, 8);
      memcpy(e->dst + rec.metadata_off + 8, s->metadata, (size_t)mlen);
    }
  }
  if (s->n_children) rec.children_off = hms__arrow_enc_meta(e, 8 * (uint64_t)s->n_children);
  for (int64_t i = 0; i < s->n_children; i++) {
    uint64_t c;
    hms_status_t st = hms__arrow_enc_schema(e, s->children[i], depth + 1, &c);
    if (st) return st;
    if (e->dst) memcpy(e->dst + rec.children_off + 8 * (uint64_t)i, &c, 8);
  }
  if (s->dictionary) {
    hms_status_t st = hms__arrow_enc_schema(e, s->dictionary, depth + 1, &rec.dictionary_off);
    if (st) return st;
  }
  if (e->dst) memcpy(e->dst + node, &rec, sizeof(rec));
  *out_off = node;
  return HMS_OK;
}

static int64_t hms__arrow_read_offset(const void *buf, int64_t idx, int wide) {
  if (wide) return ((const int64_t *)buf)[idx];
  return ((const int32_t *)buf)[idx];
}

static hms_status_t hms__arrow_enc_array(hms__arrow_enc_t *e, const struct ArrowSchema *s, const struct ArrowArray *a,
                                         int depth, uint64_t *out_off) {
  hms__arrow_fmt_t f;
  const char *name = s->name ? s->name : "";
  if (++e->nodes > HMS_ARROW_MAX_NODES)
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: more than %d nodes", HMS_ARROW_MAX_NODES);
  if (!a || !a->release)
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: array of field '%.64s' is NULL or released", name);
  hms__arrow_parse_format(s->format, &f); /* checked by hms__arrow_enc_schema */
  if (a->length < 0 || a->offset < 0 || a->length > HMS__ARROW_MAX_LENGTH - a->offset || a->null_count < -1 ||
      a->null_count > a->length)
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: field '%.64s' has length %lld, offset %lld, null_count %lld",
                     name, (long long)a->length, (long long)a->offset, (long long)a->null_count);
  int64_t want = hms__arrow_fixed_buffers(&f);
  int64_t nb = a->n_buffers;
  if (f.k == HMS__AK_VIEW ? (nb < 3 || nb - 3 > HMS__ARROW_MAX_VARIADIC) : nb != want)
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: field '%.64s' (format '%.64s') has %lld buffers, expected %lld",
                     name, s->format, (long long)nb, (long long)want);
  if (a->n_children != s->n_children || (nb && !a->buffers) || (a->n_children && !a->children))
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: field '%.64s' has %lld children, its schema %lld", name,
                     (long long)a->n_children, (long long)s->n_children);
  if (!a->dictionary != !s->dictionary)
    return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: field '%.64s': dictionary in %s but not in %s", name,
                     a->dictionary ? "the array" : "the schema", a->dictionary ? "the schema" : "the array");
  int64_t end = a->offset + a->length;
  uint64_t node = hms__arrow_enc_meta(e, HMS__ARROW_ANODE_BYTES);
  hms__arrow_anode_t rec = {.length = a->length, .null_count = a->null_count, .offset = a->offset,
                            .n_buffers = (uint64_t)nb, .n_children = (uint64_t)a->n_children};
  if (nb) rec.buffers_off = hms__arrow_enc_meta(e, 16 * (uint64_t)nb);
  if (a->n_children) rec.children_off = hms__arrow_enc_meta(e, 8 * (uint64_t)a->n_children);
  for (int64_t i = 0; i < nb; i++) {
    const uint8_t *p = a->buffers[i];
    int64_t need = hms__arrow_need(&f, i, end, nb);
    int offsets_buffer = i == 1 && (f.k == HMS__AK_BIN || f.k == HMS__AK_LBIN || f.k == HMS__AK_LIST ||
                                    f.k == HMS__AK_LLIST);
    if ((f.k == HMS__AK_BIN || f.k == HMS__AK_LBIN) && i == 2) {
      const void *offs = a->buffers[1];
      need = offs ? hms__arrow_read_offset(offs, end, f.k == HMS__AK_LBIN) : 0;
    } else if (f.k == HMS__AK_VIEW && i >= 2 && i < nb - 1) {
      const int64_t *sizes = a->buffers[nb - 1];
      need = sizes ? sizes[i - 2] : -1;
    }
    if (need < 0)
      return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: field '%.64s': buffer %lld has an impossible size", name,
                       (long long)i);
    uint64_t entry[2] = {0, 0};
    if (!p) {
      int validity = i == 0 && hms__arrow_has_validity(&f);
      if (validity && a->null_count > 0)
        return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: field '%.64s' has %lld nulls but no validity buffer",
                         name, (long long)a->null_count);
      if (need && !validity && !(offsets_buffer && end == 0))
        return hms__fail(e->err, HMS_INVALID_ARGUMENT, 0, "arrow: field '%.64s': buffer %lld is NULL but needs %lld bytes",
                         name, (long long)i, (long long)need);
      if (!offsets_buffer || end != 0) need = -1; /* stays absent */
    }
    if (need >= 0) {
      e->data = hms__align(e->data, HMS_ARROW_ALIGNMENT);
      entry[0] = e->data;
      entry[1] = (uint64_t)need;
      if (e->dst) {
        if (p) memcpy(e->dst + e->data, p, (size_t)need);
        else memset(e->dst + e->data, 0, (size_t)need); /* the zero offset of an empty array without offsets */
      }
      e->data += (uint64_t)need;
    }
    if (e->dst) memcpy(e->dst + rec.buffers_off + 16 * (uint64_t)i, entry, 16);
  }
  for (int64_t i = 0; i < a->n_children; i++) {
    uint64_t c;
    hms_status_t st = hms__arrow_enc_array(e, s->children[i], a->children[i], depth + 1, &c);
    if (st) return st;
    if (e->dst) memcpy(e->dst + rec.children_off + 8 * (uint64_t)i, &c, 8);
  }
  if (a->dictionary) {
    hms_status_t st = hms__arrow_enc_array(e, s->dictionary, a->dictionary, depth + 1, &rec.dictionary_off);
    if (st) return st;
  }
  if (e->dst) memcpy(e->dst + node, &rec, sizeof(rec));
  *out_off = node;
  return HMS_OK;
}

/* One pass over everything. With e->dst == NULL it only counts: e->meta ends at the end of the
 * metadata, e->data at the total size of the buffers (relative to where they start). */
static hms_status_t hms__arrow_enc_all(hms__arrow_enc_t *e, const struct ArrowSchema *schema,
                                       const struct ArrowArray *const *arrays, size_t n_arrays, hms__arrow_header_t *h) {
  hms_status_t st = hms__arrow_enc_schema(e, schema, 0, &h->schema_off);
  if (st) return st;
  h->arrays_off = n_arrays ? hms__arrow_enc_meta(e, 8 * (uint64_t)n_arrays) : 0;
  for (size_t i = 0; i < n_arrays; i++) {
    uint64_t off;
    if ((st = hms__arrow_enc_array(e, schema, arrays[i], 0, &off))) return st;
    if (e->dst) memcpy(e->dst + h->arrays_off + 8 * i, &off, 8);
  }
  return HMS_OK;
}

static hms_status_t hms__arrow_sizes(const struct ArrowSchema *schema, const struct ArrowArray *const *arrays,
                                     size_t n_arrays, uint64_t *meta_end, uint64_t *total, hms_error_t *err) {
  if (!schema || (n_arrays && !arrays))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow: schema is NULL, or arrays is NULL with n_arrays > 0");
  if (n_arrays > HMS_ARROW_MAX_NODES)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow: %zu arrays (at most %d)", n_arrays, HMS_ARROW_MAX_NODES);
  hms__arrow_enc_t e = {.meta = HMS_ARROW_HEADER_BYTES, .err = err};
  hms__arrow_header_t h;
  hms_status_t st = hms__arrow_enc_all(&e, schema, arrays, n_arrays, &h);
  if (st) return st;
  *meta_end = hms__align(e.meta, HMS_ARROW_ALIGNMENT);
  *total = *meta_end + e.data;
  return HMS_OK;
}

HMS_API hms_status_t hms_arrow_encoded_size(const struct ArrowSchema *schema, const struct ArrowArray *const *arrays,
                                            size_t n_arrays, size_t *out_size, hms_error_t *err) {
  uint64_t meta_end, total;
  hms_status_t st = hms__arrow_sizes(schema, arrays, n_arrays, &meta_end, &total, err);
  if (st) return st;
  if (out_size) *out_size = (size_t)total;
  hms__ok(err);
  return HMS_OK;
}

static hms_status_t hms__arrow_check_kind(uint32_t kind, const char *root_format, uint64_t n_arrays, hms_error_t *err) {
  if (kind > HMS_ARROW_KIND_TABLE) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow: unknown kind %u", kind);
  if ((kind == HMS_ARROW_KIND_ARRAY || kind == HMS_ARROW_KIND_RECORD_BATCH) && n_arrays != 1)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow: kind %u holds exactly one array, not %llu", kind,
                     (unsigned long long)n_arrays);
  if ((kind == HMS_ARROW_KIND_RECORD_BATCH || kind == HMS_ARROW_KIND_TABLE) && strcmp(root_format, "+s"))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow: a record batch or table needs a struct schema, not '%.64s'",
                     root_format);
  return HMS_OK;
}

HMS_API hms_status_t hms_arrow_encode(const struct ArrowSchema *schema, const struct ArrowArray *const *arrays,
                                      size_t n_arrays, uint32_t kind, uint8_t *dst, size_t cap, size_t *written,
                                      hms_error_t *err) {
  uint64_t meta_end, total;
  hms_status_t st = hms__arrow_sizes(schema, arrays, n_arrays, &meta_end, &total, err);
  if (st) return st;
  if ((st = hms__arrow_check_kind(kind, schema->format, n_arrays, err))) return st;
  if (written) *written = (size_t)total;
  if (cap < total)
    return hms__fail(err, HMS_OUT_OF_RANGE, 0, "arrow: the layout needs %llu bytes, the buffer has %zu",
                     (unsigned long long)total, cap);
  if (!dst) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow: dst is NULL");
  hms__arrow_enc_t e = {.dst = dst, .meta = HMS_ARROW_HEADER_BYTES, .data = meta_end, .err = err};
  hms__arrow_header_t h = {.magic = HMS__ARROW_MAGIC, .version = HMS_ARROW_FORMAT_VERSION, .kind = kind,
                           .total_len = total, .meta_end = meta_end, .n_arrays = n_arrays};
  if ((st = hms__arrow_enc_all(&e, schema, arrays, n_arrays, &h))) return st;
  if (e.data != total || hms__align(e.meta, HMS_ARROW_ALIGNMENT) != meta_end)
    return hms__fail(err, HMS_INTERNAL, 0, "arrow: the arrays changed while they were encoded");
  memset(dst + e.meta, 0, meta_end - e.meta); /* padding: no stale bytes of dst leak to the peer */
  memcpy(dst, &h, sizeof(h));
  hms__ok(err);
  return HMS_OK;
}

/* ================================================================ decoder */
typedef struct {
  hms__arrow_fmt_t fmt;
  int64_t flags;
  uint64_t format_str, name_str, metadata_str; /* offsets into the private string pool; name/metadata UINT64_MAX = NULL */
  uint32_t n_children, kids; /* kids: first index into skids */
  int32_t dict;              /* schema node index, -1 = none */
} hms__arrow_sdec_t;

typedef struct {
  int64_t length, null_count, offset;
  uint32_t snode;
  uint32_t n_buffers, bufs;  /* bufs: first index into bufs[] */
  uint32_t n_children, kids; /* kids: first index into akids */
  int32_t dict;
  uint64_t view_sizes;       /* views: pool offset of the validated private copy of the sizes buffer */
} hms__arrow_adec_t;

typedef struct {
  uint64_t off, len; /* off 0 = absent */
} hms__arrow_buf_t;

#define HMS__VEC(T) struct { T *v; size_t n, cap; }
typedef struct {
  const uint8_t *src;
  uint64_t len, meta_end;
  uint64_t mcur, dcur; /* cursors: the next item must start at or after these */
  uint64_t visits;
  hms_error_t *err;
  HMS__VEC(hms__arrow_sdec_t) s;
  HMS__VEC(hms__arrow_adec_t) a;
  HMS__VEC(uint32_t) skids;
  HMS__VEC(uint32_t) akids;
  HMS__VEC(hms__arrow_buf_t) bufs;
  HMS__VEC(char) str;
} hms__arrow_dec_t;

/* Grows a vector by n zeroed elements; returns the index of the first, or -1 without memory. */
static int64_t hms__vec_grow(void **v, size_t *n, size_t *cap, size_t elem, size_t add) {
  if (add > SIZE_MAX / elem - *n) return -1;
  if (*n + add > *cap) {
    size_t c = *cap ? *cap : 16;
    while (c < *n + add) c = c > SIZE_MAX / 4 ? *n + add : c * 2;
    void *p = realloc(*v, c * elem);
    if (!p) return -1;
    *v = p;
    *cap = c;
  }
  if (add) memset((char *)*v + *n * elem, 0, add * elem);
  int64_t i = (int64_t)*n;
  *n += add;
  return i;
}
#define HMS__VEC_GROW(d, vec, add) hms__vec_grow((void **)&(d)->vec.v, &(d)->vec.n, &(d)->vec.cap, sizeof(*(d)->vec.v), (add))

#define HMS__BAD(d, ...) hms__fail((d)->err, HMS_INVALID_ARGUMENT, 0, "arrow layout: " __VA_ARGS__)
#define HMS__NOMEM(d) hms__fail((d)->err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "arrow: out of memory while decoding")

/* Claims [off, off + bytes) of the metadata section: 8-aligned, after the previous item, before
 * meta_end. Copies it into `out` when given. */
static hms_status_t hms__arrow_take(hms__arrow_dec_t *d, uint64_t off, uint64_t bytes, void *out, const char *what) {
  if (off % 8 || off < d->mcur || off > d->meta_end || bytes > d->meta_end - off)
    return HMS__BAD(d, "%s at offset %llu (+%llu bytes) is outside the metadata section [%llu, %llu) or out of order", what,
                    (unsigned long long)off, (unsigned long long)bytes, (unsigned long long)d->mcur,
                    (unsigned long long)d->meta_end);
  if (out) memcpy(out, d->src + off, bytes);
  d->mcur = off + bytes;
  return HMS_OK;
}

static uint64_t hms__arrow_ld_u64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* A string record: copies it into the pool (NUL-terminated) and returns its pool offset. */
static hms_status_t hms__arrow_take_string(hms__arrow_dec_t *d, uint64_t off, uint64_t max, int blob, uint64_t *pool_off,
                                           uint64_t *out_len, const char *what) {
  uint64_t len;
  hms_status_t st = hms__arrow_take(d, off, 8, &len, what);
  if (st) return st;
  if (len > max || len > d->meta_end - d->mcur || (!blob && len == d->meta_end - d->mcur))
    return HMS__BAD(d, "%s at offset %llu: length %llu does not fit", what, (unsigned long long)off, (unsigned long long)len);
  int64_t at = HMS__VEC_GROW(d, str, len + 1);
  if (at < 0) return HMS__NOMEM(d);
  char *p = d->str.v + at;
  memcpy(p, d->src + d->mcur, len + (blob ? 0 : 1)); /* one copy; everything below looks at the copy */
  if (blob) {
    p[len] = 0;
  } else if (p[len] != 0 || memchr(p, 0, len)) {
    return HMS__BAD(d, "%s at offset %llu is not a NUL-terminated string of %llu bytes", what, (unsigned long long)off,
                    (unsigned long long)len);
  }
  d->mcur = hms__align(d->mcur + len + (blob ? 0 : 1), 8);
  if (d->mcur > d->meta_end) d->mcur = d->meta_end;
  *pool_off = (uint64_t)at;
  if (out_len) *out_len = len;
  return HMS_OK;
}

static hms_status_t hms__arrow_dec_schema(hms__arrow_dec_t *d, uint64_t off, int depth, uint32_t *out_idx) {
  hms__arrow_snode_t rec;
  if (depth > HMS_ARROW_MAX_DEPTH) return HMS__BAD(d, "schema nested deeper than %d levels", HMS_ARROW_MAX_DEPTH);
  if (++d->visits > HMS_ARROW_MAX_NODES) return HMS__BAD(d, "more than %d nodes", HMS_ARROW_MAX_NODES);
  hms_status_t st = hms__arrow_take(d, off, sizeof(rec), &rec, "schema node");
  if (st) return st;
  int64_t idx = HMS__VEC_GROW(d, s, 1);
  if (idx < 0) return HMS__NOMEM(d);
  hms__arrow_sdec_t n = {.flags = rec.flags, .name_str = UINT64_MAX, .metadata_str = UINT64_MAX, .dict = -1};
  if ((st = hms__arrow_take_string(d, rec.format_off, HMS_ARROW_MAX_FORMAT, 0, &n.format_str, NULL, "format string")))
    return st;
  const char *fmt = d->str.v + n.format_str;
  if (hms__arrow_parse_format(fmt, &n.fmt)) return HMS__BAD(d, "unsupported format '%.64s' at offset %llu", fmt, (unsigned long long)off);
  if (rec.name_off && (st = hms__arrow_take_string(d, rec.name_off, UINT64_MAX, 0, &n.name_str, NULL, "field name")))
    return st;
  if (rec.metadata_off) {
    uint64_t mlen;
    if ((st = hms__arrow_take_string(d, rec.metadata_off, UINT64_MAX, 1, &n.metadata_str, &mlen, "metadata"))) return st;
    if (hms__arrow_metadata_len(d->str.v + n.metadata_str, mlen) != (int64_t)mlen)
      return HMS__BAD(d, "malformed metadata at offset %llu", (unsigned long long)rec.metadata_off);
  }
  if ((n.fmt.n_children >= 0 && rec.n_children != (uint64_t)n.fmt.n_children) || rec.n_children > HMS_ARROW_MAX_NODES)
    return HMS__BAD(d, "format '%.64s' with %llu children", d->str.v + n.format_str, (unsigned long long)rec.n_children);
  n.n_children = (uint32_t)rec.n_children;
  if (rec.n_children && (st = hms__arrow_take(d, rec.children_off, 8 * rec.n_children, NULL, "schema children table")))
    return st;
  int64_t kids = HMS__VEC_GROW(d, skids, n.n_children);
  if (kids < 0) return HMS__NOMEM(d);
  n.kids = (uint32_t)kids;
  d->s.v[idx] = n;
  for (uint32_t i = 0; i < n.n_children; i++) {
    uint32_t c;
    if ((st = hms__arrow_dec_schema(d, hms__arrow_ld_u64(d->src + rec.children_off + 8 * (uint64_t)i), depth + 1, &c)))
      return st;
    d->skids.v[kids + i] = c;
  }
  if (rec.dictionary_off) {
    uint32_t c;
    if (!n.fmt.is_int) return HMS__BAD(d, "dictionary index type '%.64s' is not an integer", d->str.v + n.format_str);
    if ((st = hms__arrow_dec_schema(d, rec.dictionary_off, depth + 1, &c))) return st;
    d->s.v[idx].dict = (int32_t)c;
  }
  hms__arrow_sdec_t *me = &d->s.v[idx];
  if (me->fmt.is_map) {
    const hms__arrow_sdec_t *entries = &d->s.v[d->skids.v[me->kids]];
    if (entries->fmt.k != HMS__AK_STRUCT || entries->n_children != 2)
      return HMS__BAD(d, "a map's child must be a struct of two fields");
  }
  if (me->fmt.k == HMS__AK_REE) {
    const hms__arrow_sdec_t *ends = &d->s.v[d->skids.v[me->kids]];
    if (ends->fmt.k != HMS__AK_FIXED || !ends->fmt.is_int || ends->fmt.bits == 8 || ends->dict >= 0)
      return HMS__BAD(d, "run ends must be int16, int32 or int64, not '%.64s'", d->str.v + ends->format_str);
  }
  *out_idx = (uint32_t)idx;
  return HMS_OK;
}

/* Values read from the layout: one aligned load each (the layout may change under us). */
static int64_t hms__arrow_ld_int(const uint8_t *base, int64_t i, uint32_t bytes) {
  switch (bytes) {
    case 1: return *(const volatile int8_t *)(base + i);
    case 2: return *(const volatile int16_t *)(base + 2 * i);
    case 4: return *(const volatile int32_t *)(base + 4 * i);
    default: return *(const volatile int64_t *)(base + 8 * i);
  }
}
static uint64_t hms__arrow_ld_uint(const uint8_t *base, int64_t i, uint32_t bytes) {
  switch (bytes) {
    case 1: return *(const volatile uint8_t *)(base + i);
    case 2: return *(const volatile uint16_t *)(base + 2 * i);
    case 4: return *(const volatile uint32_t *)(base + 4 * i);
    default: return *(const volatile uint64_t *)(base + 8 * i);
  }
}

static const uint8_t *hms__arrow_bufp(const hms__arrow_dec_t *d, const hms__arrow_adec_t *a, uint32_t i) {
  const hms__arrow_buf_t *b = &d->bufs.v[a->bufs + i];
  return b->off ? d->src + b->off : NULL;
}
static uint64_t hms__arrow_buflen(const hms__arrow_dec_t *d, const hms__arrow_adec_t *a, uint32_t i) {
  return d->bufs.v[a->bufs + i].len;
}

/* offsets[a.offset .. a.offset + a.length] (length + 1 values): first >= 0, non-decreasing, last <= limit. */
static hms_status_t hms__arrow_check_offsets(hms__arrow_dec_t *d, const uint8_t *offs, int64_t from, int64_t count,
                                             uint32_t width, uint64_t limit, const char *what) {
  int64_t prev = hms__arrow_ld_int(offs, from, width);
  if (prev < 0) return HMS__BAD(d, "%s: negative offset %lld", what, (long long)prev);
  for (int64_t i = 1; i <= count; i++) {
    int64_t v = hms__arrow_ld_int(offs, from + i, width);
    if (v < prev) return HMS__BAD(d, "%s: offsets decrease at %lld (%lld < %lld)", what, (long long)(from + i), (long long)v, (long long)prev);
    prev = v;
  }
  if ((uint64_t)prev > limit)
    return HMS__BAD(d, "%s: last offset %lld is past the end (%llu)", what, (long long)prev, (unsigned long long)limit);
  return HMS_OK;
}

/* Checks one array node's buffers and the values that locate other values. Children are decoded. */
static hms_status_t hms__arrow_check_array(hms__arrow_dec_t *d, uint32_t ai) {
  const hms__arrow_adec_t *a = &d->a.v[ai];
  const hms__arrow_sdec_t *s = &d->s.v[a->snode];
  const hms__arrow_fmt_t *f = &s->fmt;
  const char *fmt = d->str.v + s->format_str;
  int64_t end = a->offset + a->length;
  hms_status_t st;
  for (uint32_t i = 0; i < a->n_buffers; i++) {
    int64_t need = hms__arrow_need(f, i, end, a->n_buffers);
    const hms__arrow_buf_t *b = &d->bufs.v[a->bufs + i];
    if (need < 0) return HMS__BAD(d, "'%.64s' array of length %lld: buffer %u size overflows", fmt, (long long)a->length, i);
    if (!b->off) {
      if (i == 0 && hms__arrow_has_validity(f)) {
        if (a->null_count > 0) return HMS__BAD(d, "'%.64s' array with %lld nulls has no validity buffer", fmt, (long long)a->null_count);
      } else if (need > 0) {
        return HMS__BAD(d, "'%.64s' array: buffer %u is absent but needs %lld bytes", fmt, i, (long long)need);
      }
    } else if (b->len < (uint64_t)need) {
      return HMS__BAD(d, "'%.64s' array of offset+length %lld: buffer %u has %llu bytes, needs %lld", fmt, (long long)end, i,
                      (unsigned long long)b->len, (long long)need);
    }
  }
  switch (f->k) {
    case HMS__AK_BIN: case HMS__AK_LBIN: {
      const uint8_t *offs = hms__arrow_bufp(d, a, 1);
      if (!offs) break; /* empty array without offsets */
      if ((st = hms__arrow_check_offsets(d, offs, a->offset, a->length, f->k == HMS__AK_BIN ? 4 : 8,
                                         hms__arrow_bufp(d, a, 2) ? hms__arrow_buflen(d, a, 2) : 0, fmt)))
        return st;
      break;
    }
    case HMS__AK_LIST: case HMS__AK_LLIST: {
      const uint8_t *offs = hms__arrow_bufp(d, a, 1);
      if (!offs) break;
      if ((st = hms__arrow_check_offsets(d, offs, a->offset, a->length, f->k == HMS__AK_LIST ? 4 : 8,
                                         (uint64_t)d->a.v[d->akids.v[a->kids]].length, fmt)))
        return st;
      break;
    }
    case HMS__AK_LVIEW: case HMS__AK_LLVIEW: {
      uint32_t w = f->k == HMS__AK_LVIEW ? 4 : 8;
      const uint8_t *offs = hms__arrow_bufp(d, a, 1), *sizes = hms__arrow_bufp(d, a, 2);
      int64_t child_len = d->a.v[d->akids.v[a->kids]].length;
      for (int64_t i = a->offset; i < end; i++) {
        int64_t o = hms__arrow_ld_int(offs, i, w), n = hms__arrow_ld_int(sizes, i, w);
        if (o < 0 || n < 0 || o > child_len || n > child_len - o)
          return HMS__BAD(d, "'%.64s' array: view %lld (offset %lld, size %lld) is outside its child of length %lld", fmt,
                          (long long)i, (long long)o, (long long)n, (long long)child_len);
      }
      break;
    }
    case HMS__AK_VIEW: {
      uint32_t nv = a->n_buffers - 3;
      const uint8_t *views = hms__arrow_bufp(d, a, 1), *sizes = hms__arrow_bufp(d, a, a->n_buffers - 1);
      int64_t stack_sizes[16];
      int64_t *sz = nv <= 16 ? stack_sizes : malloc(sizeof(int64_t) * nv);
      if (!sz) return HMS__NOMEM(d);
      st = HMS_OK;
      for (uint32_t k = 0; k < nv && !st; k++) {
        sz[k] = hms__arrow_ld_int(sizes, k, 8);
        uint64_t have = hms__arrow_bufp(d, a, 2 + k) ? hms__arrow_buflen(d, a, 2 + k) : 0;
        if (sz[k] < 0 || (uint64_t)sz[k] > have)
          st = HMS__BAD(d, "'%.64s' array: data buffer %u claims %lld bytes, has %llu", fmt, k, (long long)sz[k],
                        (unsigned long long)have);
      }
      for (int64_t i = a->offset; i < end && !st; i++) {
        int64_t n = hms__arrow_ld_int(views + 16 * i, 0, 4);
        if (n < 0) {
          st = HMS__BAD(d, "'%.64s' array: view %lld has negative length", fmt, (long long)i);
        } else if (n > 12) {
          int64_t k = hms__arrow_ld_int(views + 16 * i, 2, 4), o = hms__arrow_ld_int(views + 16 * i, 3, 4);
          if (k < 0 || k >= (int64_t)nv || o < 0 || o > sz[k] || n > sz[k] - o)
            st = HMS__BAD(d, "'%.64s' array: view %lld (buffer %lld, offset %lld, length %lld) points outside its data", fmt,
                          (long long)i, (long long)k, (long long)o, (long long)n);
        }
      }
      if (!st && nv) {
        /* Consumers size the data buffers from this buffer (pyarrow does when it imports): hand
         * them the validated private copy, so a later rewrite of the region cannot enlarge them. */
        uint64_t pad = (8 - d->str.n % 8) % 8;
        int64_t at = HMS__VEC_GROW(d, str, pad + 8 * (uint64_t)nv);
        if (at < 0) {
          st = HMS__NOMEM(d);
        } else {
          memcpy(d->str.v + at + pad, sz, 8 * (size_t)nv);
          d->a.v[ai].view_sizes = (uint64_t)at + pad;
        }
      }
      if (sz != stack_sizes) free(sz);
      if (st) return st;
      break;
    }
    case HMS__AK_FSL: {
      uint64_t need;
      if (hms__arrow_mul((uint64_t)end, (uint64_t)f->width, &need) || need > (uint64_t)d->a.v[d->akids.v[a->kids]].length)
        return HMS__BAD(d, "'%.64s' array of offset+length %lld: child too short", fmt, (long long)end);
      break;
    }
    case HMS__AK_STRUCT: case HMS__AK_SUNION:
      for (uint32_t i = 0; i < a->n_children; i++)
        if (d->a.v[d->akids.v[a->kids + i]].length < end)
          return HMS__BAD(d, "'%.64s' array of offset+length %lld: child %u has length %lld", fmt, (long long)end, i,
                          (long long)d->a.v[d->akids.v[a->kids + i]].length);
      if (f->k == HMS__AK_STRUCT) break;
      __attribute__((fallthrough)); /* sparse unions: type ids as for dense ones */
    case HMS__AK_DUNION: {
      const uint8_t *ids = hms__arrow_bufp(d, a, 0), *offs = f->k == HMS__AK_DUNION ? hms__arrow_bufp(d, a, 1) : NULL;
      for (int64_t i = a->offset; i < end; i++) {
        int64_t id = hms__arrow_ld_int(ids, i, 1);
        if (id < 0 || f->child_of_id[id] < 0) return HMS__BAD(d, "'%.64s' array: type id %lld at %lld is not declared", fmt, (long long)id, (long long)i);
        if (offs) {
          int64_t o = hms__arrow_ld_int(offs, i, 4);
          int64_t child_len = d->a.v[d->akids.v[a->kids + (uint32_t)f->child_of_id[id]]].length;
          if (o < 0 || o >= child_len)
            return HMS__BAD(d, "'%.64s' array: offset %lld at %lld is outside child of length %lld", fmt, (long long)o, (long long)i,
                            (long long)child_len);
        }
      }
      break;
    }
    case HMS__AK_REE: {
      const hms__arrow_adec_t *ends = &d->a.v[d->akids.v[a->kids]], *vals = &d->a.v[d->akids.v[a->kids + 1]];
      uint32_t w = d->s.v[ends->snode].fmt.bits / 8;
      if (ends->null_count != 0) return HMS__BAD(d, "run ends must not contain nulls");
      if (vals->length < ends->length) return HMS__BAD(d, "run-end encoded array: fewer values than runs");
      if (a->length == 0) break;
      if (ends->length < 1) return HMS__BAD(d, "run-end encoded array of length %lld has no runs", (long long)a->length);
      const uint8_t *e = hms__arrow_bufp(d, ends, 1);
      int64_t prev = 0;
      for (int64_t i = 0; i < ends->length; i++) {
        int64_t v = hms__arrow_ld_int(e, ends->offset + i, w);
        if (v <= prev) return HMS__BAD(d, "run ends must be positive and strictly increasing (%lld after %lld)", (long long)v, (long long)prev);
        prev = v;
      }
      if (prev < end) return HMS__BAD(d, "run ends stop at %lld, the array needs %lld", (long long)prev, (long long)end);
      break;
    }
    default: break;
  }
  fmt = d->str.v + s->format_str; /* the pool may have moved (views) */
  if (a->dict >= 0) { /* indices of valid slots must lie in the dictionary */
    const uint8_t *valid = hms__arrow_bufp(d, a, 0), *idx = hms__arrow_bufp(d, a, 1);
    int64_t dict_len = d->a.v[a->dict].length;
    uint32_t w = f->bits / 8;
    int is_signed = strchr("csil", fmt[0]) != NULL;
    for (int64_t i = a->offset; i < end; i++) {
      if (valid && !((*(const volatile uint8_t *)(valid + i / 8) >> (i % 8)) & 1)) continue;
      if (is_signed) {
        int64_t v = hms__arrow_ld_int(idx, i, w);
        if (v < 0 || v >= dict_len) return HMS__BAD(d, "dictionary index %lld at %lld is outside a dictionary of %lld", (long long)v, (long long)i, (long long)dict_len);
      } else {
        uint64_t v = hms__arrow_ld_uint(idx, i, w);
        if (v >= (uint64_t)dict_len) return HMS__BAD(d, "dictionary index %llu at %lld is outside a dictionary of %lld", (unsigned long long)v, (long long)i, (long long)dict_len);
      }
    }
  }
  return HMS_OK;
}

static hms_status_t hms__arrow_dec_array(hms__arrow_dec_t *d, uint64_t off, uint32_t si, int depth, uint32_t *out_idx) {
  hms__arrow_anode_t rec;
  if (depth > HMS_ARROW_MAX_DEPTH) return HMS__BAD(d, "array nested deeper than %d levels", HMS_ARROW_MAX_DEPTH);
  if (++d->visits > HMS_ARROW_MAX_NODES) return HMS__BAD(d, "more than %d nodes", HMS_ARROW_MAX_NODES);
  hms_status_t st = hms__arrow_take(d, off, sizeof(rec), &rec, "array node");
  if (st) return st;
  const hms__arrow_sdec_t *s = &d->s.v[si];
  const char *fmt = d->str.v + s->format_str;
  if (rec.length < 0 || rec.offset < 0 || rec.length > HMS__ARROW_MAX_LENGTH - rec.offset || rec.null_count < -1 ||
      rec.null_count > rec.length)
    return HMS__BAD(d, "'%.64s' array at %llu: length %lld, offset %lld, null_count %lld", fmt, (unsigned long long)off,
                    (long long)rec.length, (long long)rec.offset, (long long)rec.null_count);
  int64_t want = hms__arrow_fixed_buffers(&s->fmt);
  if (s->fmt.k == HMS__AK_VIEW ? (rec.n_buffers < 3 || rec.n_buffers - 3 > HMS__ARROW_MAX_VARIADIC) : rec.n_buffers != (uint64_t)want)
    return HMS__BAD(d, "'%.64s' array at %llu has %llu buffers, expected %lld", fmt, (unsigned long long)off,
                    (unsigned long long)rec.n_buffers, (long long)want);
  if (rec.n_children != s->n_children)
    return HMS__BAD(d, "'%.64s' array at %llu has %llu children, its schema %u", fmt, (unsigned long long)off,
                    (unsigned long long)rec.n_children, s->n_children);
  if (!rec.dictionary_off != (s->dict < 0))
    return HMS__BAD(d, "'%.64s' array at %llu: dictionary %s", fmt, (unsigned long long)off,
                    rec.dictionary_off ? "present but the schema has none" : "missing");
  int64_t idx = HMS__VEC_GROW(d, a, 1);
  if (idx < 0) return HMS__NOMEM(d);
  hms__arrow_adec_t n = {.length = rec.length, .null_count = rec.null_count, .offset = rec.offset, .snode = si,
                         .n_buffers = (uint32_t)rec.n_buffers, .n_children = (uint32_t)rec.n_children, .dict = -1};
  if (rec.n_buffers && (st = hms__arrow_take(d, rec.buffers_off, 16 * rec.n_buffers, NULL, "buffers table"))) return st;
  if (rec.n_children && (st = hms__arrow_take(d, rec.children_off, 8 * rec.n_children, NULL, "array children table")))
    return st;
  int64_t bufs = HMS__VEC_GROW(d, bufs, n.n_buffers);
  if (bufs < 0) return HMS__NOMEM(d);
  n.bufs = (uint32_t)bufs;
  for (uint32_t i = 0; i < n.n_buffers; i++) {
    uint64_t e[2];
    memcpy(e, d->src + rec.buffers_off + 16 * (uint64_t)i, 16);
    if (!e[0]) {
      if (e[1]) return HMS__BAD(d, "absent buffer %u of '%.64s' array at %llu has a length", i, fmt, (unsigned long long)off);
    } else if (e[0] % 8 || e[0] < d->dcur || e[0] > d->len || e[1] > d->len - e[0]) {
      return HMS__BAD(d, "buffer %u of '%.64s' array at %llu ([%llu, +%llu)) is outside the buffer section or out of order", i,
                      fmt, (unsigned long long)off, (unsigned long long)e[0], (unsigned long long)e[1]);
    } else {
      d->dcur = e[0] + e[1];
    }
    d->bufs.v[bufs + i].off = e[0];
    d->bufs.v[bufs + i].len = e[1];
  }
  int64_t kids = HMS__VEC_GROW(d, akids, n.n_children);
  if (kids < 0) return HMS__NOMEM(d);
  n.kids = (uint32_t)kids;
  d->a.v[idx] = n;
  for (uint32_t i = 0; i < n.n_children; i++) {
    uint32_t c;
    uint32_t child_schema = d->skids.v[d->s.v[si].kids + i];
    if ((st = hms__arrow_dec_array(d, hms__arrow_ld_u64(d->src + rec.children_off + 8 * (uint64_t)i), child_schema, depth + 1, &c)))
      return st;
    d->akids.v[kids + i] = c;
  }
  if (rec.dictionary_off) {
    uint32_t c;
    if ((st = hms__arrow_dec_array(d, rec.dictionary_off, (uint32_t)d->s.v[si].dict, depth + 1, &c))) return st;
    d->a.v[idx].dict = (int32_t)c;
  }
  if ((st = hms__arrow_check_array(d, (uint32_t)idx))) return st;
  *out_idx = (uint32_t)idx;
  return HMS_OK;
}

static hms_status_t hms__arrow_header(const uint8_t *src, size_t len, hms__arrow_header_t *h, hms_error_t *err) {
  if (!src || len < sizeof(*h))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow layout: %zu bytes is too short for a header", src ? len : 0);
  if ((uintptr_t)src % 8)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow layout: the region must start at an 8-byte boundary");
  memcpy(h, src, sizeof(*h));
  if (h->magic != HMS__ARROW_MAGIC)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow layout: bad magic (not an hms Arrow layout, or another byte order)");
  if (h->version != HMS_ARROW_FORMAT_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow layout: format version %u, this library reads %d (upgrade hms-ffi)",
                     h->version, HMS_ARROW_FORMAT_VERSION);
  if (h->total_len > len || h->meta_end < HMS_ARROW_HEADER_BYTES || h->meta_end > h->total_len || h->kind > HMS_ARROW_KIND_TABLE ||
      h->n_arrays > (h->meta_end - HMS_ARROW_HEADER_BYTES) / 8)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "arrow layout: inconsistent header (total %llu of %zu bytes, metadata end %llu, kind %u, %llu arrays)",
                     (unsigned long long)h->total_len, len, (unsigned long long)h->meta_end, h->kind,
                     (unsigned long long)h->n_arrays);
  return HMS_OK;
}

HMS_API hms_status_t hms_arrow_peek(const uint8_t *src, size_t len, uint32_t *kind, size_t *n_arrays, hms_error_t *err) {
  hms__arrow_header_t h;
  hms_status_t st = hms__arrow_header(src, len, &h, err);
  if (st) return st;
  if (kind) *kind = h.kind;
  if (n_arrays) *n_arrays = (size_t)h.n_arrays;
  hms__ok(err);
  return HMS_OK;
}

/* ---------------------------------------------------------------- the structs handed out */
typedef struct {
  _Atomic int64_t refs; /* one per struct that still has its release callback */
  void (*on_release)(void *ctx);
  void *ctx;
  char *strings;
} hms__arrow_shared_t;

static void hms__arrow_unref(hms__arrow_shared_t *sh) {
  if (atomic_fetch_sub_explicit(&sh->refs, 1, memory_order_acq_rel) != 1) return;
  if (sh->on_release) sh->on_release(sh->ctx);
  free(sh->strings);
  free(sh); /* the block: this header, every child struct and pointer table */
}

static void hms__arrow_schema_release(struct ArrowSchema *s) {
  if (!s || !s->release) return;
  for (int64_t i = 0; i < s->n_children; i++)
    if (s->children[i]->release) s->children[i]->release(s->children[i]);
  if (s->dictionary && s->dictionary->release) s->dictionary->release(s->dictionary);
  hms__arrow_shared_t *sh = s->private_data;
  s->release = NULL;
  hms__arrow_unref(sh);
}

static void hms__arrow_array_release(struct ArrowArray *a) {
  if (!a || !a->release) return;
  for (int64_t i = 0; i < a->n_children; i++)
    if (a->children[i]->release) a->children[i]->release(a->children[i]);
  if (a->dictionary && a->dictionary->release) a->dictionary->release(a->dictionary);
  hms__arrow_shared_t *sh = a->private_data;
  a->release = NULL;
  hms__arrow_unref(sh);
}

static void hms__arrow_dec_free(hms__arrow_dec_t *d) {
  free(d->s.v);
  free(d->a.v);
  free(d->skids.v);
  free(d->akids.v);
  free(d->bufs.v);
  free(d->str.v);
}

HMS_API hms_status_t hms_arrow_decode(const uint8_t *src, size_t len, void (*on_release)(void *ctx), void *ctx,
                                      struct ArrowSchema *out_schema, struct ArrowArray *out_arrays, size_t max_arrays,
                                      size_t *n_arrays, hms_error_t *err) {
  if (out_schema) memset(out_schema, 0, sizeof(*out_schema));
  if (out_arrays) memset(out_arrays, 0, sizeof(*out_arrays) * max_arrays);
  if (!out_schema || (max_arrays && !out_arrays))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "arrow: out_schema is NULL, or out_arrays is NULL with max_arrays > 0");
  hms__arrow_header_t h;
  hms_status_t st = hms__arrow_header(src, len, &h, err);
  if (st) return st;
  if (n_arrays) *n_arrays = (size_t)h.n_arrays;
  if (h.n_arrays > max_arrays)
    return hms__fail(err, HMS_OUT_OF_RANGE, 0, "arrow: the layout holds %llu arrays, room for %zu",
                     (unsigned long long)h.n_arrays, max_arrays);

  /* 1. Validate everything, copying what we keep into private memory. */
  hms__arrow_dec_t d = {.src = src, .len = h.total_len, .meta_end = h.meta_end, .mcur = HMS_ARROW_HEADER_BYTES,
                        .dcur = h.meta_end, .err = err};
  uint32_t root_schema, *roots = NULL;
  st = hms__arrow_dec_schema(&d, h.schema_off, 0, &root_schema);
  if (!st) st = hms__arrow_check_kind(h.kind, d.str.v + d.s.v[root_schema].format_str, h.n_arrays, err);
  if (!st && h.n_arrays) {
    st = hms__arrow_take(&d, h.arrays_off, 8 * h.n_arrays, NULL, "arrays table");
    if (!st && !(roots = malloc(sizeof(uint32_t) * h.n_arrays))) st = HMS__NOMEM(&d);
  }
  for (uint64_t i = 0; !st && i < h.n_arrays; i++)
    st = hms__arrow_dec_array(&d, hms__arrow_ld_u64(src + h.arrays_off + 8 * i), root_schema, 0, &roots[i]);
  if (st) {
    free(roots);
    hms__arrow_dec_free(&d);
    return st;
  }

  /* 2. Build the structs from the private copies: one block for all of them. */
  size_t ns = d.s.n, na = d.a.n;
  size_t bytes = hms__align(sizeof(hms__arrow_shared_t), 16) + ns * sizeof(struct ArrowSchema) +
                 na * sizeof(struct ArrowArray) + (d.skids.n + d.akids.n + d.bufs.n) * sizeof(void *);
  uint8_t *block = malloc(bytes);
  if (!block) {
    free(roots);
    hms__arrow_dec_free(&d);
    return HMS__NOMEM(&d);
  }
  hms__arrow_shared_t *sh = (hms__arrow_shared_t *)block;
  struct ArrowSchema *ss = (struct ArrowSchema *)(block + hms__align(sizeof(*sh), 16));
  struct ArrowArray *aa = (struct ArrowArray *)(ss + ns);
  struct ArrowSchema **skids = (struct ArrowSchema **)(aa + na);
  struct ArrowArray **akids = (struct ArrowArray **)(skids + d.skids.n);
  const void **bufs = (const void **)(akids + d.akids.n);
  atomic_init(&sh->refs, (int64_t)(ns + na));
  sh->on_release = on_release;
  sh->ctx = ctx;
  sh->strings = d.str.v;
  d.str.v = NULL;
  for (size_t i = 0; i < d.skids.n; i++) skids[i] = &ss[d.skids.v[i]];
  for (size_t i = 0; i < d.akids.n; i++) akids[i] = &aa[d.akids.v[i]];
  for (size_t i = 0; i < d.bufs.n; i++) bufs[i] = d.bufs.v[i].off ? src + d.bufs.v[i].off : NULL;
  for (size_t i = 0; i < ns; i++) {
    const hms__arrow_sdec_t *n = &d.s.v[i];
    ss[i] = (struct ArrowSchema){
        .format = sh->strings + n->format_str,
        .name = n->name_str == UINT64_MAX ? NULL : sh->strings + n->name_str,
        .metadata = n->metadata_str == UINT64_MAX ? NULL : sh->strings + n->metadata_str,
        .flags = n->flags,
        .n_children = n->n_children,
        .children = n->n_children ? &skids[n->kids] : NULL,
        .dictionary = n->dict >= 0 ? &ss[n->dict] : NULL,
        .release = hms__arrow_schema_release,
        .private_data = sh};
  }
  for (size_t i = 0; i < na; i++) {
    const hms__arrow_adec_t *n = &d.a.v[i];
    if (d.s.v[n->snode].fmt.k == HMS__AK_VIEW && n->n_buffers > 3) bufs[n->bufs + n->n_buffers - 1] = sh->strings + n->view_sizes;
    aa[i] = (struct ArrowArray){
        .length = n->length,
        .null_count = n->null_count,
        .offset = n->offset,
        .n_buffers = n->n_buffers,
        .n_children = n->n_children,
        .buffers = n->n_buffers ? &bufs[n->bufs] : NULL,
        .children = n->n_children ? &akids[n->kids] : NULL,
        .dictionary = n->dict >= 0 ? &aa[n->dict] : NULL,
        .release = hms__arrow_array_release,
        .private_data = sh};
  }
  /* The roots move (bitwise) into the caller's structs; their slots in the block stay unused. */
  *out_schema = ss[root_schema];
  ss[root_schema].release = NULL;
  for (uint64_t i = 0; i < h.n_arrays; i++) {
    out_arrays[i] = aa[roots[i]];
    aa[roots[i]].release = NULL;
  }
  free(roots);
  hms__arrow_dec_free(&d);
  hms__ok(err);
  return HMS_OK;
}
