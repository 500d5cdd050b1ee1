/**
 * @file offsets.h
 * @brief Per-partition position bookkeeping for the assigned partitions.
 *        Pure: the bridge feeds it assignments, flushes and end-of-partition
 *        events.
 *
 * Offset arithmetic: Kafka's committed offset and kpbridge_offsets.next_offset
 * both name the next record to read, i.e. the last written offset + 1.  The
 * `from` of a partition is what its database row holds as far as this
 * process knows (-1: no row); a flush moves the row from `from` to its
 * next_offset and only then is `from` advanced, which is what fences a
 * writer whose partition was handed to another instance meanwhile.
 */
#ifndef KPB_OFFSETS_H
#define KPB_OFFSETS_H

#include <stdint.h>

typedef struct kpb_pos_s {
    const char *topic; /**< the configured topic name (stable) */
    int32_t partition;
    int64_t from;     /**< the stored next offset, -1 when no row */
    int64_t read;     /**< highest offset read + 1, -1 before any */
    int64_t end;      /**< the end offset last reported, -1 unknown */
    int at_end;       /**< end-of-partition seen and nothing read since */
} kpb_pos_t;

typedef struct kpb_offsets_s {
    kpb_pos_t *pos;
    uint32_t cnt, cap;
} kpb_offsets_t;

void kpb_offsets_init(kpb_offsets_t *o);
void kpb_offsets_fini(kpb_offsets_t *o);

/** @brief Adds (or resets) an assigned partition whose row holds @p from. */
kpb_pos_t *kpb_offsets_assign(kpb_offsets_t *o, const char *topic,
                              int32_t partition, int64_t from);
/** @brief Forgets a partition that was revoked. */
void kpb_offsets_revoke(kpb_offsets_t *o, const char *topic,
                        int32_t partition);
/** @brief The entry of an assigned partition, or NULL. */
kpb_pos_t *kpb_offsets_find(kpb_offsets_t *o, const char *topic,
                            int32_t partition);
/** @brief Notes that the record at @p offset was read. */
void kpb_offsets_read(kpb_offsets_t *o, const char *topic, int32_t partition,
                      int64_t offset);
/** @brief Notes an end-of-partition event at @p end. */
void kpb_offsets_eof(kpb_offsets_t *o, const char *topic, int32_t partition,
                     int64_t end);
/** @brief Notes that a flush moved the row to @p next. */
void kpb_offsets_written(kpb_offsets_t *o, const char *topic,
                         int32_t partition, int64_t next);
/**
 * @brief Whether every assigned partition is at its end (and there is at
 *        least one): nothing is left to read.
 */
int kpb_offsets_all_at_end(const kpb_offsets_t *o);

#endif
