/* The writer against the throwaway PostgreSQL: fencing, isolation of rows at
 * fault, error classes, reconnection. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h"
#include "config.h"
#include "harness.h"
#include "writer.h"

static kpb_config_t *conf_versioning(const char *ci, int max_events,
                                     const char *versioning) {
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "kafka:\n  brokers: x:1\n  group_id: g\n"
             "postgres:\n  conninfo: \"%s\"\n  versioning: %s\n"
             "batch:\n  max_events: %d\n"
             "topics:\n  - name: t\n    event_type: const:T\n",
             ci, versioning, max_events);
    kpb_config_t *conf = NULL;
    char err[512];
    cr_assert_eq(kpb_config_parse(yaml, strlen(yaml), "test", &conf, err,
                                  sizeof(err)),
                 0, "%s", err);
    return conf;
}

static kpb_config_t *conf_for(const char *ci, int max_events) {
    return conf_versioning(ci, max_events, "trigger");
}

/* Adds an event of @p stream at @p offset of partition @p part, with a
 * payload {"o": offset} and an optional fixed event id byte pattern. */
static void add_event(kpb_batcher_t *b, const kpb_config_t *conf,
                      int32_t part, int64_t offset, const char *stream,
                      int id_byte, int64_t expect) {
    kpb_arena_t *arena = kpb_batcher_arena(b);
    kpb_item_t it;
    memset(&it, 0, sizeof(it));
    char payload[64];
    int n = snprintf(payload, sizeof(payload), "{\"o\":%lld}",
                     (long long)offset);
    it.ev.stream_id = kpb_arena_strndup(arena, stream, strlen(stream));
    it.ev.stream_id_len = strlen(stream);
    it.ev.event_type = "T";
    it.ev.event_type_len = 1;
    if (id_byte >= 0)
        memset(it.ev.event_id, id_byte, 16);
    else
        kpb_uuid7(it.ev.event_id);
    it.ev.payload = kpb_arena_strndup(arena, payload, (size_t)n);
    it.ev.payload_len = (size_t)n;
    char md[128];
    n = snprintf(md, sizeof(md),
                 "{\"kafka\":{\"topic\":\"t\",\"partition\":%d,\"offset\":"
                 "%lld},\"headers\":{}}",
                 (int)part, (long long)offset);
    it.ev.metadata = kpb_arena_strndup(arena, md, (size_t)n);
    it.ev.metadata_len = (size_t)n;
    it.ev.expected_version = expect;
    it.topic = conf->topics[0].name;
    it.table = conf->topics[0].table;
    it.partition = part;
    it.offset = offset;
    it.value = it.ev.payload;
    it.value_len = it.ev.payload_len;
    kpb_batcher_add(b, &it, 0);
}

static kpb_writer_t *connected(const kpb_config_t *conf) {
    kpb_writer_t *w = kpb_writer_new(conf);
    char err[512];
    cr_assert_eq(kpb_writer_connect(w, err, sizeof(err)), 0, "%s", err);
    return w;
}

