/*
 * Unit tests of bridge/decode.c: mapping sources, event ids, expected
 * versions, metadata and every refusal.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "decode.h"

#define S(x) ((char *)(x))

static kpb_arena_t arena;
static kpb_event_t ev;
static char detail[512];
static kpb_topic_t topic;
static kpb_record_t rec;
static kpb_header_t hdrs[16];

/* The mapping of a typical configuration, and a record that fits it. */
static void setup(void) {
    kpb_arena_init(&arena);
    memset(&ev, 0, sizeof(ev));
    memset(&topic, 0, sizeof(topic));
    topic.name = S("orders");
    topic.table = S("eventcore_events");
    topic.stream_id = (kpb_src_t){KPB_SRC_KEY, NULL};
    topic.event_type = (kpb_src_t){KPB_SRC_HEADER, S("event-type")};
    topic.event_id = (kpb_src_t){KPB_SRC_HEADER, S("event-id")};
    topic.expected_version =
        (kpb_src_t){KPB_SRC_HEADER, S("expected-version")};
    topic.payload = (kpb_src_t){KPB_SRC_VALUE, NULL};

    memset(hdrs, 0, sizeof(hdrs));
    hdrs[0] = (kpb_header_t){"event-type", "OrderPlaced", 11};
    memset(&rec, 0, sizeof(rec));
    rec.topic = "orders";
    rec.partition = 2;
    rec.offset = 42;
    rec.timestamp = 1700000000123LL;
    rec.key = "order-1";
    rec.key_len = 7;
    rec.value = "{\"amount\":10}";
    rec.value_len = strlen(rec.value);
    rec.headers = hdrs;
    rec.header_cnt = 1;
}

static void teardown(void) {
    kpb_arena_fini(&arena);
}

TestSuite(decode, .init = setup, .fini = teardown);

static kpb_reason_t decode_max(size_t max_record_bytes) {
    return kpb_decode(&topic, &rec, max_record_bytes, &arena, &ev, detail,
                      sizeof(detail));
}

static kpb_reason_t decode(void) {
    return decode_max(0);
}

static void set_value(const char *v) {
    rec.value = v;
    rec.value_len = v ? strlen(v) : 0;
}

static void add_header(const char *name, const void *value, size_t len) {
    hdrs[rec.header_cnt++] = (kpb_header_t){name, value, len};
}

static void assert_text(const char *got, size_t got_len, const char *want) {
    cr_assert_eq(got_len, strlen(want), "length %zu, expected %zu (\"%s\")",
                 got_len, strlen(want), want);
    cr_assert_arr_eq(got, want, got_len, "got \"%.*s\", expected \"%s\"",
                     (int)got_len, got, want);
}

#define ASSERT_OK()                                                            \
    do {                                                                       \
        kpb_reason_t r_ = decode();                                            \
        cr_assert_eq(r_, KPB_REASON_NONE, "refused as %s: %s",                 \
                     kpb_reason_name(r_), detail);                             \
    } while (0)

#define ASSERT_REFUSED(reason)                                                 \
    do {                                                                       \
        kpb_reason_t r_ = decode();                                            \
        cr_assert_eq(r_, (reason), "got %s (%s), expected %s",                 \
                     kpb_reason_name(r_), detail, kpb_reason_name(reason));    \
        cr_assert_neq(detail[0], '\0', "a refusal explains itself");           \
    } while (0)

/* ---- mapping sources ------------------------------------------------- */

Test(decode, takes_the_stream_id_from_the_key) {
    ASSERT_OK();
    assert_text(ev.stream_id, ev.stream_id_len, "order-1");
    assert_text(ev.event_type, ev.event_type_len, "OrderPlaced");
    assert_text(ev.payload, ev.payload_len, "{\"amount\":10}");
    cr_assert_eq(ev.expected_version, -1);
    cr_assert_str_eq(detail, "");
}

Test(decode, takes_the_stream_id_from_a_header) {
    topic.stream_id = (kpb_src_t){KPB_SRC_HEADER, S("stream")};
    add_header("stream", "cart-9", 6);
    ASSERT_OK();
    assert_text(ev.stream_id, ev.stream_id_len, "cart-9");
}

Test(decode, takes_the_last_of_repeated_headers) {
    add_header("event-type", "OrderShipped", 12);
    add_header("other", "x", 1);
    add_header("event-type", "OrderPaid", 9);
    ASSERT_OK();
    assert_text(ev.event_type, ev.event_type_len, "OrderPaid");
}

