/*
 * kpbridge-devkafka: a Kafka for machines that cannot run one.
 *
 * There is no broker and no Docker on the development and CI machines, yet
 * the quickstart, the replay job and the integration tests all need a Kafka
 * that speaks the real protocol.  librdkafka ships a mock cluster for its own
 * test suite (rdkafka_mock.h): in-process brokers listening on loopback TCP,
 * with topics, partitions, consumer groups and offset commits.  This program
 * wraps it in three subcommands:
 *
 *   serve  keeps a mock cluster alive and publishes its bootstrap address;
 *   load   produces a JSON-lines fixture into a topic, one line per record;
 *   gen    writes a deterministic synthetic fixture with per-stream sequence
 *          numbers, so a verifier can check nothing was lost or reordered.
 *
 * Two limits of the librdkafka 2.0.2 mock shape the producer settings below:
 * each partition keeps only about 5 MiB or 100,000 message sets and silently
 * drops the oldest beyond that, so `load` compresses (lz4) and batches hard,
 * and `gen` pads with compressible filler.  The first consumer group join on
 * the mock takes about 3 s; that is the mock, not the bridge.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define DK_PROG "kpbridge-devkafka"

/* Exit codes, as for kpbridge itself (DESIGN.md section 2). */
#define DK_EXIT_OK 0
#define DK_EXIT_FAIL 1
#define DK_EXIT_USAGE 2

static const char dk_usage_text[] =
    "usage:\n"
    "  " DK_PROG " serve [--brokers N] [--topic NAME:PARTITIONS]...\n"
    "                    [--bootstrap-file FILE]\n"
    "      Runs a librdkafka mock cluster of N brokers (default 1) on\n"
    "      loopback TCP until SIGTERM/SIGINT.  Prints the bootstrap address\n"
    "      as one line on stdout; with --bootstrap-file also writes it to\n"
    "      FILE atomically (FILE.tmp, then rename) and removes FILE again on\n"
    "      a clean stop.\n"
    "      --topic creates NAME with PARTITIONS partitions (replication 1).\n"
    "      Topics not created up front are auto-created by the mock, with\n"
    "      its default of 4 partitions, the first time any client (producer\n"
    "      or consumer) asks for their metadata.\n"
    "      Mock limits: each partition keeps only about 5 MiB or 100,000\n"
    "      message sets (older ones are dropped silently), and the first\n"
    "      consumer group join takes about 3 s.\n"
    "\n"
    "  " DK_PROG " load --brokers B --topic T [--partitions-hint N] FILE\n"
    "      Produces each line of a JSON-lines fixture (FILE \"-\" = stdin) as\n"
    "      one record, lz4-compressed, acks=all.  The whole file is validated\n"
    "      first: a bad line is reported as FILE:LINE: reason (exit 2) and\n"
    "      nothing is produced.  Exit 1 if any delivery failed.\n"
    "      --partitions-hint is accepted and ignored.  One JSON object a\n"
    "      line; blank lines and lines starting with # are skipped:\n"
    "        \"key\"        string, or null/absent for a null key\n"
    "        \"headers\"    {\"name\": \"value\" | null, ...}, or\n"
    "                     [[\"name\", \"value\" | null], ...] to repeat names\n"
    "        \"value\"      any JSON, produced as its compact JSON text\n"
    "        \"value_raw\"  string, produced verbatim (e.g. invalid JSON)\n"
    "        \"value_b64\"  base64, produced decoded (invalid UTF-8, NUL)\n"
    "                     at most one of the three; none = null value\n"
    "        \"partition\"  integer (default: partitioner by key)\n"
    "        \"timestamp\"  milliseconds since the epoch (absent or 0: now)\n"
    "\n"
    "  " DK_PROG " gen --streams S --events N [--payload-bytes B] [--seed X]\n"
    "      Writes a fixture for `load` to stdout: N events over S streams\n"
    "      \"stream-<i>\" (the key), each stream picked uniformly at random;\n"
    "      header event-type alternates OrderPlaced/OrderPaid per stream;\n"
    "      value {\"stream\",\"seq\" (per stream, from 1),\"n\" (0-based line\n"
    "      index),\"pad\"} of about B bytes (default 200).  The same seed\n"
    "      (default 1) always gives the same output.\n"
    "\n"
    "  " DK_PROG " --help\n";

static void dk_usage(FILE *out) { fputs(dk_usage_text, out); }

static int dk_usage_error(const char *fmt, ...) KPB_PRINTF(1, 2);