Test(writer, fences_a_writer_whose_partition_row_moved, .timeout = 60) {
    char *ci = kpbt_db_new("w_fence", 1);
    kpb_config_t *conf = conf_for(ci, 1000);
    kpb_writer_t *a = connected(conf), *b = connected(conf);
    kpb_batcher_t *ba = kpb_batcher_new(1000, 1000, 20, NULL);
    kpb_batcher_t *bb = kpb_batcher_new(1000, 1000, 20, NULL);

    /* Both start partition 0 with no stored row (from = -1). */
    for (int i = 0; i < 10; i++) {
        add_event(ba, conf, 0, i, "s", -1, -1);
        add_event(bb, conf, 0, i, "s", -1, -1);
    }
    kpb_flush_t *fa = kpb_batcher_take(ba), *fb = kpb_batcher_take(bb);
    int64_t none = -1;
    uint32_t fenced = 99;
    kpb_write_stats_t st;
    char err[1024];
    cr_assert_eq(kpb_writer_write(b, fb, &none, &fenced, &st, err,
                                  sizeof(err)),
                 KPB_WRITE_OK, "%s", err);
    cr_expect_eq(st.events, 10);
    /* A still believes the row is absent: it must be fenced, write nothing */
    cr_expect_eq(kpb_writer_write(a, fa, &none, &fenced, &st, err,
                                  sizeof(err)),
                 KPB_WRITE_FENCED);
    cr_expect_eq(fenced, 0);
    cr_expect(strstr(err, "another instance"), "%s", err);

    /* A stale position is fenced too: B moves the row to 20, A says 10. */
    for (int i = 10; i < 20; i++)
        add_event(bb, conf, 0, i, "s", -1, -1);
    kpb_flush_destroy(fb);
    fb = kpb_batcher_take(bb);
    int64_t ten = 10;
    cr_assert_eq(kpb_writer_write(b, fb, &ten, &fenced, &st, err, sizeof(err)),
                 KPB_WRITE_OK, "%s", err);
    cr_expect_eq(kpb_writer_write(a, fa, &ten, &fenced, &st, err,
                                  sizeof(err)),
                 KPB_WRITE_FENCED);

    PGconn *conn = kpbt_pg(ci);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"), 20);
    cr_expect_eq(kpbt_int(conn, "SELECT next_offset FROM kpbridge_offsets"),
                 20);
    PQfinish(conn);
    kpb_flush_destroy(fa);
    kpb_flush_destroy(fb);
    kpb_batcher_destroy(ba);
    kpb_batcher_destroy(bb);
    kpb_writer_destroy(a);
    kpb_writer_destroy(b);
    kpb_config_destroy(conf);
    free(ci);
}

/* Writes 7 events of stream s where @p bad_count from @p bad_at reuse an event
 * id already stored (beside 7 good events of stream u), and checks that just
 * those became dead letters and the rest was written in order. */
static void isolate_case(int bad_at, int bad_count) {
    char tag[32];
    snprintf(tag, sizeof(tag), "w_iso_%d_%d", bad_at, bad_count);
    char *ci = kpbt_db_new(tag, 1);
    kpb_config_t *conf = conf_for(ci, 1000);
    kpb_writer_t *w = connected(conf);
    PGconn *conn = kpbt_pg(ci);
    kpbt_exec(conn, "INSERT INTO eventcore_events (event_id, stream_id,"
                    " event_type, event_data) VALUES"
                    " ('abababab-abab-abab-abab-abababababab', 'other', 'T',"
                    " '{}')");
    kpb_batcher_t *b = kpb_batcher_new(1000, 1000, 20, NULL);
    for (int i = 0; i < 7; i++) {
        int bad = i >= bad_at && i < bad_at + bad_count;
        add_event(b, conf, 0, i, "s", bad ? 0xab : -1, -1);
        add_event(b, conf, 0, 100 + i, "u", -1, -1);
    }
    kpb_flush_t *f = kpb_batcher_take(b);
    int64_t none = -1;
    uint32_t fenced;
    kpb_write_stats_t st;
    char err[1024];
    cr_assert_eq(kpb_writer_write(w, f, &none, &fenced, &st, err, sizeof(err)),
                 KPB_WRITE_OK, "%s", err);
    cr_expect_eq(st.dead, (uint32_t)bad_count);
    cr_expect_eq(st.events, 14u - (uint32_t)bad_count);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"
                                " WHERE sqlstate = '23505' AND reason ="
                                " 'rejected_by_database'"),
                 bad_count);
    /* the good rows of s keep their order: versions follow offsets */
    cr_expect_eq(kpbt_int(conn,
                          "SELECT count(*) FROM (SELECT (event_data->>'o')"
                          "::int o, lag((event_data->>'o')::int) OVER (ORDER"
                          " BY stream_version) p FROM eventcore_events WHERE"
                          " stream_id = 's') x WHERE o <= p"),
                 0);
    cr_expect_eq(kpbt_int(conn, "SELECT coalesce(max(stream_version), 0) FROM"
                                " eventcore_events WHERE stream_id = 's'"),
                 7 - bad_count);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                " WHERE stream_id = 'u'"),
                 7);
    PQfinish(conn);
    kpb_flush_destroy(f);
    kpb_batcher_destroy(b);
    kpb_writer_destroy(w);
    kpb_config_destroy(conf);
    free(ci);
}