Test(decode, takes_fields_from_json_pointers_into_nested_objects) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/order/customer/id")};
    topic.event_type = (kpb_src_t){KPB_SRC_JSON, S("/type")};
    set_value("{\"type\":\"OrderPlaced\",\"order\":{\"customer\":"
              "{\"id\":\"c-17\",\"name\":\"Ann\"},\"id\":\"o-1\"}}");
    ASSERT_OK();
    assert_text(ev.stream_id, ev.stream_id_len, "c-17");
    assert_text(ev.event_type, ev.event_type_len, "OrderPlaced");
}

Test(decode, takes_fields_from_json_pointers_into_arrays) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/items/1/sku")};
    topic.event_type = (kpb_src_t){KPB_SRC_JSON, S("/tags/0")};
    set_value("{\"tags\":[\"Tagged\",\"x\"],\"items\":[{\"sku\":\"A\"},"
              " { \"sku\" : \"B-2\" } ,{\"sku\":\"C\"}]}");
    ASSERT_OK();
    assert_text(ev.stream_id, ev.stream_id_len, "B-2");
    assert_text(ev.event_type, ev.event_type_len, "Tagged");
}

Test(decode, reads_tilde_escapes_in_json_pointers) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/a~1b/m~0n")};
    topic.event_type = (kpb_src_t){KPB_SRC_JSON, S("/~01")};
    set_value("{\"a/b\":{\"m~n\":\"slash-tilde\",\"m/n\":\"wrong\"},"
              "\"~1\":\"T\",\"/\":\"wrong\"}");
    ASSERT_OK();
    assert_text(ev.stream_id, ev.stream_id_len, "slash-tilde");
    assert_text(ev.event_type, ev.event_type_len, "T");
}

Test(decode, takes_the_last_of_duplicate_json_members) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/id")};
    set_value("{\"id\":\"first\",\"id\":\"last\"}");
    ASSERT_OK();
    assert_text(ev.stream_id, ev.stream_id_len, "last");
}

Test(decode, unescapes_json_strings) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/id")};
    topic.event_type = (kpb_src_t){KPB_SRC_JSON, S("/t")};
    set_value("{\"id\":\"caf\\u00e9-\\ud83d\\ude00-\\\"q\\\"\\/\\\\\","
              "\"t\":\"tab\\there\"}");
    ASSERT_OK();
    assert_text(ev.stream_id, ev.stream_id_len,
                "caf\xc3\xa9-\xf0\x9f\x98\x80-\"q\"/\\");
    assert_text(ev.event_type, ev.event_type_len, "tab\there");
}

Test(decode, turns_integer_values_into_text) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/id")};
    topic.event_type = (kpb_src_t){KPB_SRC_JSON, S("/type")};
    topic.expected_version = (kpb_src_t){KPB_SRC_JSON, S("/v")};
    set_value("{\"id\":123456789,\"type\":-7,\"v\":41}");
    ASSERT_OK();
    assert_text(ev.stream_id, ev.stream_id_len, "123456789");
    assert_text(ev.event_type, ev.event_type_len, "-7");
    cr_assert_eq(ev.expected_version, 41);
}

Test(decode, keeps_integers_past_64_bits_as_written) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/id")};
    set_value("{\"id\":123456789012345678901234567890}");
    ASSERT_OK();
    assert_text(ev.stream_id, ev.stream_id_len,
                "123456789012345678901234567890");
}

Test(decode, refuses_a_field_that_is_neither_string_nor_integer) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/id")};
    const char *values[] = {"{\"id\":1.5}", "{\"id\":1e3}", "{\"id\":true}",
                            "{\"id\":{\"a\":1}}", "{\"id\":[1]}"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        set_value(values[i]);
        kpb_reason_t r = decode();
        cr_assert_eq(r, KPB_REASON_INVALID_JSON, "%s: %s", values[i],
                     kpb_reason_name(r));
    }
}

Test(decode, takes_a_constant_event_type) {
    topic.event_type = (kpb_src_t){KPB_SRC_CONST, S("OrderImported")};
    rec.header_cnt = 0;
    ASSERT_OK();
    assert_text(ev.event_type, ev.event_type_len, "OrderImported");
}

Test(decode, takes_the_whole_value_as_payload) {
    set_value(" [1, {\"a\": \"b\"}, null] ");
    ASSERT_OK();
    cr_assert_eq(ev.payload, rec.value, "the payload is the record's bytes");
    cr_assert_eq(ev.payload_len, rec.value_len);
}

