#include "metrics.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Why atomics and not a mutex: the consumer loop updates these on every
 * record and every flush, and a scrape must never make it wait.  Relaxed
 * ordering is enough because no value is used to publish another: each
 * number is read on its own, and Prometheus tolerates a scrape that sees one
 * counter a few increments ahead of another.
 */

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

#define HIST_MAX_BOUNDS 16

static const double flush_duration_bounds[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double batch_events_bounds[] = {1,   10,   50,   100, 250,
                                             500, 1000, 2500, 5000};

#define NBOUNDS(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(NBOUNDS(flush_duration_bounds) <= HIST_MAX_BOUNDS,
               "raise HIST_MAX_BOUNDS");
_Static_assert(NBOUNDS(batch_events_bounds) <= HIST_MAX_BOUNDS,
               "raise HIST_MAX_BOUNDS");

typedef struct metric_def_s {
    const char *name;
    const char *help;
    kind_t kind;
    /** histogram upper bounds, ascending; +Inf is implied */
    const double *bounds;
    size_t bound_cnt;
} metric_def_t;

static const metric_def_t defs[KPB_METRIC__CNT] = {
    [KPB_METRIC_EVENTS_CONSUMED] = {"kpbridge_events_consumed_total",
                                    "Records read from Kafka.", KIND_COUNTER,
                                    NULL, 0},
    [KPB_METRIC_EVENTS_WRITTEN] = {"kpbridge_events_written_total",
                                   "Events written to PostgreSQL and "
                                   "committed.",
                                   KIND_COUNTER, NULL, 0},
    [KPB_METRIC_FLUSHES] = {"kpbridge_flushes_total",
                            "Flushes committed, one database transaction "
                            "each.",
                            KIND_COUNTER, NULL, 0},
    [KPB_METRIC_DB_RETRIES] = {"kpbridge_db_retries_total",
                               "Flushes retried after a transient database "
                               "error.",
                               KIND_COUNTER, NULL, 0},
    [KPB_METRIC_FENCED] = {"kpbridge_fenced_total",
                           "Partitions whose buffered records were dropped "
                           "because another instance moved their stored "
                           "position.",
                           KIND_COUNTER, NULL, 0},
    [KPB_METRIC_PENDING_EVENTS] = {"kpbridge_pending_events",
                                   "Records buffered in memory, not written "
                                   "yet.",
                                   KIND_GAUGE, NULL, 0},
    [KPB_METRIC_DB_CONNECTED] = {"kpbridge_db_connected",
                                 "1 while connected to PostgreSQL, else 0.",
                                 KIND_GAUGE, NULL, 0},
    [KPB_METRIC_KAFKA_ASSIGNED_PARTITIONS] =
        {"kpbridge_kafka_assigned_partitions",
         "Kafka partitions assigned to this instance.", KIND_GAUGE, NULL, 0},
    [KPB_METRIC_FLUSH_DURATION] = {"kpbridge_flush_duration_seconds",
                                   "Duration of a flush, from the first "
                                   "statement to COMMIT.",
                                   KIND_HISTOGRAM, flush_duration_bounds,
                                   NBOUNDS(flush_duration_bounds)},
    [KPB_METRIC_BATCH_EVENTS] = {"kpbridge_batch_events",
                                 "Events written per flush.", KIND_HISTOGRAM,
                                 batch_events_bounds,
                                 NBOUNDS(batch_events_bounds)},
};

/*
 * A histogram keeps per-bucket (not cumulative) counts plus one overflow
 * bucket for +Inf.  The render accumulates them and derives _count from the
 * same loads, so _count always equals the +Inf bucket even while the writer
 * observes concurrently.  The sum is a double kept as its bit pattern in a
 * 64-bit atomic, because C11 has no atomic add for floating types.
 */
typedef struct hist_s {
    _Atomic uint64_t buckets[HIST_MAX_BOUNDS + 1];
    _Atomic uint64_t sum_bits;
} hist_t;

static _Atomic uint64_t counters[KPB_METRIC__CNT];
static _Atomic int64_t gauges[KPB_METRIC__CNT];
static hist_t hists[KPB_METRIC__CNT];