static int dk_usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", DK_PROG);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    dk_usage(stderr);
    return DK_EXIT_USAGE;
}

/*
 * Option parsing.  getopt_long is a GNU extension outside _POSIX_C_SOURCE,
 * and every subcommand only has a handful of long options, so a small
 * matcher that accepts both "--name VALUE" and "--name=VALUE" is enough.
 * Returns 1 and sets *val on a match, 0 when argv[*i] is another option,
 * -1 when the option is there but its value is missing.
 */
static int dk_opt(int argc, char **argv, int *i, const char *name,
                  const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *val = argv[++*i];
    return 1;
}

/* Parses a whole decimal integer in [lo, hi]; 0 on success. */
static int dk_parse_int(const char *s, long long lo, long long hi,
                        long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int dk_parse_u64(const char *s, uint64_t *out) {
    char *end;
    if (*s == '-' || *s == '\0')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------ serve */

static int dk_conf_set(rd_kafka_conf_t *conf, const char *name,
                       const char *value) {
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s: %s=%s: %s\n", DK_PROG, name, value, errstr);
        return -1;
    }
    return 0;
}

static volatile sig_atomic_t dk_stop;

/*
 * The first signal asks the loop to stop; a second one exits at once, for
 * the operator whose first ^C seemed to do nothing.  The mock keeps nothing
 * on disk, so there is nothing a hard exit could lose.
 */
static void dk_on_signal(int sig) {
    (void)sig;
    if (dk_stop)
        _exit(DK_EXIT_FAIL);
    dk_stop = 1;
}

static void dk_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = dk_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/*
 * Scripts wait for the bootstrap file to appear and then read it, so it must
 * never be seen half-written: write a sibling temporary file and rename it,
 * which replaces the name atomically on the same file system.
 */
static int dk_write_file_atomic(const char *path, const char *line) {
    kpb_buf_t tmp;
    kpb_buf_init(&tmp);
    kpb_buf_printf(&tmp, "%s.tmp", path);
    int rc = -1;
    FILE *f = fopen(tmp.data, "w");
    if (!f) {
        fprintf(stderr, "%s: %s: %s\n", DK_PROG, tmp.data, strerror(errno));
        goto out;
    }
    fprintf(f, "%s\n", line);
    if (fclose(f) != 0) {
        fprintf(stderr, "%s: %s: %s\n", DK_PROG, tmp.data, strerror(errno));
        unlink(tmp.data);
        goto out;
    }
    if (rename(tmp.data, path) != 0) {
        fprintf(stderr, "%s: rename %s to %s: %s\n", DK_PROG, tmp.data, path,
                strerror(errno));
        unlink(tmp.data);
        goto out;
    }
    rc = 0;
out:
    kpb_buf_fini(&tmp);
    return rc;
}

typedef struct dk_topic_spec_s {
    char *name;
    int partitions;
} dk_topic_spec_t;

static int dk_serve(int argc, char **argv) {
    long long brokers = 1;
    const char *bootstrap_file = NULL;
    dk_topic_spec_t *topics = NULL;
    size_t topic_cnt = 0;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mcluster = NULL;
    int file_written = 0;
    int rc = DK_EXIT_USAGE;
    char errstr[512];

    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int m;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            dk_usage(stdout);
            rc = DK_EXIT_OK;
            goto out;
        } else if ((m = dk_opt(argc, argv, &i, "--brokers", &v)) != 0) {
            if (m < 0 || dk_parse_int(v, 1, 64, &brokers) != 0) {
                rc = dk_usage_error("--brokers wants a number 1..64, got %s",
                                    m < 0 ? "nothing" : v);
                goto out;
            }
        } else if ((m = dk_opt(argc, argv, &i, "--topic", &v)) != 0) {
            long long parts;
            const char *colon = m > 0 ? strrchr(v, ':') : NULL;
            if (!colon || colon == v ||
                dk_parse_int(colon + 1, 1, 100000, &parts) != 0) {
                rc = dk_usage_error("--topic wants NAME:PARTITIONS, got %s",
                                    m < 0 ? "nothing" : v);
                goto out;
            }
            topics = kpb_xrealloc(topics, (topic_cnt + 1) * sizeof(*topics));
            topics[topic_cnt].name = kpb_xstrndup(v, (size_t)(colon - v));
            topics[topic_cnt].partitions = (int)parts;
            topic_cnt++;
        } else if ((m = dk_opt(argc, argv, &i, "--bootstrap-file", &v)) != 0) {
            if (m < 0 || *v == '\0') {
                rc = dk_usage_error("--bootstrap-file wants a path");
                goto out;
            }
            bootstrap_file = v;
        } else {
            rc = dk_usage_error("serve: unknown argument %s", argv[i]);
            goto out;
        }
    }

    rc = DK_EXIT_FAIL;
    dk_install_signals();

    /*
     * The mock cluster needs a client instance to live in (its broker
     * threads hang off it); a producer is the cheapest kind because it does
     * nothing until asked to produce.
     */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* log_level 4 hides the notice that this handle has no
     * bootstrap.servers: it never connects anywhere, it only hosts. */
    if (dk_conf_set(conf, "client.id", DK_PROG) ||
        dk_conf_set(conf, "log_level", "4")) {
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "%s: %s\n", DK_PROG, errstr);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    mcluster = rd_kafka_mock_cluster_new(rk, (int)brokers);
    if (!mcluster) {
        fprintf(stderr, "%s: cannot create a mock cluster of %lld brokers\n",
                DK_PROG, brokers);
        goto out;
    }
    for (size_t t = 0; t < topic_cnt; t++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
            mcluster, topics[t].name, topics[t].partitions, 1);
        if (err) {
            fprintf(stderr, "%s: cannot create topic %s: %s\n", DK_PROG,
                    topics[t].name, rd_kafka_err2str(err));
            goto out;
        }
    }

    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);
    if (bootstrap_file) {
        if (dk_write_file_atomic(bootstrap_file, bootstraps) != 0)
            goto out;
        file_written = 1;
    }
    /* The address goes out last, so whoever reads it finds topics ready. */
    printf("%s\n", bootstraps);
    fflush(stdout);

    while (!dk_stop) {
        /* Also serves the producer's (empty) event queue. */
        rd_kafka_poll(rk, 100);
    }
    rc = DK_EXIT_OK;

