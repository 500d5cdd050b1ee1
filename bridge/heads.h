/**
 * @file heads.h
 * @brief The stream heads kpbridge knows (postgres.versioning: statement):
 *        (table, stream id) -> the stream's last version, as committed.
 *
 * Only what a committed transaction returned goes in, so a head is never
 * ahead of the table; it can fall behind when another writer appends, and
 * then the unique index on (stream_id, stream_version) refuses the next
 * statement and the writer forgets the heads of that flush.  Bounded: past
 * max_entries it starts over empty (a lookup in the statement refills it).
 */
#ifndef KPB_HEADS_H
#define KPB_HEADS_H

#include <stddef.h>
#include <stdint.h>

typedef struct kpb_heads_s kpb_heads_t;

/** @brief Creates an empty cache of at most @p max_entries streams. */
kpb_heads_t *kpb_heads_new(uint32_t max_entries);
/** @brief Frees; NULL is a no-op. */
void kpb_heads_destroy(kpb_heads_t *h);

/** @brief A stream's head, or -1 when not known.  @p table is compared by
 *         its text. */
int64_t kpb_heads_get(const kpb_heads_t *h, const char *table,
                      const char *sid, size_t sid_len);

/** @brief Records a stream's head (-1: forget it). */
void kpb_heads_put(kpb_heads_t *h, const char *table, const char *sid,
                   size_t sid_len, int64_t head);

/** @brief Forgets every head. */
void kpb_heads_clear(kpb_heads_t *h);

/** @brief Streams held (forgotten ones included until the next clear). */
uint32_t kpb_heads_count(const kpb_heads_t *h);

#endif
