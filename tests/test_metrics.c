/*
 * Unit tests of bridge/metrics.c: the Prometheus text the registry renders
 * after known updates, histogram arithmetic, label escaping, the dead-letter
 * reasons and the lag series, and a writer racing a reader.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "metrics.h"
#include "util.h"

static char *render(void) {
    kpb_buf_t buf;
    kpb_buf_init(&buf);
    kpb_metrics_render(&buf);
    return buf.data; /* the caller frees */
}

/* Whether @p text holds @p line as one whole line. */
static int has_line(const char *text, const char *line) {
    size_t n = strlen(line);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len == n && memcmp(p, line, n) == 0)
            return 1;
        p = eol ? eol + 1 : NULL;
    }
    return 0;
}

/* The value of the sample line "SERIES VALUE", or NULL (static buffer). */
static const char *value_of(const char *text, const char *series) {
    static char val[128];
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > n + 1 && memcmp(p, series, n) == 0 && p[n] == ' ') {
            size_t vlen = len - n - 1;
            cr_assert_lt(vlen, sizeof(val));
            memcpy(val, p + n + 1, vlen);
            val[vlen] = '\0';
            return val;
        }
        p = eol ? eol + 1 : NULL;
    }
    return NULL;
}

static unsigned long long uvalue_of(const char *text, const char *series) {
    const char *v = value_of(text, series);
    cr_assert_not_null(v, "no sample %s in:\n%s", series, text);
    char *end;
    unsigned long long u = strtoull(v, &end, 10);
    cr_assert_eq(*end, '\0', "%s has value %s", series, v);
    return u;
}

static int count_lines_with_prefix(const char *text, const char *prefix) {
    int cnt = 0;
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, n) == 0)
            cnt++;
        const char *eol = strchr(p, '\n');
        p = eol ? eol + 1 : NULL;
    }
    return cnt;
}

static void setup(void) { kpb_metrics_init(); }

static void teardown(void) { kpb_metrics_reset(); /* frees the lag series */ }

TestSuite(metrics, .init = setup, .fini = teardown);

Test(metrics, renders_counters_and_gauges_as_exact_lines) {
    kpb_metrics_add(KPB_METRIC_EVENTS_CONSUMED, 3);
    kpb_metrics_add(KPB_METRIC_EVENTS_CONSUMED, 4);
    kpb_metrics_add(KPB_METRIC_EVENTS_WRITTEN, 5);
    kpb_metrics_add(KPB_METRIC_FLUSHES, 2);
    kpb_metrics_add(KPB_METRIC_DB_RETRIES, 1);
    kpb_metrics_add(KPB_METRIC_FENCED, 9);
    kpb_metrics_add(KPB_METRIC_EVENTS_CONSUMED, UINT64_C(10000000000));
    kpb_metrics_set(KPB_METRIC_PENDING_EVENTS, 100);
    kpb_metrics_set(KPB_METRIC_PENDING_EVENTS, 42); /* a gauge is replaced */
    kpb_metrics_set(KPB_METRIC_DB_CONNECTED, 1);
    kpb_metrics_set(KPB_METRIC_KAFKA_ASSIGNED_PARTITIONS, 6);

    char *text = render();
    cr_assert(has_line(text, "kpbridge_events_consumed_total 10000000007"),
              "%s", text);
    cr_assert(has_line(text, "kpbridge_events_written_total 5"));
    cr_assert(has_line(text, "kpbridge_flushes_total 2"));
    cr_assert(has_line(text, "kpbridge_db_retries_total 1"));
    cr_assert(has_line(text, "kpbridge_fenced_total 9"));
    cr_assert(has_line(text, "kpbridge_pending_events 42"));
    cr_assert(has_line(text, "kpbridge_db_connected 1"));
    cr_assert(has_line(text, "kpbridge_kafka_assigned_partitions 6"));
    cr_assert(has_line(text, "kpbridge_up 1"));
    cr_assert_eq(text[strlen(text) - 1], '\n');
    free(text);

    cr_assert_eq(kpb_metrics_counter(KPB_METRIC_EVENTS_CONSUMED),
                 UINT64_C(10000000007));
    cr_assert_eq(kpb_metrics_gauge(KPB_METRIC_PENDING_EVENTS), 42);
    /* Asking for the wrong kind reads 0, not another metric's slot. */
    cr_assert_eq(kpb_metrics_counter(KPB_METRIC_PENDING_EVENTS), 0);
    cr_assert_eq(kpb_metrics_gauge(KPB_METRIC_FLUSHES), 0);
}

