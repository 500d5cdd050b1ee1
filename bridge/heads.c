#include "heads.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct entry_s {
    uint64_t hash;
    const char *table; /* the configuration's string: lives as long */
    char *sid;         /* in the arena; NULL: free slot */
    size_t sid_len;
    int64_t head;
} entry_t;

struct kpb_heads_s {
    entry_t *slots;
    uint32_t mask;
    uint32_t count, max;
    kpb_arena_t arena;
};

kpb_heads_t *kpb_heads_new(uint32_t max_entries) {
    kpb_heads_t *h = kpb_xcalloc(1, sizeof(*h));
    h->max = max_entries ? max_entries : 1;
    /* at most half full, so a probe ends soon */
    uint32_t cap = 16;
    while (cap < 2 * h->max)
        cap *= 2;
    h->slots = kpb_xcalloc(cap, sizeof(*h->slots));
    h->mask = cap - 1;
    kpb_arena_init(&h->arena);
    return h;
}

void kpb_heads_destroy(kpb_heads_t *h) {
    if (!h)
        return;
    kpb_arena_fini(&h->arena);
    free(h->slots);
    free(h);
}

void kpb_heads_clear(kpb_heads_t *h) {
    memset(h->slots, 0, ((size_t)h->mask + 1) * sizeof(*h->slots));
    kpb_arena_reset(&h->arena);
    h->count = 0;
}

uint32_t kpb_heads_count(const kpb_heads_t *h) { return h->count; }

static entry_t *find(const kpb_heads_t *h, uint64_t hash, const char *table,
                     const char *sid, size_t sid_len) {
    for (uint32_t i = (uint32_t)hash & h->mask;; i = (i + 1) & h->mask) {
        entry_t *e = &h->slots[i];
        if (!e->sid ||
            (e->hash == hash && e->sid_len == sid_len &&
             !memcmp(e->sid, sid, sid_len) &&
             (e->table == table || !strcmp(e->table, table))))
            return e;
    }
}

int64_t kpb_heads_get(const kpb_heads_t *h, const char *table,
                      const char *sid, size_t sid_len) {
    uint64_t hash = kpb_stream_hash(table, sid, sid_len);
    const entry_t *e = find(h, hash, table, sid, sid_len);
    return e->sid ? e->head : -1;
}

void kpb_heads_put(kpb_heads_t *h, const char *table, const char *sid,
                   size_t sid_len, int64_t head) {
    uint64_t hash = kpb_stream_hash(table, sid, sid_len);
    entry_t *e = find(h, hash, table, sid, sid_len);
    if (!e->sid) {
        if (head < 0)
            return;
        if (h->count == h->max) {
            kpb_heads_clear(h);
            e = find(h, hash, table, sid, sid_len);
        }
        e->hash = hash;
        e->table = table;
        e->sid = kpb_arena_strndup(&h->arena, sid, sid_len);
        e->sid_len = sid_len;
        h->count++;
    }
    e->head = head;
}
