/*
 * Unit tests of bridge/batcher.c: per-stream batches, dead letters,
 * partition offsets, linger, references and dropping a partition.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h"

static kpb_batcher_t *b;

static void teardown(void) {
    kpb_batcher_destroy(b);
    b = NULL;
}

TestSuite(batcher, .fini = teardown);

static kpb_item_t item_of(const char *topic, int32_t partition,
                          int64_t offset, const char *table,
                          const char *stream) {
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
    it.ev.expected_version = -1;
    it.topic = topic;
    it.table = table;
    it.partition = partition;
    it.offset = offset;
    it.next = 12345; /* ignored by add */
    return it;
}

static void add_event(int32_t partition, int64_t offset, const char *stream) {
    kpb_item_t it = item_of("orders", partition, offset, "eventcore_events",
                            stream);
    kpb_batcher_add(b, &it, 0);
}

static void add_dead(int32_t partition, int64_t offset) {
    kpb_item_t it = item_of("orders", partition, offset, "eventcore_events",
                            "");
    it.ev.stream_id = NULL;
    it.ev.stream_id_len = 0;
    it.reason = KPB_REASON_INVALID_JSON;
    kpb_batcher_add(b, &it, 0);
}

static int stream_is(const kpb_item_t *it, const char *stream) {
    return it->ev.stream_id_len == strlen(stream) &&
           !memcmp(it->ev.stream_id, stream, it->ev.stream_id_len);
}

/*
 * Walks every batch chain and checks what must always hold: a chain has
 * `count` items ending at `last`, all events of one stream and table in
 * rising offset order (within a topic partition), every event item is in
 * exactly one chain and no dead letter is in any; stream numbers are dense.
 */
static void check_flush(const kpb_flush_t *f) {
    char *seen = calloc(f->item_cnt ? f->item_cnt : 1, 1);
    uint32_t events = 0;
    char *stream_used = calloc(f->stream_cnt ? f->stream_cnt : 1, 1);
    for (uint32_t i = 0; i < f->batch_cnt; i++) {
        const kpb_sbatch_t *sb = &f->batches[i];
        cr_assert_lt(sb->stream, f->stream_cnt);
        stream_used[sb->stream] = 1;
        const kpb_item_t *first = &f->items[sb->first];
        uint32_t n = 0, idx = sb->first, prev = KPB_NONE;
        while (idx != KPB_NONE) {
            cr_assert_lt(idx, f->item_cnt);
            const kpb_item_t *it = &f->items[idx];
            cr_assert_eq(it->reason, KPB_REASON_NONE);
            cr_assert_not(seen[idx], "item %u in two chains", idx);
            seen[idx] = 1;
            cr_assert_str_eq(it->table, sb->table);
            cr_assert_eq(it->ev.stream_id_len, first->ev.stream_id_len);
            cr_assert_arr_eq(it->ev.stream_id, first->ev.stream_id,
                             it->ev.stream_id_len);
            if (prev != KPB_NONE &&
                f->items[prev].partition == it->partition &&
                !strcmp(f->items[prev].topic, it->topic))
                cr_assert_gt(it->offset, f->items[prev].offset);
            prev = idx;
            idx = it->next;
            n++;
        }
        cr_assert_eq(n, sb->count, "batch %u: chain %u, count %u", i, n,
                     sb->count);
        cr_assert_eq(prev, sb->last);
        events += n;
    }
    cr_assert_eq(events, f->event_cnt);
    for (uint32_t d = 0; d < f->dead_cnt; d++) {
        cr_assert_neq(f->items[f->dead[d]].reason, KPB_REASON_NONE);
        cr_assert_not(seen[f->dead[d]]);
        seen[f->dead[d]] = 1;
    }
    for (uint32_t i = 0; i < f->item_cnt; i++)
        cr_assert(seen[i], "item %u neither in a batch nor dead", i);
    for (uint32_t s = 0; s < f->stream_cnt; s++)
        cr_assert(stream_used[s], "stream number %u unused", s);
    free(seen);
    free(stream_used);
}