/* The dead-letter reasons: the names decode.h and the writer store. */
static const char *const reasons[] = {
    "no_stream_id", "bad_stream_id",    "no_event_type",
    "no_payload",   "invalid_utf8",     "nul_byte",
    "invalid_json", "bad_event_id",     "bad_expected_version",
    "too_large",    "version_conflict", "rejected_by_database",
};
#define REASON_CNT NBOUNDS(reasons)
static _Atomic uint64_t dead_letters[REASON_CNT];

/*
 * Consumer lag per partition: a sorted array of pointers to entries, so the
 * render lists series in a stable order and a lookup is a binary search.
 * The rwlock protects the array's shape; the values themselves are atomics,
 * so the consumer updates an existing series under the shared lock and never
 * waits for a render (which also holds it shared).  Only adding or removing
 * a series (on assignment changes) takes the lock exclusively.
 */
typedef struct lag_entry_s {
    _Atomic int64_t lag;
    int32_t partition;
    char topic[]; /* copied, NUL-terminated */
} lag_entry_t;

static pthread_rwlock_t lag_lock = PTHREAD_RWLOCK_INITIALIZER;
static lag_entry_t *lag_tab[KPB_METRICS_LAG_MAX];
static size_t lag_cnt;

static int is_kind(kpb_metric_id_t id, kind_t kind) {
    return (unsigned)id < KPB_METRIC__CNT && defs[id].kind == kind;
}

static double bits_to_double(uint64_t bits) {
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d) {
    uint64_t bits;
    memcpy(&bits, &d, sizeof(bits));
    return bits;
}

static void lag_clear_locked(void) {
    for (size_t i = 0; i < lag_cnt; i++) {
        free(lag_tab[i]);
        lag_tab[i] = NULL;
    }
    lag_cnt = 0;
}

void kpb_metrics_reset(void) {
    for (size_t i = 0; i < KPB_METRIC__CNT; i++) {
        atomic_store_explicit(&counters[i], 0, memory_order_relaxed);
        atomic_store_explicit(&gauges[i], 0, memory_order_relaxed);
        for (size_t b = 0; b <= HIST_MAX_BOUNDS; b++)
            atomic_store_explicit(&hists[i].buckets[b], 0,
                                  memory_order_relaxed);
        atomic_store_explicit(&hists[i].sum_bits, double_to_bits(0.0),
                              memory_order_relaxed);
    }
    for (size_t i = 0; i < REASON_CNT; i++)
        atomic_store_explicit(&dead_letters[i], 0, memory_order_relaxed);
    kpb_metrics_lag_clear();
}

void kpb_metrics_init(void) { kpb_metrics_reset(); }

void kpb_metrics_add(kpb_metric_id_t id, uint64_t n) {
    assert(is_kind(id, KIND_COUNTER));
    if (!is_kind(id, KIND_COUNTER))
        return;
    atomic_fetch_add_explicit(&counters[id], n, memory_order_relaxed);
}

void kpb_metrics_set(kpb_metric_id_t id, int64_t v) {
    assert(is_kind(id, KIND_GAUGE));
    if (!is_kind(id, KIND_GAUGE))
        return;
    atomic_store_explicit(&gauges[id], v, memory_order_relaxed);
}

void kpb_metrics_observe(kpb_metric_id_t id, double v) {
    assert(is_kind(id, KIND_HISTOGRAM));
    if (!is_kind(id, KIND_HISTOGRAM) || isnan(v))
        return;
    const metric_def_t *def = &defs[id];
    hist_t *h = &hists[id];
    /* Bounds are inclusive upper limits ("le"); past the last is +Inf. */
    size_t b = 0;
    while (b < def->bound_cnt && v > def->bounds[b])
        b++;
    atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(
        &h->sum_bits, &old, double_to_bits(bits_to_double(old) + v),
        memory_order_relaxed, memory_order_relaxed))
        ;
}

uint64_t kpb_metrics_counter(kpb_metric_id_t id) {
    if (!is_kind(id, KIND_COUNTER))
        return 0;
    return atomic_load_explicit(&counters[id], memory_order_relaxed);
}

int64_t kpb_metrics_gauge(kpb_metric_id_t id) {
    if (!is_kind(id, KIND_GAUGE))
        return 0;
    return atomic_load_explicit(&gauges[id], memory_order_relaxed);
}

static int reason_index(const char *reason) {
    if (!reason)
        return -1;
    for (size_t i = 0; i < REASON_CNT; i++)
        if (strcmp(reasons[i], reason) == 0)
            return (int)i;
    return -1;
}