Test(decode, extracts_a_json_payload) {
    topic.payload = (kpb_src_t){KPB_SRC_JSON, S("/data")};
    set_value("{\"meta\":{\"v\":1},\"data\":{\"sku\":\"A-1\",\"qty\":3,"
              "\"tags\":[\"x\",\"y\"],\"note\":null}}");
    ASSERT_OK();
    json_error_t err;
    json_t *got = json_loadb(ev.payload, ev.payload_len, 0, &err);
    cr_assert_not_null(got, "%.*s: %s", (int)ev.payload_len, ev.payload,
                       err.text);
    json_t *want = json_loads("{\"sku\":\"A-1\",\"qty\":3,\"tags\":[\"x\","
                              "\"y\"],\"note\":null}",
                              0, NULL);
    cr_assert(json_equal(got, want), "%.*s", (int)ev.payload_len,
              ev.payload);
    json_decref(got);
    json_decref(want);
}

Test(decode, extracts_a_json_payload_with_its_numbers_as_written) {
    topic.payload = (kpb_src_t){KPB_SRC_JSON, S("/data")};
    set_value("{\"data\":{\"price\":0.1,\"big\":12345678901234567890,"
              "\"e\":1E2,\"huge\":1e400}}");
    ASSERT_OK();
    assert_text(ev.payload, ev.payload_len,
                "{\"price\":0.1,\"big\":12345678901234567890,\"e\":1E2,"
                "\"huge\":1e400}");
}

Test(decode, extracts_scalar_and_array_payloads) {
    topic.payload = (kpb_src_t){KPB_SRC_JSON, S("/list/1")};
    set_value("{\"list\":[0, \"two \\\"quoted\\\"\" ,[3]]}");
    ASSERT_OK();
    assert_text(ev.payload, ev.payload_len, "\"two \\\"quoted\\\"\"");
    topic.payload = (kpb_src_t){KPB_SRC_JSON, S("/list/2")};
    ASSERT_OK();
    assert_text(ev.payload, ev.payload_len, "[3]");
    topic.payload = (kpb_src_t){KPB_SRC_JSON, S("/list/0")};
    ASSERT_OK();
    assert_text(ev.payload, ev.payload_len, "0");
}

Test(decode, accepts_json_that_jsonb_accepts) {
    const char *values[] = {
        "42", "\"just text\"", "null", "true", " \t\r\n{}\n", "[]",
        "-0.5e-3", "{\"a\":[[[[[]]]]]}", "12345678901234567890123",
        "1e400", "{\"\":\"empty name\"}"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        set_value(values[i]);
        kpb_reason_t r = decode();
        cr_assert_eq(r, KPB_REASON_NONE, "%s: %s (%s)", values[i],
                     kpb_reason_name(r), detail);
        cr_assert_eq(ev.payload_len, strlen(values[i]));
    }
}

/* ---- event ids ---------------------------------------------------------- */

Test(decode, parses_the_event_id_header_into_16_bytes) {
    add_header("event-id", "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", 36);
    ASSERT_OK();
    const unsigned char want[16] = {0x01, 0x90, 0xa3, 0xc4, 0x5b, 0x6d,
                                    0x7e, 0x8f, 0x9a, 0x0b, 0x1c, 0x2d,
                                    0x3e, 0x4f, 0x5a, 0x6b};
    cr_assert_arr_eq(ev.event_id, want, 16);
}

Test(decode, parses_an_upper_case_event_id) {
    add_header("event-id", "F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6", 36);
    ASSERT_OK();
    const unsigned char want[16] = {0xf8, 0x1d, 0x4f, 0xae, 0x7d, 0xec,
                                    0x11, 0xd0, 0xa7, 0x65, 0x00, 0xa0,
                                    0xc9, 0x1e, 0x6b, 0xf6};
    cr_assert_arr_eq(ev.event_id, want, 16);
}

static uint64_t time_prefix(const unsigned char id[16]) {
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | id[i];
    return ms;
}

static void assert_uuid7(const unsigned char id[16], int64_t lo,
                         int64_t hi) {
    cr_assert_eq(id[6] >> 4, 7, "version nibble %x", id[6] >> 4);
    cr_assert_eq(id[8] & 0xC0, 0x80, "variant bits %x", id[8] >> 6);
    uint64_t ms = time_prefix(id);
    cr_assert(ms >= (uint64_t)lo && ms <= (uint64_t)hi,
              "time prefix %llu outside [%lld, %lld]",
              (unsigned long long)ms, (long long)lo, (long long)hi);
}

Test(decode, makes_a_uuid7_when_the_record_has_no_event_id) {
    int64_t t0 = kpb_wall_ms();
    ASSERT_OK();
    unsigned char first[16];
    memcpy(first, ev.event_id, 16);
    ASSERT_OK();
    int64_t t1 = kpb_wall_ms();
    assert_uuid7(first, t0, t1);
    assert_uuid7(ev.event_id, t0, t1);
    cr_assert(memcmp(first, ev.event_id, 16) != 0, "two ids in a row differ");
    cr_assert_leq(time_prefix(first), time_prefix(ev.event_id),
                  "ids are ordered by their time prefix");
}

