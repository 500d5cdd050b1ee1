/* The schema of sql/, against the throwaway PostgreSQL of scripts/test. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "migrate.h"

static const char *insert_1000 =
    "INSERT INTO eventcore_events (event_id, stream_id, event_type,"
    " event_data) SELECT gen_random_uuid(), 's' || (g % 10), 'T',"
    " jsonb_build_object('g', g) FROM generate_series(1, 1000) g";

/* The trap: ANALYZE on the empty table (autovacuum does it too) makes the
 * trigger's cached lookup plan a sequential scan for the whole session. */
static void analyze_empty_then_insert(const char *ci, long long *seq,
                                      long long *idx) {
    PGconn *conn = kpbt_pg(ci);
    kpbt_exec(conn, "ANALYZE eventcore_events");
    PQfinish(conn);
    conn = kpbt_pg(ci); /* a new session plans the trigger afresh */
    kpbt_exec(conn, "BEGIN");
    kpbt_exec(conn, insert_1000);
    *seq = kpbt_int(conn, "SELECT seq_scan FROM pg_stat_xact_user_tables"
                          " WHERE relname = 'eventcore_events'");
    *idx = kpbt_int(conn, "SELECT idx_scan FROM pg_stat_xact_user_tables"
                          " WHERE relname = 'eventcore_events'");
    kpbt_exec(conn, "COMMIT");
    PQfinish(conn);
}

Test(schema, keeps_the_index_lookup_after_an_empty_table_analyze,
     .timeout = 120) {
    char *ci = kpbt_db_new("plan", 1);
    long long seq, idx;
    analyze_empty_then_insert(ci, &seq, &idx);
    cr_expect_eq(seq, 0, "sequential scans by the trigger: %lld", seq);
    cr_expect_geq(idx, 1000, "index scans: %lld", idx);
    free(ci);
}

Test(schema, shows_the_trap_when_the_guard_is_removed, .timeout = 120) {
    /* The negative control: without the function's enable_seqscan = off the
     * same steps do scan sequentially, so the test above can fail. */
    char *ci = kpbt_db_new("plan_ctl", 1);
    PGconn *conn = kpbt_pg(ci);
    kpbt_exec(conn, "ALTER FUNCTION eventcore_assign_version() RESET ALL");
    PQfinish(conn);
    long long seq, idx;
    analyze_empty_then_insert(ci, &seq, &idx);
    cr_expect_gt(seq, 0, "expected sequential scans without the guard");
    free(ci);
}

Test(schema, assigns_gap_free_versions_per_stream_in_values_order,
     .timeout = 60) {
    char *ci = kpbt_db_new("versions", 1);
    PGconn *conn = kpbt_pg(ci);
    kpbt_exec(conn, insert_1000);
    kpbt_exec(conn, insert_1000);
    long long bad = kpbt_int(conn,
        "SELECT count(*) FROM (SELECT stream_id, count(*) c,"
        " min(stream_version) lo, max(stream_version) hi"
        " FROM eventcore_events GROUP BY 1) x WHERE lo <> 1 OR hi <> c");
    cr_expect_eq(bad, 0);
    /* versions follow VALUES order: event_data.g grows with the version */
    long long disorder = kpbt_int(conn,
        "SELECT count(*) FROM (SELECT (event_data->>'g')::int g, lag((event_data->>'g')::int)"
        " OVER (PARTITION BY stream_id ORDER BY stream_version) prev,"
        " xmin::text::bigint x, lag(xmin::text::bigint) OVER (PARTITION BY stream_id"
        " ORDER BY stream_version) px FROM eventcore_events) y"
        " WHERE x = px AND g < prev");
    cr_expect_eq(disorder, 0);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"), 2000);
    PQfinish(conn);
    free(ci);
}

/* Appends an event to stream s with stream_version @p version (SQL text). */
static PGresult *append_with_version(PGconn *conn, const char *version) {
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO eventcore_events (event_id, stream_id,"
             " stream_version, event_type, event_data) VALUES"
             " (gen_random_uuid(), 's', %s, 'T', '{}')",
             version);
    return PQexec(conn, sql);
}

static void append_ok(PGconn *conn, const char *version) {
    PGresult *res = append_with_version(conn, version);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s",
                 PQerrorMessage(conn));
    PQclear(res);
}