Test(writer, dead_letters_only_a_first_row_at_fault, .timeout = 60) {
    isolate_case(0, 1);
}

Test(writer, dead_letters_only_a_middle_row_at_fault, .timeout = 60) {
    isolate_case(3, 1);
}

Test(writer, dead_letters_only_a_last_row_at_fault, .timeout = 60) {
    isolate_case(6, 1);
}

Test(writer, dead_letters_every_row_when_all_are_at_fault, .timeout = 60) {
    isolate_case(0, 7);
}

Test(writer, classifies_sqlstates) {
    cr_expect_eq(kpb_sqlstate_class(NULL), KPB_SQL_TRANSIENT);
    cr_expect_eq(kpb_sqlstate_class("08006"), KPB_SQL_TRANSIENT);
    cr_expect_eq(kpb_sqlstate_class("53300"), KPB_SQL_TRANSIENT);
    cr_expect_eq(kpb_sqlstate_class("57P01"), KPB_SQL_TRANSIENT);
    cr_expect_eq(kpb_sqlstate_class("40001"), KPB_SQL_TRANSIENT);
    cr_expect_eq(kpb_sqlstate_class("40P01"), KPB_SQL_TRANSIENT);
    cr_expect_eq(kpb_sqlstate_class("22P02"), KPB_SQL_DATA);
    cr_expect_eq(kpb_sqlstate_class("23505"), KPB_SQL_DATA);
    cr_expect_eq(kpb_sqlstate_class("P0001"), KPB_SQL_DATA);
    cr_expect_eq(kpb_sqlstate_class("42P01"), KPB_SQL_FATAL);
    cr_expect_eq(kpb_sqlstate_class("42501"), KPB_SQL_FATAL);
}