/* Ids come from a pool of random bytes: 5,000 in a row (more than one
 * refill) are all different, and a forked child does not repeat the
 * parent's next ones. */
Test(decode, never_repeats_an_event_id_across_refills_and_fork) {
    enum { N = 5000 };
    static unsigned char ids[N + 1][16];
    for (int i = 0; i < N; i++)
        kpb_uuid7(ids[i]);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            cr_assert(memcmp(ids[i] + 6, ids[j] + 6, 10) != 0,
                      "ids %d and %d share their random part", i, j);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        unsigned char mine[16];
        kpb_uuid7(mine);
        _exit(write(fds[1], mine, 16) == 16 ? 0 : 1);
    }
    unsigned char child[16];
    cr_assert_eq(read(fds[0], child, 16), 16);
    waitpid(pid, NULL, 0);
    kpb_uuid7(ids[N]);
    cr_assert(memcmp(child + 6, ids[N] + 6, 10) != 0,
              "the child handed out the parent's next random bytes");
    close(fds[0]);
    close(fds[1]);
}

Test(decode, makes_a_uuid7_when_the_event_id_header_is_null) {
    add_header("event-id", NULL, 0);
    int64_t t0 = kpb_wall_ms();
    ASSERT_OK();
    assert_uuid7(ev.event_id, t0, kpb_wall_ms());
}

Test(decode, makes_a_uuid7_when_the_topic_maps_no_event_id) {
    topic.event_id = (kpb_src_t){KPB_SRC_NONE, NULL};
    add_header("event-id", "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", 36);
    int64_t t0 = kpb_wall_ms();
    ASSERT_OK();
    assert_uuid7(ev.event_id, t0, kpb_wall_ms());
}

Test(uuid7, makes_distinct_time_ordered_ids) {
    enum { N = 1000 };
    static unsigned char ids[N][16];
    int64_t t0 = kpb_wall_ms();
    for (int i = 0; i < N; i++)
        kpb_uuid7(ids[i]);
    int64_t t1 = kpb_wall_ms();
    for (int i = 0; i < N; i++) {
        assert_uuid7(ids[i], t0, t1);
        if (i) {
            cr_assert_leq(time_prefix(ids[i - 1]), time_prefix(ids[i]));
            cr_assert(memcmp(ids[i - 1], ids[i], 16) != 0);
        }
    }
}

/* ---- expected versions ---------------------------------------------- */

Test(decode, parses_the_expected_version) {
    add_header("expected-version", "17", 2);
    ASSERT_OK();
    cr_assert_eq(ev.expected_version, 17);
}

Test(decode, parses_expected_versions_zero_and_18_digits) {
    add_header("expected-version", "0", 1);
    ASSERT_OK();
    cr_assert_eq(ev.expected_version, 0);
    hdrs[1].value = "999999999999999999";
    hdrs[1].len = 18;
    ASSERT_OK();
    cr_assert_eq(ev.expected_version, 999999999999999999LL);
}

Test(decode, has_no_expected_version_when_the_header_is_absent_or_null) {
    ASSERT_OK();
    cr_assert_eq(ev.expected_version, -1);
    add_header("expected-version", NULL, 0);
    ASSERT_OK();
    cr_assert_eq(ev.expected_version, -1);
}

Test(decode, refuses_a_negative_expected_version) {
    add_header("expected-version", "-1", 2);
    ASSERT_REFUSED(KPB_REASON_BAD_EXPECTED_VERSION);
}

Test(decode, refuses_a_textual_expected_version) {
    const char *bad[] = {"abc", "1a", " 1", "1.0", "+1", ""};
    add_header("expected-version", "", 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hdrs[1].value = bad[i];
        hdrs[1].len = strlen(bad[i]);
        ASSERT_REFUSED(KPB_REASON_BAD_EXPECTED_VERSION);
    }
}

Test(decode, refuses_a_too_long_expected_version) {
    add_header("expected-version", "1000000000000000000", 19);
    ASSERT_REFUSED(KPB_REASON_BAD_EXPECTED_VERSION);
    hdrs[1].value = "99999999999999999999999999";
    hdrs[1].len = 26;
    ASSERT_REFUSED(KPB_REASON_BAD_EXPECTED_VERSION);
}

/* ---- metadata ----------------------------------------------------------- */

static json_t *metadata(void) {
    json_error_t err;
    cr_assert_not_null(ev.metadata);
    cr_assert_eq(strlen(ev.metadata), ev.metadata_len);
    json_t *md = json_loadb(ev.metadata, ev.metadata_len, 0, &err);
    cr_assert_not_null(md, "%s: %s", ev.metadata, err.text);
    return md;
}

