/*
 * Tests of the YAML configuration (DESIGN.md §3): every key parsed, every
 * default applied, and every kind of mistake reported as FILE:LINE:COL: KEY.
 * Bad files live in tests/data/config/, one mistake each, so the line and
 * column in each assertion can be checked by opening the file.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define DATA KPB_SOURCE_DIR "/tests/data/config/"

static char errstr[512];

static kpb_config_t *parse_ok(const char *yaml) {
    kpb_config_t *conf = NULL;
    int rc = kpb_config_parse(yaml, strlen(yaml), "test.yaml", &conf, errstr,
                              sizeof(errstr));
    cr_assert_eq(rc, 0, "unexpected error: %s", errstr);
    cr_assert_not_null(conf);
    return conf;
}

static void parse_fails(const char *yaml, const char *expected) {
    kpb_config_t *conf = (kpb_config_t *)1;
    int rc = kpb_config_parse(yaml, strlen(yaml), "test.yaml", &conf, errstr,
                              sizeof(errstr));
    cr_assert_eq(rc, -1, "parsed a bad file: %s", yaml);
    cr_assert_null(conf);
    cr_assert_str_eq(errstr, expected);
}

/* Loads a bad file and checks the message after "PATH:" is exactly `tail`. */
static void load_fails(const char *file, const char *tail) {
    char path[1024];
    kpb_config_t *conf = (kpb_config_t *)1;

    snprintf(path, sizeof(path), DATA "%s", file);
    int rc = kpb_config_load(path, &conf, errstr, sizeof(errstr));
    cr_assert_eq(rc, -1, "%s parsed", file);
    cr_assert_null(conf);
    cr_assert_eq(strncmp(errstr, path, strlen(path)), 0,
                 "message does not start with the file name: %s", errstr);
    cr_assert_eq(errstr[strlen(path)], ':', "%s", errstr);
    cr_assert_str_eq(errstr + strlen(path) + 1, tail);
}

#define MINIMAL                                                                \
    "kafka:\n"                                                                 \
    "  brokers: b1:9092\n"                                                     \
    "postgres:\n"                                                              \
    "  conninfo: postgresql://localhost/events\n"                              \
    "topics:\n"                                                                \
    "  - name: orders\n"                                                       \
    "    event_type: header:event-type\n"