Test(writer, reports_a_killed_connection_as_transient_and_reconnects,
     .timeout = 60) {
    char *ci = kpbt_db_new("w_kill", 1);
    kpb_config_t *conf = conf_for(ci, 1000);
    kpb_writer_t *w = connected(conf);
    PGconn *conn = kpbt_pg(ci);
    kpbt_exec(conn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <>"
                    " pg_backend_pid()");
    kpb_batcher_t *b = kpb_batcher_new(1000, 1000, 20, NULL);
    for (int i = 0; i < 5; i++)
        add_event(b, conf, 0, i, "s", -1, -1);
    kpb_flush_t *f = kpb_batcher_take(b);
    int64_t none = -1;
    uint32_t fenced;
    kpb_write_stats_t st;
    char err[1024];
    cr_expect_eq(kpb_writer_write(w, f, &none, &fenced, &st, err, sizeof(err)),
                 KPB_WRITE_TRANSIENT, "%s", err);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"), 0);
    cr_assert_eq(kpb_writer_connect(w, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(kpb_writer_write(w, f, &none, &fenced, &st, err, sizeof(err)),
                 KPB_WRITE_OK, "%s", err);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"), 5);
    PQfinish(conn);
    kpb_flush_destroy(f);
    kpb_batcher_destroy(b);
    kpb_writer_destroy(w);
    kpb_config_destroy(conf);
    free(ci);
}

Test(writer, stops_on_a_missing_table_instead_of_dead_lettering,
     .timeout = 60) {
    char *ci = kpbt_db_new("w_fatal", 1);
    kpb_config_t *conf = conf_for(ci, 1000);
    free(conf->topics[0].table);
    conf->topics[0].table = strdup("no_such_table");
    kpb_writer_t *w = connected(conf);
    kpb_batcher_t *b = kpb_batcher_new(1000, 1000, 20, NULL);
    add_event(b, conf, 0, 0, "s", -1, -1);
    kpb_flush_t *f = kpb_batcher_take(b);
    int64_t none = -1;
    uint32_t fenced;
    kpb_write_stats_t st;
    char err[1024];
    cr_expect_eq(kpb_writer_write(w, f, &none, &fenced, &st, err, sizeof(err)),
                 KPB_WRITE_FATAL);
    cr_expect(strstr(err, "42P01"), "%s", err);
    PGconn *conn = kpbt_pg(ci);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_offsets"), 0,
                 "nothing may be committed");
    PQfinish(conn);
    kpb_flush_destroy(f);
    kpb_batcher_destroy(b);
    kpb_writer_destroy(w);
    kpb_config_destroy(conf);
    free(ci);
}

/* Writes what @p b holds from partition 0's stored offset @p from and
 * expects success; returns the stats. */
static kpb_write_stats_t write_ok(kpb_writer_t *w, kpb_batcher_t *b,
                                  int64_t from) {
    kpb_flush_t *f = kpb_batcher_take(b);
    uint32_t fenced;
    kpb_write_stats_t st;
    char err[1024];
    cr_assert_eq(kpb_writer_write(w, f, &from, &fenced, &st, err, sizeof(err)),
                 KPB_WRITE_OK, "%s", err);
    kpb_flush_destroy(f);
    return st;
}

/* Versions of every stream are 1..n and follow the offsets ("o"). */
static void expect_gap_free_in_offset_order(PGconn *conn) {
    kpbt_expect_gap_free(conn);
    cr_expect_eq(kpbt_int(conn,
                          "SELECT count(*) FROM (SELECT (event_data->>'o')"
                          "::int o, lag((event_data->>'o')::int) OVER"
                          " (PARTITION BY stream_id ORDER BY stream_version)"
                          " p FROM eventcore_events WHERE event_data ? 'o') x"
                          " WHERE o <= p"),
                 0, "versions out of offset order");
}

Test(writer, statement_versioning_numbers_rows_from_cached_heads,
     .timeout = 60) {
    char *ci = kpbt_db_new("w_stmt", 1);
    kpb_config_t *conf = conf_versioning(ci, 1000, "statement");
    kpb_writer_t *w = connected(conf);
    kpb_batcher_t *b = kpb_batcher_new(1000, 1000, 20, NULL);
    int64_t off = 0;
    for (int i = 0; i < 5; i++)
        add_event(b, conf, 0, off++, "a", -1, -1);
    for (int i = 0; i < 3; i++)
        add_event(b, conf, 0, off++, "b", -1, -1);
    kpb_write_stats_t st = write_ok(w, b, -1);
    cr_expect_eq(st.events, 8);
    cr_expect_eq(st.numbered, 8, "rows numbered by kpbridge, not the trigger");

    /* The second flush starts from the heads the first one returned. */
    for (int i = 0; i < 2; i++) {
        add_event(b, conf, 0, off++, "a", -1, -1);
        add_event(b, conf, 0, off++, "b", -1, -1);
    }
    for (int i = 0; i < 4; i++)
        add_event(b, conf, 0, off++, "c", -1, -1);
    st = write_ok(w, b, 8);
    cr_expect_eq(st.events, 8);
    cr_expect_eq(st.numbered, 8);

    PGconn *conn = kpbt_pg(ci);
    expect_gap_free_in_offset_order(conn);
    cr_expect_eq(kpbt_int(conn, "SELECT max(stream_version) FROM"
                                " eventcore_events WHERE stream_id = 'a'"),
                 7);
    cr_expect_eq(kpbt_int(conn, "SELECT max(stream_version) FROM"
                                " eventcore_events WHERE stream_id = 'c'"),
                 4);
    cr_expect_eq(kpbt_int(conn, "SELECT next_offset FROM kpbridge_offsets"),
                 16);
    PQfinish(conn);
    kpb_batcher_destroy(b);
    kpb_writer_destroy(w);
    kpb_config_destroy(conf);
    free(ci);
}

Test(writer, statement_versioning_recovers_when_another_writer_appends,
     .timeout = 60) {
    char *ci = kpbt_db_new("w_stmt_race", 1);
    kpb_config_t *conf = conf_versioning(ci, 1000, "statement");
    kpb_writer_t *w = connected(conf);
    kpb_batcher_t *b = kpb_batcher_new(1000, 1000, 20, NULL);
    PGconn *conn = kpbt_pg(ci);
    int64_t off = 0;
    for (int i = 0; i < 3; i++)
        add_event(b, conf, 0, off++, "a", -1, -1);
    cr_expect_eq(write_ok(w, b, -1).numbered, 3);

    /* An eventcore-style writer appends version 4 behind kpbridge's back:
     * the cached head (3) is stale, the next statement collides with the
     * unique index and the flush is replayed through the trigger. */
    kpbt_exec(conn, "INSERT INTO eventcore_events (event_id, stream_id,"
                    " event_type, event_data) VALUES (gen_random_uuid(),"
                    " 'a', 'Other', '{}')");
    for (int i = 0; i < 3; i++)
        add_event(b, conf, 0, off++, "a", -1, -1);
    kpb_write_stats_t st = write_ok(w, b, 3);
    cr_expect_eq(st.events, 3);
    cr_expect_eq(st.dead, 0, "a lost race is not a dead letter");
    cr_expect_eq(st.numbered, 0, "replayed through the trigger");

    /* Its heads were forgotten: the statement looks them up again. */
    for (int i = 0; i < 2; i++)
        add_event(b, conf, 0, off++, "a", -1, -1);
    cr_expect_eq(write_ok(w, b, 6).numbered, 2);

    expect_gap_free_in_offset_order(conn);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"), 9);
    cr_expect_eq(kpbt_int(conn, "SELECT stream_version FROM eventcore_events"
                                " WHERE event_type = 'Other'"),
                 4);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"),
                 0);
    PQfinish(conn);
    kpb_batcher_destroy(b);
    kpb_writer_destroy(w);
    kpb_config_destroy(conf);
    free(ci);
}