Test(batcher, keeps_per_stream_order) {
    b = kpb_batcher_new(1000, 1000, 20, NULL);
    const char *streams[] = {"a", "b", "c"};
    for (int i = 0; i < 30; i++)
        add_event(0, i, streams[(i * 7) % 3]);
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_not_null(f);
    cr_assert_eq(f->item_cnt, 30);
    cr_assert_eq(f->event_cnt, 30);
    cr_assert_eq(f->batch_cnt, 3);
    cr_assert_eq(f->stream_cnt, 3);
    /* batches in the order their streams first appeared */
    cr_assert(stream_is(&f->items[f->batches[0].first], "a"));
    cr_assert(stream_is(&f->items[f->batches[1].first], "b"));
    cr_assert(stream_is(&f->items[f->batches[2].first], "c"));
    for (uint32_t i = 0; i < 3; i++) {
        int64_t expect = -1;
        uint32_t n = 0;
        for (uint32_t idx = f->batches[i].first; idx != KPB_NONE;
             idx = f->items[idx].next) {
            const kpb_item_t *it = &f->items[idx];
            cr_assert(stream_is(it, streams[(it->offset * 7) % 3]));
            cr_assert_gt(it->offset, expect);
            expect = it->offset;
            n++;
        }
        cr_assert_eq(n, 10);
        cr_assert_eq(f->batches[i].count, 10);
    }
    check_flush(f);
    kpb_flush_destroy(f);
}

Test(batcher, splits_a_stream_at_max_events) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    for (int i = 0; i < 2500; i++)
        add_event(0, i, "order-1");
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->batch_cnt, 3);
    cr_assert_eq(f->batches[0].count, 1000);
    cr_assert_eq(f->batches[1].count, 1000);
    cr_assert_eq(f->batches[2].count, 500);
    cr_assert_eq(f->stream_cnt, 1);
    for (uint32_t i = 0; i < 3; i++)
        cr_assert_eq(f->batches[i].stream, 0);
    /* the batches continue each other: offsets 0..2499 in order */
    int64_t expect = 0;
    for (uint32_t i = 0; i < 3; i++)
        for (uint32_t idx = f->batches[i].first; idx != KPB_NONE;
             idx = f->items[idx].next)
            cr_assert_eq(f->items[idx].offset, expect++);
    cr_assert_eq(expect, 2500);
    check_flush(f);
    kpb_flush_destroy(f);
}

Test(batcher, splits_at_a_small_max_events) {
    b = kpb_batcher_new(3, 3, 60000, NULL);
    for (int i = 0; i < 7; i++)
        add_event(0, i, "s");
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->batch_cnt, 3);
    cr_assert_eq(f->batches[0].count, 3);
    cr_assert_eq(f->batches[1].count, 3);
    cr_assert_eq(f->batches[2].count, 1);
    check_flush(f);
    kpb_flush_destroy(f);
}

Test(batcher, is_due_at_max_events_items) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    cr_assert_not(kpb_batcher_due(b, 0));
    for (int i = 0; i < 999; i++)
        add_event(0, i, "order-1");
    cr_assert_eq(kpb_batcher_count(b), 999);
    cr_assert_not(kpb_batcher_due(b, 0));
    add_event(0, 999, "order-1");
    cr_assert_eq(kpb_batcher_count(b), 1000);
    cr_assert(kpb_batcher_due(b, 0));
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->batch_cnt, 1);
    cr_assert_eq(f->batches[0].count, 1000);
    cr_assert_not(kpb_batcher_due(b, 0));
    cr_assert_eq(kpb_batcher_count(b), 0);
    kpb_flush_destroy(f);
}

/* A flush holds several stream batches: due at flush_events records, each
 * batch still cut at max_events. */
