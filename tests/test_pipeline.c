/* End to end through the real kpbridge binary: librdkafka's mock cluster
 * (in this process, over loopback TCP) → kpbridge → the throwaway
 * PostgreSQL of scripts/test. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define TOPICS_EVENTS                                                          \
    "  - name: events\n"                                                       \
    "    stream_id: key\n"                                                     \
    "    event_type: header:event-type\n"                                      \
    "    event_id: header:event-id\n"                                          \
    "    expected_version: header:expected-version\n"

/* Every stream has versions 1..n, and version order is Kafka offset order
 * (streams are keyed, so one stream lives in one partition). */
static void expect_streams_in_order(PGconn *conn) {
    kpbt_expect_gap_free(conn);
    cr_expect_eq(kpbt_int(conn,
                          "SELECT count(*) FROM (SELECT (metadata->'kafka'->>"
                          "'offset')::bigint o, lag((metadata->'kafka'->>"
                          "'offset')::bigint) OVER (PARTITION BY stream_id"
                          " ORDER BY stream_version) prev FROM"
                          " eventcore_events) x WHERE o <= prev"),
                 0, "rows whose version order differs from offset order");
}

Test(pipeline, writes_100000_events_over_1000_streams_exactly_once,
     .timeout = 600) {
    const int partitions = 8, streams = 1000, events = 100000;
    char *ci = kpbt_db_new("e2e", 1);
    kpbt_kafka_t *k = kpbt_kafka_new(1);
    kpbt_topic(k, "events", partitions);

    int *seq = calloc((size_t)streams, sizeof(int));
    unsigned rnd = 12345;
    char key[32], value[256];
    for (int i = 0; i < events; i++) {
        rnd = rnd * 1103515245u + 12345u;
        int s = (int)((rnd >> 8) % (unsigned)streams);
        snprintf(key, sizeof(key), "stream-%d", s);
        int n = snprintf(value, sizeof(value),
                         "{\"stream\":\"%s\",\"seq\":%d,\"n\":%d,"
                         "\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
                         key, ++seq[s], i);
        kpbt_hdr_t h[] = {{"event-type", (i & 1) ? "OrderPaid" : "OrderPlaced"}};
        kpbt_produce(k, "events", -1, key, value, (size_t)n, h, 1);
    }
    kpbt_flush(k);
    free(seq);

    char *conf = kpbt_config("e2e", k->bootstrap, ci, TOPICS_EVENTS, NULL);
    char *log = kpbt_log_path("e2e");
    double t0 = kpbt_now();
    int rc = kpbt_run_to_end(conf, log, 500);
    double secs = kpbt_now() - t0;
    if (rc)
        kpbt_show_log(log);
    cr_assert_eq(rc, 0, "kpbridge exited %d", rc);
    fprintf(stderr,
            "pipeline: %d events over %d streams and %d partitions in %.2f s "
            "= %.0f events/s (kpbridge run --exit-at-end, incl. ~3 s group "
            "join)\n",
            events, streams, partitions, secs, events / secs);

    PGconn *conn = kpbt_pg(ci);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"),
                 events);
    cr_expect_eq(kpbt_int(conn, "SELECT count(DISTINCT stream_id) FROM"
                                " eventcore_events"),
                 streams);
    expect_streams_in_order(conn);
    /* the producer's per-stream sequence number is the version */
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                " WHERE (event_data->>'seq')::bigint <>"
                                " stream_version"),
                 0);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM (SELECT metadata->"
                                "'kafka' FROM eventcore_events GROUP BY 1"
                                " HAVING count(*) > 1) x"),
                 0, "a Kafka record written twice");
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"),
                 0);
    for (int p = 0; p < partitions; p++) {
        int64_t end = kpbt_end_offset(k, "events", p);
        cr_expect_eq(kpbt_intf(conn,
                               "SELECT next_offset FROM kpbridge_offsets"
                               " WHERE group_id = 'kpbt' AND topic = 'events'"
                               " AND partition = %d",
                               p),
                     end, "partition %d: stored offset vs end", p);
        cr_expect_eq(kpbt_committed(k, "kpbt", "events", p), end,
                     "partition %d: Kafka committed offset vs end", p);
    }
    PQfinish(conn);
    kpbt_kafka_destroy(k);
    unlink(conf);
    free(conf);
    free(log);
    free(ci);
}

/* Reads the debug log's "insert ... rows=N" lines. */
static int statement_sizes(const char *log, int *sizes, int max) {
    char *text = kpbt_read_file(log, NULL);
    cr_assert(text, "no log");
    int n = 0;
    for (char *p = text; (p = strstr(p, " rows=")) && n < max; p += 6)
        if (p - text > 20 && strstr(p - 60 > text ? p - 60 : text, "insert"))
            sizes[n++] = atoi(p + 6);
    free(text);
    return n;
}

/* 1000, 1000, then the last 500 rows as prepared power-of-two chunks
 * (256 + 128 + 64 + 32 + 16 + 4), in order: no statement over 1000 rows. */