Test(decode, records_where_the_event_came_from_in_metadata) {
    ASSERT_OK();
    json_t *md = metadata();
    json_t *k = json_object_get(md, "kafka");
    cr_assert(json_is_object(k));
    cr_assert_str_eq(json_string_value(json_object_get(k, "topic")),
                     "orders");
    cr_assert_eq(json_integer_value(json_object_get(k, "partition")), 2);
    cr_assert_eq(json_integer_value(json_object_get(k, "offset")), 42);
    cr_assert_eq(json_integer_value(json_object_get(k, "timestamp")),
                 1700000000123LL);
    json_t *h = json_object_get(md, "headers");
    cr_assert(json_is_object(h));
    cr_assert_eq(json_object_size(h), 1);
    cr_assert_str_eq(json_string_value(json_object_get(h, "event-type")),
                     "OrderPlaced");
    json_decref(md);
}

Test(decode, leaves_out_a_missing_timestamp) {
    rec.timestamp = -1;
    rec.header_cnt = 0;
    topic.event_type = (kpb_src_t){KPB_SRC_CONST, S("E")};
    ASSERT_OK();
    json_t *md = metadata();
    json_t *k = json_object_get(md, "kafka");
    cr_assert_null(json_object_get(k, "timestamp"));
    cr_assert_eq(json_integer_value(json_object_get(k, "offset")), 42);
    cr_assert_eq(json_object_size(json_object_get(md, "headers")), 0);
    json_decref(md);
}

Test(decode, keeps_binary_and_null_headers_in_metadata) {
    static const unsigned char bin[] = {0xff, 0x00, 0x01, 0xfe, 0x80};
    add_header("bin", bin, sizeof(bin));
    add_header("nul", NULL, 0);
    add_header("text", "caf\xc3\xa9 \"q\"\n", 10);
    add_header("with-nul", "a\0b", 3);
    add_header("empty", "", 0);
    ASSERT_OK();
    json_t *md = metadata();
    json_t *h = json_object_get(md, "headers");
    json_t *b = json_object_get(h, "bin");
    cr_assert(json_is_object(b), "binary header: %s", ev.metadata);
    cr_assert_str_eq(json_string_value(json_object_get(b, "base64")),
                     "/wAB/oA=");
    cr_assert(json_is_null(json_object_get(h, "nul")));
    cr_assert_str_eq(json_string_value(json_object_get(h, "text")),
                     "caf\xc3\xa9 \"q\"\n");
    /* jsonb holds no NUL: a header with one is kept as base64 too */
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(h, "with-nul"), "base64")),
                     "YQBi");
    cr_assert_str_eq(json_string_value(json_object_get(h, "empty")), "");
    json_decref(md);
}

Test(decode, escapes_the_topic_in_metadata) {
    rec.topic = "we\"ird\\topic";
    ASSERT_OK();
    json_t *md = metadata();
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(md, "kafka"), "topic")),
                     "we\"ird\\topic");
    json_decref(md);
}

Test(decode, sets_metadata_for_a_refused_record) {
    rec.key = NULL;
    rec.key_len = 0;
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
    json_t *md = metadata();
    cr_assert_eq(json_integer_value(json_object_get(
                     json_object_get(md, "kafka"), "offset")),
                 42);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(md, "headers"), "event-type")),
                     "OrderPlaced");
    json_decref(md);
}

static char *headers_json(const kpb_header_t *h, size_t cnt) {
    kpb_buf_t buf;
    kpb_buf_init(&buf);
    kpb_headers_json(&buf, h, cnt);
    char *s = strdup(buf.data);
    kpb_buf_fini(&buf);
    return s;
}

Test(headers_json, encodes_base64_with_each_padding) {
    static const unsigned char b1[] = {0xff}, b2[] = {0xff, 0xfe},
                               b3[] = {0xff, 0xfe, 0xfd};
    kpb_header_t h[] = {{"a", b1, 1}, {"b", b2, 2}, {"c", b3, 3}};
    char *s = headers_json(h, 3);
    cr_assert_str_eq(s, "{\"a\":{\"base64\":\"/w==\"},"
                        "\"b\":{\"base64\":\"//4=\"},"
                        "\"c\":{\"base64\":\"//79\"}}");
    free(s);
}

Test(headers_json, builds_an_empty_object_without_headers) {
    char *s = headers_json(NULL, 0);
    cr_assert_str_eq(s, "{}");
    free(s);
}