Test(metrics, negative_gauges_render_with_their_sign) {
    kpb_metrics_set(KPB_METRIC_PENDING_EVENTS, -3);
    char *text = render();
    cr_assert(has_line(text, "kpbridge_pending_events -3"), "%s", text);
    free(text);
}

Test(metrics, every_family_has_help_and_the_right_type) {
    static const struct {
        const char *name, *type;
    } fams[] = {
        {"kpbridge_events_consumed_total", "counter"},
        {"kpbridge_events_written_total", "counter"},
        {"kpbridge_dead_letters_total", "counter"},
        {"kpbridge_flushes_total", "counter"},
        {"kpbridge_flush_duration_seconds", "histogram"},
        {"kpbridge_batch_events", "histogram"},
        {"kpbridge_db_retries_total", "counter"},
        {"kpbridge_pending_events", "gauge"},
        {"kpbridge_consumer_lag", "gauge"},
        {"kpbridge_fenced_total", "counter"},
        {"kpbridge_db_connected", "gauge"},
        {"kpbridge_kafka_assigned_partitions", "gauge"},
        {"kpbridge_up", "gauge"},
    };
    char *text = render();
    int types = count_lines_with_prefix(text, "# TYPE ");
    cr_assert_eq(types, (int)(sizeof(fams) / sizeof(fams[0])),
                 "%d TYPE lines:\n%s", types, text);
    cr_assert_eq(count_lines_with_prefix(text, "# HELP "), types);
    const char *prev = text;
    for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
        char want[128], help[128];
        snprintf(want, sizeof(want), "# TYPE %s %s", fams[i].name,
                 fams[i].type);
        cr_assert(has_line(text, want), "missing '%s'", want);
        /* HELP comes right before TYPE, and families in the listed order. */
        snprintf(help, sizeof(help), "# HELP %s ", fams[i].name);
        const char *h = strstr(text, help);
        cr_assert_not_null(h, "missing '%s'", help);
        cr_assert_eq(strncmp(strchr(h, '\n') + 1, want, strlen(want)), 0);
        cr_assert_geq(h, prev, "%s out of order", fams[i].name);
        prev = h;
    }
    free(text);
}

Test(metrics, every_sample_line_is_well_formed) {
    kpb_metrics_observe(KPB_METRIC_FLUSH_DURATION, 0.02);
    kpb_metrics_lag("orders", 0, 12);
    char *text = render();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        /* name[{labels}] value: one space, a name of [a-z_], a number */
        char *sp = strrchr(line, ' ');
        cr_assert_not_null(sp, "no value in '%s'", line);
        char *end;
        double v = strtod(sp + 1, &end);
        cr_assert_eq(*end, '\0', "bad value in '%s'", line);
        cr_assert(!isnan(v));
        cr_assert_eq(strncmp(line, "kpbridge_", 9), 0, "'%s'", line);
        for (char *p = line; p < sp && *p != '{'; p++)
            cr_assert((*p >= 'a' && *p <= 'z') || *p == '_', "'%s'", line);
    }
    free(text);
}

Test(metrics, flush_duration_buckets_are_cumulative_with_inclusive_bounds) {
    static const double obs[] = {0.0005, 0.001, 0.003, 0.3, 20.0};
    double want_sum = 0;
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
        kpb_metrics_observe(KPB_METRIC_FLUSH_DURATION, obs[i]);
        want_sum += obs[i];
    }

    /* Each bucket counts the observations <= its bound: 0.001 is in the
     * 0.001 bucket, 20 only in +Inf. */
    static const struct {
        const char *le;
        unsigned long long n;
    } want[] = {
        {"0.001", 2}, {"0.0025", 2}, {"0.005", 3}, {"0.01", 3}, {"0.025", 3},
        {"0.05", 3},  {"0.1", 3},    {"0.25", 3},  {"0.5", 4},  {"1", 4},
        {"2.5", 4},   {"5", 4},      {"10", 4},    {"+Inf", 5},
    };
    char *text = render();
    cr_assert_eq(
        count_lines_with_prefix(text, "kpbridge_flush_duration_seconds_bucket"),
        (int)(sizeof(want) / sizeof(want[0])));
    const char *prev = text;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char series[96];
        snprintf(series, sizeof(series),
                 "kpbridge_flush_duration_seconds_bucket{le=\"%s\"}",
                 want[i].le);
        cr_assert_eq(uvalue_of(text, series), want[i].n, "%s", series);
        const char *at = strstr(text, series);
        cr_assert_gt(at, prev, "%s out of order", series);
        prev = at;
    }
    cr_assert_eq(uvalue_of(text, "kpbridge_flush_duration_seconds_count"), 5);
    const char *sum = value_of(text, "kpbridge_flush_duration_seconds_sum");
    cr_assert_not_null(sum);
    cr_assert_eq(strtod(sum, NULL), want_sum, "sum %s", sum);
    free(text);
}