out:
    /*
     * A bootstrap file that outlives its cluster would send the next reader
     * to a dead port, so a clean stop takes it away again.
     */
    if (file_written && unlink(bootstrap_file) != 0 && errno != ENOENT)
        fprintf(stderr, "%s: %s: %s\n", DK_PROG, bootstrap_file,
                strerror(errno));
    if (mcluster)
        rd_kafka_mock_cluster_destroy(mcluster);
    if (rk)
        rd_kafka_destroy(rk);
    for (size_t t = 0; t < topic_cnt; t++)
        free(topics[t].name);
    free(topics);
    return rc;
}

/* ------------------------------------------------------------------- load */

/*
 * The parsed fixture.  200,000 jansson trees would cost hundreds of MB, so
 * each line is boiled down to spans in one byte arena as soon as it has been
 * validated.  Spans are offsets, not pointers, because the arena moves while
 * it grows; once parsing is done it no longer moves and librdkafka may point
 * straight into it (no RD_KAFKA_MSG_F_COPY) until the final flush.
 */
typedef struct dk_span_s {
    size_t off;
    size_t len;
    int null;
} dk_span_t;

typedef struct dk_header_s {
    dk_span_t name;
    dk_span_t value;
} dk_header_t;

typedef struct dk_record_s {
    dk_span_t key;
    dk_span_t value;
    size_t hdr_first;
    size_t hdr_cnt;
    int32_t partition;
    int64_t timestamp;
    long lineno;
} dk_record_t;

typedef struct dk_fixture_s {
    kpb_buf_t arena;
    dk_record_t *recs;
    size_t rec_cnt, rec_cap;
    dk_header_t *hdrs;
    size_t hdr_cnt, hdr_cap;
} dk_fixture_t;

static void dk_fixture_init(dk_fixture_t *fx) {
    memset(fx, 0, sizeof(*fx));
    kpb_buf_init(&fx->arena);
}

static void dk_fixture_fini(dk_fixture_t *fx) {
    kpb_buf_fini(&fx->arena);
    free(fx->recs);
    free(fx->hdrs);
}

static dk_span_t dk_arena_put(dk_fixture_t *fx, const void *p, size_t n) {
    dk_span_t s = {fx->arena.len, n, 0};
    kpb_buf_append(&fx->arena, p, n);
    return s;
}

static const dk_span_t dk_null_span = {0, 0, 1};