Test(headers_json, keeps_a_name_that_is_not_utf8) {
    kpb_header_t h[] = {{"\xff", "v", 1}};
    char *s = headers_json(h, 1);
    json_t *j = json_loads(s, 0, NULL);
    cr_assert_not_null(j, "%s", s);
    cr_assert_str_eq(json_string_value(json_object_get(j, "/w==")), "v");
    json_decref(j);
    free(s);
}

/* ---- refusals ----------------------------------------------------------- */

Test(decode, refuses_a_null_key_as_no_stream_id) {
    rec.key = NULL;
    rec.key_len = 0;
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
}

Test(decode, refuses_a_missing_stream_header_as_no_stream_id) {
    topic.stream_id = (kpb_src_t){KPB_SRC_HEADER, S("stream")};
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
    add_header("stream", NULL, 0); /* a null value is no id either */
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
}

Test(decode, refuses_a_missing_json_pointer_as_no_stream_id) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/order/id")};
    set_value("{\"order\":{\"other\":1}}");
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
    set_value("{\"order\":{\"id\":null}}");
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
    set_value("{\"order\":[\"id\"]}");
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
    set_value("\"order\"");
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/list/3")};
    set_value("{\"list\":[1,2,3]}");
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/list/01")};
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/list/-")};
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/list/+1")};
    ASSERT_REFUSED(KPB_REASON_NO_STREAM_ID);
}

Test(decode, refuses_an_empty_stream_id) {
    rec.key = "";
    rec.key_len = 0;
    ASSERT_REFUSED(KPB_REASON_BAD_STREAM_ID);
}

Test(decode, refuses_a_whitespace_only_stream_id) {
    rec.key = " \t\r\n ";
    rec.key_len = 5;
    ASSERT_REFUSED(KPB_REASON_BAD_STREAM_ID);
}

Test(decode, refuses_a_stream_id_of_256_bytes) {
    char key[256];
    memset(key, 'k', sizeof(key));
    rec.key = key;
    rec.key_len = 255;
    ASSERT_OK();
    cr_assert_eq(ev.stream_id_len, 255);
    rec.key_len = 256;
    ASSERT_REFUSED(KPB_REASON_BAD_STREAM_ID);
}

Test(decode, refuses_a_stream_id_holding_a_glob_character) {
    const char *bad[] = {"ord*", "?x", "a[1", "a]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rec.key = bad[i];
        rec.key_len = strlen(bad[i]);
        ASSERT_REFUSED(KPB_REASON_BAD_STREAM_ID);
    }
}

Test(decode, refuses_invalid_utf8_in_the_value) {
    set_value("{\"a\":\"\xc3(\"}");
    ASSERT_REFUSED(KPB_REASON_INVALID_UTF8);
}

Test(decode, refuses_invalid_utf8_in_the_stream_id) {
    rec.key = "ord\xed\xa0\x80";
    rec.key_len = 6;
    ASSERT_REFUSED(KPB_REASON_INVALID_UTF8);
}

Test(decode, refuses_a_raw_nul_byte_in_the_value) {
    static const char v[] = "{\"a\":\"x\0y\"}";
    rec.value = v;
    rec.value_len = sizeof(v) - 1;
    ASSERT_REFUSED(KPB_REASON_NUL_BYTE);
}

Test(decode, refuses_an_escaped_nul_in_json) {
    set_value("{\"a\":\"x\\u0000y\"}");
    ASSERT_REFUSED(KPB_REASON_NUL_BYTE);
}

Test(decode, refuses_a_nul_byte_in_the_stream_id) {
    rec.key = "a\0b";
    rec.key_len = 3;
    ASSERT_REFUSED(KPB_REASON_NUL_BYTE);
}

Test(decode, refuses_invalid_json) {
    const char *bad[] = {
        "",              "   ",           "{",
        "{\"a\":}",      "not json",      "{} x",
        "[1,]",          "{\"a\" 1}",     "{'a':1}",
        "01",            "1.",            ".5",
        "-",             "1e",            "tru",
        "nul",           "[1 2]",         "{\"a\":1,}",
        "\"unterminated", "\"bad \\x escape\"",
        "\"\\ud800\"",   "\"\\udc00\"",   "\"\\ud800\\u0041\"",
        "\"tab\there\"", "\"\\u12\"",     "{1:2}",
        "NaN",           "Infinity",      "[1]]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set_value(bad[i]);
        kpb_reason_t r = decode();
        cr_assert_eq(r, KPB_REASON_INVALID_JSON, "'%s': %s (%s)", bad[i],
                     kpb_reason_name(r), detail);
    }
}

/*
 * Numbers jsonb's numeric refuses ("value overflows numeric format"), as
 * measured on PostgreSQL 15: a first significant digit past 10^131071, more
 * than 16383 digits after the point once the exponent is applied (trailing
 * zeros count), or an exponent of +-1073741823 or more, zero included.
 */
