/*
 * Unit tests of bridge/util.c: UTF-8 checking, JSON escaping, conninfo
 * masking and the arena.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "util.h"

static int valid(const char *s, size_t n) {
    return kpb_utf8_valid(s, n);
}

#define VALID_LIT(lit) valid(lit, sizeof(lit) - 1)

Test(utf8, accepts_ascii_and_every_sequence_length) {
    cr_assert(VALID_LIT(""));
    cr_assert(VALID_LIT("order-42"));
    cr_assert(VALID_LIT("caf\xc3\xa9"));               /* U+00E9, 2 bytes */
    cr_assert(VALID_LIT("\xe2\x82\xac"));              /* U+20AC, 3 bytes */
    cr_assert(VALID_LIT("\xf0\x9f\x98\x80"));          /* U+1F600, 4 bytes */
    cr_assert(VALID_LIT("\xc2\x80"));                  /* U+0080, smallest 2 */
    cr_assert(VALID_LIT("\xe0\xa0\x80"));              /* U+0800, smallest 3 */
    cr_assert(VALID_LIT("\xf0\x90\x80\x80"));          /* U+10000 */
    cr_assert(VALID_LIT("\xf4\x8f\xbf\xbf"));          /* U+10FFFF, the last */
    cr_assert(VALID_LIT("\xed\x9f\xbf"));              /* U+D7FF */
    cr_assert(VALID_LIT("\xee\x80\x80"));              /* U+E000 */
}

Test(utf8, refuses_overlong_forms) {
    cr_assert_not(VALID_LIT("\xc0\xaf"));             /* '/' in 2 bytes */
    cr_assert_not(VALID_LIT("\xc1\xbf"));
    cr_assert_not(VALID_LIT("\xe0\x80\xaf"));         /* '/' in 3 bytes */
    cr_assert_not(VALID_LIT("\xe0\x9f\xbf"));         /* U+07FF in 3 bytes */
    cr_assert_not(VALID_LIT("\xf0\x80\x80\xaf"));     /* '/' in 4 bytes */
    cr_assert_not(VALID_LIT("\xf0\x8f\xbf\xbf"));     /* U+FFFF in 4 bytes */
    cr_assert_not(VALID_LIT("\xc0\x80"));             /* "modified UTF-8" NUL */
}

Test(utf8, refuses_surrogates) {
    cr_assert_not(VALID_LIT("\xed\xa0\x80")); /* U+D800 */
    cr_assert_not(VALID_LIT("\xed\xbf\xbf")); /* U+DFFF */
    cr_assert_not(VALID_LIT("a\xed\xb2\x80z"));
}

Test(utf8, refuses_code_points_past_u10ffff) {
    cr_assert_not(VALID_LIT("\xf4\x90\x80\x80")); /* U+110000 */
    cr_assert_not(VALID_LIT("\xf5\x80\x80\x80"));
    cr_assert_not(VALID_LIT("\xf7\xbf\xbf\xbf"));
    cr_assert_not(VALID_LIT("\xf8\x88\x80\x80\x80")); /* 5-byte form */
    cr_assert_not(VALID_LIT("\xfc\x84\x80\x80\x80\x80"));
    cr_assert_not(VALID_LIT("\xfe"));
    cr_assert_not(VALID_LIT("\xff"));
}

Test(utf8, refuses_truncated_sequences_and_stray_continuations) {
    cr_assert_not(VALID_LIT("\xc3"));
    cr_assert_not(VALID_LIT("\xe2\x82"));
    cr_assert_not(VALID_LIT("\xf0\x9f\x98"));
    cr_assert_not(VALID_LIT("abc\xe2"));
    cr_assert_not(VALID_LIT("\xe2\x82x"));   /* not a continuation byte */
    cr_assert_not(VALID_LIT("\x80"));        /* a lone continuation */
    cr_assert_not(VALID_LIT("a\xbf" "b"));
    /* the length bounds the check: a valid sequence cut by n is refused */
    cr_assert_not(valid("\xe2\x82\xac", 2));
    cr_assert(valid("\xe2\x82\xac", 3));
}