Test(config, parses_every_key_of_a_full_file) {
    kpb_config_t *conf =
        parse_ok("kafka:\n"
                 "  brokers: \"b1:9092,b2:9092\"\n"
                 "  group_id: bridge-a\n"
                 "  properties:\n"
                 "    security.protocol: SASL_SSL\n"
                 "    session.timeout.ms: 45000\n"
                 "    enable.partition.eof: true\n"
                 "postgres:\n"
                 "  conninfo: \"host=db dbname=events\"\n"
                 "  give_up_after_s: 300\n"
                 "  versioning: statement\n"
                 "batch:\n"
                 "  max_events: 250\n"
                 "  linger_ms: 0\n"
                 "  max_pending: 5000\n"
                 "  max_record_bytes: 2048\n"
                 "  flush_events: 1000\n"
                 "topics:\n"
                 "  - name: orders\n"
                 "    table: events.orders_events\n"
                 "    stream_id: header:stream\n"
                 "    event_type: json:/type\n"
                 "    event_id: json:/meta/id\n"
                 "    expected_version: header:expected-version\n"
                 "    payload: json:/data\n"
                 "  - name: payments.v1\n"
                 "    stream_id: json:/account~1id\n"
                 "    event_type: const:PaymentMade\n"
                 "dead_letter:\n"
                 "  table: bad_records\n"
                 "  topic: kpbridge.dlq\n"
                 "http:\n"
                 "  listen: \"0.0.0.0:9999\"\n"
                 "log:\n"
                 "  level: debug\n"
                 "  format: json\n");

    cr_expect_str_eq(conf->path, "test.yaml");
    cr_expect_str_eq(conf->brokers, "b1:9092,b2:9092");
    cr_expect_str_eq(conf->group_id, "bridge-a");
    cr_assert_eq(conf->kafka_prop_cnt, 3);
    cr_expect_str_eq(conf->kafka_props[0].key, "security.protocol");
    cr_expect_str_eq(conf->kafka_props[0].value, "SASL_SSL");
    cr_expect_str_eq(conf->kafka_props[1].key, "session.timeout.ms");
    cr_expect_str_eq(conf->kafka_props[1].value, "45000");
    cr_expect_str_eq(conf->kafka_props[2].key, "enable.partition.eof");
    cr_expect_str_eq(conf->kafka_props[2].value, "true");
    cr_expect_str_eq(conf->conninfo, "host=db dbname=events");
    cr_expect_eq(conf->max_events, 250);
    cr_expect_eq(conf->linger_ms, 0);
    cr_expect_eq(conf->max_pending, 5000);
    cr_expect_eq(conf->max_record_bytes, 2048);
    cr_expect_eq(conf->flush_events, 1000);
    cr_expect_eq(conf->give_up_after_s, 300);
    cr_expect_eq(conf->versioning, KPB_VERSIONS_STATEMENT);

    cr_assert_eq(conf->topic_cnt, 2);
    const kpb_topic_t *t = &conf->topics[0];
    cr_expect_str_eq(t->name, "orders");
    cr_expect_str_eq(t->table, "events.orders_events");
    cr_expect_eq(t->stream_id.kind, KPB_SRC_HEADER);
    cr_expect_str_eq(t->stream_id.arg, "stream");
    cr_expect_eq(t->event_type.kind, KPB_SRC_JSON);
    cr_expect_str_eq(t->event_type.arg, "/type");
    cr_expect_eq(t->event_id.kind, KPB_SRC_JSON);
    cr_expect_str_eq(t->event_id.arg, "/meta/id");
    cr_expect_eq(t->expected_version.kind, KPB_SRC_HEADER);
    cr_expect_str_eq(t->expected_version.arg, "expected-version");
    cr_expect_eq(t->payload.kind, KPB_SRC_JSON);
    cr_expect_str_eq(t->payload.arg, "/data");

    t = &conf->topics[1];
    cr_expect_str_eq(t->name, "payments.v1");
    cr_expect_str_eq(t->table, "eventcore_events");
    cr_expect_eq(t->stream_id.kind, KPB_SRC_JSON);
    cr_expect_str_eq(t->stream_id.arg, "/account~1id");
    cr_expect_eq(t->event_type.kind, KPB_SRC_CONST);
    cr_expect_str_eq(t->event_type.arg, "PaymentMade");
    cr_expect_eq(t->event_id.kind, KPB_SRC_NONE);
    cr_expect_null(t->event_id.arg);
    cr_expect_eq(t->expected_version.kind, KPB_SRC_NONE);
    cr_expect_eq(t->payload.kind, KPB_SRC_VALUE);
    cr_expect_null(t->payload.arg);

    cr_expect_str_eq(conf->dl_table, "bad_records");
    cr_expect_str_eq(conf->dl_topic, "kpbridge.dlq");
    cr_expect_str_eq(conf->http_listen, "0.0.0.0:9999");
    cr_expect_eq(conf->log_level, KPB_LOG_DEBUG);
    cr_expect_eq(conf->log_format, KPB_LOG_JSON);
    kpb_config_destroy(conf);
}

