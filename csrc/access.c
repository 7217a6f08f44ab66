/* Access control and resource limits of services.
 *
 * Rules are immutable once published: hms_function_set_access() builds a new rule, publishes it in the
 * function (release store) and bumps the service's generation. The dispatcher keeps, per connection, a
 * bitmap of the functions its caller may call, computed from the kernel-verified identity at the
 * handshake and again whenever the generation moved: a call costs a load, a compare and a bit test.
 * Replaced rules stay allocated until the node closes (the dispatcher may still be reading one). */
#include <unistd.h>

#include "internal/hms_internal.h"

#define HMS__ACCESS_LIST_MAX 1024

HMS_API void hms_access_init(hms_access_t *access) {
  if (!access) return;
  memset(access, 0, sizeof *access);
  access->version = HMS_ACCESS_VERSION;
  access->flags = HMS_ACCESS_ANY;
  access->audit = HMS_AUDIT_DEFAULT;
}

HMS_API void hms_limits_init(hms_limits_t *limits) {
  if (!limits) return;
  memset(limits, 0, sizeof *limits);
  limits->version = HMS_LIMITS_VERSION;
}

static bool hms__in_list(const uint32_t *v, size_t n, uint32_t x) {
  for (size_t i = 0; i < n; i++)
    if (v[i] == x) return true;
  return false;
}

static bool hms__access_allows(const hms__access_rule_t *r, uid_t uid, gid_t gid, const gid_t *groups,
                               uint32_t ngroups) {
  if (!r || (r->flags & HMS_ACCESS_ANY)) return true;
  if ((r->flags & HMS_ACCESS_OWNER) && uid == geteuid()) return true;
  if (hms__in_list(r->uids, r->n_uids, (uint32_t)uid)) return true;
  if (hms__in_list(r->gids, r->n_gids, (uint32_t)gid)) return true;
  for (uint32_t i = 0; i < ngroups; i++)
    if (hms__in_list(r->gids, r->n_gids, (uint32_t)groups[i])) return true;
  return false;
}

uint32_t hms__access_bitmap(hms_service_t *svc, uid_t uid, gid_t gid, const gid_t *groups, uint32_t ngroups,
                            uint64_t *bits) {
  uint32_t gen = atomic_load_explicit(&svc->acl_gen, memory_order_acquire);
  uint32_t nf = atomic_load_explicit(&svc->nfns, memory_order_acquire);
  memset(bits, 0, HMS__ACL_WORDS * sizeof *bits);
  for (uint32_t i = 0; i < nf; i++) {
    const hms__access_rule_t *r = atomic_load_explicit(&svc->fns[i]->access, memory_order_acquire);
    if (hms__access_allows(r, uid, gid, groups, ngroups)) bits[i / 64] |= 1ull << (i % 64);
  }
  return gen;
}

static size_t hms__list_text(char *buf, size_t cap, const uint32_t *v, size_t n) {
  size_t len = 0;
  int k = snprintf(buf, cap, "[");
  len = k > 0 ? (size_t)k : 0;
  for (size_t i = 0; i < n && len + 16 < cap; i++) {
    k = snprintf(buf + len, cap - len, "%s%u", i ? ", " : "", v[i]);
    if (k > 0) len += (size_t)k;
  }
  if (len + 16 >= cap && n) len += (size_t)snprintf(buf + len, cap - len, ", ...");
  if (len < cap) len += (size_t)snprintf(buf + len, cap - len, "]");
  return len;
}

void hms__access_deny_message(const hms_service_t *svc, const hms__fn_t *fn, uid_t uid, gid_t gid, char *buf,
                              size_t cap) {
  const hms__access_rule_t *r = atomic_load_explicit(&((hms__fn_t *)fn)->access, memory_order_acquire);
  char uids[96], gids[96], owner[48] = "";
  hms__list_text(uids, sizeof uids, r ? r->uids : NULL, r ? r->n_uids : 0);
  hms__list_text(gids, sizeof gids, r ? r->gids : NULL, r ? r->n_gids : 0);
  if (r && (r->flags & HMS_ACCESS_OWNER)) snprintf(owner, sizeof owner, "the owner (uid %u), ", (unsigned)geteuid());
  snprintf(buf, cap, "uid %u (gid %u) may not call %s.%s; the policy allows %suids %s, gids %s, roles [%s]",
           (unsigned)uid, (unsigned)gid, svc->name, fn->name, owner, uids, gids, r && r->roles ? r->roles : "");
}

void hms__service_access_free(hms_service_t *svc) {
  hms__access_rule_t *r = svc->acl_all;
  while (r) {
    hms__access_rule_t *next = r->next_all;
    free(r->uids);
    free(r->gids);
    free(r->roles);
    free(r);
    r = next;
  }
  svc->acl_all = NULL;
}