Test(metrics, batch_events_histogram_counts_rows_per_flush) {
    kpb_metrics_observe(KPB_METRIC_BATCH_EVENTS, 1);
    kpb_metrics_observe(KPB_METRIC_BATCH_EVENTS, 1000);
    kpb_metrics_observe(KPB_METRIC_BATCH_EVENTS, 1001);
    kpb_metrics_observe(KPB_METRIC_BATCH_EVENTS, 6000);
    static const struct {
        const char *le;
        unsigned long long n;
    } want[] = {
        {"1", 1},   {"10", 1},   {"50", 1},   {"100", 1},  {"250", 1},
        {"500", 1}, {"1000", 2}, {"2500", 3}, {"5000", 3}, {"+Inf", 4},
    };
    char *text = render();
    cr_assert_eq(count_lines_with_prefix(text, "kpbridge_batch_events_bucket"),
                 (int)(sizeof(want) / sizeof(want[0])));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char series[96];
        snprintf(series, sizeof(series),
                 "kpbridge_batch_events_bucket{le=\"%s\"}", want[i].le);
        cr_assert_eq(uvalue_of(text, series), want[i].n, "%s", series);
    }
    cr_assert(has_line(text, "kpbridge_batch_events_sum 8002"), "%s", text);
    cr_assert(has_line(text, "kpbridge_batch_events_count 4"));
    free(text);
}

Test(metrics, an_empty_histogram_renders_zeros_and_nan_is_ignored) {
    kpb_metrics_observe(KPB_METRIC_BATCH_EVENTS, NAN);
    char *text = render();
    cr_assert(has_line(text, "kpbridge_batch_events_bucket{le=\"+Inf\"} 0"));
    cr_assert(has_line(text, "kpbridge_batch_events_sum 0"), "%s", text);
    cr_assert(has_line(text, "kpbridge_batch_events_count 0"));
    cr_assert(has_line(text, "kpbridge_flush_duration_seconds_sum 0"));
    free(text);
}

Test(metrics, a_sum_keeps_short_decimals_short) {
    kpb_metrics_observe(KPB_METRIC_FLUSH_DURATION, 0.1);
    char *text = render();
    cr_assert(has_line(text, "kpbridge_flush_duration_seconds_sum 0.1"), "%s",
              text);
    free(text);
    kpb_metrics_observe(KPB_METRIC_FLUSH_DURATION, 0.2);
    text = render();
    /* 0.1 + 0.2 is not 0.3 in binary; the text must read back exactly. */
    const char *sum = value_of(text, "kpbridge_flush_duration_seconds_sum");
    cr_assert_not_null(sum);
    cr_assert_eq(strtod(sum, NULL), 0.1 + 0.2, "sum %s", sum);
    free(text);
}

static const char *const all_reasons[] = {
    "no_stream_id", "bad_stream_id",    "no_event_type",
    "no_payload",   "invalid_utf8",     "nul_byte",
    "invalid_json", "bad_event_id",     "bad_expected_version",
    "too_large",    "version_conflict", "rejected_by_database",
};
#define ALL_REASONS (sizeof(all_reasons) / sizeof(all_reasons[0]))

Test(metrics, every_dead_letter_reason_is_exported_from_zero) {
    char *text = render();
    for (size_t i = 0; i < ALL_REASONS; i++) {
        char line[128];
        snprintf(line, sizeof(line),
                 "kpbridge_dead_letters_total{reason=\"%s\"} 0",
                 all_reasons[i]);
        cr_assert(has_line(text, line), "missing '%s'", line);
    }
    cr_assert_eq(count_lines_with_prefix(text, "kpbridge_dead_letters_total{"),
                 (int)ALL_REASONS);
    free(text);
}