Test(pipeline, writes_one_stream_of_2500_in_statements_of_at_most_1000,
     .timeout = 300) {
    char *ci = kpbt_db_new("split", 1);
    kpbt_kafka_t *k = kpbt_kafka_new(1);
    kpbt_topic(k, "events", 1);
    char value[64];
    for (int i = 1; i <= 2500; i++) {
        int n = snprintf(value, sizeof(value), "{\"seq\":%d}", i);
        kpbt_hdr_t h[] = {{"event-type", "Tick"}};
        kpbt_produce(k, "events", 0, "one-stream", value, (size_t)n, h, 1);
    }
    kpbt_flush(k);
    /* A long linger: flushes here come from size and from the end only, so
     * the split does not depend on how fast this machine consumes. */
    char *conf = kpbt_config("split", k->bootstrap, ci, TOPICS_EVENTS,
                             "log:\n  level: debug\n"
                             "batch:\n  linger_ms: 60000\n");
    char *log = kpbt_log_path("split");
    int rc = kpbt_run_to_end(conf, log, 200);
    if (rc)
        kpbt_show_log(log);
    cr_assert_eq(rc, 0);

    int sizes[16];
    static const int want[] = {1000, 1000, 256, 128, 64, 32, 16, 4};
    const int nwant = (int)(sizeof(want) / sizeof(want[0]));
    int n = statement_sizes(log, sizes, 16);
    cr_assert_eq(n, nwant, "statements: %d", n);
    for (int i = 0; i < nwant; i++)
        cr_expect_eq(sizes[i], want[i], "statement %d: %d rows", i, sizes[i]);

    PGconn *conn = kpbt_pg(ci);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                " WHERE stream_id = 'one-stream'"),
                 2500);
    cr_expect_eq(kpbt_int(conn, "SELECT max(stream_version) FROM"
                                " eventcore_events"),
                 2500);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                " WHERE (event_data->>'seq')::int <>"
                                " stream_version"),
                 0);
    PQfinish(conn);
    kpbt_kafka_destroy(k);
    unlink(conf);
    free(conf);
    free(log);
    free(ci);
}

typedef struct {
    const char *stream;
    const char *expect; /* expected-version header or NULL */
    const char *value;
} rec_t;

Test(pipeline, accepts_a_matching_expected_version_and_isolates_a_conflict,
     .timeout = 300) {
    char *ci = kpbt_db_new("expect", 1);
    kpbt_kafka_t *k = kpbt_kafka_new(1);
    kpbt_topic(k, "events", 1);
    static const rec_t recs[] = {
        {"a", "0", "{\"seq\":1}"},  /* matches: a is empty */
        {"b", NULL, "{\"seq\":1}"},
        {"a", NULL, "{\"seq\":2}"},
        {"a", "2", "{\"seq\":3}"},  /* matches */
        {"a", "1", "{\"seq\":-1}"}, /* conflict: a is at 3 */
        {"b", NULL, "{\"seq\":2}"},
        {"a", NULL, "{\"seq\":4}"},
        {"a", "4", "{\"seq\":5}"},  /* matches again after the conflict */
        {"b", NULL, "not json"},    /* refused before the database */
        {"b", NULL, "{\"seq\":3}"},
    };
    const int cnt = (int)(sizeof(recs) / sizeof(recs[0]));
    for (int i = 0; i < cnt; i++) {
        kpbt_hdr_t h[2] = {{"event-type", "T"},
                           {"expected-version", recs[i].expect}};
        kpbt_produce(k, "events", 0, recs[i].stream, recs[i].value,
                     strlen(recs[i].value), h, recs[i].expect ? 2 : 1);
    }
    kpbt_flush(k);
    char *conf = kpbt_config("expect", k->bootstrap, ci, TOPICS_EVENTS, NULL);
    char *log = kpbt_log_path("expect");
    int rc = kpbt_run_to_end(conf, log, 200);
    if (rc)
        kpbt_show_log(log);
    cr_assert_eq(rc, 0);

    PGconn *conn = kpbt_pg(ci);
    expect_streams_in_order(conn);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                " WHERE stream_id = 'a'"),
                 5);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                " WHERE stream_id = 'b'"),
                 3);
    /* a's payloads in version order are seq 1..5: nothing lost or moved */
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                " WHERE (event_data->>'seq')::int <>"
                                " stream_version"),
                 0);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"
                                " WHERE reason = 'version_conflict' AND"
                                " sqlstate = 'P0001' AND \"offset\" = 4 AND"
                                " detail LIKE 'version_conflict: stream \"a\""
                                " expected version 1, actual 3%'"),
                 1);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"
                                " WHERE reason = 'invalid_json' AND"
                                " \"offset\" = 8 AND value = 'not json'"),
                 1);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"),
                 2);
    cr_expect_eq(kpbt_int(conn, "SELECT next_offset FROM kpbridge_offsets"),
                 cnt);
    PQfinish(conn);
    kpbt_kafka_destroy(k);
    unlink(conf);
    free(conf);
    free(log);
    free(ci);
}

