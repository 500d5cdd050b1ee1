/**
 * @file writer.h
 * @brief Writes a flush to PostgreSQL in one transaction: the fenced offset
 *        rows, the events (one multi-row INSERT per statement of the plan),
 *        the dead letters, then COMMIT.
 */
#ifndef KPB_WRITER_H
#define KPB_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "batcher.h"
#include "config.h"
#include "util.h"

typedef enum {
    KPB_WRITE_OK = 0,
    KPB_WRITE_TRANSIENT, /**< retry the whole flush later */
    KPB_WRITE_FENCED,    /**< a partition's offset row moved: drop it */
    KPB_WRITE_FATAL,     /**< neither data nor transient: give up */
} kpb_write_rc_t;

/** @brief How a SQLSTATE is handled. */
typedef enum {
    KPB_SQL_TRANSIENT, /**< connection, resources, shutdown, serialization */
    KPB_SQL_DATA,      /**< the rows are at fault: dead-letter them */
    KPB_SQL_FATAL,     /**< the setup is at fault: stop */
} kpb_sql_class_t;

/** @brief Classifies a SQLSTATE (NULL: no server answer, transient). */
kpb_sql_class_t kpb_sqlstate_class(const char *sqlstate);

/**
 * @brief Quotes a configured table name ("table" or "schema.table") for SQL
 *        text with PQescapeIdentifier, part by part.
 * @returns a heap string (free()), or NULL when libpq refuses.
 */
char *kpb_quote_table(PGconn *conn, const char *name);

/** @brief What one successful write did. */
typedef struct kpb_write_stats_s {
    uint32_t events;     /**< rows inserted */
    uint32_t dead;       /**< dead letters inserted (decode + database) */
    uint32_t statements; /**< event INSERTs that succeeded */
    uint32_t isolations; /**< failed statements that were bisected */
    uint32_t numbered;   /**< rows kpbridge numbered itself (statement
                              versioning), not the trigger */
} kpb_write_stats_t;

typedef struct kpb_writer_s kpb_writer_t;

/** @brief Creates a writer (not connected yet). */
kpb_writer_t *kpb_writer_new(const kpb_config_t *conf);
/** @brief Closes the connection and frees; NULL is a no-op. */
void kpb_writer_destroy(kpb_writer_t *w);

/**
 * @brief Connects if not connected (or the connection went bad).
 * @returns 0 when connected, -1 with errstr (no secrets in it).
 */
int kpb_writer_connect(kpb_writer_t *w, char *errstr,
                       size_t errstr_size) KPB_MUSTCHECK;

/** @brief Whether the connection is up, as far as libpq knows. */
int kpb_writer_connected(const kpb_writer_t *w);

/**
 * @brief Called inside each write after the dead letters are inserted and
 *        before COMMIT; a non-zero return rolls the write back as transient
 *        (it is retried).  Used to confirm the dead-letter topic's produce
 *        before the offsets that cover those records can commit.
 */
typedef int(kpb_writer_hook_t)(void *opaque, const kpb_flush_t *f,
                               char *errstr, size_t errstr_size);

/** @brief Installs the before-COMMIT hook (NULL: none). */
void kpb_writer_set_hook(kpb_writer_t *w, kpb_writer_hook_t *hook,
                         void *opaque);

/**
 * @brief Checks the connection with a trivial query, reconnecting when it
 *        is down: an idle bridge still notices a lost database (readiness).
 * @returns 1 when connected afterwards, else 0.
 */
int kpb_writer_ping(kpb_writer_t *w);

/**
 * @brief Forgets the cached stream heads (postgres.versioning: statement),
 *        e.g. when partitions move: another instance may have appended.
 *        Only a cost saving: a stale head is refused by the unique index.
 */
void kpb_writer_forget_heads(kpb_writer_t *w);

/**
 * @brief Reads the stored positions of @p cnt partitions of @p topic.
 * @param next  receives each partition's next offset, -1 where no row
 * @returns 0, or -1 with errstr.
 */
int kpb_writer_positions(kpb_writer_t *w, const char *topic,
                         const int32_t *partitions, int cnt, int64_t *next,
                         char *errstr, size_t errstr_size) KPB_MUSTCHECK;

/**
 * @brief Writes @p f in one transaction.
 *
 * For each f->parts[i] the offsets row is moved from @p from[i] (-1: no row
 * must exist) to parts[i].next_offset; if the row holds anything else the
 * partition belongs to another writer now, the transaction is rolled back and
 * KPB_WRITE_FENCED returned with *fenced = i.  A data error in a statement
 * rolls back and replays the flush with one savepoint per statement,
 * bisecting the failing ones down to the rows at fault, which become dead
 * letters (their items get reason, sqlstate and detail).
 */
kpb_write_rc_t kpb_writer_write(kpb_writer_t *w, kpb_flush_t *f,
                                const int64_t *from, uint32_t *fenced,
                                kpb_write_stats_t *stats, char *errstr,
                                size_t errstr_size);

/**
 * @brief Starts writing @p f without waiting for the database: the common
 *        case goes out as one pipeline, and the caller may read Kafka while
 *        PostgreSQL works.  @p f and @p from must stay as they are until
 *        kpb_writer_finish(); nothing else may use the writer meanwhile.
 * @returns 1 when under way (finish it with kpb_writer_finish()), 0 when
 *          this flush must be written with kpb_writer_write() instead (not
 *          connected, or it needs the before-COMMIT hook).
 */
int kpb_writer_send(kpb_writer_t *w, kpb_flush_t *f, const int64_t *from);

/**
 * @brief Waits for the write kpb_writer_send() started and takes it to its
 *        end as kpb_writer_write() would (replaying it statement by
 *        statement after a data error).  Same results as kpb_writer_write().
 */
kpb_write_rc_t kpb_writer_finish(kpb_writer_t *w, kpb_flush_t *f,
                                 const int64_t *from, uint32_t *fenced,
                                 kpb_write_stats_t *stats, char *errstr,
                                 size_t errstr_size);

/** @brief Whether a write is under way (sent, not finished). */
int kpb_writer_awaiting(const kpb_writer_t *w);

#endif