Test(metrics, dead_letters_count_by_reason) {
    cr_assert_eq(kpb_metrics_dead_letter("invalid_json"), 0);
    cr_assert_eq(kpb_metrics_dead_letter("invalid_json"), 0);
    cr_assert_eq(kpb_metrics_dead_letter("version_conflict"), 0);
    cr_assert_eq(kpb_metrics_dead_letter("no_such_reason"), -1);
    cr_assert_eq(kpb_metrics_dead_letter(NULL), -1);
    cr_assert_eq(kpb_metrics_dead_letter("invalid_json "), -1);

    char *text = render();
    cr_assert(has_line(
        text, "kpbridge_dead_letters_total{reason=\"invalid_json\"} 2"));
    cr_assert(has_line(
        text, "kpbridge_dead_letters_total{reason=\"version_conflict\"} 1"));
    cr_assert(
        has_line(text, "kpbridge_dead_letters_total{reason=\"nul_byte\"} 0"));
    cr_assert_null(strstr(text, "no_such_reason"));
    free(text);
    cr_assert_eq(kpb_metrics_dead_letters("invalid_json"), 2);
    cr_assert_eq(kpb_metrics_dead_letters("no_such_reason"), 0);
}

Test(metrics, knows_every_reason_decode_can_name) {
    /* The stored reason names come from decode.h; the registry must count
     * each one, or a kind of dead letter would vanish from the dashboards. */
    for (int r = KPB_REASON_NONE + 1; r < KPB_REASON__CNT; r++) {
        const char *name = kpb_reason_name((kpb_reason_t)r);
        cr_assert_eq(kpb_metrics_dead_letter(name), 0, "reason %s", name);
        cr_assert_eq(kpb_metrics_dead_letters(name), 1, "reason %s", name);
    }
}

Test(metrics, lag_series_are_added_updated_sorted_and_removed) {
    cr_assert_eq(kpb_metrics_lag("orders", 2, 10), 0);
    cr_assert_eq(kpb_metrics_lag("orders", 0, 5), 0);
    cr_assert_eq(kpb_metrics_lag("audit", 7, 0), 0);
    cr_assert_eq(kpb_metrics_lag("orders", 2, 3), 0); /* update */

    char *text = render();
    const char *a = strstr(
        text, "kpbridge_consumer_lag{topic=\"audit\",partition=\"7\"} 0\n");
    const char *o0 = strstr(
        text, "kpbridge_consumer_lag{topic=\"orders\",partition=\"0\"} 5\n");
    const char *o2 = strstr(
        text, "kpbridge_consumer_lag{topic=\"orders\",partition=\"2\"} 3\n");
    cr_assert(a && o0 && o2, "%s", text);
    cr_assert(a < o0 && o0 < o2, "series not sorted:\n%s", text);
    cr_assert_eq(count_lines_with_prefix(text, "kpbridge_consumer_lag{"), 3);
    free(text);

    kpb_metrics_lag_remove("orders", 0);
    kpb_metrics_lag_remove("orders", 99); /* unknown: ignored */
    kpb_metrics_lag_remove("nope", 0);
    text = render();
    cr_assert_null(strstr(text, "partition=\"0\""), "%s", text);
    cr_assert(has_line(
        text, "kpbridge_consumer_lag{topic=\"orders\",partition=\"2\"} 3"));
    cr_assert_eq(count_lines_with_prefix(text, "kpbridge_consumer_lag{"), 2);
    free(text);

    kpb_metrics_lag_clear();
    text = render();
    cr_assert_eq(count_lines_with_prefix(text, "kpbridge_consumer_lag{"), 0);
    /* The family stays described even without series. */
    cr_assert(has_line(text, "# TYPE kpbridge_consumer_lag gauge"));
    free(text);
}

Test(metrics, lag_topic_is_copied) {
    char topic[16];
    strcpy(topic, "orders");
    cr_assert_eq(kpb_metrics_lag(topic, 1, 8), 0);
    strcpy(topic, "XXXXXX");
    char *text = render();
    cr_assert(has_line(
        text, "kpbridge_consumer_lag{topic=\"orders\",partition=\"1\"} 8"));
    free(text);
}

Test(metrics, label_values_escape_backslash_quote_and_newline) {
    cr_assert_eq(kpb_metrics_lag("a\\b\"c\nd", 1, 4), 0);
    char *text = render();
    cr_assert(has_line(text, "kpbridge_consumer_lag{topic=\"a\\\\b\\\"c\\nd\","
                             "partition=\"1\"} 4"),
              "%s", text);
    free(text);
}