/* Migration 005: a version in the INSERT counts only in a transaction that
 * declares eventcore.explicit_versions; everyone else is numbered by the
 * trigger exactly as before, whatever they send. */
Test(schema, honours_explicit_versions_only_when_the_transaction_says_so,
     .timeout = 60) {
    char *ci = kpbt_db_new("explicit", 1);
    PGconn *conn = kpbt_pg(ci);
    append_ok(conn, "42"); /* not declared: the trigger numbers it 1 */
    cr_expect_eq(kpbt_int(conn, "SELECT max(stream_version) FROM"
                                " eventcore_events"),
                 1);
    kpbt_exec(conn, "BEGIN");
    kpbt_exec(conn, "SET LOCAL eventcore.explicit_versions = on");
    append_ok(conn, "2");    /* declared: kept as sent */
    append_ok(conn, "NULL"); /* declared but absent: the trigger, 3 */
    PGresult *res = append_with_version(conn, "3"); /* taken */
    cr_expect_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "23505");
    PQclear(res);
    kpbt_exec(conn, "ROLLBACK");
    kpbt_exec(conn, "BEGIN");
    kpbt_exec(conn, "SET LOCAL eventcore.explicit_versions = on");
    kpbt_exec(conn, "INSERT INTO eventcore_events (event_id, stream_id,"
                    " stream_version, event_type, event_data) VALUES"
                    " (gen_random_uuid(), 's', 2, 'T', '{}'),"
                    " (gen_random_uuid(), 's', NULL, 'T', '{}')");
    kpbt_exec(conn, "COMMIT");
    cr_expect_eq(kpbt_int(conn, "SELECT (string_agg(stream_version::text,"
                                " ',' ORDER BY stream_version) = '1,2,3')"
                                "::int FROM eventcore_events"),
                 1);
    /* the setting was local: the next transaction is numbered again */
    append_ok(conn, "99");
    cr_expect_eq(kpbt_int(conn, "SELECT max(stream_version) FROM"
                                " eventcore_events"),
                 4);
    PQfinish(conn);
    free(ci);
}

static PGresult *exec_raw(PGconn *conn, const char *sql) {
    return PQexec(conn, sql);
}

Test(schema, raises_version_conflict_when_the_expectation_is_wrong,
     .timeout = 60) {
    char *ci = kpbt_db_new("conflict", 1);
    PGconn *conn = kpbt_pg(ci);
    kpbt_exec(conn, "INSERT INTO eventcore_events (event_id, stream_id,"
                    " event_type, event_data) VALUES (gen_random_uuid(), 'a',"
                    " 'T', '{}'), (gen_random_uuid(), 'a', 'T', '{}')");
    /* right expectation: accepted, and it advances per row */
    kpbt_exec(conn, "BEGIN");
    kpbt_exec(conn, "SELECT set_config('eventcore.expected_versions',"
                    " '{\"a\": 2}', true)");
    kpbt_exec(conn, "INSERT INTO eventcore_events (event_id, stream_id,"
                    " event_type, event_data) VALUES (gen_random_uuid(), 'a',"
                    " 'T', '{}'), (gen_random_uuid(), 'a', 'T', '{}')");
    cr_expect_eq(kpbt_int(conn, "SELECT (current_setting("
                                "'eventcore.expected_versions')::jsonb->>'a')"
                                "::int"),
                 4);
    kpbt_exec(conn, "COMMIT");
    /* wrong expectation: P0001 with eventcore's message */
    kpbt_exec(conn, "BEGIN");
    kpbt_exec(conn, "SELECT set_config('eventcore.expected_versions',"
                    " '{\"a\": 1}', true)");
    PGresult *res = exec_raw(conn,
        "INSERT INTO eventcore_events (event_id, stream_id, event_type,"
        " event_data) VALUES (gen_random_uuid(), 'a', 'T', '{}')");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    cr_expect_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "P0001");
    cr_expect_str_eq(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
                     "version_conflict: stream \"a\" expected version 1,"
                     " actual 4");
    PQclear(res);
    kpbt_exec(conn, "ROLLBACK");
    cr_expect_eq(kpbt_int(conn, "SELECT max(stream_version) FROM"
                                " eventcore_events WHERE stream_id = 'a'"),
                 4);
    PQfinish(conn);
    free(ci);
}

