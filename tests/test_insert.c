/*
 * Unit tests of bridge/insert.c: statement planning and the SQL text.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h"
#include "insert.h"

static kpb_batcher_t *b;

static void setup(void) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
}

static void teardown(void) {
    kpb_batcher_destroy(b);
}

TestSuite(insert, .init = setup, .fini = teardown);

static int64_t next_offset;

static void add(const char *table, const char *stream, int64_t expected) {
    kpb_item_t it;
    memset(&it, 0, sizeof(it));
    size_t n = strlen(stream);
    it.ev.stream_id = kpb_arena_strndup(kpb_batcher_arena(b), stream, n);
    it.ev.stream_id_len = n;
    it.ev.event_type = "E";
    it.ev.event_type_len = 1;
    it.ev.payload = "{}";
    it.ev.payload_len = 2;
    it.ev.metadata = "{}";
    it.ev.metadata_len = 2;
    it.ev.expected_version = expected;
    it.topic = "orders";
    it.table = table;
    it.partition = 0;
    it.offset = next_offset++;
    kpb_batcher_add(b, &it, 0);
}

static void add_many(const char *table, const char *stream, int n) {
    for (int i = 0; i < n; i++)
        add(table, stream, -1);
}

/*
 * The rules every plan keeps: statements cover the batches in order without
 * gaps, hold at most max_rows rows (unless one batch alone is larger), never
 * two batches of one stream, never two tables; the rows add up.
 */
static void check_plan(const kpb_flush_t *f, const kpb_stmt_t *st,
                       uint32_t n, uint32_t max_rows) {
    uint32_t next = 0, rows_total = 0;
    for (uint32_t s = 0; s < n; s++) {
        cr_assert_eq(st[s].first, next, "statement %u starts at batch %u", s,
                     st[s].first);
        cr_assert_gt(st[s].count, 0);
        uint32_t rows = 0;
        for (uint32_t i = st[s].first; i < st[s].first + st[s].count; i++) {
            const kpb_sbatch_t *sb = &f->batches[i];
            rows += sb->count;
            cr_assert_str_eq(sb->table, f->batches[st[s].first].table,
                             "statement %u mixes tables", s);
            for (uint32_t k = st[s].first; k < i; k++)
                cr_assert_neq(f->batches[k].stream, sb->stream,
                              "statement %u holds stream %u twice", s,
                              sb->stream);
        }
        cr_assert_eq(st[s].rows, rows);
        cr_assert(rows <= max_rows || st[s].count == 1);
        rows_total += rows;
        next += st[s].count;
    }
    cr_assert_eq(next, f->batch_cnt);
    cr_assert_eq(rows_total, f->event_cnt);
}

Test(insert, plans_a_single_stream_of_2500_as_three_statements) {
    add_many("eventcore_events", "order-1", 2500);
    kpb_flush_t *f = kpb_batcher_take(b);
    kpb_stmt_t *st = NULL;
    uint32_t n = kpb_insert_plan(f, 1000, &st);
    cr_assert_eq(n, 3);
    cr_assert_eq(st[0].rows, 1000);
    cr_assert_eq(st[1].rows, 1000);
    cr_assert_eq(st[2].rows, 500);
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(st[i].count, 1);
        cr_assert_eq(st[i].first, i);
    }
    check_plan(f, st, n, 1000);
    free(st);
    kpb_flush_destroy(f);
}

Test(insert, packs_many_small_streams_into_few_statements) {
    char name[32];
    for (int s = 0; s < 600; s++) {
        snprintf(name, sizeof(name), "stream-%d", s);
        add_many("eventcore_events", name, 2);
    }
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->batch_cnt, 600);
    kpb_stmt_t *st = NULL;
    uint32_t n = kpb_insert_plan(f, 1000, &st);
    cr_assert_eq(n, 2);
    cr_assert_eq(st[0].count, 500);
    cr_assert_eq(st[0].rows, 1000);
    cr_assert_eq(st[1].first, 500);
    cr_assert_eq(st[1].count, 100);
    cr_assert_eq(st[1].rows, 200);
    check_plan(f, st, n, 1000);
    free(st);
    kpb_flush_destroy(f);
}