int kpb_metrics_dead_letter(const char *reason) {
    int i = reason_index(reason);
    if (i < 0)
        return -1;
    atomic_fetch_add_explicit(&dead_letters[i], 1, memory_order_relaxed);
    return 0;
}

uint64_t kpb_metrics_dead_letters(const char *reason) {
    int i = reason_index(reason);
    if (i < 0)
        return 0;
    return atomic_load_explicit(&dead_letters[i], memory_order_relaxed);
}

/* ---- consumer lag -------------------------------------------------------- */

static int lag_cmp(const lag_entry_t *e, const char *topic, int32_t partition) {
    int c = strcmp(e->topic, topic);
    if (c != 0)
        return c;
    return (e->partition > partition) - (e->partition < partition);
}

/* Binary search under the lock: 1 and *pos = index when found, else 0 and
 * *pos = where the series would be inserted. */
static int lag_find(const char *topic, int32_t partition, size_t *pos) {
    size_t lo = 0, hi = lag_cnt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = lag_cmp(lag_tab[mid], topic, partition);
        if (c == 0) {
            *pos = mid;
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return 0;
}

int kpb_metrics_lag(const char *topic, int32_t partition, int64_t lag) {
    if (!topic)
        return -1;
    size_t pos;

    /* The common case: the series exists; only the shared lock. */
    pthread_rwlock_rdlock(&lag_lock);
    if (lag_find(topic, partition, &pos)) {
        atomic_store_explicit(&lag_tab[pos]->lag, lag, memory_order_relaxed);
        pthread_rwlock_unlock(&lag_lock);
        return 0;
    }
    pthread_rwlock_unlock(&lag_lock);

    /* A new series: allocate outside the exclusive lock, then look again,
     * since another thread may have added it in between. */
    size_t tlen = strlen(topic);
    lag_entry_t *e = kpb_xmalloc(sizeof(*e) + tlen + 1);
    atomic_init(&e->lag, lag);
    e->partition = partition;
    memcpy(e->topic, topic, tlen + 1);

    int rc = 0;
    pthread_rwlock_wrlock(&lag_lock);
    if (lag_find(topic, partition, &pos)) {
        atomic_store_explicit(&lag_tab[pos]->lag, lag, memory_order_relaxed);
    } else if (lag_cnt == KPB_METRICS_LAG_MAX) {
        rc = -1;
    } else {
        memmove(&lag_tab[pos + 1], &lag_tab[pos],
                (lag_cnt - pos) * sizeof(lag_tab[0]));
        lag_tab[pos] = e;
        lag_cnt++;
        e = NULL;
    }
    pthread_rwlock_unlock(&lag_lock);
    free(e);
    return rc;
}

void kpb_metrics_lag_remove(const char *topic, int32_t partition) {
    if (!topic)
        return;
    lag_entry_t *gone = NULL;
    size_t pos;
    pthread_rwlock_wrlock(&lag_lock);
    if (lag_find(topic, partition, &pos)) {
        gone = lag_tab[pos];
        memmove(&lag_tab[pos], &lag_tab[pos + 1],
                (lag_cnt - pos - 1) * sizeof(lag_tab[0]));
        lag_tab[--lag_cnt] = NULL;
    }
    pthread_rwlock_unlock(&lag_lock);
    free(gone);
}

void kpb_metrics_lag_clear(void) {
    pthread_rwlock_wrlock(&lag_lock);
    lag_clear_locked();
    pthread_rwlock_unlock(&lag_lock);
}

/* ---- rendering ----------------------------------------------------------- */

/* A float as Prometheus parses it: NaN, +Inf, -Inf, or the shortest of
 * %.15g / %.17g that reads back to the same double (so 0.1 stays "0.1"). */
static void put_double(kpb_buf_t *out, double v) {
    if (isnan(v)) {
        kpb_buf_puts(out, "NaN");
        return;
    }
    if (isinf(v)) {
        kpb_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char tmp[32];
    snprintf(tmp, sizeof(tmp), "%.15g", v);
    if (strtod(tmp, NULL) != v)
        snprintf(tmp, sizeof(tmp), "%.17g", v);
    kpb_buf_puts(out, tmp);
}

/* A label value per the text format: backslash, double quote and line feed
 * are the only characters escaped. */
static void put_label_value(kpb_buf_t *out, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            kpb_buf_puts(out, "\\\\");
            break;
        case '"':
            kpb_buf_puts(out, "\\\"");
            break;
        case '\n':
            kpb_buf_puts(out, "\\n");
            break;
        default:
            kpb_buf_putc(out, *s);
        }
    }
}