Test(decode, refuses_numbers_outside_what_numeric_takes) {
    const char *bad[] = {"1e1000000",     "-1e-1000000",  "1e131072",
                         "1e+131072",     "-1e131072",    "10e131071",
                         "12.5e131071",   "0.5e131073",   "1e-16384",
                         "0.1e-16383",    "1.000e-16381", "10e-16384",
                         "100e-16385",    "0e-16384",     "0e1073741823",
                         "0e-1073741823", "[1,1e131072]", "{\"a\":1e-16384}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set_value(bad[i]);
        kpb_reason_t r = decode();
        cr_assert_eq(r, KPB_REASON_INVALID_JSON, "'%s': %s (%s)", bad[i],
                     kpb_reason_name(r), detail);
    }
}

/* Exponent digits are as many as the producer wrote: 2^64 + 1 must not wrap
 * around to 1, and leading zeros do not make an exponent large. */
Test(decode, reads_exponents_of_any_length_without_overflow) {
    set_value("1e18446744073709551617");
    ASSERT_REFUSED(KPB_REASON_INVALID_JSON);
    set_value("0e999999999999999999999999");
    ASSERT_REFUSED(KPB_REASON_INVALID_JSON);
    set_value("1e-99999999999999999999999999");
    ASSERT_REFUSED(KPB_REASON_INVALID_JSON);
    set_value("1e00000000000000000000000000000000000000000131071");
    ASSERT_OK();
    set_value("0e-0000000000000000000000000000000000000000016383");
    ASSERT_OK();
}

/* The same limits reached by digits alone: a 131073-digit integer, and a
 * 16384-digit fraction. */
Test(decode, refuses_numbers_with_too_many_digits_for_numeric) {
    enum { INT_DIGITS = 131073, FRAC_DIGITS = 16384 };
    char *v = malloc(INT_DIGITS + 3);
    memset(v, '9', INT_DIGITS);
    v[INT_DIGITS] = '\0';
    set_value(v);
    ASSERT_REFUSED(KPB_REASON_INVALID_JSON);
    v[0] = '0';
    v[1] = '.';
    memset(v + 2, '0', FRAC_DIGITS);
    v[2 + FRAC_DIGITS - 1] = '1';
    v[2 + FRAC_DIGITS] = '\0';
    set_value(v);
    ASSERT_REFUSED(KPB_REASON_INVALID_JSON);
    free(v);
}

/* Each one a step inside a boundary above, and accepted by PostgreSQL 15. */
Test(decode, takes_numbers_at_the_edges_of_what_numeric_takes) {
    const char *good[] = {
        "1e100",        "123.456e-300",   "0e99999999",
        "0e1073741822", "-0e+1073741822", "1e131071",
        "1E+131071",    "-1e131071",      "9.999e131071",
        "10e131070",    "0.5e131072",     "0.001e131074",
        "1e-16383",     "-1e-16383",      "0.1e-16382",
        "1.5e-16382",   "1.000e-16380",   "10e-16383",
        "0e-16383",     "9.9999e-16379",  "[1e131071,{\"a\":1e-16383}]"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        set_value(good[i]);
        kpb_reason_t r = decode();
        cr_assert_eq(r, KPB_REASON_NONE, "'%s': %s (%s)", good[i],
                     kpb_reason_name(r), detail);
    }
    enum { INT_DIGITS = 131072, FRAC_DIGITS = 16383 };
    char *v = malloc(INT_DIGITS + 4);
    memset(v, '9', INT_DIGITS);
    memcpy(v + INT_DIGITS, ".5", 3); /* fraction digits do not add weight */
    set_value(v);
    ASSERT_OK();
    v[0] = '0';
    v[1] = '.';
    memset(v + 2, '0', FRAC_DIGITS);
    v[2 + FRAC_DIGITS - 1] = '1';
    v[2 + FRAC_DIGITS] = '\0';
    set_value(v);
    ASSERT_OK();
    /* a positive exponent takes digits back from the fraction */
    memset(v + 2, '0', FRAC_DIGITS + 1);
    memcpy(v + 2 + FRAC_DIGITS + 1, "e1", 3);
    set_value(v);
    ASSERT_OK();
    free(v);
}

Test(decode, refuses_json_nested_too_deeply) {
    enum { DEPTH = 5000 };
    char *v = malloc(2 * DEPTH + 1);
    memset(v, '[', DEPTH);
    memset(v + DEPTH, ']', DEPTH);
    v[2 * DEPTH] = '\0';
    set_value(v);
    ASSERT_REFUSED(KPB_REASON_INVALID_JSON);
    /* a reasonable depth is fine */
    memset(v, '[', 500);
    memset(v + 500, ']', 500);
    v[1000] = '\0';
    set_value(v);
    ASSERT_OK();
    free(v);
}