void hms__service_limits_default(hms_service_t *svc) {
  atomic_init(&svc->acl_gen, 0);
  atomic_init(&svc->max_connections, 0);
  atomic_init(&svc->max_inflight, 0);
  atomic_init(&svc->max_ring_bytes, 0);
  atomic_init(&svc->arena_quota, 0);
  atomic_init(&svc->max_message, 0);
  svc->group_gid = -1;
}

static uint32_t *hms__dup_list(const uint32_t *v, size_t n) {
  if (!n) return NULL;
  uint32_t *d = malloc(n * sizeof *d);
  if (d) memcpy(d, v, n * sizeof *d);
  return d;
}

HMS_API hms_status_t hms_function_set_access(hms_service_t *service, const char *name, const hms_access_t *access,
                                             hms_error_t *err) {
  if (!service || !name) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "service and name must not be NULL");
  hms__access_rule_t *r = NULL;
  if (access) {
    if (access->version < 1 || access->version > HMS_ACCESS_VERSION)
      return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "hms_access_t.version is %u; call hms_access_init",
                       access->version);
    if ((access->n_uids && !access->uids) || (access->n_gids && !access->gids))
      return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "hms_access_t: a uid/gid list is NULL but its count is not 0");
    if (access->n_uids > HMS__ACCESS_LIST_MAX || access->n_gids > HMS__ACCESS_LIST_MAX)
      return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                       "hms_access_t lists %zu uids and %zu gids; at most %d each (use groups for more)",
                       access->n_uids, access->n_gids, HMS__ACCESS_LIST_MAX);
    if (access->audit > HMS_AUDIT_ALL)
      return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "hms_access_t.audit %u is not an HMS_AUDIT_* level",
                       access->audit);
    r = calloc(1, sizeof *r);
    if (r) {
      r->flags = access->flags;
      r->audit = access->audit;
      r->n_uids = access->n_uids;
      r->n_gids = access->n_gids;
      r->uids = hms__dup_list(access->uids, access->n_uids);
      r->gids = hms__dup_list(access->gids, access->n_gids);
      r->roles = access->roles ? strdup(access->roles) : NULL;
    }
    if (!r || (r->n_uids && !r->uids) || (r->n_gids && !r->gids) || (access->roles && !r->roles)) {
      if (r) {
        free(r->uids);
        free(r->gids);
        free(r->roles);
        free(r);
      }
      return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
    }
  }
  hms_node_t *node = service->node;
  pthread_mutex_lock(&node->lock);
  uint32_t n = atomic_load(&service->nfns);
  for (uint32_t i = 0; i < n; i++) {
    hms__fn_t *f = service->fns[i];
    if (strcmp(f->name, name) != 0) continue;
    if (r) {
      r->next_all = service->acl_all;
      service->acl_all = r;
    }
    atomic_store_explicit(&f->access, r, memory_order_release);
    /* Never back to 0 (0 means "no rule anywhere": the dispatcher skips the check). */
    uint32_t g = atomic_load(&service->acl_gen) + 1;
    atomic_store_explicit(&service->acl_gen, g ? g : 1, memory_order_release);
    pthread_mutex_unlock(&node->lock);
    hms__ok(err);
    return HMS_OK;
  }
  pthread_mutex_unlock(&node->lock);
  if (r) {
    free(r->uids);
    free(r->gids);
    free(r->roles);
    free(r);
  }
  return hms__fail(err, HMS_NOT_FOUND, 0, "service %s@%s has no function '%.64s'; add it with hms_function_add first",
                   service->name, service->version, name);
}

HMS_API hms_status_t hms_service_set_limits(hms_service_t *service, const hms_limits_t *limits, hms_error_t *err) {
  if (!service || !limits) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "service and limits must not be NULL");
  if (limits->version < 1 || limits->version > HMS_LIMITS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "hms_limits_t.version is %u; call hms_limits_init",
                     limits->version);
  if (limits->max_ring_bytes &&
      (limits->max_ring_bytes < HMS_RING_MIN_BYTES || limits->max_ring_bytes > HMS_RING_MAX_BYTES))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "max_ring_bytes %llu is outside [%d, %d] (0 = no limit)",
                     (unsigned long long)limits->max_ring_bytes, HMS_RING_MIN_BYTES, HMS_RING_MAX_BYTES);
  pthread_mutex_lock(&service->node->lock);
  atomic_store(&service->max_connections, limits->max_connections);
  atomic_store(&service->max_inflight, limits->max_inflight);
  atomic_store(&service->max_ring_bytes, limits->max_ring_bytes);
  atomic_store(&service->arena_quota, limits->arena_quota);
  atomic_store(&service->max_message, limits->max_message);
  pthread_mutex_unlock(&service->node->lock);
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_service_open_to_group(hms_service_t *service, uint32_t gid, hms_error_t *err) {
  if (!service) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "service is NULL");
  pthread_mutex_lock(&service->node->lock);
  hms_status_t st = hms__registry_open_to_group(service, (gid_t)gid, err);
  pthread_mutex_unlock(&service->node->lock);
  if (st == HMS_OK) hms__ok(err);
  return st;
}