Test(config, applies_defaults_to_a_minimal_file) {
    kpb_config_t *conf = parse_ok(MINIMAL);

    cr_expect_str_eq(conf->brokers, "b1:9092");
    cr_expect_str_eq(conf->group_id, "kpbridge");
    cr_expect_eq(conf->kafka_prop_cnt, 0);
    cr_expect_null(conf->kafka_props);
    cr_expect_str_eq(conf->conninfo, "postgresql://localhost/events");
    cr_expect_eq(conf->max_events, 1000);
    cr_expect_eq(conf->linger_ms, 20);
    cr_expect_eq(conf->max_pending, 100000);
    cr_expect_eq(conf->flush_events, 4000);
    cr_expect_eq(conf->max_record_bytes, 1024 * 1024);
    cr_expect_eq(conf->give_up_after_s, 0);
    cr_expect_eq(conf->versioning, KPB_VERSIONS_TRIGGER);
    cr_assert_eq(conf->topic_cnt, 1);
    const kpb_topic_t *t = &conf->topics[0];
    cr_expect_str_eq(t->name, "orders");
    cr_expect_str_eq(t->table, "eventcore_events");
    cr_expect_eq(t->stream_id.kind, KPB_SRC_KEY);
    cr_expect_null(t->stream_id.arg);
    cr_expect_eq(t->event_type.kind, KPB_SRC_HEADER);
    cr_expect_str_eq(t->event_type.arg, "event-type");
    cr_expect_eq(t->event_id.kind, KPB_SRC_NONE);
    cr_expect_eq(t->expected_version.kind, KPB_SRC_NONE);
    cr_expect_eq(t->payload.kind, KPB_SRC_VALUE);
    cr_expect_str_eq(conf->dl_table, "kpbridge_dead_letters");
    cr_expect_null(conf->dl_topic);
    cr_expect_str_eq(conf->http_listen, "127.0.0.1:9187");
    cr_expect_eq(conf->log_level, KPB_LOG_INFO);
    cr_expect_eq(conf->log_format, KPB_LOG_TEXT);
    kpb_config_destroy(conf);
}

Test(config, reads_empty_sections_as_all_defaults) {
    kpb_config_t *conf = parse_ok(MINIMAL "batch:\n"
                                          "dead_letter: ~\n"
                                          "http:\n"
                                          "log:\n");

    cr_expect_eq(conf->max_events, 1000);
    cr_expect_str_eq(conf->dl_table, "kpbridge_dead_letters");
    cr_expect_str_eq(conf->http_listen, "127.0.0.1:9187");
    cr_expect_eq(conf->log_level, KPB_LOG_INFO);
    kpb_config_destroy(conf);
}

Test(config, turns_empty_http_listen_and_dead_letter_topic_into_null) {
    kpb_config_t *conf = parse_ok(MINIMAL "dead_letter:\n"
                                          "  topic: \"\"\n"
                                          "http:\n"
                                          "  listen: \"\"\n");

    cr_expect_null(conf->dl_topic);
    cr_expect_null(conf->http_listen);
    kpb_config_destroy(conf);
}

Test(config, finds_a_topic_mapping_by_name) {
    kpb_config_t *conf = parse_ok(MINIMAL "  - name: payments\n"
                                          "    event_type: const:Paid\n");

    const kpb_topic_t *t = kpb_config_topic(conf, "payments");
    cr_assert_not_null(t);
    cr_expect_str_eq(t->event_type.arg, "Paid");
    cr_expect_eq(kpb_config_topic(conf, "orders"), &conf->topics[0]);
    cr_expect_null(kpb_config_topic(conf, "refunds"));
    kpb_config_destroy(conf);
}