Test(decode, refuses_a_json_field_of_a_value_that_is_not_json) {
    topic.stream_id = (kpb_src_t){KPB_SRC_JSON, S("/id")};
    set_value("{\"id\":\"x\"");
    ASSERT_REFUSED(KPB_REASON_INVALID_JSON);
}

Test(decode, refuses_a_bad_event_id) {
    const char *bad[] = {"not-a-uuid", "",
                         "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6",
                         "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b7",
                         "0190a3c4x5b6d-7e8f-9a0b-1c2d3e4f5a6b",
                         "g190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b"};
    add_header("event-id", "", 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hdrs[1].value = bad[i];
        hdrs[1].len = strlen(bad[i]);
        ASSERT_REFUSED(KPB_REASON_BAD_EVENT_ID);
    }
}

Test(decode, keeps_record_bytes_in_a_detail_short) {
    char id[300];
    memset(id, 'x', sizeof(id));
    add_header("event-id", id, sizeof(id));
    ASSERT_REFUSED(KPB_REASON_BAD_EVENT_ID);
    char run[66];
    memset(run, 'x', 65);
    run[65] = '\0';
    cr_assert_null(strstr(detail, run), "%s", detail);
}

Test(decode, refuses_a_record_over_max_record_bytes) {
    /* key 7 + value 13 + header name 10 + header value 11 = 41 bytes */
    kpb_reason_t r = decode_max(41);
    cr_assert_eq(r, KPB_REASON_NONE, "%s", detail);
    r = decode_max(40);
    cr_assert_eq(r, KPB_REASON_TOO_LARGE);
    cr_assert_neq(detail[0], '\0');
    cr_assert_not_null(ev.metadata, "a refused record keeps its metadata");
}

Test(decode, refuses_a_record_without_event_type) {
    rec.header_cnt = 0;
    ASSERT_REFUSED(KPB_REASON_NO_EVENT_TYPE);
}

Test(decode, refuses_an_empty_event_type) {
    hdrs[0].value = "";
    hdrs[0].len = 0;
    ASSERT_REFUSED(KPB_REASON_NO_EVENT_TYPE);
    hdrs[0].value = NULL;
    ASSERT_REFUSED(KPB_REASON_NO_EVENT_TYPE);
}

Test(decode, refuses_a_missing_json_event_type) {
    topic.event_type = (kpb_src_t){KPB_SRC_JSON, S("/type")};
    set_value("{\"kind\":\"x\"}");
    ASSERT_REFUSED(KPB_REASON_NO_EVENT_TYPE);
}

Test(decode, refuses_a_null_value_as_no_payload) {
    set_value(NULL);
    ASSERT_REFUSED(KPB_REASON_NO_PAYLOAD);
}

Test(decode, refuses_a_missing_json_payload_as_no_payload) {
    topic.payload = (kpb_src_t){KPB_SRC_JSON, S("/data")};
    set_value("{\"other\":{}}");
    ASSERT_REFUSED(KPB_REASON_NO_PAYLOAD);
}

Test(reason, names_every_reason) {
    static const struct {
        kpb_reason_t reason;
        const char *name;
    } names[] = {
        {KPB_REASON_NO_STREAM_ID, "no_stream_id"},
        {KPB_REASON_BAD_STREAM_ID, "bad_stream_id"},
        {KPB_REASON_NO_EVENT_TYPE, "no_event_type"},
        {KPB_REASON_NO_PAYLOAD, "no_payload"},
        {KPB_REASON_INVALID_UTF8, "invalid_utf8"},
        {KPB_REASON_NUL_BYTE, "nul_byte"},
        {KPB_REASON_INVALID_JSON, "invalid_json"},
        {KPB_REASON_BAD_EVENT_ID, "bad_event_id"},
        {KPB_REASON_BAD_EXPECTED_VERSION, "bad_expected_version"},
        {KPB_REASON_TOO_LARGE, "too_large"},
        {KPB_REASON_VERSION_CONFLICT, "version_conflict"},
        {KPB_REASON_REJECTED, "rejected_by_database"},
    };
    size_t n = sizeof(names) / sizeof(names[0]);
    cr_assert_eq(n, KPB_REASON__CNT - 1, "every reason is listed here");
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(kpb_reason_name(names[i].reason), names[i].name);
    cr_assert_str_eq(kpb_reason_name(KPB_REASON__CNT), "unknown");
    cr_assert_str_eq(kpb_reason_name((kpb_reason_t)-1), "unknown");
}