Test(batcher, is_due_at_flush_events_not_at_max_events) {
    b = kpb_batcher_new(3, 8, 60000, NULL);
    for (int i = 0; i < 7; i++)
        add_event(0, i, i % 2 ? "odd" : "even");
    cr_assert_eq(kpb_batcher_count(b), 7);
    cr_assert_not(kpb_batcher_due(b, 0));
    add_event(0, 7, "odd");
    cr_assert(kpb_batcher_due(b, 0));
    kpb_flush_t *f = kpb_batcher_take(b);
    /* even: 0 2 4 6 -> 3 + 1; odd: 1 3 5 7 -> 3 + 1 */
    cr_assert_eq(f->item_cnt, 8);
    cr_assert_eq(f->batch_cnt, 4);
    uint32_t rows = 0;
    for (uint32_t i = 0; i < f->batch_cnt; i++) {
        cr_assert_leq(f->batches[i].count, 3);
        rows += f->batches[i].count;
    }
    cr_assert_eq(rows, 8);
    kpb_flush_destroy(f);
}

/* Large records end a flush before flush_events do: 8 records of 1 MiB
 * reach KPB_FLUSH_BYTES, and dropping a partition takes its bytes away. */
Test(batcher, is_due_at_flush_bytes) {
    b = kpb_batcher_new(1000, 4000, 60000, NULL);
    const size_t mib = 1u << 20;
    cr_assert_eq(KPB_FLUSH_BYTES, 8 * mib);
    for (int i = 0; i < 7; i++) {
        kpb_item_t it = item_of("orders", i % 2, i, "eventcore_events", "s");
        it.value_len = mib - 16;
        it.key_len = 16;
        kpb_batcher_add(b, &it, 0);
        cr_assert_not(kpb_batcher_due(b, 0), "due after %d records", i + 1);
    }
    kpb_item_t it = item_of("orders", 1, 7, "eventcore_events", "s");
    it.value_len = mib;
    kpb_batcher_add(b, &it, 0);
    cr_assert(kpb_batcher_due(b, 0));
    /* partition 1 held 4 of the 8 MiB */
    cr_assert_eq(kpb_batcher_drop_partition(b, "orders", 1), 4);
    cr_assert_not(kpb_batcher_due(b, 0));
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->bytes, 4 * mib);
    kpb_flush_destroy(f);
}

Test(batcher, counts_dead_letters_towards_due) {
    b = kpb_batcher_new(10, 10, 60000, NULL);
    for (int i = 0; i < 9; i++)
        add_dead(0, i);
    cr_assert_not(kpb_batcher_due(b, 0));
    add_event(0, 9, "s");
    cr_assert(kpb_batcher_due(b, 0));
}

Test(batcher, starts_a_new_batch_at_an_expected_version) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    add_event(0, 0, "a");
    add_event(0, 1, "a");
    kpb_item_t it = item_of("orders", 0, 2, "eventcore_events", "a");
    it.ev.expected_version = 2;
    kpb_batcher_add(b, &it, 0);
    add_event(0, 3, "a");
    it = item_of("orders", 0, 4, "eventcore_events", "a");
    it.ev.expected_version = 7;
    kpb_batcher_add(b, &it, 0);
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->batch_cnt, 3);
    cr_assert_eq(f->batches[0].count, 2);
    cr_assert_eq(f->batches[1].count, 2);
    cr_assert_eq(f->batches[2].count, 1);
    cr_assert_eq(f->items[f->batches[1].first].offset, 2);
    cr_assert_eq(f->items[f->batches[1].first].ev.expected_version, 2);
    cr_assert_eq(f->items[f->batches[2].first].ev.expected_version, 7);
    cr_assert_eq(f->stream_cnt, 1);
    cr_assert_eq(f->batches[1].stream, f->batches[0].stream);
    check_flush(f);
    kpb_flush_destroy(f);
}

