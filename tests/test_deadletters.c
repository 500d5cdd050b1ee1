/* Bad input never blocks and is never lost (DESIGN §5): 20,000 records of
 * which about 10% are bad in every way this bridge knows, through the real
 * binary, with and without the dead-letter topic. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define TOPICS                                                                 \
    "  - name: events\n"                                                       \
    "    event_type: header:event-type\n"                                      \
    "    event_id: header:event-id\n"                                          \
    "    expected_version: header:expected-version\n"

enum { RECORDS = 20000, STREAMS = 200, PARTITIONS = 4 };

/* The kinds of bad record, each with the reason it must be stored under. */
static const char *const kinds[] = {
    "no_stream_id",  "bad_stream_id",        "bad_stream_id",
    "bad_stream_id", "invalid_utf8",         "nul_byte",
    "nul_byte",      "invalid_json",         "bad_event_id",
    "bad_expected_version", "too_large",     "no_event_type",
    "rejected_by_database", "version_conflict",
};
#define KINDS ((int)(sizeof(kinds) / sizeof(kinds[0])))

typedef struct {
    int expected[KINDS];
    int good;
} plan_t;

/* Stored before the run, so that records reusing it collide whatever order
 * the partitions are written in. */
#define DUP_ID "00000000-0000-4000-8000-999999999999"

static void uuid_of(int n, char out[37]) {
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", n);
}

/* Produces the mix; returns how many of each kind were produced. */
static plan_t produce_mix(kpbt_kafka_t *k) {
    plan_t plan;
    memset(&plan, 0, sizeof(plan));
    int *seq = calloc(STREAMS, sizeof(int));
    static char big[3000];
    memset(big, 'x', sizeof(big));
    memcpy(big, "\"", 1);
    big[sizeof(big) - 1] = '"';
    unsigned rnd = 99;
    char key[300], value[256], id[37];
    for (int i = 0; i < RECORDS; i++) {
        rnd = rnd * 1103515245u + 12345u;
        int s = (int)((rnd >> 8) % STREAMS);
        snprintf(key, sizeof(key), "s-%d", s);
        uuid_of(i, id);
        kpbt_hdr_t h[3] = {{"event-type", "T"}, {"event-id", id}, {NULL, NULL}};
        int hn = 2;
        const char *v = value;
        size_t vlen;
        const char *kp = key;
        int kind = (i % 10 == 7) ? (i / 10) % KINDS : -1;
        /* a good record's value carries its per-stream sequence number */
        vlen = (size_t)snprintf(value, sizeof(value), "{\"seq\":%d}",
                                kind < 0 || kind >= 12 ? seq[s] + 1 : -1);
        switch (kind) {
        case 0: kp = NULL; break;
        case 1: key[0] = '\0'; break;
        case 2: memset(key, 'k', 256); key[256] = '\0'; break;
        case 3: snprintf(key, sizeof(key), "s-%d*", s); break;
        case 4: v = "{\"a\":\"\xff\"}"; vlen = strlen(v); break;
        case 5: v = "{\"a\":\"x\0y\"}"; vlen = 11; break;
        case 6: v = "{\"a\":\"\\u0000\"}"; vlen = strlen(v); break;
        case 7: v = "{not json"; vlen = strlen(v); break;
        case 8: h[1].value = "not-a-uuid"; break;
        case 9: h[2] = (kpbt_hdr_t){"expected-version", "abc"}; hn = 3; break;
        case 10: v = big; vlen = sizeof(big); break;
        case 11: h[0].name = "other"; break;
        case 12: h[1].value = DUP_ID; break; /* an id already stored */
        case 13: /* a stream is never at version 1000000 here */
            h[2] = (kpbt_hdr_t){"expected-version", "1000000"};
            hn = 3;
            break;
        default: break;
        }
        if (kind < 0) {
            seq[s]++;
            plan.good++;
        } else
            plan.expected[kind]++;
        kpbt_produce(k, "events", -1, kp, v, vlen, h, hn);
    }
    kpbt_flush(k);
    free(seq);
    return plan;
}

