/* libFuzzer target for hms_arrow_decode(): any bytes must either be refused with
 * HMS_INVALID_ARGUMENT / HMS_OUT_OF_RANGE or decode into structs whose buffers all lie inside the
 * input, and release must call on_release exactly once. Seeds: tests/c/corpus/arrow/ (written by
 * `hms_arrow_test write-corpus DIR`).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Icsrc csrc/arrow.c csrc/status.c \
 *         tests/c/fuzz_arrow_decode.c -o fuzz_arrow_decode
 *   ./fuzz_arrow_decode -max_total_time=60 tests/c/corpus/arrow */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hms_ffi/hms_ffi.h"

static int released;
static void on_release(void *ctx) { (*(int *)ctx)++; }

static void check_inside(const struct ArrowSchema *s, const struct ArrowArray *a, const uint8_t *base, size_t len,
                         int depth) {
  /* views: the last buffer (sizes of the data buffers) is a private validated copy, not in the region */
  int64_t n = s->format[0] == 'v' && a->n_buffers > 3 ? a->n_buffers - 1 : a->n_buffers;
  for (int64_t i = 0; i < n; i++) {
    const uint8_t *p = a->buffers[i];
    if (p && (p < base || p > base + len)) abort();
  }
  if (depth > HMS_ARROW_MAX_DEPTH + 1 || s->n_children != a->n_children || !s->dictionary != !a->dictionary) abort();
  for (int64_t i = 0; i < a->n_children; i++) check_inside(s->children[i], a->children[i], base, len, depth + 1);
  if (a->dictionary) check_inside(s->dictionary, a->dictionary, base, len, depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* libFuzzer's buffer is exactly `size` bytes (ASan guards its end) but not always 8-aligned. */
  uint8_t *copy = malloc(size ? size : 1);
  memcpy(copy, data, size);
  struct ArrowSchema schema;
  struct ArrowArray arrays[16];
  size_t n = 0;
  hms_error_t err;
  released = 0;
  hms_status_t st = hms_arrow_decode(copy, size, on_release, &released, &schema, arrays, 16, &n, &err);
  if (st == HMS_OK) {
    for (size_t i = 0; i < n; i++) check_inside(&schema, &arrays[i], copy, size, 0);
    schema.release(&schema);
    for (size_t i = 0; i < n; i++) arrays[i].release(&arrays[i]);
    if (released != 1) abort();
  } else if ((st != HMS_INVALID_ARGUMENT && st != HMS_OUT_OF_RANGE) || schema.release || released) {
    abort();
  }
  free(copy);
  return 0;
}