/* Standard alphabet; padding optional; anything else is an error. */
static int dk_b64_decode(const char *in, size_t n, kpb_buf_t *out) {
    uint32_t acc = 0;
    int bits = 0;
    size_t pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        int v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else if (c == '=') {
            pad++;
            continue;
        } else
            return -1;
        if (pad)
            return -1; /* data after padding */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            kpb_buf_putc(out, (char)((acc >> bits) & 0xff));
        }
    }
    /* Leftover bits must be zero padding of a 2- or 3-byte tail. */
    if (bits >= 6 || pad > 2 || (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return 0;
}

static int dk_add_header(dk_fixture_t *fx, const json_t *name_j,
                         const char *name, const json_t *val,
                         const char **why) {
    if (!json_is_string(val) && !json_is_null(val)) {
        *why = "header values must be strings or null";
        return -1;
    }
    if (fx->hdr_cnt == fx->hdr_cap) {
        fx->hdr_cap = fx->hdr_cap ? fx->hdr_cap * 2 : 1024;
        fx->hdrs = kpb_xrealloc(fx->hdrs, fx->hdr_cap * sizeof(*fx->hdrs));
    }
    dk_header_t *h = &fx->hdrs[fx->hdr_cnt++];
    if (name_j)
        h->name = dk_arena_put(fx, json_string_value(name_j),
                               json_string_length(name_j));
    else
        h->name = dk_arena_put(fx, name, strlen(name));
    if (json_is_null(val))
        h->value = dk_null_span;
    else
        h->value =
            dk_arena_put(fx, json_string_value(val), json_string_length(val));
    return 0;
}

/*
 * Turns one fixture line into a record.  Returns 0, or -1 with *why set to a
 * static message or to @p why_buf.
 */
static int dk_parse_line(dk_fixture_t *fx, const char *line, size_t len,
                         long lineno, char *why_buf, size_t why_size,
                         const char **why) {
    int rc = -1;
    kpb_buf_t tmp;
    kpb_buf_init(&tmp);
    size_t hdr_mark = fx->hdr_cnt;
    size_t arena_mark = fx->arena.len;

    /*
     * JSON_ALLOW_NUL because a key or raw value with an embedded NUL is
     * exactly the kind of poison record a fixture exists to produce.
     * Duplicate names are refused: a second "key" in a line is a typo, and
     * repeated header names have their own array form.
     */
    json_error_t jerr;
    json_t *root =
        json_loadb(line, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(why_buf, why_size, "%s (at byte %d)", jerr.text,
                 jerr.position);
        *why = why_buf;
        goto out;
    }
    if (!json_is_object(root)) {
        *why = "a line must be a JSON object";
        goto out;
    }

    dk_record_t rec;
    memset(&rec, 0, sizeof(rec));
    rec.key = dk_null_span;
    rec.value = dk_null_span;
    rec.partition = RD_KAFKA_PARTITION_UA;
    rec.lineno = lineno;

    const char *k;
    json_t *v;
    int value_seen = 0;
    json_object_foreach(root, k, v) {
        if (!strcmp(k, "key")) {
            if (json_is_string(v))
                rec.key = dk_arena_put(fx, json_string_value(v),
                                       json_string_length(v));
            else if (!json_is_null(v)) {
                *why = "\"key\" must be a string or null";
                goto out;
            }
        } else if (!strcmp(k, "headers")) {
            if (json_is_object(v)) {
                const char *hn;
                json_t *hv;
                json_object_foreach(v, hn, hv) {
                    if (dk_add_header(fx, NULL, hn, hv, why) != 0)
                        goto out;
                }
            } else if (json_is_array(v)) {
                size_t idx;
                json_t *pair;
                json_array_foreach(v, idx, pair) {
                    if (!json_is_array(pair) || json_array_size(pair) != 2 ||
                        !json_is_string(json_array_get(pair, 0))) {
                        *why = "\"headers\" array entries must be "
                               "[name, value] pairs";
                        goto out;
                    }
                    if (dk_add_header(fx, json_array_get(pair, 0), NULL,
                                      json_array_get(pair, 1), why) != 0)
                        goto out;
                }
            } else if (!json_is_null(v)) {
                *why = "\"headers\" must be an object or an array of pairs";
                goto out;
            }
        } else if (!strcmp(k, "value") || !strcmp(k, "value_raw") ||
                   !strcmp(k, "value_b64")) {
            if (value_seen++) {
                *why = "at most one of \"value\", \"value_raw\", "
                       "\"value_b64\"";
                goto out;
            }
            if (!strcmp(k, "value")) {
                char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                if (!text) {
                    *why = "cannot serialise \"value\"";
                    goto out;
                }
                rec.value = dk_arena_put(fx, text, strlen(text));
                free(text);
            } else if (!json_is_string(v)) {
                *why = !strcmp(k, "value_raw")
                           ? "\"value_raw\" must be a string"
                           : "\"value_b64\" must be a base64 string";
                goto out;
            } else if (!strcmp(k, "value_raw")) {
                rec.value = dk_arena_put(fx, json_string_value(v),
                                         json_string_length(v));
            } else {
                kpb_buf_reset(&tmp);
                if (dk_b64_decode(json_string_value(v), json_string_length(v),
                                  &tmp) != 0) {
                    *why = "\"value_b64\" is not valid base64";
                    goto out;
                }
                rec.value = dk_arena_put(fx, tmp.data, tmp.len);
            }
        } else if (!strcmp(k, "partition")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > INT32_MAX) {
                *why = "\"partition\" must be a non-negative integer";
                goto out;
            }
            rec.partition = (int32_t)json_integer_value(v);
        } else if (!strcmp(k, "timestamp")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0) {
                *why = "\"timestamp\" must be a non-negative integer "
                       "(milliseconds)";
                goto out;
            }
            rec.timestamp = (int64_t)json_integer_value(v);
        } else {
            /* Unknown keys are errors, as in the bridge's configuration:
             * a misspelt "hedaers" would otherwise load records silently
             * without their headers. */
            *why = "unknown field (expected key, headers, value, value_raw, "
                   "value_b64, partition, timestamp)";
            goto out;
        }
    }
    rec.hdr_first = hdr_mark;
    rec.hdr_cnt = fx->hdr_cnt - hdr_mark;

    if (fx->rec_cnt == fx->rec_cap) {
        fx->rec_cap = fx->rec_cap ? fx->rec_cap * 2 : 1024;
        fx->recs = kpb_xrealloc(fx->recs, fx->rec_cap * sizeof(*fx->recs));
    }
    fx->recs[fx->rec_cnt++] = rec;
    rc = 0;
