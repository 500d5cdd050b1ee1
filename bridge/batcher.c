#include "batcher.h"

#include <stdlib.h>
#include <string.h>

struct kpb_batcher_s {
    int max_events;
    int flush_events;
    int linger_ms;
    void (*ref_free)(void *ref);
    kpb_flush_t *cur;
};

#define GROW(arr, cnt, cap)                                                    \
    do {                                                                       \
        if ((cnt) == (cap)) {                                                  \
            (cap) = (cap) ? (cap) * 2 : 64;                                    \
            (arr) = kpb_xrealloc((arr), (size_t)(cap) * sizeof(*(arr)));       \
        }                                                                      \
    } while (0)

static kpb_flush_t *flush_new(void (*ref_free)(void *)) {
    kpb_flush_t *f = kpb_xcalloc(1, sizeof(*f));
    kpb_arena_init(&f->arena);
    f->ref_free = ref_free;
    f->first_ms = -1;
    return f;
}

void kpb_flush_destroy(kpb_flush_t *f) {
    if (!f)
        return;
    if (f->ref_free)
        for (uint32_t i = 0; i < f->ref_cnt; i++)
            f->ref_free(f->refs[i]);
    kpb_arena_fini(&f->arena);
    free(f->items);
    free(f->batches);
    free(f->dead);
    free(f->parts);
    free(f->refs);
    free(f->slots);
    free(f);
}

/*
 * A stream is (table name, stream id).  The table is compared by its text,
 * not by pointer: every topic of the configuration carries its own copy of
 * the table name, and two topics writing into one table (the default table,
 * typically) must still see one stream as one, or the stream would get two
 * batch chains in one flush that the planner may put in one statement.
 */
static int same_table(const char *a, const char *b) {
    return a == b || !strcmp(a, b);
}

static int same_stream(const kpb_flush_t *f, uint32_t batch,
                       const kpb_item_t *it, const char *table) {
    const kpb_sbatch_t *sb = &f->batches[batch];
    const kpb_item_t *first = &f->items[sb->first];
    return same_table(sb->table, table) &&
           first->ev.stream_id_len == it->ev.stream_id_len &&
           !memcmp(first->ev.stream_id, it->ev.stream_id,
                   it->ev.stream_id_len);
}

static void slots_grow(kpb_flush_t *f) {
    uint32_t cap = f->slot_cap ? f->slot_cap * 2 : 1024;
    uint32_t *slots = kpb_xmalloc(cap * sizeof(*slots));
    memset(slots, 0xff, cap * sizeof(*slots));
    for (uint32_t i = 0; i < f->slot_cap; i++) {
        uint32_t b = f->slots[i];
        if (b == KPB_NONE)
            continue;
        const kpb_item_t *it = &f->items[f->batches[b].first];
        uint64_t h = kpb_stream_hash(f->batches[b].table, it->ev.stream_id,
                                 it->ev.stream_id_len);
        uint32_t j = (uint32_t)h & (cap - 1);
        while (slots[j] != KPB_NONE)
            j = (j + 1) & (cap - 1);
        slots[j] = b;
    }
    free(f->slots);
    f->slots = slots;
    f->slot_cap = cap;
}

static kpb_fpart_t *part_of(kpb_flush_t *f, const char *topic,
                            int32_t partition) {
    for (uint32_t i = 0; i < f->part_cnt; i++)
        if (f->parts[i].partition == partition &&
            (f->parts[i].topic == topic || !strcmp(f->parts[i].topic, topic)))
            return &f->parts[i];
    GROW(f->parts, f->part_cnt, f->part_cap);
    kpb_fpart_t *p = &f->parts[f->part_cnt++];
    p->topic = topic;
    p->partition = partition;
    p->first_offset = INT64_MAX;
    p->next_offset = -1;
    return p;
}