Test(batcher, takes_different_tables_as_different_streams) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    kpb_item_t it = item_of("orders", 0, 0, "t1", "s");
    kpb_batcher_add(b, &it, 0);
    it = item_of("orders", 0, 1, "t2", "s");
    kpb_batcher_add(b, &it, 0);
    it = item_of("orders", 0, 2, "t1", "s");
    kpb_batcher_add(b, &it, 0);
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->batch_cnt, 2);
    cr_assert_eq(f->stream_cnt, 2);
    cr_assert_neq(f->batches[0].stream, f->batches[1].stream);
    cr_assert_str_eq(f->batches[0].table, "t1");
    cr_assert_eq(f->batches[0].count, 2);
    cr_assert_str_eq(f->batches[1].table, "t2");
    cr_assert_eq(f->batches[1].count, 1);
    check_flush(f);
    kpb_flush_destroy(f);
}

Test(batcher, takes_one_table_name_held_twice_as_one_table) {
    /* two topics writing into one table each hold a copy of its name */
    static char t1[] = "eventcore_events", t2[] = "eventcore_events";
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    kpb_item_t it = item_of("orders", 0, 0, t1, "s");
    kpb_batcher_add(b, &it, 0);
    it = item_of("payments", 0, 0, t2, "s");
    kpb_batcher_add(b, &it, 0);
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->batch_cnt, 1);
    cr_assert_eq(f->stream_cnt, 1);
    cr_assert_eq(f->batches[0].count, 2);
    cr_assert_eq(f->part_cnt, 2);
    check_flush(f);
    kpb_flush_destroy(f);
}

Test(batcher, sends_dead_letters_to_dead_and_not_into_batches) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    add_event(0, 0, "a");
    add_dead(0, 1);
    add_event(0, 2, "a");
    add_dead(0, 3);
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->item_cnt, 4);
    cr_assert_eq(f->event_cnt, 2);
    cr_assert_eq(f->dead_cnt, 2);
    cr_assert_eq(f->items[f->dead[0]].offset, 1);
    cr_assert_eq(f->items[f->dead[1]].offset, 3);
    cr_assert_eq(f->items[f->dead[0]].reason, KPB_REASON_INVALID_JSON);
    cr_assert_eq(f->batch_cnt, 1);
    cr_assert_eq(f->batches[0].count, 2);
    check_flush(f);
    kpb_flush_destroy(f);
}

Test(batcher, tracks_each_partitions_first_and_next_offset) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    add_event(0, 5, "a");
    add_event(1, 100, "b");
    add_event(0, 9, "a");
    add_dead(0, 12); /* a dead letter is consumed too */
    add_event(0, 7, "c");
    kpb_item_t it = item_of("payments", 0, 3, "eventcore_events", "p");
    kpb_batcher_add(b, &it, 0);
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->part_cnt, 3);
    const kpb_fpart_t *p0 = NULL, *p1 = NULL, *pay = NULL;
    for (uint32_t i = 0; i < f->part_cnt; i++) {
        const kpb_fpart_t *p = &f->parts[i];
        if (!strcmp(p->topic, "orders") && p->partition == 0)
            p0 = p;
        else if (!strcmp(p->topic, "orders") && p->partition == 1)
            p1 = p;
        else if (!strcmp(p->topic, "payments") && p->partition == 0)
            pay = p;
    }
    cr_assert_not_null(p0);
    cr_assert_not_null(p1);
    cr_assert_not_null(pay);
    cr_assert_eq(p0->first_offset, 5);
    cr_assert_eq(p0->next_offset, 13);
    cr_assert_eq(p1->first_offset, 100);
    cr_assert_eq(p1->next_offset, 101);
    cr_assert_eq(pay->first_offset, 3);
    cr_assert_eq(pay->next_offset, 4);
    kpb_flush_destroy(f);
}