Test(utf8, refuses_a_nul_byte) {
    cr_assert_not(valid("a\0b", 3));
    cr_assert_not(valid("\0", 1));
    cr_assert(valid("a\0b", 1));
}

static char *escaped(const char *s, size_t n) {
    kpb_buf_t buf;
    kpb_buf_init(&buf);
    kpb_buf_puts(&buf, "\"");
    kpb_buf_json_escape(&buf, s, n);
    kpb_buf_puts(&buf, "\"");
    char *out = strdup(buf.data);
    kpb_buf_fini(&buf);
    return out;
}

Test(json_escape, escapes_quotes_backslashes_and_control_characters) {
    const char in[] = "a\"b\\c\nd\re\tf\x01g\x1fh\x7f";
    char *out = escaped(in, sizeof(in) - 1);
    cr_assert_str_eq(out, "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u001fh\x7f\"");
    free(out);
}

Test(json_escape, leaves_utf8_as_is) {
    const char in[] = "caf\xc3\xa9 \xf0\x9f\x98\x80 /";
    char *out = escaped(in, sizeof(in) - 1);
    cr_assert_str_eq(out, "\"caf\xc3\xa9 \xf0\x9f\x98\x80 /\"");
    free(out);
}

Test(json_escape, round_trips_every_byte_through_a_json_parser) {
    char in[127];
    for (int i = 0; i < 127; i++)
        in[i] = (char)(i + 1);
    char *out = escaped(in, sizeof(in));
    json_error_t err;
    json_t *j = json_loads(out, JSON_DECODE_ANY, &err);
    cr_assert_not_null(j, "%s: %s", out, err.text);
    cr_assert(json_is_string(j));
    cr_assert_eq(json_string_length(j), sizeof(in));
    cr_assert_arr_eq(json_string_value(j), in, sizeof(in));
    json_decref(j);
    free(out);
}

Test(json_escape, escapes_only_the_given_length) {
    kpb_buf_t buf;
    kpb_buf_init(&buf);
    kpb_buf_json_escape(&buf, "ab\"cd", 3);
    cr_assert_eq(buf.len, 4);
    cr_assert_str_eq(buf.data, "ab\\\"");
    kpb_buf_fini(&buf);
}

Test(buf, grows_and_stays_nul_terminated) {
    kpb_buf_t buf;
    kpb_buf_init(&buf);
    for (int i = 0; i < 1000; i++)
        kpb_buf_printf(&buf, "%d,", i % 10);
    cr_assert_eq(buf.len, 2000);
    cr_assert_eq(strlen(buf.data), 2000);
    cr_assert_eq(buf.data[1998], '9');
    kpb_buf_reset(&buf);
    cr_assert_eq(buf.len, 0);
    cr_assert_str_eq(buf.data, "");
    /* a formatted piece longer than printf's small stack buffer */
    char big[600];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    kpb_buf_printf(&buf, "<%s>", big);
    cr_assert_eq(buf.len, 601);
    cr_assert_eq(buf.data[0], '<');
    cr_assert_eq(buf.data[600], '>');
    cr_assert_eq(buf.data[601], '\0');
    kpb_buf_fini(&buf);
}

static const char *masked(const char *conninfo) {
    static char out[512];
    kpb_mask_conninfo(conninfo, out, sizeof(out));
    return out;
}

Test(mask_conninfo, hides_the_password_of_a_uri) {
    cr_assert_str_eq(masked("postgresql://bridge:s3cret@db:5432/events"),
                     "postgresql://bridge:****@db:5432/events");
    cr_assert_str_eq(masked("postgres://u:p%40ss@db/events?sslmode=require"),
                     "postgres://u:****@db/events?sslmode=require");
}

Test(mask_conninfo, hides_a_uri_password_holding_a_question_mark) {
    const char *out = masked("postgresql://u:pa?ss@db/events");
    cr_assert_str_eq(out, "postgresql://u:****@db/events");
    cr_assert_null(strstr(out, "pa?ss"));
}

