#include "insert.h"

#include <stdlib.h>
#include <string.h>

uint32_t kpb_insert_plan(const kpb_flush_t *f, uint32_t max_rows,
                         kpb_stmt_t **out) {
    kpb_stmt_t *stmts = kpb_xmalloc((f->batch_cnt ? f->batch_cnt : 1) *
                                    sizeof(*stmts));
    /* stamp[stream] = 1 + the statement that holds the stream already */
    uint32_t *stamp = kpb_xcalloc(f->stream_cnt ? f->stream_cnt : 1,
                                  sizeof(*stamp));
    uint32_t n = 0;
    for (uint32_t i = 0; i < f->batch_cnt; i++) {
        const kpb_sbatch_t *sb = &f->batches[i];
        kpb_stmt_t *cur = n ? &stmts[n - 1] : NULL;
        if (!cur || cur->rows + sb->count > max_rows ||
            (f->batches[cur->first].table != sb->table &&
             strcmp(f->batches[cur->first].table, sb->table)) ||
            stamp[sb->stream] == n) {
            cur = &stmts[n++];
            cur->first = i;
            cur->count = 0;
            cur->rows = 0;
        }
        cur->count++;
        cur->rows += sb->count;
        stamp[sb->stream] = n;
    }
    free(stamp);
    *out = stmts;
    return n;
}

void kpb_insert_sql(kpb_buf_t *sql, const char *qtable, uint32_t rows) {
    kpb_buf_reset(sql);
    kpb_buf_reserve(sql, 96 + (size_t)rows * 80);
    kpb_buf_printf(sql,
                   "INSERT INTO %s (event_id, stream_id, event_type, "
                   "event_data, metadata) VALUES ",
                   qtable);
    for (uint32_t r = 0; r < rows; r++) {
        unsigned p = r * KPB_INSERT_PARAMS;
        kpb_buf_printf(sql,
                       "%s($%u::uuid,$%u::text,$%u::text,$%u::text::jsonb,"
                       "$%u::text::jsonb)",
                       r ? "," : "", p + 1, p + 2, p + 3, p + 4, p + 5);
    }
}

void kpb_insert_versioned_sql(kpb_buf_t *sql, const char *qtable,
                              uint32_t rows) {
    kpb_buf_reset(sql);
    kpb_buf_reserve(sql, 512 + (size_t)rows * 110);
    /* A row's version is its stream's head plus its place in its batch.
     * The head comes from the caller's cache when it has one; else from
     * the table as this statement's snapshot sees it (which includes the
     * transaction's earlier statements; coalesce runs the lookup only for
     * a NULL head).  The statement returns each stream's new head, which
     * the caller caches once the transaction has committed. */
    kpb_buf_printf(sql,
                   "WITH ins AS (INSERT INTO %s (event_id, stream_id, "
                   "stream_version, event_type, event_data, metadata) "
                   "SELECT v.i, v.s, coalesce(v.h, (SELECT "
                   "max(e.stream_version) FROM %s e WHERE e.stream_id = v.s),"
                   " 0) + v.n, v.t, v.d, v.m FROM (VALUES ",
                   qtable, qtable);
    for (uint32_t r = 0; r < rows; r++) {
        unsigned p = r * KPB_INSERT_VERSIONED_PARAMS;
        kpb_buf_printf(sql,
                       "%s($%u::uuid,$%u::text,$%u::text,$%u::text::jsonb,"
                       "$%u::text::jsonb,$%u::int8,$%u::int8)",
                       r ? "," : "", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6,
                       p + 7);
    }
    kpb_buf_puts(sql, ") AS v(i, s, t, d, m, n, h) RETURNING stream_id, "
                      "stream_version) SELECT stream_id, max(stream_version)"
                      " FROM ins GROUP BY stream_id");
}

void kpb_insert_dead_sql(kpb_buf_t *sql, const char *qtable, uint32_t rows) {
    kpb_buf_reset(sql);
    kpb_buf_printf(sql,
                   "INSERT INTO %s (topic, partition, \"offset\", key, value, "
                   "headers, reason, sqlstate, detail) VALUES ",
                   qtable);
    for (uint32_t r = 0; r < rows; r++) {
        unsigned p = r * KPB_DEAD_PARAMS;
        kpb_buf_printf(sql,
                       "%s($%u::text,$%u::int4,$%u::int8,$%u::bytea,"
                       "$%u::bytea,coalesce(($%u::text::jsonb)->'headers',"
                       "'{}'),$%u::text,$%u::text,$%u::text)",
                       r ? "," : "", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6,
                       p + 7, p + 8, p + 9);
    }
}