Test(batcher, is_due_after_linger_ms) {
    b = kpb_batcher_new(1000, 1000, 20, NULL);
    cr_assert_eq(kpb_batcher_wait_ms(b, 1000), -1);
    cr_assert_not(kpb_batcher_due(b, 1000));
    kpb_item_t it = item_of("orders", 0, 0, "eventcore_events", "a");
    kpb_batcher_add(b, &it, 1000);
    cr_assert_eq(kpb_batcher_wait_ms(b, 1000), 20);
    cr_assert_not(kpb_batcher_due(b, 1000));
    it = item_of("orders", 0, 1, "eventcore_events", "a");
    kpb_batcher_add(b, &it, 1012); /* a later record does not extend it */
    cr_assert_eq(kpb_batcher_wait_ms(b, 1015), 5);
    cr_assert_not(kpb_batcher_due(b, 1019));
    cr_assert_eq(kpb_batcher_wait_ms(b, 1019), 1);
    cr_assert(kpb_batcher_due(b, 1020));
    cr_assert_eq(kpb_batcher_wait_ms(b, 1020), 0);
    cr_assert_eq(kpb_batcher_wait_ms(b, 5000), 0);
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->first_ms, 1000);
    kpb_flush_destroy(f);
    /* the next flush lingers from its own first record */
    cr_assert_eq(kpb_batcher_wait_ms(b, 2000), -1);
    it = item_of("orders", 0, 2, "eventcore_events", "a");
    kpb_batcher_add(b, &it, 2000);
    cr_assert_eq(kpb_batcher_wait_ms(b, 2003), 17);
    cr_assert_not(kpb_batcher_due(b, 2019));
    cr_assert(kpb_batcher_due(b, 2020));
}

Test(batcher, with_zero_linger_is_due_at_once) {
    b = kpb_batcher_new(1000, 1000, 0, NULL);
    add_event(0, 0, "a");
    cr_assert(kpb_batcher_due(b, 0));
    cr_assert_eq(kpb_batcher_wait_ms(b, 0), 0);
}

Test(batcher, take_returns_null_when_empty) {
    b = kpb_batcher_new(1000, 1000, 20, NULL);
    cr_assert_null(kpb_batcher_take(b));
    add_event(0, 0, "a");
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_not_null(f);
    cr_assert_eq(f->item_cnt, 1);
    cr_assert_null(kpb_batcher_take(b));
    kpb_flush_destroy(f);
}

Test(batcher, starts_a_fresh_flush_after_take) {
    b = kpb_batcher_new(1000, 1000, 20, NULL);
    add_event(0, 0, "a");
    kpb_flush_t *f1 = kpb_batcher_take(b);
    add_event(0, 1, "a");
    add_event(0, 2, "b");
    kpb_flush_t *f2 = kpb_batcher_take(b);
    cr_assert_neq(f1, f2);
    cr_assert_eq(f1->item_cnt, 1);
    cr_assert_eq(f2->item_cnt, 2);
    cr_assert_eq(f2->batch_cnt, 2);
    cr_assert_eq(f2->parts[0].first_offset, 1);
    cr_assert_eq(f2->parts[0].next_offset, 3);
    /* the first flush's bytes are still there */
    cr_assert(stream_is(&f1->items[0], "a"));
    check_flush(f2);
    kpb_flush_destroy(f1);
    kpb_flush_destroy(f2);
}

static int freed[64];

static void count_free(void *ref) {
    int *slot = ref;
    (*slot)++;
}

Test(batcher, frees_every_ref_exactly_once_on_flush_destroy) {
    memset(freed, 0, sizeof(freed));
    b = kpb_batcher_new(1000, 1000, 20, count_free);
    for (int i = 0; i < 40; i++) {
        add_event(0, i, "a");
        kpb_batcher_keep(b, &freed[i]);
    }
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->ref_cnt, 40);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(freed[i], 0, "ref %d freed before destroy", i);
    kpb_flush_destroy(f);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(freed[i], 1, "ref %d freed %d times", i, freed[i]);
    /* refs of the next flush belong to it alone */
    add_event(0, 40, "a");
    kpb_batcher_keep(b, &freed[40]);
    f = kpb_batcher_take(b);
    kpb_flush_destroy(f);
    cr_assert_eq(freed[40], 1);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(freed[i], 1);
    kpb_flush_destroy(NULL);
}