Test(insert, keeps_batch_order_and_does_not_split_a_batch) {
    add_many("eventcore_events", "a", 400);
    add_many("eventcore_events", "b", 400);
    add_many("eventcore_events", "c", 400);
    kpb_flush_t *f = kpb_batcher_take(b);
    kpb_stmt_t *st = NULL;
    uint32_t n = kpb_insert_plan(f, 1000, &st);
    cr_assert_eq(n, 2);
    cr_assert_eq(st[0].count, 2);
    cr_assert_eq(st[0].rows, 800);
    cr_assert_eq(st[1].count, 1);
    cr_assert_eq(st[1].rows, 400);
    check_plan(f, st, n, 1000);
    free(st);
    kpb_flush_destroy(f);
}

Test(insert, never_puts_two_batches_of_one_stream_in_one_statement) {
    add("eventcore_events", "a", -1);
    add("eventcore_events", "b", -1);
    add("eventcore_events", "a", 5); /* an expectation: a second batch of a */
    add("eventcore_events", "c", -1);
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->batch_cnt, 4);
    cr_assert_eq(f->batches[0].stream, f->batches[2].stream);
    kpb_stmt_t *st = NULL;
    uint32_t n = kpb_insert_plan(f, 1000, &st);
    cr_assert_eq(n, 2);
    cr_assert_eq(st[0].first, 0);
    cr_assert_eq(st[0].count, 2);
    cr_assert_eq(st[1].first, 2);
    cr_assert_eq(st[1].count, 2);
    check_plan(f, st, n, 1000);
    free(st);
    kpb_flush_destroy(f);
}

Test(insert, never_mixes_tables) {
    add("t1", "s1", -1);
    add("t1", "s2", -1);
    add("t2", "s3", -1);
    add("t1", "s4", -1);
    kpb_flush_t *f = kpb_batcher_take(b);
    kpb_stmt_t *st = NULL;
    uint32_t n = kpb_insert_plan(f, 1000, &st);
    cr_assert_eq(n, 3);
    cr_assert_eq(st[0].count, 2);
    cr_assert_eq(st[1].count, 1);
    cr_assert_str_eq(f->batches[st[1].first].table, "t2");
    cr_assert_eq(st[2].count, 1);
    check_plan(f, st, n, 1000);
    free(st);
    kpb_flush_destroy(f);
}

Test(insert, takes_tables_of_the_same_name_as_one) {
    /* each topic of a configuration holds its own copy of the table name */
    static char t1[] = "eventcore_events", t2[] = "eventcore_events";
    add(t1, "s1", -1);
    add(t2, "s2", -1);
    kpb_flush_t *f = kpb_batcher_take(b);
    kpb_stmt_t *st = NULL;
    uint32_t n = kpb_insert_plan(f, 1000, &st);
    cr_assert_eq(n, 1);
    cr_assert_eq(st[0].count, 2);
    free(st);
    kpb_flush_destroy(f);
}

Test(insert, respects_a_small_max_rows) {
    char name[32];
    for (int s = 0; s < 10; s++) {
        snprintf(name, sizeof(name), "s%d", s);
        add_many("eventcore_events", name, 3);
    }
    kpb_flush_t *f = kpb_batcher_take(b);
    kpb_stmt_t *st = NULL;
    uint32_t n = kpb_insert_plan(f, 7, &st);
    cr_assert_eq(n, 5); /* two batches of 3 per statement */
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(st[i].rows, 6);
    check_plan(f, st, n, 7);
    free(st);
    kpb_flush_destroy(f);
}

Test(insert, plans_nothing_for_a_flush_of_dead_letters_only) {
    kpb_item_t it;
    memset(&it, 0, sizeof(it));
    it.reason = KPB_REASON_INVALID_JSON;
    it.topic = "orders";
    it.table = "eventcore_events";
    it.ev.expected_version = -1;
    kpb_batcher_add(b, &it, 0);
    kpb_flush_t *f = kpb_batcher_take(b);
    kpb_stmt_t *st = NULL;
    uint32_t n = kpb_insert_plan(f, 1000, &st);
    cr_assert_eq(n, 0);
    cr_assert_not_null(st);
    free(st);
    kpb_flush_destroy(f);
}

