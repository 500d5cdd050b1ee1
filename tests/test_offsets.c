/*
 * Unit tests of bridge/offsets.c: the per-partition positions.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "offsets.h"

static kpb_offsets_t o;

static void setup(void) {
    kpb_offsets_init(&o);
}

static void teardown(void) {
    kpb_offsets_fini(&o);
}

TestSuite(offsets, .init = setup, .fini = teardown);

Test(offsets, assign_starts_a_partition_from_its_row) {
    kpb_pos_t *p = kpb_offsets_assign(&o, "orders", 3, 120);
    cr_assert_not_null(p);
    cr_assert_str_eq(p->topic, "orders");
    cr_assert_eq(p->partition, 3);
    cr_assert_eq(p->from, 120);
    cr_assert_eq(p->read, -1);
    cr_assert_eq(p->end, -1);
    cr_assert_eq(p->at_end, 0);
    cr_assert_eq(o.cnt, 1);
}

Test(offsets, find_matches_topic_and_partition) {
    kpb_offsets_assign(&o, "orders", 0, -1);
    kpb_offsets_assign(&o, "orders", 1, 5);
    kpb_offsets_assign(&o, "payments", 0, 9);
    /* a different pointer with the same text finds it too */
    char name[] = "orders";
    kpb_pos_t *p = kpb_offsets_find(&o, name, 1);
    cr_assert_not_null(p);
    cr_assert_eq(p->from, 5);
    p = kpb_offsets_find(&o, "payments", 0);
    cr_assert_not_null(p);
    cr_assert_eq(p->from, 9);
    cr_assert_null(kpb_offsets_find(&o, "payments", 1));
    cr_assert_null(kpb_offsets_find(&o, "refunds", 0));
}

Test(offsets, assigning_again_resets_the_entry) {
    kpb_offsets_assign(&o, "orders", 0, 10);
    kpb_offsets_read(&o, "orders", 0, 14);
    kpb_offsets_eof(&o, "orders", 0, 15);
    cr_assert(kpb_offsets_all_at_end(&o));
    kpb_pos_t *p = kpb_offsets_assign(&o, "orders", 0, 30);
    cr_assert_eq(o.cnt, 1, "no duplicate entry");
    cr_assert_eq(p->from, 30);
    cr_assert_eq(p->read, -1);
    cr_assert_eq(p->end, -1);
    cr_assert_eq(p->at_end, 0);
}

Test(offsets, revoke_forgets_exactly_that_partition) {
    kpb_offsets_assign(&o, "orders", 0, 1);
    kpb_offsets_assign(&o, "orders", 1, 2);
    kpb_offsets_assign(&o, "orders", 2, 3);
    kpb_offsets_revoke(&o, "orders", 0);
    cr_assert_eq(o.cnt, 2);
    cr_assert_null(kpb_offsets_find(&o, "orders", 0));
    cr_assert_eq(kpb_offsets_find(&o, "orders", 1)->from, 2);
    cr_assert_eq(kpb_offsets_find(&o, "orders", 2)->from, 3);
    /* revoking what is not assigned changes nothing */
    kpb_offsets_revoke(&o, "orders", 7);
    cr_assert_eq(o.cnt, 2);
    kpb_offsets_revoke(&o, "orders", 2);
    kpb_offsets_revoke(&o, "orders", 1);
    cr_assert_eq(o.cnt, 0);
}

Test(offsets, grows_past_its_first_capacity) {
    for (int i = 0; i < 100; i++)
        kpb_offsets_assign(&o, "orders", i, i * 10);
    cr_assert_eq(o.cnt, 100);
    for (int i = 0; i < 100; i++) {
        kpb_pos_t *p = kpb_offsets_find(&o, "orders", i);
        cr_assert_not_null(p);
        cr_assert_eq(p->from, i * 10);
    }
}

Test(offsets, read_keeps_the_highest_offset_plus_one) {
    kpb_offsets_assign(&o, "orders", 0, -1);
    kpb_offsets_read(&o, "orders", 0, 7);
    cr_assert_eq(kpb_offsets_find(&o, "orders", 0)->read, 8);
    kpb_offsets_read(&o, "orders", 0, 3); /* an older record: no step back */
    cr_assert_eq(kpb_offsets_find(&o, "orders", 0)->read, 8);
    kpb_offsets_read(&o, "orders", 0, 8);
    cr_assert_eq(kpb_offsets_find(&o, "orders", 0)->read, 9);
}