static void put_header(kpb_buf_t *out, const char *name, const char *help,
                       const char *type) {
    kpb_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_counter(kpb_buf_t *out, kpb_metric_id_t id) {
    const metric_def_t *def = &defs[id];
    put_header(out, def->name, def->help, "counter");
    kpb_buf_printf(out, "%s %" PRIu64 "\n", def->name,
                   atomic_load_explicit(&counters[id], memory_order_relaxed));
}

static void render_gauge(kpb_buf_t *out, kpb_metric_id_t id) {
    const metric_def_t *def = &defs[id];
    put_header(out, def->name, def->help, "gauge");
    kpb_buf_printf(out, "%s %" PRId64 "\n", def->name,
                   atomic_load_explicit(&gauges[id], memory_order_relaxed));
}

static void render_histogram(kpb_buf_t *out, kpb_metric_id_t id) {
    const metric_def_t *def = &defs[id];
    const hist_t *h = &hists[id];
    put_header(out, def->name, def->help, "histogram");
    uint64_t cum = 0;
    for (size_t b = 0; b <= def->bound_cnt; b++) {
        cum += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
        kpb_buf_printf(out, "%s_bucket{le=\"", def->name);
        if (b < def->bound_cnt)
            put_double(out, def->bounds[b]);
        else
            kpb_buf_puts(out, "+Inf");
        kpb_buf_printf(out, "\"} %" PRIu64 "\n", cum);
    }
    kpb_buf_printf(out, "%s_sum ", def->name);
    put_double(out, bits_to_double(atomic_load_explicit(&h->sum_bits,
                                                        memory_order_relaxed)));
    kpb_buf_printf(out, "\n%s_count %" PRIu64 "\n", def->name, cum);
}

static void render_dead_letters(kpb_buf_t *out) {
    put_header(out, "kpbridge_dead_letters_total",
               "Records written to the dead letters, by reason.", "counter");
    /* Every reason, zeros included: a series that appears only on its first
     * dead letter makes rate() and alerts miss that first increase. */
    for (size_t i = 0; i < REASON_CNT; i++)
        kpb_buf_printf(
            out, "kpbridge_dead_letters_total{reason=\"%s\"} %" PRIu64 "\n",
            reasons[i],
            atomic_load_explicit(&dead_letters[i], memory_order_relaxed));
}

static void render_lag(kpb_buf_t *out) {
    put_header(out, "kpbridge_consumer_lag",
               "Records between the next offset to read and the partition's "
               "high watermark.",
               "gauge");
    pthread_rwlock_rdlock(&lag_lock);
    for (size_t i = 0; i < lag_cnt; i++) {
        const lag_entry_t *e = lag_tab[i];
        kpb_buf_puts(out, "kpbridge_consumer_lag{topic=\"");
        put_label_value(out, e->topic);
        kpb_buf_printf(out, "\",partition=\"%" PRId32 "\"} %" PRId64 "\n",
                       e->partition,
                       atomic_load_explicit(&e->lag, memory_order_relaxed));
    }
    pthread_rwlock_unlock(&lag_lock);
}

void kpb_metrics_render(kpb_buf_t *out) {
    render_counter(out, KPB_METRIC_EVENTS_CONSUMED);
    render_counter(out, KPB_METRIC_EVENTS_WRITTEN);
    render_dead_letters(out);
    render_counter(out, KPB_METRIC_FLUSHES);
    render_histogram(out, KPB_METRIC_FLUSH_DURATION);
    render_histogram(out, KPB_METRIC_BATCH_EVENTS);
    render_counter(out, KPB_METRIC_DB_RETRIES);
    render_gauge(out, KPB_METRIC_PENDING_EVENTS);
    render_lag(out);
    render_counter(out, KPB_METRIC_FENCED);
    render_gauge(out, KPB_METRIC_DB_CONNECTED);
    render_gauge(out, KPB_METRIC_KAFKA_ASSIGNED_PARTITIONS);
    put_header(out, "kpbridge_up", "1 while the process runs.", "gauge");
    kpb_buf_puts(out, "kpbridge_up 1\n");
}
