/**
 * @file metrics.h
 * @brief The process-wide metrics registry behind `GET /metrics`, rendered
 *        in the Prometheus text exposition format (version 0.0.4).
 *
 * Pure: no I/O.  Built for one writer thread (the consumer loop) and any
 * number of concurrent readers (the HTTP thread): counters, gauges and
 * histogram buckets are C11 atomics updated with relaxed ordering, so an
 * update never takes a lock and never waits for a reader.  A render is a
 * snapshot that is consistent enough for monitoring: every value it shows was
 * true at some point during the render, and a histogram's `_count` always
 * equals its `+Inf` bucket.
 *
 * The registry lives in static storage and is usable before
 * kpb_metrics_init(); the labelled lag series are the only heap memory.
 */
#ifndef KPB_METRICS_H
#define KPB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/** @brief The unlabelled metrics, by kind. */
typedef enum {
    /* counters: kpb_metrics_add() */
    KPB_METRIC_EVENTS_CONSUMED = 0, /**< kpbridge_events_consumed_total */
    KPB_METRIC_EVENTS_WRITTEN,      /**< kpbridge_events_written_total */
    KPB_METRIC_FLUSHES,             /**< kpbridge_flushes_total */
    KPB_METRIC_DB_RETRIES,          /**< kpbridge_db_retries_total */
    KPB_METRIC_FENCED,              /**< kpbridge_fenced_total */
    /* gauges: kpb_metrics_set() */
    KPB_METRIC_PENDING_EVENTS, /**< kpbridge_pending_events */
    KPB_METRIC_DB_CONNECTED,   /**< kpbridge_db_connected (0 or 1) */
    /** kpbridge_kafka_assigned_partitions */
    KPB_METRIC_KAFKA_ASSIGNED_PARTITIONS,
    /* histograms: kpb_metrics_observe() */
    KPB_METRIC_FLUSH_DURATION, /**< kpbridge_flush_duration_seconds */
    KPB_METRIC_BATCH_EVENTS,   /**< kpbridge_batch_events (rows per flush) */
    KPB_METRIC__CNT
} kpb_metric_id_t;

/** @brief The most consumer-lag series kept; kpb_metrics_lag() refuses more. */
#define KPB_METRICS_LAG_MAX 4096

/**
 * @brief Resets the registry to zero (all counters, gauges, histograms and
 *        dead-letter counts; every lag series removed).  Call once in main()
 *        before any thread uses the registry.
 */
void kpb_metrics_init(void);

/**
 * @brief Same as kpb_metrics_init(), for tests.  Not safe against concurrent
 *        writers (a reader may see a half-reset snapshot, nothing worse).
 */
void kpb_metrics_reset(void);

/**
 * @brief Adds @p n to a counter.  Ignored (and an assertion in debug builds)
 *        when @p id is not a counter.
 */
void kpb_metrics_add(kpb_metric_id_t id, uint64_t n);

/**
 * @brief Sets a gauge.  Ignored (and an assertion in debug builds) when
 *        @p id is not a gauge.
 */
void kpb_metrics_set(kpb_metric_id_t id, int64_t v);

/**
 * @brief Records one observation in a histogram: the first bucket whose upper
 *        bound is >= @p v, the sum and the count.  NaN is ignored.  Ignored
 *        (and an assertion in debug builds) when @p id is not a histogram.
 */
void kpb_metrics_observe(kpb_metric_id_t id, double v);

/** @brief A counter's current value (0 for a non-counter id). */
uint64_t kpb_metrics_counter(kpb_metric_id_t id);

/**
 * @brief A gauge's current value (0 for a non-gauge id).  Lock-free: fit for
 *        a kpb_http readiness callback.
 */
int64_t kpb_metrics_gauge(kpb_metric_id_t id);

/**
 * @brief Counts one dead letter in kpbridge_dead_letters_total{reason}.
 * @param reason one of the stored reason names (kpb_reason_name()):
 *        no_stream_id, bad_stream_id, no_event_type, no_payload,
 *        invalid_utf8, nul_byte, invalid_json, bad_event_id,
 *        bad_expected_version, too_large, version_conflict,
 *        rejected_by_database.
 * @returns 0, or -1 (nothing counted) for a NULL or unknown reason.
 */
int kpb_metrics_dead_letter(const char *reason);

/** @brief The dead-letter count of one reason (0 for an unknown reason). */
uint64_t kpb_metrics_dead_letters(const char *reason);

/**
 * @brief Sets kpbridge_consumer_lag{topic,partition}, creating the series on
 *        first use (the topic string is copied).
 *
 * Updating an existing series takes only a shared lock, so it never waits
 * for a render; creating or removing one takes the exclusive lock, which a
 * render in progress delays briefly (on assignment changes only).
 *
 * @returns 0, or -1 when @p topic is NULL or KPB_METRICS_LAG_MAX series
 *          exist already (the series is then not exported).
 */
int kpb_metrics_lag(const char *topic, int32_t partition, int64_t lag);

/** @brief Removes a lag series (on revoke); unknown series are ignored. */
void kpb_metrics_lag_remove(const char *topic, int32_t partition);

/** @brief Removes every lag series (on a full revoke or shutdown). */
void kpb_metrics_lag_clear(void);

/**
 * @brief Appends the whole registry to @p out in the Prometheus text format
 *        0.0.4: `# HELP` and `# TYPE` for every family, every dead-letter
 *        reason (zeros included), lag series sorted by topic and partition,
 *        and `kpbridge_up 1`.  Safe from any thread.
 */
void kpb_metrics_render(kpb_buf_t *out);

#endif