Test(offsets, read_of_an_unassigned_partition_is_ignored) {
    kpb_offsets_assign(&o, "orders", 0, -1);
    kpb_offsets_read(&o, "orders", 1, 7);
    kpb_offsets_eof(&o, "orders", 1, 8);
    kpb_offsets_written(&o, "orders", 1, 8);
    cr_assert_eq(o.cnt, 1);
    cr_assert_eq(kpb_offsets_find(&o, "orders", 0)->read, -1);
    cr_assert_null(kpb_offsets_find(&o, "orders", 1));
}

Test(offsets, eof_at_what_was_read_means_at_end) {
    kpb_offsets_assign(&o, "orders", 0, 0);
    kpb_offsets_read(&o, "orders", 0, 41);
    kpb_offsets_eof(&o, "orders", 0, 42);
    kpb_pos_t *p = kpb_offsets_find(&o, "orders", 0);
    cr_assert_eq(p->end, 42);
    cr_assert_eq(p->at_end, 1);
    cr_assert(kpb_offsets_all_at_end(&o));
}

Test(offsets, eof_older_than_what_was_read_does_not_count) {
    kpb_offsets_assign(&o, "orders", 0, 0);
    kpb_offsets_read(&o, "orders", 0, 50);
    kpb_offsets_eof(&o, "orders", 0, 42);
    kpb_pos_t *p = kpb_offsets_find(&o, "orders", 0);
    cr_assert_eq(p->end, 42);
    cr_assert_eq(p->at_end, 0);
    cr_assert_not(kpb_offsets_all_at_end(&o));
}

Test(offsets, eof_with_nothing_read_means_at_end) {
    kpb_offsets_assign(&o, "orders", 0, 42);
    kpb_offsets_eof(&o, "orders", 0, 42);
    cr_assert(kpb_offsets_find(&o, "orders", 0)->at_end);
    cr_assert(kpb_offsets_all_at_end(&o));
}

Test(offsets, read_after_eof_clears_at_end) {
    kpb_offsets_assign(&o, "orders", 0, 0);
    kpb_offsets_eof(&o, "orders", 0, 10);
    cr_assert(kpb_offsets_all_at_end(&o));
    kpb_offsets_read(&o, "orders", 0, 10);
    cr_assert_eq(kpb_offsets_find(&o, "orders", 0)->at_end, 0);
    cr_assert_not(kpb_offsets_all_at_end(&o));
    kpb_offsets_eof(&o, "orders", 0, 11);
    cr_assert(kpb_offsets_all_at_end(&o));
}

Test(offsets, all_at_end_needs_every_partition) {
    kpb_offsets_assign(&o, "orders", 0, 0);
    kpb_offsets_assign(&o, "orders", 1, 0);
    kpb_offsets_assign(&o, "payments", 0, 0);
    kpb_offsets_eof(&o, "orders", 0, 0);
    kpb_offsets_eof(&o, "orders", 1, 0);
    cr_assert_not(kpb_offsets_all_at_end(&o));
    kpb_offsets_eof(&o, "payments", 0, 0);
    cr_assert(kpb_offsets_all_at_end(&o));
    /* revoking keeps the rest at end; a newly assigned one is not */
    kpb_offsets_revoke(&o, "orders", 1);
    cr_assert(kpb_offsets_all_at_end(&o));
    kpb_offsets_assign(&o, "orders", 2, 0);
    cr_assert_not(kpb_offsets_all_at_end(&o));
}

Test(offsets, no_partitions_is_not_at_end) {
    cr_assert_not(kpb_offsets_all_at_end(&o));
    kpb_offsets_assign(&o, "orders", 0, 0);
    kpb_offsets_eof(&o, "orders", 0, 0);
    kpb_offsets_revoke(&o, "orders", 0);
    cr_assert_not(kpb_offsets_all_at_end(&o));
}

Test(offsets, written_moves_from) {
    kpb_offsets_assign(&o, "orders", 0, -1);
    kpb_offsets_assign(&o, "orders", 1, 7);
    kpb_offsets_written(&o, "orders", 0, 100);
    cr_assert_eq(kpb_offsets_find(&o, "orders", 0)->from, 100);
    cr_assert_eq(kpb_offsets_find(&o, "orders", 1)->from, 7);
    kpb_offsets_written(&o, "orders", 0, 250);
    kpb_pos_t *p = kpb_offsets_find(&o, "orders", 0);
    cr_assert_eq(p->from, 250);
    cr_assert_eq(p->read, -1, "written does not touch read");
    cr_assert_eq(p->at_end, 0);
}

Test(offsets, fini_empties_and_allows_reuse) {
    kpb_offsets_assign(&o, "orders", 0, 0);
    kpb_offsets_fini(&o);
    cr_assert_eq(o.cnt, 0);
    cr_assert_null(o.pos);
    kpb_offsets_assign(&o, "orders", 4, 4);
    cr_assert_eq(kpb_offsets_find(&o, "orders", 4)->from, 4);
}
