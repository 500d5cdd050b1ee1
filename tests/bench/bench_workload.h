/**
 * @file bench_workload.h
 * @brief The benchmark workloads, generated the same way by every program
 *        that needs them: bench_produce writes them into Kafka for kpbridge
 *        and rsyslog, bench_insert holds them in memory for the ceiling and
 *        the baseline.  One generator, so every contender writes the same
 *        events: same stream ids, event types, payload bytes and order.
 *
 * An event is what `kpbridge-devkafka gen` makes: key "stream-<i>", header
 * event-type OrderPlaced/OrderPaid alternating per stream, value
 * {"stream","seq","n","pad"} of about payload_bytes bytes, the pad a
 * repeated pattern so that lz4 keeps large workloads inside the mock
 * cluster's 5 MiB per partition.  The partition is a hash of the key (FNV-1a
 * modulo the partition count), so one stream lives in one partition and a
 * program that knows the spec knows every record's partition and offset.
 *
 * Shapes:
 *   uniform  each event picks one of `streams` streams uniformly
 *   many     every stream gets 1 to 3 events (events / streams on average),
 *            all of them shuffled together
 *   hot      half the events go to the one stream "stream-hot", the other
 *            half uniformly over `streams` other streams
 *   large    uniform, with a large payload_bytes
 */
#ifndef KPB_BENCH_WORKLOAD_H
#define KPB_BENCH_WORKLOAD_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef enum {
    BW_UNIFORM = 0,
    BW_MANY = 1,
    BW_HOT = 2,
} bw_shape_t;

typedef struct bw_spec_s {
    bw_shape_t shape;
    uint64_t events;
    uint64_t streams; /**< for hot: the other streams, besides stream-hot */
    size_t payload_bytes;
    int32_t partitions;
    uint64_t seed;
} bw_spec_t;

typedef struct bw_gen_s {
    bw_spec_t spec;
    uint64_t state;
    uint64_t *seqs;  /**< per stream: events generated so far */
    uint32_t *order; /**< many: the shuffled stream of each event */
    uint64_t n;      /**< index of the next event */
} bw_gen_t;

/** One generated event; the pointers stay valid until the next bw_next. */
typedef struct bw_event_s {
    char key[40];
    size_t key_len;
    const char *type;
    int32_t partition;
    uint64_t n;
    kpb_buf_t value;
} bw_event_t;

/* xorshift64*, seeded through splitmix64, as in kpbridge-devkafka gen. */
static inline uint64_t bw_rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t bw_rng_below(uint64_t *s, uint64_t n) {
    return (uint64_t)(((bw_rng_next(s) >> 32) * n) >> 32);
}

static inline uint64_t bw_seed(uint64_t seed) {
    uint64_t st = seed + 0x9E3779B97F4A7C15ULL;
    st = (st ^ (st >> 30)) * 0xBF58476D1CE4E5B9ULL;
    st = (st ^ (st >> 27)) * 0x94D049BB133111EBULL;
    st ^= st >> 31;
    return st ? st : 0x9E3779B97F4A7C15ULL;
}

/** @brief Parses a shape name; -1 if unknown ("large" is uniform). */
static inline int bw_shape_parse(const char *s, bw_shape_t *out) {
    if (!strcmp(s, "uniform") || !strcmp(s, "large"))
        *out = BW_UNIFORM;
    else if (!strcmp(s, "many"))
        *out = BW_MANY;
    else if (!strcmp(s, "hot"))
        *out = BW_HOT;
    else
        return -1;
    return 0;
}

/** @brief The key's partition: FNV-1a of the key modulo the count. */
static inline int32_t bw_partition(const char *key, size_t len, int32_t cnt) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return (int32_t)(h % (uint32_t)cnt);
}

/**
 * @brief Prepares a generator; 0, or -1 with a message on stderr when the
 *        spec cannot be met (many: events outside [streams, 3 * streams]).
 */
static inline int bw_init(bw_gen_t *g, const bw_spec_t *spec) {
    memset(g, 0, sizeof(*g));
    g->spec = *spec;
    g->state = bw_seed(spec->seed);
    if (spec->streams < 1 || spec->partitions < 1) {
        fprintf(stderr, "workload: streams and partitions must be >= 1\n");
        return -1;
    }
    uint64_t slots = spec->streams + (spec->shape == BW_HOT ? 1 : 0);
    g->seqs = kpb_xcalloc((size_t)slots, sizeof(*g->seqs));
    if (spec->shape == BW_MANY) {
        if (spec->events < spec->streams || spec->events > 3 * spec->streams ||
            spec->streams > UINT32_MAX) {
            fprintf(stderr,
                    "workload many: %" PRIu64 " events cannot give each of "
                    "%" PRIu64 " streams 1 to 3 events\n",
                    spec->events, spec->streams);
            return -1;
        }
        /* Every stream gets one event, then the rest are handed out one by
         * one to random streams that have fewer than three. */
        uint8_t *cnt = kpb_xmalloc((size_t)spec->streams);
        memset(cnt, 1, (size_t)spec->streams);
        for (uint64_t extra = spec->events - spec->streams; extra > 0;) {
            uint64_t s = bw_rng_below(&g->state, spec->streams);
            if (cnt[s] < 3) {
                cnt[s]++;
                extra--;
            }
        }
        g->order = kpb_xmalloc((size_t)spec->events * sizeof(*g->order));
        uint64_t k = 0;
        for (uint64_t s = 0; s < spec->streams; s++)
            for (uint8_t j = 0; j < cnt[s]; j++)
                g->order[k++] = (uint32_t)s;
        free(cnt);
        /* Fisher-Yates: the events of all streams interleaved at random. */
        for (uint64_t i = spec->events; i > 1; i--) {
            uint64_t j = bw_rng_below(&g->state, i);
            uint32_t t = g->order[i - 1];
            g->order[i - 1] = g->order[j];
            g->order[j] = t;
        }
    }
    return 0;
}