Test(config, expands_environment_variables_and_their_defaults) {
    setenv("KPB_TEST_BROKERS", "kafka-1:9092", 1);
    setenv("KPB_TEST_PW", "s3cr$t", 1);
    setenv("KPB_TEST_EMPTY", "", 1);
    unsetenv("KPB_TEST_UNSET");
    kpb_config_t *conf = parse_ok(
        "kafka:\n"
        "  brokers: ${KPB_TEST_BROKERS}\n"
        "  group_id: ${KPB_TEST_UNSET:-fallback}-${KPB_TEST_EMPTY:-g}\n"
        "  properties:\n"
        "    sasl.password: \"${KPB_TEST_PW}\"\n"
        "    client.id: \"cost$$5 $HOME ${KPB_TEST_EMPTY}x\"\n"
        "postgres:\n"
        "  conninfo: "
        "\"postgresql://u:${KPB_TEST_PW}@${KPB_TEST_UNSET:-db}/e\"\n"
        "batch:\n"
        "  max_events: ${KPB_TEST_UNSET:-42}\n"
        "topics:\n"
        "  - name: orders\n"
        "    event_type: header:event-type\n"
        "http:\n"
        "  listen: ${KPB_TEST_UNSET:-}\n");

    cr_expect_str_eq(conf->brokers, "kafka-1:9092");
    cr_expect_str_eq(conf->group_id, "fallback-g");
    cr_expect_str_eq(conf->kafka_props[0].value, "s3cr$t");
    cr_expect_str_eq(conf->kafka_props[1].value, "cost$5 $HOME x");
    cr_expect_str_eq(conf->conninfo, "postgresql://u:s3cr$t@db/e");
    cr_expect_eq(conf->max_events, 42);
    cr_expect_null(conf->http_listen);
    kpb_config_destroy(conf);
}

Test(config, rejects_an_unterminated_variable_reference) {
    parse_fails("kafka:\n"
                "  brokers: \"${KPB_BROKERS\"\n",
                "test.yaml:2:12: kafka.brokers: bad variable reference; "
                "expected ${NAME} or ${NAME:-default}, NAME made of A-Z a-z "
                "0-9 _");
}

Test(config, names_an_unset_variable_at_its_scalar) {
    unsetenv("KPB_TEST_SURELY_UNSET_PW");
    load_fails("unset_env_var.yaml",
               "4:13: postgres.conninfo: environment variable "
               "KPB_TEST_SURELY_UNSET_PW is not set (write "
               "${KPB_TEST_SURELY_UNSET_PW:-default} to give a default)");
}

Test(config, rejects_an_unknown_top_level_key) {
    load_fails("unknown_key.yaml",
               "8:1: metrics: unknown key; expected one of: kafka, postgres, "
               "batch, topics, dead_letter, http, log");
}

Test(config, rejects_an_unknown_nested_key) {
    load_fails("unknown_nested_key.yaml",
               "7:3: batch.linger: unknown key; expected one of: max_events, "
               "linger_ms, max_pending, max_record_bytes, flush_events");
}

Test(config, rejects_a_file_without_brokers) {
    load_fails("missing_brokers.yaml",
               "2:3: kafka.brokers: required key is missing");
}

Test(config, rejects_a_file_without_conninfo) {
    load_fails("missing_conninfo.yaml",
               "3:1: postgres.conninfo: required key is missing");
}

Test(config, rejects_a_file_without_topics) {
    load_fails("missing_topics.yaml", "1:1: topics: required key is missing");
}

Test(config, rejects_an_empty_topic_list) {
    load_fails("empty_topics.yaml",
               "5:9: topics: expected a non-empty sequence of topic mappings, "
               "found an empty sequence");
}

Test(config, rejects_a_topic_without_event_type) {
    load_fails("missing_event_type.yaml",
               "6:5: topics[0].event_type: required key is missing");
}

Test(config, rejects_value_as_stream_id) {
    load_fails("stream_id_value.yaml",
               "8:16: topics[0].stream_id: expected key, header:NAME or "
               "json:/pointer");
}

Test(config, rejects_key_as_event_type) {
    load_fails("event_type_key.yaml",
               "7:17: topics[0].event_type: expected header:NAME, "
               "json:/pointer or const:TEXT");
}

Test(config, rejects_a_header_as_payload) {
    load_fails("payload_header.yaml",
               "8:14: topics[0].payload: expected value or json:/pointer");
}

Test(config, rejects_a_json_source_without_a_pointer) {
    load_fails("json_without_pointer.yaml",
               "8:16: topics[0].stream_id: expected a JSON pointer starting "
               "with / after json: (e.g. json:/id; ~ only as ~0 or ~1)");
}