out:
    if (rc != 0) {
        fx->hdr_cnt = hdr_mark;
        fx->arena.len = arena_mark;
    }
    json_decref(root);
    kpb_buf_fini(&tmp);
    return rc;
}

/* Reads and validates the whole fixture; DK_EXIT_* code. */
static int dk_fixture_read(dk_fixture_t *fx, const char *path) {
    int is_stdin = !strcmp(path, "-");
    const char *shown = is_stdin ? "<stdin>" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: %s: %s\n", DK_PROG, path, strerror(errno));
        return DK_EXIT_USAGE;
    }
    int rc = DK_EXIT_OK;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    char why_buf[256];
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        const char *p = line;
        while (p < line + n &&
               (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
        if (p == line + n || *p == '#')
            continue;
        const char *why = NULL;
        if (dk_parse_line(fx, line, (size_t)n, lineno, why_buf, sizeof(why_buf),
                          &why) != 0) {
            fprintf(stderr, "%s:%ld: %s\n", shown, lineno, why);
            rc = DK_EXIT_USAGE;
            break;
        }
    }
    if (rc == DK_EXIT_OK && ferror(f)) {
        fprintf(stderr, "%s: %s: %s\n", DK_PROG, shown, strerror(errno));
        rc = DK_EXIT_USAGE;
    }
    free(line);
    if (!is_stdin)
        fclose(f);
    return rc;
}

typedef struct dk_dr_state_s {
    size_t ok;
    size_t failed;
    char first_error[512];
} dk_dr_state_t;

static void dk_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                     void *opaque) {
    dk_dr_state_t *st = opaque;
    (void)rk;
    if (!rkm->err) {
        st->ok++;
        return;
    }
    if (!st->failed++)
        snprintf(st->first_error, sizeof(st->first_error), "%s",
                 rd_kafka_message_errstr(rkm));
}

/*
 * Looks the topic up before producing anything: it reaches the brokers
 * (an unreachable bootstrap fails here in seconds instead of after the
 * message timeout), lets the producer auto-create the topic, and finds
 * explicit partitions that do not exist while nothing has been produced
 * yet.  *partition_cnt is 0 when the count is unknown.
 */
static int dk_topic_lookup(rd_kafka_t *rk, rd_kafka_topic_t *rkt,
                           int *partition_cnt) {
    const struct rd_kafka_metadata *md = NULL;
    *partition_cnt = 0;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    if (err) {
        fprintf(stderr, "%s: cannot fetch metadata for %s: %s\n", DK_PROG,
                rd_kafka_topic_name(rkt), rd_kafka_err2str(err));
        return -1;
    }
    if (md->topic_cnt == 1 && !md->topics[0].err)
        *partition_cnt = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return 0;
}

