/*
 * bench_latency: how long a record takes from Kafka to a committed row.
 *
 *   bench_latency --conninfo C --group G --topic T --expect-total N
 *                 [--interval-ms 2] [--timeout-s 120] [--table eventcore_events]
 *
 * The start of a record's trip is its Kafka timestamp (CreateTime, taken by
 * the producer when it hands the record over), which kpbridge stores in
 * metadata->kafka->timestamp.  The end is the moment its row is committed,
 * which no column records: created_at is now(), the start of the
 * transaction, not its commit.  So this program watches the commits happen.
 * kpbridge writes each partition's next offset to kpbridge_offsets in the
 * same transaction as the rows, so the moment a poll first sees
 * next_offset > O is a moment when the row of offset O is committed and
 * visible.  The poll runs every --interval-ms; each sighting is stamped with
 * the wall clock when the poll's answer arrived, an upper bound of the
 * commit time that is late by at most one interval plus one query.  The
 * latency is therefore never under-reported.
 *
 * It polls until the offsets add up to --expect-total (or the timeout), then
 * reads every row's partition, offset, Kafka timestamp and created_at, and
 * prints one line:
 *   rows=N p50_ms= p90_ms= p99_ms= max_ms= start_p50_ms= start_p99_ms=
 *   poll_ms=  (the mean time between polls, i.e. the resolution)
 * start_* is the Kafka timestamp to created_at (transaction start), which
 * shows how much of the latency is spent before the flush begins.
 * Rows with event type Warmup (bench_produce --warmup) are left out.
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

typedef struct sighting_s {
    int64_t next_offset;
    double t_ms;
} sighting_t;

typedef struct part_s {
    sighting_t *s;
    size_t cnt, cap;
} part_t;

static double wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, size_t n, double p) {
    if (!n)
        return NAN;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    if (k < 1)
        k = 1;
    return v[k - 1];
}

int main(int argc, char **argv) {
    const char *conninfo = NULL, *group = NULL, *topic = NULL;
    const char *table = "eventcore_events";
    long interval = 2, timeout_s = 120;
    long long expect = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--conninfo") && i + 1 < argc)
            conninfo = argv[++i];
        else if (!strcmp(argv[i], "--group") && i + 1 < argc)
            group = argv[++i];
        else if (!strcmp(argv[i], "--topic") && i + 1 < argc)
            topic = argv[++i];
        else if (!strcmp(argv[i], "--table") && i + 1 < argc)
            table = argv[++i];
        else if (!strcmp(argv[i], "--expect-total") && i + 1 < argc)
            expect = strtoll(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--interval-ms") && i + 1 < argc)
            interval = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--timeout-s") && i + 1 < argc)
            timeout_s = strtol(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_latency --conninfo C --group G "
                            "--topic T --expect-total N [--interval-ms MS] "
                            "[--timeout-s S] [--table T]\n");
            return 2;
        }
    }
    if (!conninfo || !group || !topic || expect < 0 || interval < 0) {
        fprintf(stderr, "bench_latency: --conninfo, --group, --topic and "
                        "--expect-total are required\n");
        return 2;
    }

    int rc = 1;
    part_t *parts = NULL;
    size_t part_cnt = 0;
    double *lat = NULL, *start = NULL;
    PGresult *res = NULL;
    kpb_buf_t sql;
    kpb_buf_init(&sql);
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "bench_latency: connect: %s", PQerrorMessage(conn));
        goto out;
    }
    res = PQprepare(conn, "poll",
                    "SELECT partition, next_offset FROM kpbridge_offsets "
                    "WHERE group_id = $1 AND topic = $2",
                    2, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_latency: prepare: %s", PQerrorMessage(conn));
        goto out;
    }
    PQclear(res);
    res = NULL;

    const char *params[2] = {group, topic};
    double t_begin = wall_ms();
    long polls = 0;
    long long total = 0;
    struct timespec nap = {interval / 1000, (interval % 1000) * 1000000L};
    for (;;) {
        res = PQexecPrepared(conn, "poll", 2, params, NULL, NULL, 0);
        double t = wall_ms();
        polls++;
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "bench_latency: poll: %s", PQerrorMessage(conn));
            goto out;
        }
        total = 0;
        for (int r = 0; r < PQntuples(res); r++) {
            long p = strtol(PQgetvalue(res, r, 0), NULL, 10);
            int64_t off = strtoll(PQgetvalue(res, r, 1), NULL, 10);
            total += off;
            if (p < 0 || p > 1000000)
                continue;
            if ((size_t)p >= part_cnt) {
                parts = kpb_xrealloc(parts, ((size_t)p + 1) * sizeof(*parts));
                memset(parts + part_cnt, 0,
                       ((size_t)p + 1 - part_cnt) * sizeof(*parts));
                part_cnt = (size_t)p + 1;
            }
            part_t *pp = &parts[p];
            if (pp->cnt && pp->s[pp->cnt - 1].next_offset >= off)
                continue;
            if (pp->cnt == pp->cap) {
                pp->cap = pp->cap ? pp->cap * 2 : 256;
                pp->s = kpb_xrealloc(pp->s, pp->cap * sizeof(*pp->s));
            }
            pp->s[pp->cnt].next_offset = off;
            pp->s[pp->cnt].t_ms = t;
            pp->cnt++;
        }
        PQclear(res);
        res = NULL;
        if (total >= expect)
            break;
        if (t - t_begin > (double)timeout_s * 1000.0) {
            fprintf(stderr,
                    "bench_latency: timed out after %ld s with offsets at "
                    "%lld of %lld\n",
                    timeout_s, total, expect);
            goto out;
        }
        if (interval > 0)
            nanosleep(&nap, NULL);
    }
    double poll_ms = (wall_ms() - t_begin) / (double)polls;

    char *qt = PQescapeIdentifier(conn, table, strlen(table));
    kpb_buf_printf(&sql,
                   "SELECT (metadata->'kafka'->>'partition')::int, "
                   "(metadata->'kafka'->>'offset')::bigint, "
                   "(metadata->'kafka'->>'timestamp')::bigint, "
                   "extract(epoch FROM created_at)::float8 * 1000 "
                   "FROM %s WHERE event_type <> 'Warmup' "
                   "AND metadata->'kafka'->>'topic' = $1",
                   qt ? qt : table);
    PQfreemem(qt);
    res = PQexecParams(conn, sql.data, 1, NULL, &topic, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_latency: rows: %s", PQerrorMessage(conn));
        goto out;
    }
    size_t n = (size_t)PQntuples(res), m = 0;
    lat = kpb_xcalloc(n ? n : 1, sizeof(*lat));
    start = kpb_xcalloc(n ? n : 1, sizeof(*start));
    size_t unseen = 0;
    for (size_t r = 0; r < n; r++) {
        long p = strtol(PQgetvalue(res, (int)r, 0), NULL, 10);
        int64_t off = strtoll(PQgetvalue(res, (int)r, 1), NULL, 10);
        double ts = strtod(PQgetvalue(res, (int)r, 2), NULL);
        double created = strtod(PQgetvalue(res, (int)r, 3), NULL);
        if (p < 0 || (size_t)p >= part_cnt) {
            unseen++;
            continue;
        }
        /* The first sighting whose next offset is past this record. */
        const part_t *pp = &parts[p];
        size_t lo = 0, hi = pp->cnt;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (pp->s[mid].next_offset > off)
                hi = mid;
            else
                lo = mid + 1;
        }
        if (lo == pp->cnt) {
            unseen++;
            continue;
        }
        lat[m] = pp->s[lo].t_ms - ts;
        start[m] = created - ts;
        m++;
    }
    if (unseen)
        fprintf(stderr,
                "bench_latency: %zu rows committed before the first poll or "
                "after the last; left out\n",
                unseen);
    qsort(lat, m, sizeof(*lat), cmp_double);
    qsort(start, m, sizeof(*start), cmp_double);
    printf("rows=%zu p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f "
           "start_p50_ms=%.1f start_p99_ms=%.1f poll_ms=%.2f\n",
           m, pct(lat, m, 50), pct(lat, m, 90), pct(lat, m, 99),
           m ? lat[m - 1] : NAN, pct(start, m, 50), pct(start, m, 99), poll_ms);
    rc = 0;

out:
    PQclear(res);
    for (size_t p = 0; p < part_cnt; p++)
        free(parts[p].s);
    free(parts);
    free(lat);
    free(start);
    kpb_buf_fini(&sql);
    PQfinish(conn);
    return rc;
}
