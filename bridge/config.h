/**
 * @file config.h
 * @brief The YAML configuration (DESIGN.md §3), parsed with libyaml into a
 *        plain struct.  Pure: no I/O beyond reading the file.
 */
#ifndef KPB_CONFIG_H
#define KPB_CONFIG_H

#include <stddef.h>

#include "util.h"

/** @brief Where a field of an event comes from in a Kafka record. */
typedef enum {
    KPB_SRC_NONE = 0, /**< not set (optional fields only) */
    KPB_SRC_KEY,      /**< the record key */
    KPB_SRC_VALUE,    /**< the whole record value */
    KPB_SRC_HEADER,   /**< header:NAME, the last header of that name */
    KPB_SRC_JSON,     /**< json:/pointer into the value (RFC 6901) */
    KPB_SRC_CONST,    /**< const:TEXT */
} kpb_src_kind_t;

typedef struct kpb_src_s {
    kpb_src_kind_t kind;
    char *arg; /**< header name, JSON pointer or constant; NULL otherwise */
} kpb_src_t;

/** @brief One entry of `topics:`. */
typedef struct kpb_topic_s {
    char *name;
    char *table;                 /**< default "eventcore_events" */
    kpb_src_t stream_id;         /**< key | header | json */
    kpb_src_t event_type;        /**< header | json | const */
    kpb_src_t event_id;          /**< header | json | none */
    kpb_src_t expected_version;  /**< header | json | none */
    kpb_src_t payload;           /**< value | json */
} kpb_topic_t;

typedef struct kpb_kv_s {
    char *key;
    char *value;
} kpb_kv_t;

/** @brief Who numbers the events of a stream (postgres.versioning). */
typedef enum {
    KPB_VERSIONS_TRIGGER = 0, /**< the table's row trigger, per row */
    KPB_VERSIONS_STATEMENT,   /**< kpbridge's INSERT, from cached heads */
} kpb_versioning_t;

typedef struct kpb_config_s {
    char *path; /**< the file it came from, for messages */

    char *brokers;         /**< kafka.brokers, required */
    char *group_id;        /**< kafka.group_id, default "kpbridge" */
    kpb_kv_t *kafka_props; /**< kafka.properties, in file order */
    size_t kafka_prop_cnt;

    char *conninfo; /**< postgres.conninfo, ${VAR} already expanded; secret */
    int give_up_after_s; /**< postgres.give_up_after_s: stop retrying a
                              failing database after this long; 0 never */
    kpb_versioning_t versioning; /**< postgres.versioning, default trigger */

    int max_events;  /**< batch.max_events, 1..1000, default 1000 */
    int linger_ms;   /**< batch.linger_ms, 0..60000, default 20 */
    int flush_events; /**< batch.flush_events: a flush (one transaction) is
                           due once this many records are buffered;
                           max_events..max_pending, default 4000 */
    int max_pending; /**< batch.max_pending, >= max_events, default 100000 */
    int max_record_bytes; /**< batch.max_record_bytes: larger records become
                               dead letters; 1024..100 MiB, default 1 MiB */

    kpb_topic_t *topics; /**< at least one */
    size_t topic_cnt;

    char *dl_table; /**< dead_letter.table, default "kpbridge_dead_letters" */
    char *dl_topic; /**< dead_letter.topic, NULL when "" or unset */

    char *http_listen; /**< http.listen, NULL when "" ; default 127.0.0.1:9187 */

    kpb_log_level_t log_level;   /**< default info */
    kpb_log_format_t log_format; /**< default text */
} kpb_config_t;

/**
 * @brief Reads and validates a configuration file.
 * @param path  the YAML file
 * @param out   on success, a new config to free with kpb_config_destroy()
 * @returns 0 on success; -1 with a message in errstr naming the file, line,
 *          column and key ("FILE:LINE:COL: KEY: what was expected").
 */
int kpb_config_load(const char *path, kpb_config_t **out, char *errstr,
                    size_t errstr_size) KPB_MUSTCHECK;

/**
 * @brief Same as kpb_config_load() on a buffer; @p name stands in for the
 *        file name in messages (used by tests and the fuzzer).
 */
int kpb_config_parse(const char *buf, size_t len, const char *name,
                     kpb_config_t **out, char *errstr,
                     size_t errstr_size) KPB_MUSTCHECK;

/** @brief Frees a config; NULL is a no-op. */
void kpb_config_destroy(kpb_config_t *conf);

/** @brief The topic mapping for a topic name, or NULL. */
const kpb_topic_t *kpb_config_topic(const kpb_config_t *conf,
                                    const char *name);

#endif