/*
 * The mock drops a partition's oldest message sets past its size and count
 * caps without telling the producer: every delivery report says success.
 * The low watermark is the only trace, so point at it.
 */
static void dk_check_watermarks(rd_kafka_t *rk, const char *topic,
                                int partition_cnt) {
    for (int p = 0; p < partition_cnt; p++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000))
            continue;
        if (lo > 0)
            fprintf(stderr,
                    "%s: warning: %s [%d] now starts at offset %" PRId64
                    " of %" PRId64 ": the mock cluster dropped older records "
                    "(it keeps about 5 MiB or 100,000 message sets per "
                    "partition)\n",
                    DK_PROG, topic, p, lo, hi);
    }
}

static int dk_load(int argc, char **argv) {
    const char *brokers = NULL, *topic = NULL, *path = NULL;
    dk_fixture_t fx;
    dk_fixture_init(&fx);
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    dk_dr_state_t st;
    memset(&st, 0, sizeof(st));
    int rc = DK_EXIT_USAGE;
    char errstr[512];

    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int m;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            dk_usage(stdout);
            rc = DK_EXIT_OK;
            goto out;
        } else if ((m = dk_opt(argc, argv, &i, "--brokers", &v)) != 0) {
            if (m < 0 || *v == '\0') {
                rc = dk_usage_error("--brokers wants host:port[,...]");
                goto out;
            }
            brokers = v;
        } else if ((m = dk_opt(argc, argv, &i, "--topic", &v)) != 0) {
            if (m < 0 || *v == '\0') {
                rc = dk_usage_error("--topic wants a topic name");
                goto out;
            }
            topic = v;
        } else if ((m = dk_opt(argc, argv, &i, "--partitions-hint", &v)) != 0) {
            long long ignored;
            if (m < 0 || dk_parse_int(v, 1, INT32_MAX, &ignored) != 0) {
                rc = dk_usage_error("--partitions-hint wants a number, got %s",
                                    m < 0 ? "nothing" : v);
                goto out;
            }
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            rc = dk_usage_error("load: unknown option %s", argv[i]);
            goto out;
        } else if (path) {
            rc = dk_usage_error("load: only one FILE, got also %s", argv[i]);
            goto out;
        } else {
            path = argv[i];
        }
    }
    if (!brokers || !topic || !path) {
        rc = dk_usage_error("load needs --brokers, --topic and a FILE");
        goto out;
    }

    if ((rc = dk_fixture_read(&fx, path)) != DK_EXIT_OK)
        goto out;

    rc = DK_EXIT_FAIL;
    signal(SIGPIPE, SIG_IGN);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /*
     * lz4 and large batches are not about speed: the mock keeps only about
     * 5 MiB or 100,000 message sets per partition and drops the oldest
     * silently, so fewer, smaller message sets are what let a fixture of
     * hundreds of thousands of records survive.  Idempotence is off because
     * the mock's idempotent producer support adds nothing a fixture needs.
     */
    if (dk_conf_set(conf, "bootstrap.servers", brokers) ||
        dk_conf_set(conf, "client.id", DK_PROG) ||
        dk_conf_set(conf, "compression.type", "lz4") ||
        dk_conf_set(conf, "linger.ms", "5") ||
        dk_conf_set(conf, "batch.num.messages", "10000") ||
        dk_conf_set(conf, "queue.buffering.max.messages", "2000000") ||
        dk_conf_set(conf, "queue.buffering.max.kbytes", "2097151") ||
        dk_conf_set(conf, "enable.idempotence", "false") ||
        dk_conf_set(conf, "acks", "all") ||
        /* fixtures hold records over 1 MiB on purpose (too_large) */
        dk_conf_set(conf, "message.max.bytes", "16777216")) {
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dk_dr_cb);
    rd_kafka_conf_set_opaque(conf, &st);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "%s: %s\n", DK_PROG, errstr);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    rkt = rd_kafka_topic_new(rk, topic, NULL);
    int partition_cnt = 0;
    if (dk_topic_lookup(rk, rkt, &partition_cnt) != 0)
        goto out;
    for (size_t r = 0; partition_cnt > 0 && r < fx.rec_cnt; r++) {
        if (fx.recs[r].partition >= partition_cnt) {
            fprintf(stderr,
                    "%s:%ld: partition %" PRId32 " does not exist "
                    "(%s has %d partitions)\n",
                    !strcmp(path, "-") ? "<stdin>" : path, fx.recs[r].lineno,
                    fx.recs[r].partition, topic, partition_cnt);
            rc = DK_EXIT_USAGE;
            goto out;
        }
    }

    const char *base = fx.arena.data;
    for (size_t r = 0; r < fx.rec_cnt; r++) {
        const dk_record_t *rec = &fx.recs[r];
        rd_kafka_headers_t *hdrs = NULL;
        if (rec->hdr_cnt) {
            hdrs = rd_kafka_headers_new(rec->hdr_cnt);
            for (size_t h = 0; h < rec->hdr_cnt; h++) {
                const dk_header_t *hd = &fx.hdrs[rec->hdr_first + h];
                rd_kafka_header_add(
                    hdrs, base + hd->name.off, (ssize_t)hd->name.len,
                    hd->value.null ? NULL : base + hd->value.off,
                    (ssize_t)hd->value.len);
            }
        }
        for (;;) {
            /* Flags 0: librdkafka points into the arena, which stays put
             * until after the final flush. */
            rd_kafka_resp_err_t err = rd_kafka_producev(
                rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(rec->partition),
                RD_KAFKA_V_MSGFLAGS(0),
                /* parenthesised: the macros cast their argument as is */
                RD_KAFKA_V_KEY((rec->key.null ? NULL : base + rec->key.off),
                               rec->key.len),
                RD_KAFKA_V_VALUE((rec->value.null
                                      ? NULL
                                      : (void *)(base + rec->value.off)),
                                 rec->value.len),
                RD_KAFKA_V_TIMESTAMP(rec->timestamp), RD_KAFKA_V_HEADERS(hdrs),
                RD_KAFKA_V_END);
            if (!err)
                break; /* hdrs now belong to the message */
            if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_poll(rk, 100);
                continue;
            }
            /* Counted like a failed delivery, so the exit status says it. */
            if (!st.failed++)
                snprintf(st.first_error, sizeof(st.first_error), "line %ld: %s",
                         rec->lineno, rd_kafka_err2str(err));
            rd_kafka_headers_destroy(hdrs);
            break;
        }
        rd_kafka_poll(rk, 0);
    }

    if (rd_kafka_flush(rk, 60000) == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        int left = rd_kafka_outq_len(rk);
        /* Purged messages still get (failed) delivery reports. */
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(rk, 0);
        if (!st.failed)
            snprintf(st.first_error, sizeof(st.first_error),
                     "%d messages still queued after 60 s", left);
    }
    if (st.ok + st.failed < fx.rec_cnt) {
        /* Anything without a report at all is a failure too. */
        st.failed = fx.rec_cnt - st.ok;
    }
    if (st.failed) {
        fprintf(stderr,
                "%s: %zu of %zu records into %s failed; first error: "
                "%s\n",
                DK_PROG, st.failed, fx.rec_cnt, topic, st.first_error);
        goto out;
    }
    if (partition_cnt == 0)
        (void)dk_topic_lookup(rk, rkt, &partition_cnt);
    dk_check_watermarks(rk, topic, partition_cnt);
    fprintf(stderr, "loaded %zu records into %s\n", st.ok, topic);
    rc = DK_EXIT_OK;

