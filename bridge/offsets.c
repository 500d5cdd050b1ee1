#include "offsets.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void kpb_offsets_init(kpb_offsets_t *o) {
    memset(o, 0, sizeof(*o));
}

void kpb_offsets_fini(kpb_offsets_t *o) {
    free(o->pos);
    kpb_offsets_init(o);
}

kpb_pos_t *kpb_offsets_find(kpb_offsets_t *o, const char *topic,
                            int32_t partition) {
    for (uint32_t i = 0; i < o->cnt; i++)
        if (o->pos[i].partition == partition &&
            (o->pos[i].topic == topic || !strcmp(o->pos[i].topic, topic)))
            return &o->pos[i];
    return NULL;
}

kpb_pos_t *kpb_offsets_assign(kpb_offsets_t *o, const char *topic,
                              int32_t partition, int64_t from) {
    kpb_pos_t *p = kpb_offsets_find(o, topic, partition);
    if (!p) {
        if (o->cnt == o->cap) {
            o->cap = o->cap ? o->cap * 2 : 16;
            o->pos = kpb_xrealloc(o->pos, o->cap * sizeof(*o->pos));
        }
        p = &o->pos[o->cnt++];
    }
    p->topic = topic;
    p->partition = partition;
    p->from = from;
    p->read = -1;
    p->end = -1;
    p->at_end = 0;
    return p;
}

void kpb_offsets_revoke(kpb_offsets_t *o, const char *topic,
                        int32_t partition) {
    kpb_pos_t *p = kpb_offsets_find(o, topic, partition);
    if (!p)
        return;
    *p = o->pos[--o->cnt];
}

void kpb_offsets_read(kpb_offsets_t *o, const char *topic, int32_t partition,
                      int64_t offset) {
    kpb_pos_t *p = kpb_offsets_find(o, topic, partition);
    if (!p)
        return;
    if (offset + 1 > p->read)
        p->read = offset + 1;
    p->at_end = 0;
}

void kpb_offsets_eof(kpb_offsets_t *o, const char *topic, int32_t partition,
                     int64_t end) {
    kpb_pos_t *p = kpb_offsets_find(o, topic, partition);
    if (!p)
        return;
    p->end = end;
    /* An end report older than what was read already says nothing. */
    p->at_end = p->read <= end;
}

void kpb_offsets_written(kpb_offsets_t *o, const char *topic,
                         int32_t partition, int64_t next) {
    kpb_pos_t *p = kpb_offsets_find(o, topic, partition);
    if (p)
        p->from = next;
}

int kpb_offsets_all_at_end(const kpb_offsets_t *o) {
    if (!o->cnt)
        return 0;
    for (uint32_t i = 0; i < o->cnt; i++)
        if (!o->pos[i].at_end)
            return 0;
    return 1;
}