Test(config, rejects_an_empty_header_name) {
    load_fails("empty_header_name.yaml",
               "8:15: topics[0].event_id: expected a non-empty header name "
               "after header:");
}

Test(config, rejects_an_empty_const_and_a_bad_pointer_escape) {
    parse_fails(MINIMAL "  - name: b\n"
                        "    event_type: \"const:\"\n",
                "test.yaml:9:17: topics[1].event_type: expected a non-empty "
                "text after const:");
    parse_fails(MINIMAL "    expected_version: json:/a~2b\n",
                "test.yaml:8:23: topics[0].expected_version: expected a JSON "
                "pointer starting with / after json: (e.g. json:/id; ~ only "
                "as ~0 or ~1)");
}

Test(config, rejects_zero_max_events) {
    load_fails("max_events_zero.yaml",
               "6:15: batch.max_events: expected an integer in 1..1000");
}

Test(config, rejects_max_events_over_1000) {
    load_fails("max_events_too_big.yaml",
               "6:15: batch.max_events: expected an integer in 1..1000");
}

Test(config, rejects_max_events_that_is_not_a_number) {
    load_fails("max_events_not_a_number.yaml",
               "6:15: batch.max_events: expected an integer in 1..1000");
}

Test(config, rejects_numbers_with_trailing_text_or_out_of_range) {
    parse_fails(MINIMAL "batch:\n  linger_ms: 20ms\n",
                "test.yaml:9:14: batch.linger_ms: expected an integer in "
                "0..60000");
    parse_fails(MINIMAL "batch:\n  linger_ms: -1\n",
                "test.yaml:9:14: batch.linger_ms: expected an integer in "
                "0..60000");
    parse_fails(MINIMAL "batch:\n  max_pending: 99999999999999999999\n",
                "test.yaml:9:16: batch.max_pending: expected an integer in "
                "1..10000000");
}

Test(config, rejects_max_pending_below_max_events) {
    load_fails("max_pending_below_max_events.yaml",
               "7:16: batch.max_pending: expected at least batch.max_events "
               "(500)");
}

Test(config, keeps_flush_events_between_max_events_and_max_pending) {
    parse_fails(MINIMAL "batch:\n  max_events: 500\n  flush_events: 499\n",
                "test.yaml:10:17: batch.flush_events: expected at least "
                "batch.max_events (500)");
    parse_fails(MINIMAL "batch:\n  max_pending: 3000\n  flush_events: 3001\n",
                "test.yaml:10:17: batch.flush_events: expected at most "
                "batch.max_pending (3000)");
    parse_fails(MINIMAL "batch:\n  flush_events: 0\n",
                "test.yaml:9:17: batch.flush_events: expected an integer in "
                "1..10000000");
    /* Unset, it follows a smaller max_pending down. */
    kpb_config_t *conf = parse_ok(MINIMAL "batch:\n  max_pending: 2500\n");
    cr_expect_eq(conf->flush_events, 2500);
    kpb_config_destroy(conf);
    conf = parse_ok(MINIMAL "batch:\n  max_events: 10\n  flush_events: 10\n");
    cr_expect_eq(conf->flush_events, 10);
    kpb_config_destroy(conf);
}

Test(config, rejects_an_unknown_log_level) {
    load_fails("bad_log_level.yaml",
               "9:10: log.level: expected error, warn, info or debug");
}

Test(config, trims_blanks_around_the_conninfo) {
    kpb_config_t *conf = parse_ok("kafka:\n  brokers: b\n"
                                  "postgres:\n  conninfo: \" postgresql://u:"
                                  "pw@h/db\\t\"\n"
                                  "topics:\n  - name: t\n"
                                  "    event_type: const:T\n");
    cr_expect_str_eq(conf->conninfo, "postgresql://u:pw@h/db");
    kpb_config_destroy(conf);
}

