/* Single-producer/single-consumer byte rings of 64-byte-aligned frames in shared memory.
 *
 * head and tail are byte counters that only grow; position = counter & (cap - 1). A frame never
 * wraps: when it does not fit before the end, the producer writes a PAD frame to the end first.
 * Each side keeps its own counter privately and treats the peer's counter as hostile input: it is
 * re-read, checked against what is possible, and only then used. */
#include "internal/hms_internal.h"

void hms__ring_attach(hms__ring_t *r, hms__ring_ctl_t *ctl, uint8_t *data, uint64_t cap) {
  r->ctl = ctl;
  r->data = data;
  r->cap = cap;
  r->max_frame = cap / 4;
  r->pos = 0;
  r->peer_cache = 0;
}

uint64_t hms__frame_bytes(uint64_t payload_len) {
  return (HMS_FRAME_HEADER_BYTES + payload_len + (HMS__CACHELINE - 1)) & ~(uint64_t)(HMS__CACHELINE - 1);
}

int hms__ring_free(hms__ring_t *r, uint64_t *free_bytes, char *why, size_t why_cap) {
  uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
  /* The consumer can only have consumed what we published, and never goes backwards. */
  if (HMS__UNLIKELY(tail > r->pos || tail < r->peer_cache || (tail & (HMS__CACHELINE - 1)))) {
    snprintf(why, why_cap, "peer moved the ring tail to %llu (published %llu, last seen %llu)",
             (unsigned long long)tail, (unsigned long long)r->pos, (unsigned long long)r->peer_cache);
    return HMS__RING_CORRUPT;
  }
  r->peer_cache = tail;
  *free_bytes = r->cap - (r->pos - tail);
  return HMS__RING_OK;
}

int hms__ring_reserve(hms__ring_t *r, uint64_t payload_len, uint8_t **out, char *why, size_t why_cap) {
  uint64_t need = hms__frame_bytes(payload_len);
  if (need > r->max_frame) {
    snprintf(why, why_cap, "frame of %llu bytes exceeds the ring's max frame of %llu bytes",
             (unsigned long long)need, (unsigned long long)r->max_frame);
    return HMS__RING_CORRUPT; /* callers check sizes first; reaching here is a bug */
  }
  uint64_t off = r->pos & (r->cap - 1);
  uint64_t contig = r->cap - off;
  uint64_t total = need <= contig ? need : contig + need;
  /* Fast path: the cached tail already proves there is room. */
  if (r->cap - (r->pos - r->peer_cache) < total) {
    uint64_t free_bytes;
    int rc = hms__ring_free(r, &free_bytes, why, why_cap);
    if (rc != HMS__RING_OK) return rc;
    if (free_bytes < total) return HMS__RING_FULL;
  }
  if (need > contig) {
    hms__frame_hdr_t pad;
    memset(&pad, 0, sizeof pad);
    pad.len = (uint32_t)contig;
    pad.kind = HMS__FRAME_PAD;
    memcpy(r->data + off, &pad, sizeof pad);
    r->pos += contig; /* published together with the frame */
    off = 0;
  }
  *out = r->data + off;
  return HMS__RING_OK;
}

void hms__ring_publish(hms__ring_t *r, uint64_t frame_bytes) {
  r->pos += frame_bytes;
  atomic_store_explicit(&r->ctl->head, r->pos, memory_order_release);
}

void hms__ring_flush(hms__ring_t *r) { atomic_store_explicit(&r->ctl->head, r->pos, memory_order_release); }

int hms__ring_peek(hms__ring_t *r, hms__frame_hdr_t *hdr, const uint8_t **payload, char *why, size_t why_cap) {
  for (;;) {
    uint64_t head = r->peer_cache;
    if (head == r->pos) {
      head = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
      if (head == r->pos) return HMS__RING_EMPTY;
      if (HMS__UNLIKELY(head < r->pos || head - r->pos > r->cap || (head & (HMS__CACHELINE - 1)))) {
        snprintf(why, why_cap, "peer moved the ring head to %llu (consumed %llu, capacity %llu)",
                 (unsigned long long)head, (unsigned long long)r->pos, (unsigned long long)r->cap);
        return HMS__RING_CORRUPT;
      }
      r->peer_cache = head;
    }
    uint64_t off = r->pos & (r->cap - 1);
    /* Copy the header out: the peer may rewrite it while we look. */
    memcpy(hdr, r->data + off, sizeof *hdr);
    uint64_t avail = head - r->pos;
    uint64_t contig = r->cap - off;
    if (HMS__UNLIKELY(hdr->len < HMS_FRAME_HEADER_BYTES || (hdr->len & (HMS__CACHELINE - 1)) ||
                      hdr->len > avail || hdr->len > contig)) {
      snprintf(why, why_cap,
               "corrupt frame header at offset %llu: length %u (available %llu, to end %llu)",
               (unsigned long long)off, hdr->len, (unsigned long long)avail, (unsigned long long)contig);
      return HMS__RING_CORRUPT;
    }
    if (hdr->kind == HMS__FRAME_PAD) {
      if (HMS__UNLIKELY(hdr->len != contig)) {
        snprintf(why, why_cap, "corrupt pad frame of %u bytes at offset %llu (to end %llu)", hdr->len,
                 (unsigned long long)off, (unsigned long long)contig);
        return HMS__RING_CORRUPT;
      }
      r->pos += hdr->len;
      atomic_store_explicit(&r->ctl->tail, r->pos, memory_order_release);
      continue;
    }
    if (HMS__UNLIKELY(hdr->len > r->max_frame ||
                      (uint64_t)hdr->payload_len > (uint64_t)hdr->len - HMS_FRAME_HEADER_BYTES)) {
      snprintf(why, why_cap, "corrupt frame: payload length %u in a frame of %u bytes (max frame %llu)",
               hdr->payload_len, hdr->len, (unsigned long long)r->max_frame);
      return HMS__RING_CORRUPT;
    }
    *payload = r->data + off + HMS_FRAME_HEADER_BYTES;
    return HMS__RING_OK;
  }
}

void hms__ring_consume(hms__ring_t *r, const hms__frame_hdr_t *hdr) {
  r->pos += hdr->len;
  atomic_store_explicit(&r->ctl->tail, r->pos, memory_order_release);
}

bool hms__ring_scan_ahead(const hms__ring_t *r, const hms__frame_hdr_t *current,
                          bool (*fn)(const hms__frame_hdr_t *h, void *arg), void *arg, int max_frames) {
  uint64_t head = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
  if (head < r->pos || head - r->pos > r->cap) return false;
  uint64_t pos = r->pos + current->len;
  for (int i = 0; i < max_frames && pos < head; i++) {
    uint64_t off = pos & (r->cap - 1);
    hms__frame_hdr_t h;
    memcpy(&h, r->data + off, sizeof h);
    if (h.len < HMS_FRAME_HEADER_BYTES || (h.len & (HMS__CACHELINE - 1)) || h.len > head - pos ||
        h.len > r->cap - off)
      return false;
    if (h.kind != HMS__FRAME_PAD && fn(&h, arg)) return true;
    pos += h.len;
  }
  return false;
}