static void flush_add(kpb_flush_t *f, const kpb_item_t *src, int max_events) {
    GROW(f->items, f->item_cnt, f->item_cap);
    uint32_t idx = f->item_cnt++;
    kpb_item_t *it = &f->items[idx];
    *it = *src;
    it->next = KPB_NONE;

    kpb_fpart_t *p = part_of(f, it->topic, it->partition);
    if (it->offset < p->first_offset)
        p->first_offset = it->offset;
    if (it->offset + 1 > p->next_offset)
        p->next_offset = it->offset + 1;

    if (it->reason != KPB_REASON_NONE) {
        GROW(f->dead, f->dead_cnt, f->dead_cap);
        f->dead[f->dead_cnt++] = idx;
        return;
    }
    f->event_cnt++;
    const char *table = it->table;

    /* Keep the table at most half full so probes stay short. */
    if ((f->batch_cnt + 1) * 2 > f->slot_cap)
        slots_grow(f);
    uint64_t h = kpb_stream_hash(table, it->ev.stream_id, it->ev.stream_id_len);
    uint32_t j = (uint32_t)h & (f->slot_cap - 1);
    while (f->slots[j] != KPB_NONE && !same_stream(f, f->slots[j], it, table))
        j = (j + 1) & (f->slot_cap - 1);

    uint32_t open = f->slots[j];
    if (open != KPB_NONE && f->batches[open].count < (uint32_t)max_events &&
        it->ev.expected_version < 0) {
        kpb_sbatch_t *sb = &f->batches[open];
        f->items[sb->last].next = idx;
        sb->last = idx;
        sb->count++;
        return;
    }
    GROW(f->batches, f->batch_cnt, f->batch_cap);
    kpb_sbatch_t *sb = &f->batches[f->batch_cnt];
    sb->table = table;
    sb->stream = open == KPB_NONE ? f->stream_cnt++ : f->batches[open].stream;
    sb->first = sb->last = idx;
    sb->count = 1;
    f->slots[j] = f->batch_cnt++;
}

kpb_batcher_t *kpb_batcher_new(int max_events, int flush_events,
                               int linger_ms, void (*ref_free)(void *ref)) {
    kpb_batcher_t *b = kpb_xcalloc(1, sizeof(*b));
    b->max_events = max_events;
    b->flush_events = flush_events;
    b->linger_ms = linger_ms;
    b->ref_free = ref_free;
    b->cur = flush_new(ref_free);
    return b;
}

void kpb_batcher_destroy(kpb_batcher_t *b) {
    if (!b)
        return;
    kpb_flush_destroy(b->cur);
    free(b);
}

kpb_arena_t *kpb_batcher_arena(kpb_batcher_t *b) {
    return &b->cur->arena;
}

void kpb_batcher_keep(kpb_batcher_t *b, void *ref) {
    kpb_flush_t *f = b->cur;
    GROW(f->refs, f->ref_cnt, f->ref_cap);
    f->refs[f->ref_cnt++] = ref;
}

void kpb_batcher_add(kpb_batcher_t *b, const kpb_item_t *item,
                     int64_t now_ms) {
    kpb_flush_t *f = b->cur;
    if (f->item_cnt == 0)
        f->first_ms = now_ms;
    f->bytes += item->key_len + item->value_len;
    flush_add(f, item, b->max_events);
}

uint32_t kpb_batcher_count(const kpb_batcher_t *b) {
    return b->cur->item_cnt;
}

int kpb_batcher_due(const kpb_batcher_t *b, int64_t now_ms) {
    const kpb_flush_t *f = b->cur;
    if (f->item_cnt == 0)
        return 0;
    return f->item_cnt >= (uint32_t)b->flush_events ||
           f->bytes >= KPB_FLUSH_BYTES ||
           now_ms - f->first_ms >= b->linger_ms;
}

int64_t kpb_batcher_wait_ms(const kpb_batcher_t *b, int64_t now_ms) {
    const kpb_flush_t *f = b->cur;
    if (f->item_cnt == 0)
        return -1;
    int64_t left = f->first_ms + b->linger_ms - now_ms;
    return left < 0 ? 0 : left;
}

kpb_flush_t *kpb_batcher_take(kpb_batcher_t *b) {
    if (b->cur->item_cnt == 0 && b->cur->ref_cnt == 0)
        return NULL;
    kpb_flush_t *f = b->cur;
    b->cur = flush_new(b->ref_free);
    return f;
}

uint32_t kpb_flush_drop_partition(kpb_flush_t *f, const char *topic,
                                  int32_t partition, int max_events) {
    kpb_item_t *old = f->items;
    uint32_t old_cnt = f->item_cnt;
    f->items = NULL;
    f->item_cnt = f->item_cap = 0;
    f->batch_cnt = f->dead_cnt = f->part_cnt = 0;
    f->stream_cnt = f->event_cnt = 0;
    f->bytes = 0;
    if (f->slots)
        memset(f->slots, 0xff, f->slot_cap * sizeof(*f->slots));

    uint32_t dropped = 0;
    for (uint32_t i = 0; i < old_cnt; i++) {
        if (old[i].partition == partition && !strcmp(old[i].topic, topic)) {
            dropped++;
            continue;
        }
        f->bytes += old[i].key_len + old[i].value_len;
        flush_add(f, &old[i], max_events);
    }
    free(old);
    return dropped;
}

uint32_t kpb_batcher_drop_partition(kpb_batcher_t *b, const char *topic,
                                    int32_t partition) {
    uint32_t n = kpb_flush_drop_partition(b->cur, topic, partition,
                                          b->max_events);
    if (b->cur->item_cnt == 0)
        b->cur->first_ms = -1;
    return n;
}