Test(schema, refuses_update_and_delete_of_events, .timeout = 60) {
    char *ci = kpbt_db_new("immutable", 1);
    PGconn *conn = kpbt_pg(ci);
    kpbt_exec(conn, insert_1000);
    PGresult *res = exec_raw(conn, "UPDATE eventcore_events SET event_type"
                                   " = 'X' WHERE stream_version = 1");
    cr_expect_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
    res = exec_raw(conn, "DELETE FROM eventcore_events");
    cr_expect_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"),
                 1000);
    PQfinish(conn);
    free(ci);
}

Test(schema, applies_each_migration_once, .timeout = 60) {
    char *ci = kpbt_db_new("migrate", 0);
    PGconn *conn = kpbt_pg(ci);
    char err[1024];
    int applied = -1, pending = -1;
    cr_assert_eq(kpb_migrate_pending(conn, &pending, err, sizeof(err)), 0,
                 "%s", err);
    int total = 0;
    while (kpb_migrations[total].name)
        total++;
    cr_expect_eq(pending, total);
    cr_assert_eq(kpb_migrate_apply(conn, &applied, err, sizeof(err)), 0,
                 "%s", err);
    cr_expect_eq(applied, total);
    cr_assert_eq(kpb_migrate_apply(conn, &applied, err, sizeof(err)), 0,
                 "%s", err);
    cr_expect_eq(applied, 0);
    cr_assert_eq(kpb_migrate_pending(conn, &pending, err, sizeof(err)), 0);
    cr_expect_eq(pending, 0);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_migrations"),
                 total);
    PQfinish(conn);
    free(ci);
}

static int denied(PGconn *conn, const char *sql) {
    PGresult *res = PQexec(conn, sql);
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int ok = PQresultStatus(res) == PGRES_FATAL_ERROR && st &&
             !strcmp(st, "42501");
    PQclear(res);
    return ok;
}

Test(schema, gives_the_writer_role_select_and_insert_and_nothing_else,
     .timeout = 60) {
    char *ci = kpbt_db_new("role", 1);
    size_t n = strlen(ci) + 64;
    char *bridge = malloc(n);
    snprintf(bridge, n, "%s user=%s", ci, KPBT_BRIDGE_USER);
    PGconn *conn = kpbt_pg(bridge);
    /* what the bridge does */
    kpbt_exec(conn, "INSERT INTO eventcore_events (event_id, stream_id,"
                    " event_type, event_data) VALUES (gen_random_uuid(), 's',"
                    " 'T', '{}')");
    kpbt_exec(conn, "SELECT kpbridge_advance_offset('g', 't', 0, -1, 5)");
    kpbt_exec(conn, "SELECT kpbridge_advance_offset('g', 't', 0, 5, 9)");
    kpbt_exec(conn, "INSERT INTO kpbridge_dead_letters (topic, partition,"
                    " \"offset\", reason) VALUES ('t', 0, 1, 'x')");
    cr_expect_eq(kpbt_int(conn, "SELECT next_offset FROM kpbridge_offsets"),
                 9);
    /* and nothing else */
    cr_expect(denied(conn, "UPDATE kpbridge_offsets SET next_offset = 0"));
    cr_expect(denied(conn, "INSERT INTO kpbridge_offsets VALUES"
                           " ('g', 'u', 0, 1)"));
    cr_expect(denied(conn, "DELETE FROM kpbridge_dead_letters"));
    cr_expect(denied(conn, "UPDATE eventcore_events SET event_type = 'X'"));
    cr_expect(denied(conn, "CREATE TABLE x (a int)"));
    cr_expect(denied(conn, "DROP TABLE eventcore_events"));
    /* the fence: a stale position raises KB001 and moves nothing */
    PGresult *res = PQexec(conn, "SELECT kpbridge_advance_offset('g', 't',"
                                 " 0, 5, 12)");
    cr_expect_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "KB001");
    PQclear(res);
    cr_expect_eq(kpbt_int(conn, "SELECT next_offset FROM kpbridge_offsets"),
                 9);
    PQfinish(conn);
    free(bridge);
    free(ci);
}
