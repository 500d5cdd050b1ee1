/**
 * @file insert.h
 * @brief Plans a flush's statements and builds their SQL text.  Pure.
 *
 * Stream batches are packed, in order, into multi-row INSERTs of at most
 * max_rows rows: many small streams then cost one round trip, not one each.
 * A statement never holds two batches of one stream (a batch that starts with
 * an expected version needs the transaction setting changed before it) and
 * never mixes tables.  Rows of a stream keep Kafka order because statements
 * run in order and VALUES order is trigger order.
 */
#ifndef KPB_INSERT_H
#define KPB_INSERT_H

#include <stdint.h>

#include "batcher.h"
#include "util.h"

/** @brief A statement: batches [first, first + count) of a flush. */
typedef struct kpb_stmt_s {
    uint32_t first;
    uint32_t count;
    uint32_t rows;
} kpb_stmt_t;

/**
 * @brief Packs @p f's batches into statements of at most @p max_rows rows.
 * @param out  receives a heap array the caller frees
 * @returns the number of statements.
 */
uint32_t kpb_insert_plan(const kpb_flush_t *f, uint32_t max_rows,
                         kpb_stmt_t **out);

/** @brief Parameters per event row. */
#define KPB_INSERT_PARAMS 5

/**
 * @brief Builds `INSERT INTO qtable (...) VALUES (...), ...` for @p rows rows
 *        into @p sql (reset first).  @p qtable is already quoted.  Every value
 *        is a parameter, cast explicitly so all may be sent in binary.
 */
void kpb_insert_sql(kpb_buf_t *sql, const char *qtable, uint32_t rows);

/** @brief Parameters per event row of the versioned statement: the five
 *         above, then the row's place in its stream batch (1, 2, ...) and
 *         the stream's head before the statement (NULL: unknown). */
#define KPB_INSERT_VERSIONED_PARAMS 7

/**
 * @brief Builds the INSERT of postgres.versioning: statement into @p sql:
 *        the same rows plus their place in their stream batch and their
 *        stream's cached head, from which the statement computes each
 *        stream_version (head + place; the head is looked up where it is
 *        NULL), so the per-row version trigger is skipped.  Its result is
 *        one row (stream_id, new head) per stream.  Only valid when each
 *        stream has at most one batch in the statement and every row of
 *        each batch is present.
 */
void kpb_insert_versioned_sql(kpb_buf_t *sql, const char *qtable,
                              uint32_t rows);

/**
 * @brief Builds the dead-letter INSERT for @p rows rows into @p sql.
 */
void kpb_insert_dead_sql(kpb_buf_t *sql, const char *qtable, uint32_t rows);

/** @brief Parameters per dead-letter row. */
#define KPB_DEAD_PARAMS 9

#endif
