/**
 * @file batcher.h
 * @brief Collects decoded records into per-stream append batches and hands
 *        them over as one flush: the unit of one database transaction.
 *        Pure: no I/O; the Kafka messages are opaque references it keeps
 *        alive until the flush is destroyed (after COMMIT).
 */
#ifndef KPB_BATCHER_H
#define KPB_BATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "decode.h"
#include "util.h"

#define KPB_NONE UINT32_MAX

/** @brief One record of a flush: an event or a dead letter. */
typedef struct kpb_item_s {
    kpb_event_t ev;      /**< ev.metadata is set for dead letters too */
    const char *topic;   /**< the configured topic name (stable) */
    const char *table;   /**< the configured target table (stable) */
    int32_t partition;
    int64_t offset;
    const void *key;     /**< original bytes, for dead letters */
    size_t key_len;
    const void *value;
    size_t value_len;
    kpb_reason_t reason; /**< KPB_REASON_NONE for an event */
    const char *sqlstate; /**< set when the database refused it */
    const char *detail;   /**< in the arena */
    const void *src;      /**< the Kafka message it came from (headers
                               of dead letters for the dead-letter topic) */
    uint32_t next;        /**< next item of the same stream batch */
} kpb_item_t;

/** @brief A stream batch: up to max_events events of one stream, in order. */
typedef struct kpb_sbatch_s {
    const char *table;  /**< the configured table name (stable) */
    uint32_t stream;    /**< dense stream number within the flush */
    uint32_t first;     /**< first item, follow item.next */
    uint32_t last;
    uint32_t count;
} kpb_sbatch_t;

/** @brief A partition touched by a flush and the offsets it covers. */
typedef struct kpb_fpart_s {
    const char *topic;
    int32_t partition;
    int64_t first_offset; /**< lowest offset in the flush */
    int64_t next_offset;  /**< highest offset + 1: what gets committed */
} kpb_fpart_t;

/** @brief Everything one transaction writes. */
typedef struct kpb_flush_s {
    kpb_arena_t arena;
    kpb_item_t *items;
    uint32_t item_cnt, item_cap;
    kpb_sbatch_t *batches; /**< per stream in Kafka order */
    uint32_t batch_cnt, batch_cap;
    uint32_t *dead; /**< item indices of dead letters, in Kafka order */
    uint32_t dead_cnt, dead_cap;
    kpb_fpart_t *parts;
    uint32_t part_cnt, part_cap;
    uint32_t stream_cnt;
    uint32_t event_cnt;
    void **refs;
    uint32_t ref_cnt, ref_cap;
    void (*ref_free)(void *ref);
    int64_t first_ms; /**< when the oldest record arrived (monotonic) */
    size_t bytes;     /**< record bytes (key + value) added */
    /* stream map: (table, stream id) -> open batch, open addressing */
    uint32_t *slots;
    uint32_t slot_cap;
} kpb_flush_t;

typedef struct kpb_batcher_s kpb_batcher_t;

/** A flush is also due once its records hold this many bytes (key + value),
 *  so that flush_events large records do not make one huge transaction. */
#define KPB_FLUSH_BYTES (8u << 20)

/**
 * @brief Creates a batcher.
 * @param max_events    rows per stream batch, 1..1000
 * @param flush_events  a flush is due once this many records are buffered
 * @param linger_ms     the longest a record waits before its flush is due
 * @param ref_free      frees a reference given to kpb_batcher_keep()
 */
kpb_batcher_t *kpb_batcher_new(int max_events, int flush_events,
                               int linger_ms, void (*ref_free)(void *ref));
/** @brief Destroys a batcher and whatever it holds; NULL is a no-op. */
void kpb_batcher_destroy(kpb_batcher_t *b);

/** @brief The arena decode writes into for records added next. */
kpb_arena_t *kpb_batcher_arena(kpb_batcher_t *b);

/**
 * @brief Keeps @p ref alive until the flush holding it is destroyed.
 * @remark Takes ownership of ref.
 */
void kpb_batcher_keep(kpb_batcher_t *b, void *ref);

/**
 * @brief Adds a decoded record: an event when item->reason is NONE, else a
 *        dead letter.  Events of one stream keep their order; a new stream
 *        batch starts at max_events and at every record that carries an
 *        expected version (it must be the first row of its statement).
 * @param item  copied; item->next is ignored
 * @param now_ms  monotonic time, for linger
 */
void kpb_batcher_add(kpb_batcher_t *b, const kpb_item_t *item,
                     int64_t now_ms);

/** @brief Records buffered (events and dead letters). */
uint32_t kpb_batcher_count(const kpb_batcher_t *b);

/** @brief Whether the current flush should be written now. */
int kpb_batcher_due(const kpb_batcher_t *b, int64_t now_ms);

/** @brief Milliseconds until the current flush is due (-1: nothing held). */
int64_t kpb_batcher_wait_ms(const kpb_batcher_t *b, int64_t now_ms);

/**
 * @brief Hands the current flush over and starts an empty one.
 * @returns the flush (free with kpb_flush_destroy()), NULL when empty.
 */
kpb_flush_t *kpb_batcher_take(kpb_batcher_t *b);

/** @brief Frees a flush and its references; NULL is a no-op. */
void kpb_flush_destroy(kpb_flush_t *f);

/**
 * @brief Removes the records of one partition from a flush (its events are
 *        dropped, as a fenced writer must) and rebuilds the stream batches.
 * @returns how many records were removed.
 */
uint32_t kpb_flush_drop_partition(kpb_flush_t *f, const char *topic,
                                  int32_t partition, int max_events);

/**
 * @brief Drops the buffered records of one partition (it was revoked while
 *        the database was unreachable; its next owner reads them again).
 * @returns how many records were removed.
 */
uint32_t kpb_batcher_drop_partition(kpb_batcher_t *b, const char *topic,
                                    int32_t partition);

#endif
