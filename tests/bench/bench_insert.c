/*
 * bench_insert: the reference writers kpbridge is measured against.  They
 * insert a benchmark workload (bench_workload.h, the same events kpbridge
 * reads from Kafka) straight from memory into a database with kpbridge's
 * schema, applied through the library's migrations.
 *
 *   bench_insert --conninfo C --mode ceiling|baseline|statement
 *                [--topic T]
 *                [--rows-per-txn N] [workload options]
 *
 *   ceiling   kpbridge's own full-size statement (kpb_insert_sql: 1,000 rows
 *             of VALUES, every value a binary parameter), prepared once, one
 *             statement and one transaction per 1,000 rows.  Nothing else:
 *             no Kafka, no decoding, no offsets rows.  What the database can
 *             take with this schema and trigger; kpbridge can only approach it.
 *   baseline  the pre-batching writer: the same statement with one row,
 *             prepared once, executed per row, 1,000 rows per transaction.
 *   statement the ceiling of postgres.versioning: statement: kpbridge's
 *             versioned statement (kpb_insert_versioned_sql), which
 *             computes versions itself so the row trigger is skipped.
 *
 * Every event is built before the clock starts (stream id, event type,
 * payload, UUIDv7 event id, and metadata shaped like kpbridge's with the
 * partition and offset the record has in Kafka), so the figure is the
 * database's alone.  Events go in generation order (Kafka order across all
 * partitions), not grouped by stream.
 *
 * Prints one line: "rows=N seconds=S rows_per_s=R".
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_workload.h"
#include "decode.h"
#include "insert.h"
#include "migrate.h"
#include "util.h"

typedef struct row_s {
    unsigned char id[16];
    char *key;
    size_t key_len;
    const char *type;
    char *value;
    size_t value_len;
    char *metadata;
    size_t metadata_len;
} row_t;

static int exec_ok(PGconn *conn, PGresult *res, const char *what) {
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_insert: %s: %s", what, PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

/* Per stream: rows written by earlier statements (what kpbridge's head
 * cache knows once they commit) and rows in the current statement. */
typedef struct slot_s {
    const char *key;
    uint64_t stamp; /* the statement `cur` counts for */
    int64_t head;
    int64_t cur;
} slot_t;

static slot_t *stream_slot(slot_t *slots, size_t mask, const char *key,
                           uint64_t stamp) {
    uint64_t h = kpb_stream_hash("", key, strlen(key));
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        slot_t *s = &slots[i];
        if (!s->key)
            s->key = key;
        else if (strcmp(s->key, key) != 0)
            continue;
        if (s->stamp != stamp) {
            s->head += s->cur;
            s->cur = 0;
            s->stamp = stamp;
        }
        return s;
    }
}

static void put_int8(unsigned char *out, int64_t v) {
    for (int b = 0; b < 8; b++)
        out[b] = (unsigned char)((uint64_t)v >> (56 - 8 * b));
}

static int exec_sql(PGconn *conn, const char *sql) {
    return exec_ok(conn, PQexec(conn, sql), sql);
}

