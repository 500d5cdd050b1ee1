/**
 * @file consumer.h
 * @brief The librdkafka side: the consumer's configuration and the mapping
 *        from a Kafka message to the record that decode reads.
 */
#ifndef KPB_CONSUMER_H
#define KPB_CONSUMER_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "config.h"
#include "decode.h"
#include "util.h"

/**
 * @brief Builds the consumer configuration: kafka.brokers, group_id, the
 *        bridge's fixed settings (manual offset commits, end-of-partition
 *        events, a bounded prefetch queue), then kafka.properties as given.
 * @returns a new conf, or NULL with errstr naming the property at fault
 *          (never its value: it may be a secret).
 */
rd_kafka_conf_t *kpb_consumer_conf(const kpb_config_t *conf, char *errstr,
                                   size_t errstr_size);

/** @brief Reusable storage for a message's headers. */
typedef struct kpb_hdrvec_s {
    kpb_header_t *v;
    size_t cap;
} kpb_hdrvec_t;

void kpb_hdrvec_fini(kpb_hdrvec_t *hv);

/**
 * @brief Fills @p rec from @p rkm; pointers stay valid while rkm lives
 *        (headers: while @p hv is not reused).
 */
void kpb_consumer_record(const rd_kafka_message_t *rkm, const char *topic,
                         kpb_hdrvec_t *hv, kpb_record_t *rec);

/** @brief Routes librdkafka's log lines through kpb_log. */
void kpb_consumer_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                         const char *buf);

/**
 * @brief Wakes librdkafka's fetchers while a backlog is being drained.
 *
 * librdkafka before 2.1 stops fetching a partition while the prefetch queue
 * is over queued.max.messages.kbytes and looks again only when its broker
 * thread next wakes up, which with nothing else to do is once a second.  A
 * queue small enough to keep memory flat then runs dry between looks.  The
 * nudger asks the partitions' leaders for their end offsets every
 * @p interval_ms while records keep arriving: the request wakes each
 * leader's broker thread, which refills the queue at once.
 */
typedef struct kpb_nudger_s kpb_nudger_t;

/** The nudger's period: the longest a drained queue waits for a refill. */
#define KPB_NUDGE_MS 50

/** @brief Whether this librdkafka needs the nudger: 2.1 and later back off
 *         for fetch.queue.backoff.ms instead, which kpb_consumer_conf()
 *         sets low. */
int kpb_consumer_needs_nudger(void);

/** @brief Starts the nudger thread; NULL if it cannot be started. */
kpb_nudger_t *kpb_nudger_start(rd_kafka_t *rk, int interval_ms);
/** @brief Tells the nudger that records arrived (cheap; any thread). */
void kpb_nudger_active(kpb_nudger_t *n);
/** @brief Stops and frees the nudger; NULL is a no-op. */
void kpb_nudger_stop(kpb_nudger_t *n);

#endif
