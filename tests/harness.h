/**
 * @file harness.h
 * @brief Test helpers: the throwaway PostgreSQL started by scripts/test
 *        (KPB_TEST_PG), librdkafka's mock cluster in the test process, and
 *        the real kpbridge binary run as a child process.
 */
#ifndef KPB_HARNESS_H
#define KPB_HARNESS_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/** @brief Reads a whole file into a NUL-terminated heap buffer (or NULL). */
char *kpbt_read_file(const char *path, size_t *len);

/* ---- PostgreSQL ---------------------------------------------------------- */

/** @brief The login, member of kpbridge_writer, that the bridge under test
 *         uses (kpbt_config adds it to the conninfo). */
#define KPBT_BRIDGE_USER "kpbt_bridge"

/**
 * @brief Creates a fresh database for one test (named after @p tag and the
 *        pid) and returns its conninfo (heap).  With @p migrate the schema
 *        is applied.  Fails the test when KPB_TEST_PG is not set.
 */
char *kpbt_db_new(const char *tag, int migrate);
/** @brief Connects or fails the test. */
PGconn *kpbt_pg(const char *conninfo);
/** @brief Runs SQL that must succeed. */
void kpbt_exec(PGconn *conn, const char *sql);
/** @brief Runs a query whose first column of the first row is an integer. */
long long kpbt_int(PGconn *conn, const char *sql);
/** @brief Same, with a printf-style query. */
long long kpbt_intf(PGconn *conn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- Kafka (mock cluster) ------------------------------------------------ */

typedef struct kpbt_kafka_s {
    rd_kafka_t *rk; /**< the handle that owns the mock cluster */
    rd_kafka_t *producer; /**< writes test records to it over TCP */
    rd_kafka_mock_cluster_t *mcluster;
    const char *bootstrap;
} kpbt_kafka_t;

/** @brief Starts a mock cluster of @p brokers brokers. */
kpbt_kafka_t *kpbt_kafka_new(int brokers);
void kpbt_kafka_destroy(kpbt_kafka_t *k);
void kpbt_topic(kpbt_kafka_t *k, const char *topic, int partitions);

/** @brief A header for kpbt_produce (value NULL: a null header). */
typedef struct kpbt_hdr_s {
    const char *name;
    const char *value;
} kpbt_hdr_t;

/**
 * @brief Queues one record (partition -1: by key); kpbt_flush() waits for
 *        every delivery and fails the test on any error.
 */
void kpbt_produce(kpbt_kafka_t *k, const char *topic, int partition,
                  const char *key, const void *value, size_t value_len,
                  const kpbt_hdr_t *hdrs, int hdr_cnt);
void kpbt_flush(kpbt_kafka_t *k);

/** @brief The high watermark of a partition. */
int64_t kpbt_end_offset(kpbt_kafka_t *k, const char *topic, int partition);
/** @brief Reads partition 0 of @p topic to its end and counts the records
 *         that carry header @p name. */
int kpbt_count_header(kpbt_kafka_t *k, const char *topic, const char *name);

/** @brief A group's committed offset in Kafka (-1001 when none). */
int64_t kpbt_committed(kpbt_kafka_t *k, const char *group, const char *topic,
                       int partition);

/* ---- the kpbridge binary ------------------------------------------------- */

/**
 * @brief The postgres.versioning the configurations below get: what
 *        kpbt_set_versioning() set, else $KPBT_VERSIONING (CI runs some
 *        suites once per mode), else "trigger".
 */
const char *kpbt_versioning(void);
/** @brief Overrides kpbt_versioning() for this test process (NULL: undo). */
void kpbt_set_versioning(const char *versioning);

/**
 * @brief Writes a config file for a test and returns its path (heap); the
 *        bridge connects as KPBT_BRIDGE_USER (least privilege).
 * @param extra  YAML appended verbatim (may be NULL), e.g. "batch:\n ..."
 * @param topics the `topics:` sequence items, YAML text
 */
char *kpbt_config(const char *tag, const char *brokers, const char *conninfo,
                  const char *topics, const char *extra);

/** @brief Same, with more kafka.properties lines ("    key: value\n"). */
char *kpbt_config_props(const char *tag, const char *brokers,
                        const char *conninfo, const char *topics,
                        const char *extra, const char *props);

/** @brief Starts `kpbridge ARGS...` with stderr to @p log; returns the pid. */
pid_t kpbt_spawn(const char *log, const char *const *args);
/**
 * @brief Whether @p pid has exited (its exit code, or 128 + signal, in
 *        *code); past @p until (kpbt_now() time) it is killed and the test
 *        fails.  Does not block.
 */
int kpbt_exited(pid_t pid, double until, int *code);
/**
 * @brief Waits up to @p timeout_s for a child; returns its exit code, or
 *        128+signal, and fails the test (after SIGKILL) on timeout.
 */
int kpbt_wait(pid_t pid, int timeout_s);
/** @brief Spawn and wait: `kpbridge run -c CONFIG --exit-at-end`. */
int kpbt_run_to_end(const char *config, const char *log, int timeout_s);

/**
 * @brief Produces @p events records over @p streams streams (key = stream id,
 *        header event-type, value {"stream": S, "seq": n} with n counting
 *        1.. per stream in production order) and waits for delivery.
 */
void kpbt_produce_streams(kpbt_kafka_t *k, const char *topic, int events,
                          int streams, unsigned seed);

/** @brief Expects every stream's versions to be exactly 1..n. */
void kpbt_expect_gap_free(PGconn *conn);

/**
 * @brief The four checks of an exactly-once run over the events table:
 *        exactly @p events rows and no dead letters, no Kafka record twice,
 *        versions 1..n gap-free per stream, version order = offset order =
 *        the producer's seq; and the group's stored offsets at the end.
 */
void kpbt_expect_exactly_once(PGconn *conn, kpbt_kafka_t *k,
                              const char *group, const char *topic,
                              int partitions, long long events);

/** @brief Runs `scripts/pg VERB $KPB_TEST_PGDIR` (restart, halt, start). */
void kpbt_pg_ctl(const char *verb);

/** @brief A log path for a test (removed first); heap. */
char *kpbt_log_path(const char *tag);
/** @brief Prints the tail of a log to stderr (for failing tests). */
void kpbt_show_log(const char *path);

/** @brief Wall-clock seconds, for reporting rates. */
double kpbt_now(void);

#endif