int main(int argc, char **argv) {
    const char *conninfo = NULL, *mode = NULL, *topic = "bench";
    long rows_per_txn = 1000;
    bw_spec_t spec;
    bw_spec_defaults(&spec);
    for (int i = 1; i < argc; i++) {
        int m = bw_parse_opt(argc, argv, &i, &spec);
        if (m < 0)
            return 2;
        if (m > 0)
            continue;
        if (!strcmp(argv[i], "--conninfo") && i + 1 < argc)
            conninfo = argv[++i];
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc)
            mode = argv[++i];
        else if (!strcmp(argv[i], "--topic") && i + 1 < argc)
            topic = argv[++i];
        else if (!strcmp(argv[i], "--rows-per-txn") && i + 1 < argc)
            rows_per_txn = strtol(argv[++i], NULL, 10);
        else {
            fprintf(stderr,
                    "usage: bench_insert --conninfo C --mode "
                    "ceiling|baseline|statement "
                    "[--topic T] [--rows-per-txn N] [--shape S] [--events N] "
                    "[--streams S] [--payload-bytes B] [--partitions P] "
                    "[--seed X]\n");
            return 2;
        }
    }
    if (!conninfo || !mode ||
        (strcmp(mode, "ceiling") != 0 && strcmp(mode, "baseline") != 0 &&
         strcmp(mode, "statement") != 0) ||
        rows_per_txn < 1 || rows_per_txn > 1000) {
        fprintf(stderr, "bench_insert: --conninfo and --mode "
                        "ceiling|baseline|statement are required; "
                        "--rows-per-txn is 1..1000\n");
        return 2;
    }
    int versioned = !strcmp(mode, "statement");
    int ceiling = versioned || !strcmp(mode, "ceiling");
    const unsigned per_row = versioned ? KPB_INSERT_VERSIONED_PARAMS
                                       : KPB_INSERT_PARAMS;
    uint32_t per_stmt = ceiling ? (uint32_t)rows_per_txn : 1;

    int rc = 1;
    row_t *rows = NULL;
    uint64_t nrows = 0;
    const char **values = NULL;
    int *lengths = NULL, *formats = NULL;
    int64_t *next_off = NULL;
    slot_t *slots = NULL;
    unsigned char(*places)[2][8] = NULL;
    size_t mask = 0;
    kpb_buf_t sql, md;
    kpb_buf_init(&sql);
    kpb_buf_init(&md);
    bw_gen_t gen;
    bw_event_t ev;
    bw_event_init(&ev);
    memset(&gen, 0, sizeof(gen));

    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "bench_insert: connect: %s", PQerrorMessage(conn));
        goto out;
    }
    char errstr[512];
    int applied = 0;
    if (kpb_migrate_apply(conn, &applied, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "bench_insert: migrate: %s\n", errstr);
        goto out;
    }

    /* Build every row first: the clock measures the database only. */
    if (bw_init(&gen, &spec) != 0)
        goto out;
    rows = kpb_xcalloc((size_t)spec.events ? (size_t)spec.events : 1,
                       sizeof(*rows));
    next_off = kpb_xcalloc((size_t)spec.partitions, sizeof(*next_off));
    int64_t ts = kpb_wall_ms();
    while (bw_next(&gen, &ev)) {
        row_t *r = &rows[nrows++];
        kpb_uuid7(r->id);
        r->key = kpb_xstrndup(ev.key, ev.key_len);
        r->key_len = ev.key_len;
        r->type = ev.type;
        r->value = kpb_xstrndup(ev.value.data, ev.value.len);
        r->value_len = ev.value.len;
        kpb_buf_reset(&md);
        kpb_buf_puts(&md, "{\"kafka\":{\"topic\":\"");
        kpb_buf_json_escape(&md, topic, strlen(topic));
        kpb_buf_printf(&md,
                       "\",\"partition\":%d,\"offset\":%" PRId64
                       ",\"timestamp\":%" PRId64
                       "},\"headers\":{\"event-type\":\"%s\"}}",
                       (int)ev.partition, next_off[ev.partition]++, ts,
                       ev.type);
        r->metadata = kpb_xstrndup(md.data, md.len);
        r->metadata_len = md.len;
    }

    size_t nparams = (size_t)per_stmt * per_row;
    values = kpb_xcalloc(nparams, sizeof(*values));
    lengths = kpb_xcalloc(nparams, sizeof(*lengths));
    formats = kpb_xcalloc(nparams, sizeof(*formats));
    for (size_t p = 0; p < nparams; p++)
        formats[p] = 1;
    if (versioned)
        kpb_insert_versioned_sql(&sql, "eventcore_events", per_stmt);
    else
        kpb_insert_sql(&sql, "eventcore_events", per_stmt);
    if (exec_ok(conn,
                PQprepare(conn, "full", sql.data, (int)nparams, NULL),
                "prepare") != 0)
        goto out;
    /* A statement for the tail, when the count is not a multiple. */
    uint32_t tail = ceiling ? (uint32_t)(nrows % per_stmt) : 0;
    if (tail) {
        if (versioned)
            kpb_insert_versioned_sql(&sql, "eventcore_events", tail);
        else
            kpb_insert_sql(&sql, "eventcore_events", tail);
        if (exec_ok(conn,
                    PQprepare(conn, "tail", sql.data, (int)(tail * per_row),
                              NULL),
                    "prepare tail") != 0)
            goto out;
    }

    for (mask = 1024; mask < 2 * nrows; mask *= 2)
        ;
    slots = kpb_xcalloc(mask, sizeof(*slots));
    mask--;
    places = kpb_xcalloc(per_stmt, sizeof(*places));
    uint64_t stmt_no = 1;
    int64_t t0 = kpb_now_ms();
    uint64_t done = 0;
    while (done < nrows) {
        uint64_t txn_end = done + (uint64_t)rows_per_txn;
        if (txn_end > nrows)
            txn_end = nrows;
        if (exec_sql(conn, "BEGIN") != 0 ||
            (versioned &&
             exec_sql(conn, "SET LOCAL eventcore.explicit_versions = on")))
            goto out;
        while (done < txn_end) {
            uint32_t n = (uint32_t)(txn_end - done);
            if (n > per_stmt)
                n = per_stmt;
            for (uint32_t k = 0; k < n; k++) {
                const row_t *r = &rows[done + k];
                size_t p = (size_t)k * per_row;
                values[p] = (const char *)r->id;
                lengths[p] = 16;
                values[p + 1] = r->key;
                lengths[p + 1] = (int)r->key_len;
                values[p + 2] = r->type;
                lengths[p + 2] = (int)strlen(r->type);
                values[p + 3] = r->value;
                lengths[p + 3] = (int)r->value_len;
                values[p + 4] = r->metadata;
                lengths[p + 4] = (int)r->metadata_len;
                if (versioned) {
                    /* the row's place among its stream's rows of this
                     * statement, and the stream's head where a cache
                     * filled from earlier statements would know it */
                    slot_t *sl = stream_slot(slots, mask, r->key, stmt_no);
                    put_int8(places[k][0], ++sl->cur);
                    put_int8(places[k][1], sl->head);
                    values[p + 5] = (const char *)places[k][0];
                    lengths[p + 5] = 8;
                    values[p + 6] =
                        sl->head ? (const char *)places[k][1] : NULL;
                    lengths[p + 6] = 8;
                }
            }
            stmt_no++;
            const char *name = n == per_stmt ? "full" : "tail";
            if (exec_ok(conn,
                        PQexecPrepared(conn, name,
                                       (int)(n * per_row), values,
                                       lengths, formats, 0),
                        "insert") != 0)
                goto out;
            done += n;
        }
        if (exec_sql(conn, "COMMIT") != 0)
            goto out;
    }
    double secs = (double)(kpb_now_ms() - t0) / 1000.0;
    printf("rows=%" PRIu64 " seconds=%.3f rows_per_s=%.0f\n", nrows, secs,
           secs > 0 ? (double)nrows / secs : 0.0);
    rc = 0;

out:
    free(slots);
    free(places);
    for (uint64_t i = 0; i < nrows; i++) {
        free(rows[i].key);
        free(rows[i].value);
        free(rows[i].metadata);
    }
    free(rows);
    free(values);
    free(lengths);
    free(formats);
    free(next_off);
    kpb_buf_fini(&sql);
    kpb_buf_fini(&md);
    bw_event_fini(&ev);
    bw_fini(&gen);
    PQfinish(conn);
    return rc;
}