Test(batcher, frees_refs_still_held_when_destroyed) {
    memset(freed, 0, sizeof(freed));
    b = kpb_batcher_new(1000, 1000, 20, count_free);
    add_event(0, 0, "a");
    kpb_batcher_keep(b, &freed[0]);
    add_event(0, 1, "a");
    kpb_batcher_keep(b, &freed[1]);
    kpb_batcher_destroy(b);
    b = NULL;
    cr_assert_eq(freed[0], 1);
    cr_assert_eq(freed[1], 1);
    kpb_batcher_destroy(NULL);
}

Test(batcher, drop_partition_removes_exactly_that_partitions_records) {
    memset(freed, 0, sizeof(freed));
    b = kpb_batcher_new(3, 3, 60000, count_free);
    /* streams spread over both partitions, interleaved */
    const char *streams[] = {"a", "b", "c", "d"};
    int64_t off[2] = {0, 0};
    for (int i = 0; i < 40; i++) {
        int32_t part = (i % 5) < 2 ? 0 : 1;
        if (i % 11 == 3)
            add_dead(part, off[part]++);
        else
            add_event(part, off[part]++, streams[i % 4]);
        kpb_batcher_keep(b, &freed[i]);
    }
    kpb_flush_t *f = kpb_batcher_take(b);
    uint32_t before = f->item_cnt;
    uint32_t p1_items = 0, p1_dead = 0;
    int64_t p1_offsets[40];
    for (uint32_t i = 0; i < f->item_cnt; i++)
        if (f->items[i].partition == 1) {
            p1_offsets[p1_items++] = f->items[i].offset;
            if (f->items[i].reason)
                p1_dead++;
        }
    check_flush(f);

    uint32_t dropped = kpb_flush_drop_partition(f, "orders", 0, 3);
    cr_assert_eq(dropped, before - p1_items);
    cr_assert_eq(f->item_cnt, p1_items);
    cr_assert_eq(f->dead_cnt, p1_dead);
    cr_assert_eq(f->event_cnt, p1_items - p1_dead);
    /* what is left keeps its Kafka order */
    for (uint32_t i = 0; i < f->item_cnt; i++) {
        cr_assert_eq(f->items[i].partition, 1);
        cr_assert_eq(f->items[i].offset, p1_offsets[i]);
    }
    /* the batches are rebuilt: chains are whole and max_events holds */
    check_flush(f);
    for (uint32_t i = 0; i < f->batch_cnt; i++)
        cr_assert_leq(f->batches[i].count, 3);
    cr_assert_eq(f->part_cnt, 1);
    cr_assert_eq(f->parts[0].partition, 1);
    cr_assert_eq(f->parts[0].first_offset, 0);
    cr_assert_eq(f->parts[0].next_offset, p1_items);
    /* dropping an absent partition changes nothing */
    cr_assert_eq(kpb_flush_drop_partition(f, "orders", 7, 3), 0);
    cr_assert_eq(f->item_cnt, p1_items);
    check_flush(f);
    /* references stay until the flush goes, then go once */
    cr_assert_eq(freed[0], 0);
    kpb_flush_destroy(f);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(freed[i], 1);
}

Test(batcher, drop_partition_of_another_topic_keeps_same_numbered_ones) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    add_event(0, 0, "a");
    kpb_item_t it = item_of("payments", 0, 0, "eventcore_events", "a");
    kpb_batcher_add(b, &it, 0);
    add_event(0, 1, "a");
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->batch_cnt, 1);
    cr_assert_eq(f->batches[0].count, 3);
    cr_assert_eq(kpb_flush_drop_partition(f, "payments", 0, 1000), 1);
    cr_assert_eq(f->item_cnt, 2);
    cr_assert_eq(f->batch_cnt, 1);
    cr_assert_eq(f->batches[0].count, 2);
    cr_assert_str_eq(f->items[0].topic, "orders");
    cr_assert_str_eq(f->items[1].topic, "orders");
    check_flush(f);
    kpb_flush_destroy(f);
}