/* libpq's own message would quote the word holding the password. */
Test(config, refuses_a_malformed_conninfo_without_showing_it) {
    parse_fails("kafka:\n  brokers: b\n"
                "postgres:\n  conninfo: \"host=db postgresql://u:s3cret@h\"\n"
                "topics:\n  - name: t\n    event_type: const:T\n",
                "test.yaml:4:13: postgres.conninfo: not a libpq connection "
                "string (a URI, or key=value words); the value is not shown, "
                "it may hold a password");
}

Test(config, rejects_an_unknown_versioning) {
    load_fails("bad_versioning.yaml",
               "4:15: postgres.versioning: expected trigger or statement");
}

Test(config, rejects_an_unknown_log_format) {
    parse_fails(MINIMAL "log:\n  format: logfmt\n",
                "test.yaml:9:11: log.format: expected text or json");
}

Test(config, rejects_a_sequence_where_a_string_is_expected) {
    load_fails("sequence_for_scalar.yaml",
               "3:5: kafka.brokers: expected a string, found a sequence");
}

Test(config, rejects_a_scalar_where_a_mapping_is_expected) {
    parse_fails("kafka: localhost:9092\n",
                "test.yaml:1:8: kafka: expected a mapping, found a scalar");
}

Test(config, rejects_a_duplicate_key) {
    load_fails("duplicate_key.yaml",
               "11:3: log.level: duplicate key (first at 9:3)");
}

Test(config, rejects_a_duplicate_property) {
    parse_fails("kafka:\n"
                "  brokers: b\n"
                "  properties:\n"
                "    client.id: a\n"
                "    client.id: b\n",
                "test.yaml:5:5: kafka.properties: duplicate property "
                "client.id (first at 4:5)");
}

Test(config, rejects_properties_that_kpbridge_sets_itself) {
    parse_fails("kafka:\n"
                "  brokers: b\n"
                "  properties:\n"
                "    enable.auto.commit: true\n",
                "test.yaml:4:5: kafka.properties: enable.auto.commit is set "
                "by kpbridge (offsets are committed after the database "
                "commit)");
}

Test(config, rejects_a_duplicate_topic_name) {
    load_fails("duplicate_topic.yaml",
               "8:11: topics[1].name: duplicate topic orders (first at 6:11)");
}

Test(config, rejects_a_topic_name_kafka_would_read_as_a_regex) {
    parse_fails("kafka:\n  brokers: b\n"
                "postgres:\n  conninfo: host=c\n"
                "topics:\n  - name: \"^orders.*\"\n",
                "test.yaml:6:11: topics[0].name: expected a Kafka topic name "
                "(1 to 249 characters of a-z A-Z 0-9 . _ -)");
}

Test(config, rejects_a_table_name_that_is_not_an_identifier) {
    parse_fails(MINIMAL "    table: \"events; DROP TABLE x\"\n",
                "test.yaml:8:12: topics[0].table: expected a table name, "
                "optionally schema-qualified (letters, digits, _ and $, not "
                "starting with a digit)");
}

Test(config, rejects_a_consumed_topic_as_dead_letter_topic) {
    load_fails("dead_letter_topic_consumed.yaml",
               "9:10: dead_letter.topic: expected a topic that is not in "
               "topics (orders is consumed, so its dead letters would loop)");
}

Test(config, rejects_a_listen_address_without_a_port) {
    parse_fails(MINIMAL "http:\n  listen: localhost\n",
                "test.yaml:9:11: http.listen: expected HOST:PORT (e.g. "
                "\"127.0.0.1:9187\"), or \"\" to disable");
}

Test(config, reports_a_yaml_syntax_error_with_libyaml_position) {
    load_fails("syntax_error.yaml",
               "8:4: YAML syntax error: did not find expected '-' indicator "
               "(while parsing a block collection at 6:3)");
}

Test(config, rejects_a_second_document) {
    load_fails("two_documents.yaml",
               "8:1: (root): expected a single YAML document, found another");
}