Test(mask_conninfo, hides_the_password_of_a_uri_query) {
    cr_assert_str_eq(
        masked("postgresql://db/events?user=u&password=s3cret&sslmode=disable"),
        "postgresql://db/events?user=u&password=****&sslmode=disable");
    cr_assert_str_eq(masked("postgresql://db/events?password=s3cret"),
                     "postgresql://db/events?password=****");
}

/* libpq refuses a URI behind blanks (it only looks for the prefix at the
 * very start), so the bridge prints it in "cannot connect to ...": read as
 * key=value it is one word without '=', and its password used to show. */
Test(mask_conninfo, hides_the_password_of_a_uri_after_leading_blanks) {
    const char *out = masked(" postgresql://u:pw@h/db");
    cr_assert_str_eq(out, " postgresql://u:****@h/db");
    cr_assert_null(strstr(out, "pw"));
    out = masked("\tpostgres://u:s3cret@h");
    cr_assert_str_eq(out, "\tpostgres://u:****@h");
    cr_assert_null(strstr(out, "s3cret"));
    out = masked(" \n postgresql://db/events?user=u&password=s3cret");
    cr_assert_str_eq(out, " \n postgresql://db/events?user=u&password=****");
    cr_assert_null(strstr(out, "s3cret"));
}

/* Refused by libpq either way, so a password that key=value reading finds
 * after the URI is hidden too. */
Test(mask_conninfo, hides_a_key_value_password_after_a_blank_led_uri) {
    const char *out = masked(" postgresql://u@h/db password=s3cret");
    cr_assert_str_eq(out, " postgresql://u@h/db password=****");
    cr_assert_null(strstr(out, "s3cret"));
}

Test(mask_conninfo, leaves_a_uri_without_password_unchanged) {
    const char *in = "postgresql://bridge@db:5432/events?sslmode=require";
    cr_assert_str_eq(masked(in), in);
}

Test(mask_conninfo, hides_a_key_value_password) {
    cr_assert_str_eq(masked("host=db user=bridge password=s3cret dbname=ev"),
                     "host=db user=bridge password=**** dbname=ev");
    cr_assert_str_eq(masked("password=s3cret host=db"),
                     "password=**** host=db");
    cr_assert_str_eq(masked("host=db password = s3cret"),
                     "host=db password = ****");
}

Test(mask_conninfo, hides_a_quoted_key_value_password) {
    const char *out =
        masked("host=db password='two words \\' quoted' dbname=ev");
    cr_assert_str_eq(out, "host=db password=**** dbname=ev");
    cr_assert_null(strstr(out, "words"));
}

Test(mask_conninfo, hides_a_password_after_a_tab_or_with_escaped_space) {
    const char *out = masked("host=db\tpassword=s3cret");
    cr_assert_str_eq(out, "host=db\tpassword=****");
    out = masked("host=db password=ab\\ cd dbname=ev");
    cr_assert_str_eq(out, "host=db password=**** dbname=ev");
    cr_assert_null(strstr(out, "cd"));
}

Test(mask_conninfo, does_not_mistake_other_keys_for_the_password) {
    const char *in = "host=db user=password application_name=x_password";
    cr_assert_str_eq(masked(in), in);
}

Test(mask_conninfo, leaves_a_key_value_conninfo_without_password_unchanged) {
    const char *in = "host=db port=5432 user=bridge dbname=events";
    cr_assert_str_eq(masked(in), in);
    cr_assert_str_eq(masked(""), "");
    cr_assert_str_eq(masked(NULL), "");
}

Test(mask_conninfo, truncates_to_the_output_size) {
    char out[12];
    kpb_mask_conninfo("host=db password=s3cret", out, sizeof(out));
    cr_assert_str_eq(out, "host=db pas");
}