Test(batcher, drop_partition_can_empty_a_flush) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    add_event(0, 0, "a");
    add_dead(0, 1);
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(kpb_flush_drop_partition(f, "orders", 0, 1000), 2);
    cr_assert_eq(f->item_cnt, 0);
    cr_assert_eq(f->batch_cnt, 0);
    cr_assert_eq(f->dead_cnt, 0);
    cr_assert_eq(f->part_cnt, 0);
    cr_assert_eq(f->stream_cnt, 0);
    kpb_flush_destroy(f);
}

Test(batcher, drops_a_partition_from_what_it_holds) {
    memset(freed, 0, sizeof(freed));
    b = kpb_batcher_new(1000, 1000, 20, count_free);
    kpb_item_t it = item_of("orders", 0, 0, "eventcore_events", "a");
    kpb_batcher_add(b, &it, 100);
    kpb_batcher_keep(b, &freed[0]);
    it = item_of("orders", 1, 0, "eventcore_events", "a");
    kpb_batcher_add(b, &it, 105);
    kpb_batcher_keep(b, &freed[1]);
    it = item_of("orders", 0, 1, "eventcore_events", "b");
    kpb_batcher_add(b, &it, 110);
    kpb_batcher_keep(b, &freed[2]);
    cr_assert_eq(kpb_batcher_drop_partition(b, "orders", 0), 2);
    cr_assert_eq(kpb_batcher_count(b), 1);
    cr_assert_eq(kpb_batcher_wait_ms(b, 110), 10);
    cr_assert_eq(freed[0], 0, "references live until the flush goes");
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->item_cnt, 1);
    cr_assert_eq(f->items[0].partition, 1);
    cr_assert_eq(f->batch_cnt, 1);
    cr_assert_eq(f->part_cnt, 1);
    check_flush(f);
    kpb_flush_destroy(f);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(freed[i], 1);
}

Test(batcher, lingers_afresh_after_dropping_everything) {
    b = kpb_batcher_new(1000, 1000, 20, NULL);
    kpb_item_t it = item_of("orders", 0, 0, "eventcore_events", "a");
    kpb_batcher_add(b, &it, 100);
    cr_assert_eq(kpb_batcher_drop_partition(b, "orders", 0), 1);
    cr_assert_eq(kpb_batcher_count(b), 0);
    cr_assert_eq(kpb_batcher_wait_ms(b, 500), -1);
    cr_assert_not(kpb_batcher_due(b, 500));
    it = item_of("orders", 0, 1, "eventcore_events", "a");
    kpb_batcher_add(b, &it, 500);
    cr_assert_eq(kpb_batcher_wait_ms(b, 505), 15);
    cr_assert_not(kpb_batcher_due(b, 505));
}

Test(batcher, handles_100000_distinct_streams) {
    b = kpb_batcher_new(1000, 1000, 60000, NULL);
    enum { N = 100000 };
    char name[32];
    for (int round = 0; round < 2; round++)
        for (int s = 0; s < N; s++) {
            snprintf(name, sizeof(name), "stream-%d", s);
            add_event(0, (int64_t)round * N + s, name);
        }
    kpb_flush_t *f = kpb_batcher_take(b);
    cr_assert_eq(f->item_cnt, 2 * N);
    cr_assert_eq(f->batch_cnt, N);
    cr_assert_eq(f->stream_cnt, N);
    for (uint32_t i = 0; i < f->batch_cnt; i++) {
        const kpb_sbatch_t *sb = &f->batches[i];
        snprintf(name, sizeof(name), "stream-%u", i);
        cr_assert_eq(sb->count, 2, "batch %u holds %u", i, sb->count);
        cr_assert_eq(sb->stream, i);
        const kpb_item_t *a = &f->items[sb->first];
        const kpb_item_t *z = &f->items[sb->last];
        cr_assert(stream_is(a, name));
        cr_assert(stream_is(z, name));
        cr_assert_eq(a->offset, (int64_t)i);
        cr_assert_eq(z->offset, (int64_t)N + i);
        cr_assert_eq(a->next, sb->last);
    }
    check_flush(f);
    kpb_flush_destroy(f);
}