/* Counts the lines of @p log that contain @p what. */
static int log_count(const char *log, const char *what) {
    char *text = kpbt_read_file(log, NULL);
    cr_assert(text, "no log");
    int n = 0;
    for (char *p = text; (p = strstr(p, what)); p += strlen(what))
        n++;
    free(text);
    return n;
}

/* postgres.versioning: statement while an eventcore-style writer (versions
 * from the trigger, autocommit) appends to the same few streams the whole
 * time: every stream stays gap-free, kpbridge's rows keep Kafka order, and
 * a lost race is replayed, never dead-lettered. */
static void shared_streams_case(const char *versioning) {
    const int partitions = 4, streams = 5, events = 40000;
    kpbt_set_versioning(versioning);
    char *ci = kpbt_db_new(versioning, 1);
    kpbt_kafka_t *k = kpbt_kafka_new(1);
    kpbt_topic(k, "events", partitions);
    kpbt_produce_streams(k, "events", events, streams, 777);
    char *conf = kpbt_config("shared", k->bootstrap, ci, TOPICS_EVENTS,
                             "batch:\n  linger_ms: 5\n");
    char *log = kpbt_log_path("shared");
    const char *args[] = {"run", "-c", conf, "--exit-at-end", NULL};
    pid_t pid = kpbt_spawn(log, args);

    PGconn *app = kpbt_pg(ci);
    long long appended = 0, lost_races = 0;
    int rc = 0;
    double until = kpbt_now() + 400;
    unsigned rnd = 4242;
    while (!kpbt_exited(pid, until, &rc)) {
        rnd = rnd * 1103515245u + 12345u;
        char stream[32];
        snprintf(stream, sizeof(stream), "stream-%u", (rnd >> 8) % streams);
        const char *params[1] = {stream};
        PGresult *res = PQexecParams(
            app,
            "INSERT INTO eventcore_events (event_id, stream_id, event_type,"
            " event_data) VALUES (gen_random_uuid(), $1, 'AppendedByApp',"
            " '{\"writer\": \"eventcore\"}')",
            1, NULL, params, NULL, NULL, 0);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (PQresultStatus(res) == PGRES_COMMAND_OK)
            appended++;
        else if (state && !strcmp(state, "23505"))
            lost_races++; /* eventcore's writers retry these too */
        else
            cr_assert_fail("app insert: %s", PQerrorMessage(app));
        PQclear(res);
    }
    if (rc)
        kpbt_show_log(log);
    cr_assert_eq(rc, 0, "kpbridge exited %d", rc);
    int replays = log_count(log, "isolating the rows at fault");
    fprintf(stderr,
            "shared streams (%s): %d bridge events, %lld app appends (%lld "
            "app retries), %d bridge flushes replayed after a refusal\n",
            versioning, events, appended, lost_races, replays);

    cr_expect_gt(appended, 0, "the app never wrote while kpbridge ran");
    cr_expect_gt(replays, 0, "no race happened: the test proves nothing");
    cr_expect_eq(kpbt_int(app, "SELECT count(*) FROM eventcore_events"),
                 events + appended);
    cr_expect_eq(kpbt_int(app, "SELECT count(*) FROM kpbridge_dead_letters"),
                 0, "a lost race became a dead letter");
    expect_streams_in_order(app); /* gap-free; bridge rows in Kafka order */
    cr_expect_eq(kpbt_int(app, "SELECT count(*) FROM (SELECT metadata->"
                               "'kafka' FROM eventcore_events WHERE metadata"
                               " ? 'kafka' GROUP BY 1 HAVING count(*) > 1) x"),
                 0, "a Kafka record written twice");
    /* each stream's bridge rows are the producer's sequence, in order */
    cr_expect_eq(kpbt_int(app,
                          "SELECT count(*) FROM (SELECT (event_data->>'seq')"
                          "::int s, row_number() OVER (PARTITION BY stream_id"
                          " ORDER BY stream_version) r FROM eventcore_events"
                          " WHERE event_data ? 'seq') x WHERE s <> r"),
                 0);
    for (int p = 0; p < partitions; p++)
        cr_expect_eq(kpbt_intf(app,
                               "SELECT coalesce(max(next_offset), 0) FROM"
                               " kpbridge_offsets WHERE topic = 'events' AND"
                               " partition = %d",
                               p),
                     kpbt_end_offset(k, "events", p));
    PQfinish(app);
    kpbt_set_versioning(NULL);
    kpbt_kafka_destroy(k);
    unlink(conf);
    free(conf);
    free(log);
    free(ci);
}

/* The same with the seed's trigger numbering kpbridge's rows: its row lock
 * does not stop two writers from picking one version either. */
Test(pipeline, statement_versioning_shares_streams_with_an_eventcore_writer,
     .timeout = 600) {
    shared_streams_case("statement");
}

Test(pipeline, trigger_versioning_shares_streams_with_an_eventcore_writer,
     .timeout = 600) {
    shared_streams_case("trigger");
}