Test(insert, plans_mixed_streams_within_the_rules) {
    char name[32];
    unsigned seed = 7;
    for (int i = 0; i < 5000; i++) {
        seed = seed * 1103515245u + 12345u;
        snprintf(name, sizeof(name), "s%u", (seed >> 16) % 37);
        add((seed >> 8) % 5 ? "t1" : "t2", name,
            (seed >> 4) % 50 ? -1 : (int64_t)i);
    }
    kpb_flush_t *f = kpb_batcher_take(b);
    kpb_stmt_t *st = NULL;
    uint32_t n = kpb_insert_plan(f, 1000, &st);
    cr_assert_gt(n, 0);
    check_plan(f, st, n, 1000);
    free(st);
    kpb_flush_destroy(f);
}

Test(insert_sql, builds_one_row_exactly) {
    kpb_buf_t sql;
    kpb_buf_init(&sql);
    kpb_insert_sql(&sql, "\"eventcore_events\"", 1);
    cr_assert_str_eq(sql.data,
                     "INSERT INTO \"eventcore_events\" (event_id, stream_id, "
                     "event_type, event_data, metadata) VALUES "
                     "($1::uuid,$2::text,$3::text,$4::text::jsonb,"
                     "$5::text::jsonb)");
    cr_assert_eq(sql.len, strlen(sql.data));
    kpb_buf_fini(&sql);
}

static unsigned count_of(const char *s, const char *needle) {
    unsigned n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

Test(insert_sql, numbers_parameters_across_three_rows) {
    kpb_buf_t sql;
    kpb_buf_init(&sql);
    kpb_buf_puts(&sql, "left over from before");
    kpb_insert_sql(&sql, "\"ev\"", 3);
    cr_assert(!strncmp(sql.data, "INSERT INTO \"ev\" (", 18), "%s", sql.data);
    const char *tail = "($11::uuid,$12::text,$13::text,$14::text::jsonb,"
                       "$15::text::jsonb)";
    size_t tl = strlen(tail);
    cr_assert_geq(sql.len, tl);
    cr_assert_str_eq(sql.data + sql.len - tl, tail);
    cr_assert_null(strstr(sql.data, "$16"));
    cr_assert_not_null(strstr(sql.data, "$5::text::jsonb),($6::uuid"));
    cr_assert_eq(count_of(sql.data, "::uuid"), 3);
    cr_assert_eq(count_of(sql.data, "),("), 2);
    kpb_buf_fini(&sql);
}

Test(insert_sql, builds_a_thousand_rows) {
    kpb_buf_t sql;
    kpb_buf_init(&sql);
    kpb_insert_sql(&sql, "\"ev\"", 1000);
    cr_assert_not_null(strstr(sql.data, "$5000::text::jsonb)"));
    cr_assert_null(strstr(sql.data, "$5001"));
    cr_assert_eq(count_of(sql.data, "::uuid"), 1000);
    kpb_buf_fini(&sql);
}

Test(insert_sql, builds_one_dead_letter_row_exactly) {
    kpb_buf_t sql;
    kpb_buf_init(&sql);
    kpb_insert_dead_sql(&sql, "\"kpbridge_dead_letters\"", 1);
    cr_assert_str_eq(
        sql.data,
        "INSERT INTO \"kpbridge_dead_letters\" (topic, partition, \"offset\", "
        "key, value, headers, reason, sqlstate, detail) VALUES "
        "($1::text,$2::int4,$3::int8,$4::bytea,$5::bytea,"
        "coalesce(($6::text::jsonb)->'headers','{}'),$7::text,$8::text,"
        "$9::text)");
    kpb_buf_fini(&sql);
}

Test(insert_sql, numbers_dead_letter_parameters_across_rows) {
    kpb_buf_t sql;
    kpb_buf_init(&sql);
    kpb_insert_dead_sql(&sql, "\"dl\"", 2);
    const char *tail = "($10::text,$11::int4,$12::int8,$13::bytea,$14::bytea,"
                       "coalesce(($15::text::jsonb)->'headers','{}'),"
                       "$16::text,$17::text,$18::text)";
    size_t tl = strlen(tail);
    cr_assert_geq(sql.len, tl);
    cr_assert_str_eq(sql.data + sql.len - tl, tail);
    cr_assert_null(strstr(sql.data, "$19"));
    cr_assert_eq(count_of(sql.data, "),("), 1);
    kpb_buf_fini(&sql);
}