Test(metrics, the_lag_table_is_bounded) {
    char topic[32];
    for (int i = 0; i < KPB_METRICS_LAG_MAX; i++) {
        snprintf(topic, sizeof(topic), "t%05d", i);
        cr_assert_eq(kpb_metrics_lag(topic, i % 3, i), 0, "series %d", i);
    }
    cr_assert_eq(kpb_metrics_lag("one-too-many", 0, 1), -1);
    cr_assert_eq(kpb_metrics_lag("t00007", 1, 77), 0); /* existing: fine */

    char *text = render();
    cr_assert_eq(count_lines_with_prefix(text, "kpbridge_consumer_lag{"),
                 KPB_METRICS_LAG_MAX);
    cr_assert_null(strstr(text, "one-too-many"));
    cr_assert(has_line(
        text, "kpbridge_consumer_lag{topic=\"t00007\",partition=\"1\"} 77"));
    free(text);

    kpb_metrics_lag_remove("t00000", 0);
    cr_assert_eq(kpb_metrics_lag("one-too-many", 0, 1), 0);
}

Test(metrics, reset_zeroes_everything) {
    kpb_metrics_add(KPB_METRIC_FLUSHES, 4);
    kpb_metrics_set(KPB_METRIC_DB_CONNECTED, 1);
    kpb_metrics_observe(KPB_METRIC_BATCH_EVENTS, 17);
    kpb_metrics_dead_letter("too_large");
    kpb_metrics_lag("orders", 0, 1);
    kpb_metrics_reset();
    char *text = render();
    cr_assert(has_line(text, "kpbridge_flushes_total 0"));
    cr_assert(has_line(text, "kpbridge_db_connected 0"));
    cr_assert(has_line(text, "kpbridge_batch_events_count 0"));
    cr_assert(has_line(text, "kpbridge_batch_events_sum 0"));
    cr_assert(
        has_line(text, "kpbridge_dead_letters_total{reason=\"too_large\"} 0"));
    cr_assert_eq(count_lines_with_prefix(text, "kpbridge_consumer_lag{"), 0);
    free(text);
}

/* ---- one writer, one reader ---------------------------------------------- */

#define RACE_ROUNDS 200000

static void *writer(void *arg) {
    (void)arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        kpb_metrics_add(KPB_METRIC_EVENTS_CONSUMED, 1);
        kpb_metrics_observe(KPB_METRIC_BATCH_EVENTS, (double)(i % 7000));
        kpb_metrics_set(KPB_METRIC_PENDING_EVENTS, i);
        if (i % 1000 == 0) {
            kpb_metrics_lag("race", i / 1000 % 8, i);
            if (i % 3000 == 0)
                kpb_metrics_lag_remove("race", i / 1000 % 8);
        }
    }
    return NULL;
}

Test(metrics, a_reader_sees_consistent_histograms_while_the_writer_runs) {
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer, NULL), 0);
    unsigned long long last = 0;
    int renders = 0;
    for (;;) {
        char *text = render();
        unsigned long long consumed =
            uvalue_of(text, "kpbridge_events_consumed_total");
        unsigned long long inf =
            uvalue_of(text, "kpbridge_batch_events_bucket{le=\"+Inf\"}");
        unsigned long long cnt = uvalue_of(text, "kpbridge_batch_events_count");
        cr_assert_eq(inf, cnt, "+Inf bucket %llu but _count %llu", inf, cnt);
        cr_assert_geq(consumed, last, "a counter went backwards");
        /* Cumulative buckets never decrease along le. */
        unsigned long long prev = 0;
        static const char *les[] = {"1",   "10",   "50",   "100",  "250",
                                    "500", "1000", "2500", "5000", "+Inf"};
        for (size_t i = 0; i < sizeof(les) / sizeof(les[0]); i++) {
            char series[80];
            snprintf(series, sizeof(series),
                     "kpbridge_batch_events_bucket{le=\"%s\"}", les[i]);
            unsigned long long b = uvalue_of(text, series);
            cr_assert_geq(b, prev, "%s", series);
            prev = b;
        }
        last = consumed;
        renders++;
        free(text);
        if (consumed == RACE_ROUNDS)
            break;
    }
    pthread_join(th, NULL);
    cr_assert_gt(renders, 0);

    char *text = render();
    cr_assert_eq(uvalue_of(text, "kpbridge_batch_events_count"), RACE_ROUNDS);
    double want_sum = 0;
    for (int i = 0; i < RACE_ROUNDS; i++)
        want_sum += (double)(i % 7000);
    const char *sum = value_of(text, "kpbridge_batch_events_sum");
    cr_assert_eq(strtod(sum, NULL), want_sum, "sum %s", sum);
    cr_assert(has_line(text, "kpbridge_pending_events 199999"));
    free(text);
}