static void check_mix(const char *ci, kpbt_kafka_t *k, const plan_t *plan) {
    PGconn *conn = kpbt_pg(ci);
    long long events = kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                      " WHERE stream_id <> 'pre'");
    long long dead = kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters");
    cr_expect_eq(events, plan->good, "good records written");
    cr_expect_eq(events + dead, RECORDS, "events + dead letters = records");
    int per_reason[KINDS] = {0};
    for (int i = 0; i < KINDS; i++)
        for (int j = 0; j < KINDS; j++)
            if (!strcmp(kinds[i], kinds[j]))
                per_reason[i] += plan->expected[j];
    for (int i = 0; i < KINDS; i++)
        cr_expect_eq(kpbt_intf(conn,
                               "SELECT count(*) FROM kpbridge_dead_letters"
                               " WHERE reason = '%s'",
                               kinds[i]),
                     per_reason[i], "dead letters with reason %s", kinds[i]);
    /* each Kafka record exactly once, as an event or as a dead letter */
    cr_expect_eq(kpbt_int(conn,
                          "SELECT count(*) FROM (SELECT p, o FROM ("
                          " SELECT (metadata->'kafka'->>'partition')::int p,"
                          " (metadata->'kafka'->>'offset')::bigint o FROM"
                          " eventcore_events WHERE stream_id <> 'pre' UNION ALL SELECT partition,"
                          " \"offset\" FROM kpbridge_dead_letters) u"
                          " GROUP BY 1, 2 HAVING count(*) > 1) x"),
                 0);
    /* good records of a stream keep Kafka order, with no gap */
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                " WHERE stream_id <> 'pre' AND"
                                " (event_data->>'seq')::int <> stream_version"),
                 0);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"
                                " WHERE reason IN ('rejected_by_database',"
                                " 'version_conflict') AND sqlstate IS NULL"),
                 0, "database refusals carry their SQLSTATE");
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"
                                " WHERE reason = 'invalid_json' AND value <>"
                                " '{not json'::bytea"),
                 0, "dead letters keep the original bytes");
    for (int p = 0; p < PARTITIONS; p++)
        cr_expect_eq(kpbt_intf(conn,
                               "SELECT next_offset FROM kpbridge_offsets"
                               " WHERE partition = %d",
                               p),
                     kpbt_end_offset(k, "events", p),
                     "partition %d reached its end", p);
    PQfinish(conn);
}

static void run_mix(const char *tag, int with_topic) {
    char *ci = kpbt_db_new(tag, 1);
    PGconn *pre = kpbt_pg(ci);
    kpbt_exec(pre, "INSERT INTO eventcore_events (event_id, stream_id,"
                   " event_type, event_data) VALUES ('" DUP_ID "', 'pre',"
                   " 'T', '{}')");
    PQfinish(pre);
    kpbt_kafka_t *k = kpbt_kafka_new(1);
    kpbt_topic(k, "events", PARTITIONS);
    kpbt_topic(k, "dead", 1);
    plan_t plan = produce_mix(k);
    char extra[256];
    snprintf(extra, sizeof(extra),
             "batch:\n  max_record_bytes: 2048\n%s",
             with_topic ? "dead_letter:\n  topic: dead\n" : "");
    char *conf = kpbt_config(tag, k->bootstrap, ci, TOPICS, extra);
    char *log = kpbt_log_path(tag);
    int rc = kpbt_run_to_end(conf, log, 300);
    if (rc)
        kpbt_show_log(log);
    cr_assert_eq(rc, 0);
    check_mix(ci, k, &plan);

    if (with_topic) {
        int total_bad = RECORDS - plan.good;
        /* the topic holds each dead letter (at least once) with its reason */
        cr_expect_geq(kpbt_end_offset(k, "dead", 0), total_bad);
        PGconn *conn = kpbt_pg(ci);
        long long dead = kpbt_int(conn, "SELECT count(*) FROM"
                                        " kpbridge_dead_letters");
        PQfinish(conn);
        cr_expect_eq(dead, total_bad);
        int seen = kpbt_count_header(k, "dead", "kpbridge-reason");
        cr_expect_geq(seen, total_bad, "records with kpbridge-reason");
    }
    kpbt_kafka_destroy(k);
    unlink(conf);
    free(conf);
    free(log);
    free(ci);
}

Test(deadletters, sends_every_bad_record_to_the_table_and_writes_the_rest,
     .timeout = 600) {
    run_mix("dl_table", 0);
}

Test(deadletters, also_produces_them_to_the_dead_letter_topic,
     .timeout = 600) {
    run_mix("dl_topic", 1);
}