Test(arena, hands_out_aligned_distinct_memory) {
    kpb_arena_t arena;
    kpb_arena_init(&arena);
    char *a = kpb_arena_alloc(&arena, 3);
    char *b = kpb_arena_alloc(&arena, 5);
    cr_assert_neq(a, b);
    cr_assert_eq((uintptr_t)a % _Alignof(max_align_t), 0);
    cr_assert_eq((uintptr_t)b % _Alignof(max_align_t), 0);
    cr_assert_geq((size_t)(b > a ? b - a : a - b), 3);
    memset(a, 'a', 3);
    memset(b, 'b', 5);
    cr_assert_eq(a[2], 'a');
    cr_assert_geq(arena.used, 8);
    char *s = kpb_arena_strndup(&arena, "hello world", 5);
    cr_assert_str_eq(s, "hello");
    kpb_arena_fini(&arena);
    cr_assert_null(arena.head);
    cr_assert_eq(arena.used, 0);
}

Test(arena, spans_many_blocks_without_overwriting) {
    kpb_arena_t arena;
    kpb_arena_init(&arena);
    enum { N = 5000 };
    char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = kpb_arena_alloc(&arena, 100);
        memset(p[i], (char)i, 100);
    }
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 100; k++)
            cr_assert_eq(p[i][k], (char)i, "allocation %d byte %d", i, k);
    cr_assert_geq(arena.used, (size_t)N * 100);
    kpb_arena_fini(&arena);
}

Test(arena, serves_an_allocation_larger_than_a_block) {
    kpb_arena_t arena;
    kpb_arena_init(&arena);
    char *small = kpb_arena_alloc(&arena, 16);
    memset(small, 's', 16);
    size_t big_size = 200 * 1024; /* over the 64 KiB block */
    char *big = kpb_arena_alloc(&arena, big_size);
    memset(big, 'B', big_size);
    /* the space left in the first block is still used after it */
    char *after = kpb_arena_alloc(&arena, 16);
    memset(after, 'a', 16);
    cr_assert_eq(small[15], 's');
    cr_assert_eq(big[0], 'B');
    cr_assert_eq(big[big_size - 1], 'B');
    cr_assert_eq(after[0], 'a');
    cr_assert_geq(arena.used, big_size + 32);
    cr_assert(after > small && after < small + 64 * 1024,
              "the small allocation after the big one reuses the first "
              "block");
    kpb_arena_fini(&arena);
}

Test(arena, serves_a_large_first_allocation) {
    kpb_arena_t arena;
    kpb_arena_init(&arena);
    char *big = kpb_arena_alloc(&arena, 100000);
    memset(big, 'B', 100000);
    char *small = kpb_arena_alloc(&arena, 10);
    memset(small, 's', 10);
    cr_assert_eq(big[99999], 'B');
    cr_assert_eq(small[9], 's');
    kpb_arena_fini(&arena);
}

Test(arena, reset_keeps_the_first_block_and_forgets_usage) {
    kpb_arena_t arena;
    kpb_arena_init(&arena);
    char *first = kpb_arena_alloc(&arena, 32);
    for (int i = 0; i < 3000; i++)
        (void)kpb_arena_alloc(&arena, 100); /* several more blocks */
    cr_assert_gt(arena.used, 64 * 1024);
    kpb_arena_reset(&arena);
    cr_assert_eq(arena.used, 0);
    cr_assert_not_null(arena.head);
    char *again = kpb_arena_alloc(&arena, 32);
    cr_assert_eq(again, first, "the kept block is reused from its start");
    kpb_arena_fini(&arena);
}

Test(arena, reset_keeps_the_first_block_after_an_oversized_one) {
    kpb_arena_t arena;
    kpb_arena_init(&arena);
    char *first = kpb_arena_alloc(&arena, 32);
    (void)kpb_arena_alloc(&arena, 100 * 1024);
    kpb_arena_reset(&arena);
    cr_assert_eq(arena.used, 0);
    cr_assert_not_null(arena.head, "the default-size block is kept");
    char *again = kpb_arena_alloc(&arena, 32);
    cr_assert_eq(again, first);
    kpb_arena_fini(&arena);
}

Test(arena, reset_of_an_empty_arena_is_harmless) {
    kpb_arena_t arena;
    kpb_arena_init(&arena);
    kpb_arena_reset(&arena);
    cr_assert_null(arena.head);
    char *p = kpb_arena_strndup(&arena, "x", 1);
    cr_assert_str_eq(p, "x");
    kpb_arena_fini(&arena);
}