Test(writer, statement_versioning_leaves_expected_versions_to_the_trigger,
     .timeout = 60) {
    char *ci = kpbt_db_new("w_stmt_expect", 1);
    kpb_config_t *conf = conf_versioning(ci, 1000, "statement");
    kpb_writer_t *w = connected(conf);
    kpb_batcher_t *b = kpb_batcher_new(1000, 1000, 20, NULL);
    add_event(b, conf, 0, 0, "a", -1, 0); /* a is empty: matches */
    add_event(b, conf, 0, 1, "a", -1, -1);
    add_event(b, conf, 0, 2, "z", -1, 5); /* z is empty too: conflict */
    kpb_write_stats_t st = write_ok(w, b, -1);
    cr_expect_eq(st.events, 2);
    cr_expect_eq(st.dead, 1);
    cr_expect_eq(st.numbered, 0);
    PGconn *conn = kpbt_pg(ci);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"
                                " WHERE reason = 'version_conflict'"),
                 1);
    expect_gap_free_in_offset_order(conn);
    PQfinish(conn);
    kpb_batcher_destroy(b);
    kpb_writer_destroy(w);
    kpb_config_destroy(conf);
    free(ci);
}

Test(writer, statement_versioning_isolates_a_row_at_fault_through_the_trigger,
     .timeout = 60) {
    char *ci = kpbt_db_new("w_stmt_iso", 1);
    kpb_config_t *conf = conf_versioning(ci, 1000, "statement");
    kpb_writer_t *w = connected(conf);
    kpb_batcher_t *b = kpb_batcher_new(1000, 1000, 20, NULL);
    for (int i = 0; i < 4; i++)
        add_event(b, conf, 0, i, "s", -1, -1);
    cr_expect_eq(write_ok(w, b, -1).numbered, 4);
    /* the second flush reuses an event id of the first at its third row */
    PGconn *conn = kpbt_pg(ci);
    kpbt_exec(conn, "INSERT INTO eventcore_events (event_id, stream_id,"
                    " event_type, event_data) VALUES"
                    " ('cdcdcdcd-cdcd-cdcd-cdcd-cdcdcdcdcdcd', 'other', 'T',"
                    " '{}')");
    for (int i = 4; i < 9; i++)
        add_event(b, conf, 0, i, "s", i == 6 ? 0xcd : -1, -1);
    kpb_write_stats_t st = write_ok(w, b, 4);
    cr_expect_eq(st.events, 4);
    cr_expect_eq(st.dead, 1);
    expect_gap_free_in_offset_order(conn);
    cr_expect_eq(kpbt_int(conn, "SELECT max(stream_version) FROM"
                                " eventcore_events WHERE stream_id = 's'"),
                 8);
    PQfinish(conn);
    kpb_batcher_destroy(b);
    kpb_writer_destroy(w);
    kpb_config_destroy(conf);
    free(ci);
}