out:
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    /* Destroy before the arena goes: queued messages may point into it. */
    if (rk)
        rd_kafka_destroy(rk);
    dk_fixture_fini(&fx);
    return rc;
}

/* -------------------------------------------------------------------- gen */

/*
 * xorshift64*: tiny, fast and, unlike rand(), the same on every libc, so a
 * seed names one fixture everywhere.
 */
static uint64_t dk_rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n) by multiply-shift; the bias is below 2^-32 for any n
 * a fixture would use. */
static uint64_t dk_rng_below(uint64_t *s, uint64_t n) {
    return (uint64_t)(((dk_rng_next(s) >> 32) * n) >> 32);
}

static int dk_gen(int argc, char **argv) {
    long long streams = -1, events = -1, payload = 200;
    uint64_t seed = 1;
    uint64_t *seqs = NULL;
    kpb_buf_t line, value;
    kpb_buf_init(&line);
    kpb_buf_init(&value);
    int rc = DK_EXIT_USAGE;

    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int m;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            dk_usage(stdout);
            rc = DK_EXIT_OK;
            goto out;
        } else if ((m = dk_opt(argc, argv, &i, "--streams", &v)) != 0) {
            if (m < 0 || dk_parse_int(v, 1, 100000000, &streams) != 0) {
                rc = dk_usage_error("--streams wants a number >= 1, got %s",
                                    m < 0 ? "nothing" : v);
                goto out;
            }
        } else if ((m = dk_opt(argc, argv, &i, "--events", &v)) != 0) {
            if (m < 0 || dk_parse_int(v, 0, LLONG_MAX, &events) != 0) {
                rc = dk_usage_error("--events wants a number >= 0, got %s",
                                    m < 0 ? "nothing" : v);
                goto out;
            }
        } else if ((m = dk_opt(argc, argv, &i, "--payload-bytes", &v)) != 0) {
            if (m < 0 || dk_parse_int(v, 0, 100 * 1024 * 1024, &payload)) {
                rc = dk_usage_error("--payload-bytes wants a number >= 0, "
                                    "got %s",
                                    m < 0 ? "nothing" : v);
                goto out;
            }
        } else if ((m = dk_opt(argc, argv, &i, "--seed", &v)) != 0) {
            if (m < 0 || dk_parse_u64(v, &seed) != 0) {
                rc = dk_usage_error("--seed wants an unsigned number, got %s",
                                    m < 0 ? "nothing" : v);
                goto out;
            }
        } else {
            rc = dk_usage_error("gen: unknown argument %s", argv[i]);
            goto out;
        }
    }
    if (streams < 0 || events < 0) {
        rc = dk_usage_error("gen needs --streams and --events");
        goto out;
    }

    /*
     * splitmix64 of the seed: a bijection, so distinct seeds stay distinct,
     * and it spreads small seeds (1, 2, 3) far apart.  xorshift has the
     * all-zero state as a fixed point, which the one seed that maps there
     * must avoid.
     */
    uint64_t state = seed + 0x9E3779B97F4A7C15ULL;
    state = (state ^ (state >> 30)) * 0xBF58476D1CE4E5B9ULL;
    state = (state ^ (state >> 27)) * 0x94D049BB133111EBULL;
    state ^= state >> 31;
    if (state == 0)
        state = 0x9E3779B97F4A7C15ULL;
    seqs = kpb_xcalloc((size_t)streams, sizeof(*seqs));

    /*
     * The filler repeats one short pattern on purpose: random filler would
     * defeat lz4, and the mock's 5 MiB per partition cap would then drop
     * the front of a large fixture without a word.
     */
    static const char filler[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    const size_t filler_len = sizeof(filler) - 1;

    for (long long n = 0; n < events; n++) {
        uint64_t s = dk_rng_below(&state, (uint64_t)streams);
        uint64_t seq = ++seqs[s];
        kpb_buf_reset(&value);
        kpb_buf_printf(&value,
                       "{\"stream\":\"stream-%" PRIu64 "\",\"seq\":%" PRIu64
                       ",\"n\":%lld,\"pad\":\"",
                       s, seq, n);
        /* 2 for the closing quote and brace. */
        size_t have = value.len + 2;
        size_t want = (size_t)payload > have ? (size_t)payload - have : 0;
        for (size_t k = 0; k < want; k += filler_len)
            kpb_buf_append(&value, filler,
                           want - k < filler_len ? want - k : filler_len);
        kpb_buf_puts(&value, "\"}");

        kpb_buf_reset(&line);
        kpb_buf_printf(&line,
                       "{\"key\":\"stream-%" PRIu64
                       "\",\"headers\":{\"event-type\":\"%s\"},\"value\":",
                       s, seq % 2 ? "OrderPlaced" : "OrderPaid");
        kpb_buf_append(&line, value.data, value.len);
        kpb_buf_puts(&line, "}\n");
        fwrite(line.data, 1, line.len, stdout);
        if (ferror(stdout))
            break;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s: writing stdout: %s\n", DK_PROG, strerror(errno));
        rc = DK_EXIT_FAIL;
        goto out;
    }
    rc = DK_EXIT_OK;

out:
    free(seqs);
    kpb_buf_fini(&line);
    kpb_buf_fini(&value);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        dk_usage(stderr);
        return DK_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        dk_usage(stdout);
        return DK_EXIT_OK;
    }
    if (!strcmp(cmd, "serve"))
        return dk_serve(argc, argv);
    if (!strcmp(cmd, "load"))
        return dk_load(argc, argv);
    if (!strcmp(cmd, "gen"))
        return dk_gen(argc, argv);
    return dk_usage_error("unknown subcommand %s", cmd);
}