static inline void bw_fini(bw_gen_t *g) {
    free(g->seqs);
    free(g->order);
    g->seqs = NULL;
    g->order = NULL;
}

static inline void bw_event_init(bw_event_t *ev) {
    memset(ev, 0, sizeof(*ev));
    kpb_buf_init(&ev->value);
}

static inline void bw_event_fini(bw_event_t *ev) { kpb_buf_fini(&ev->value); }

/** @brief Fills @p ev with the next event; 0 when there is none left. */
static inline int bw_next(bw_gen_t *g, bw_event_t *ev) {
    if (g->n >= g->spec.events)
        return 0;
    uint64_t s;
    int hot = 0;
    switch (g->spec.shape) {
    case BW_MANY:
        s = g->order[g->n];
        break;
    case BW_HOT:
        if (bw_rng_next(&g->state) >> 63) {
            s = 0;
            hot = 1;
        } else {
            s = 1 + bw_rng_below(&g->state, g->spec.streams);
        }
        break;
    default:
        s = bw_rng_below(&g->state, g->spec.streams);
        break;
    }
    uint64_t seq = ++g->seqs[s];
    if (hot)
        ev->key_len = (size_t)snprintf(ev->key, sizeof(ev->key), "stream-hot");
    else
        ev->key_len = (size_t)snprintf(ev->key, sizeof(ev->key),
                                       "stream-%" PRIu64, s);
    ev->type = seq % 2 ? "OrderPlaced" : "OrderPaid";
    ev->partition = bw_partition(ev->key, ev->key_len, g->spec.partitions);
    ev->n = g->n;

    static const char filler[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    const size_t filler_len = sizeof(filler) - 1;
    kpb_buf_reset(&ev->value);
    kpb_buf_printf(&ev->value,
                   "{\"stream\":\"%s\",\"seq\":%" PRIu64 ",\"n\":%" PRIu64
                   ",\"pad\":\"",
                   ev->key, seq, g->n);
    size_t have = ev->value.len + 2;
    size_t want = g->spec.payload_bytes > have ? g->spec.payload_bytes - have
                                               : 0;
    kpb_buf_reserve(&ev->value, want + 2);
    for (size_t k = 0; k < want; k += filler_len)
        kpb_buf_append(&ev->value, filler,
                       want - k < filler_len ? want - k : filler_len);
    kpb_buf_puts(&ev->value, "\"}");
    g->n++;
    return 1;
}

/*
 * Command-line options shared by the bench programs: --shape, --events,
 * --streams, --payload-bytes, --partitions, --seed.  Returns 1 when argv[*i]
 * was one of them (consuming its value), 0 when it is not, -1 on a bad or
 * missing value (message on stderr).
 */
static inline int bw_parse_opt(int argc, char **argv, int *i, bw_spec_t *spec) {
    static const char *const names[] = {"--shape",         "--events",
                                        "--streams",       "--payload-bytes",
                                        "--partitions",    "--seed"};
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        if (strcmp(argv[*i], names[k]) != 0)
            continue;
        if (*i + 1 >= argc) {
            fprintf(stderr, "%s wants a value\n", names[k]);
            return -1;
        }
        const char *v = argv[++*i];
        if (k == 0) {
            if (bw_shape_parse(v, &spec->shape) != 0) {
                fprintf(stderr, "--shape: uniform, many, hot or large\n");
                return -1;
            }
            return 1;
        }
        char *end;
        unsigned long long x = strtoull(v, &end, 10);
        if (*v == '-' || end == v || *end) {
            fprintf(stderr, "%s wants a number, got %s\n", names[k], v);
            return -1;
        }
        switch (k) {
        case 1: spec->events = x; break;
        case 2: spec->streams = x; break;
        case 3: spec->payload_bytes = (size_t)x; break;
        case 4:
            if (x < 1 || x > 100000) {
                fprintf(stderr, "--partitions wants 1..100000\n");
                return -1;
            }
            spec->partitions = (int32_t)x;
            break;
        default: spec->seed = x; break;
        }
        return 1;
    }
    return 0;
}

static inline void bw_spec_defaults(bw_spec_t *spec) {
    memset(spec, 0, sizeof(*spec));
    spec->shape = BW_UNIFORM;
    spec->events = 1000;
    spec->streams = 100;
    spec->payload_bytes = 200;
    spec->partitions = 16;
    spec->seed = 1;
}

#endif