Test(config, rejects_an_empty_document) {
    load_fails("empty.yaml", "1:1: (root): empty document; expected a mapping "
                             "with kafka, postgres and topics");
    parse_fails("", "test.yaml:1:1: (root): empty document; expected a "
                    "mapping with kafka, postgres and topics");
}

Test(config, rejects_a_nul_character_in_a_value) {
    parse_fails("kafka:\n  brokers: \"b\\0x\"\n",
                "test.yaml:2:12: kafka.brokers: expected a string without NUL "
                "characters");
}

Test(config, reports_a_file_it_cannot_read) {
    const char *path = DATA "does_not_exist.yaml";
    kpb_config_t *conf = (kpb_config_t *)1;

    cr_assert_eq(kpb_config_load(path, &conf, errstr, sizeof(errstr)), -1);
    cr_assert_null(conf);
    cr_assert_str_eq(errstr, KPB_SOURCE_DIR "/tests/data/config/"
                                            "does_not_exist.yaml: cannot "
                                            "read: No such file or directory");
}

Test(config, never_shows_the_conninfo_password_in_an_error) {
    load_fails("password_in_conninfo.yaml",
               "8:16: topics[0].stream_id: expected a non-empty header name "
               "after header:");
    cr_assert_null(strstr(errstr, "hunter2"), "%s", errstr);
}

Test(config, never_shows_a_secret_property_in_an_error) {
    load_fails("secret_property.yaml",
               "6:7: kafka.properties.sasl.jaas.config: expected a scalar "
               "value, found a sequence");
    cr_assert_null(strstr(errstr, "hunter2"), "%s", errstr);
}

Test(config, destroys_null_as_a_no_op) { kpb_config_destroy(NULL); }

Test(config, loads_the_quickstart_example) {
    unsetenv("KPB_BROKERS");
    unsetenv("KPB_CONNINFO");
    kpb_config_t *conf = NULL;
    int rc = kpb_config_load(KPB_SOURCE_DIR "/config/quickstart.yaml", &conf,
                             errstr, sizeof(errstr));

    cr_assert_eq(rc, 0, "%s", errstr);
    cr_expect_str_eq(conf->brokers, "localhost:9092");
    cr_expect_str_eq(conf->conninfo, "postgresql://localhost/postgres");
    cr_assert_eq(conf->topic_cnt, 1);
    const kpb_topic_t *t = kpb_config_topic(conf, "orders");
    cr_assert_not_null(t);
    cr_expect_eq(t->stream_id.kind, KPB_SRC_KEY);
    cr_expect_eq(t->event_type.kind, KPB_SRC_HEADER);
    cr_expect_str_eq(t->event_type.arg, "event-type");
    cr_expect_str_eq(t->event_id.arg, "event-id");
    cr_expect_str_eq(t->expected_version.arg, "expected-version");
    cr_expect_eq(t->payload.kind, KPB_SRC_VALUE);
    cr_expect_null(conf->http_listen);
    cr_expect_eq(conf->log_level, KPB_LOG_INFO);
    kpb_config_destroy(conf);
}

Test(config, loads_the_reference_example_with_environment_overrides) {
    setenv("KPB_BROKERS", "broker-a:9092,broker-b:9092", 1);
    setenv("KPB_CONNINFO", "postgresql://bridge@db/events", 1);
    kpb_config_t *conf = NULL;
    int rc = kpb_config_load(KPB_SOURCE_DIR "/config/kpbridge.yaml", &conf,
                             errstr, sizeof(errstr));

    cr_assert_eq(rc, 0, "%s", errstr);
    cr_expect_str_eq(conf->brokers, "broker-a:9092,broker-b:9092");
    cr_expect_str_eq(conf->conninfo, "postgresql://bridge@db/events");
    cr_expect_str_eq(conf->group_id, "kpbridge");
    cr_expect_eq(conf->max_events, 1000);
    cr_expect_not_null(kpb_config_topic(conf, "orders"));
    cr_expect_str_eq(conf->http_listen, "127.0.0.1:9187");
    kpb_config_destroy(conf);
}
