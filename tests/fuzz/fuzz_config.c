/*
 * fuzz_config.c - libFuzzer target for kpb_config_parse().
 *
 * Every input is a candidate configuration file.  Besides the sanitizers'
 * own checks, each run holds these invariants (a violation aborts):
 *
 *   - on failure errstr is NUL-terminated inside its buffer and not empty,
 *     and starts with the file name, as every message must;
 *   - on success the config has what the rest of the bridge relies on
 *     (brokers, conninfo, at least one named topic with a table);
 *   - no secret is quoted: config.c promises that no message quotes a
 *     configured value but topic names.  This is checked by difference
 *     rather than by searching errstr for the secret, because a short secret
 *     ("expected", "3") is easily a word of the message itself: every run of
 *     letters and digits right after "password=" is replaced by a same-length
 *     rot13/rot5 twin and the input parsed again.  The two messages must be
 *     equal, since a message that depends on the password's text quotes it.
 *     Keys are echoed by design ("unknown key"), so inputs with "password="
 *     inside a mapping key are left out of this check.
 *
 * ${VAR} expansion reads the environment, so LLVMFuzzerInitialize() replaces
 * it with a fixed one: a crash must reproduce on any machine.
 *
 * tests/test_fuzz_regressions.c includes this file (with the two entry points
 * renamed) to run tests/fuzz/regressions/fuzz_config/ through this very code.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config.h"

extern char **environ;

/* Kept so that sanitizer reports stay symbolized and options still apply. */
static const char *const fc_keep_env[] = {
    "PATH",
    "TMPDIR",
    "ASAN_OPTIONS",
    "UBSAN_OPTIONS",
    "LSAN_OPTIONS",
    "ASAN_SYMBOLIZER_PATH",
    "LLVM_SYMBOLIZER_PATH",
    "LLVM_PROFILE_FILE",
    NULL,
};

/* What ${VAR} can find; the seeds use these names. */
static const char *const fc_fixed_env[][2] = {
    {"KPB_FUZZ_BROKERS", "kafka-1:9092,kafka-2:9092"},
    {"KPB_FUZZ_PASSWORD", "hunter2"},
    {"KPB_FUZZ_EMPTY", ""},
    {"KPB_BROKERS", "localhost:9092"},
    {"KPB_CONNINFO", "postgresql://bridge:s3cret@db/events"},
    {NULL, NULL},
};

static void fc_fixed_environment(void) {
    size_t cnt = 0;
    char **names;

    while (environ && environ[cnt])
        cnt++;
    names = calloc(cnt + 1, sizeof(*names));
    if (!names)
        abort();
    for (size_t i = 0; i < cnt; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t n = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int keep = 0;

        for (size_t k = 0; fc_keep_env[k]; k++)
            if (strlen(fc_keep_env[k]) == n &&
                memcmp(fc_keep_env[k], environ[i], n) == 0)
                keep = 1;
        if (!keep) {
            names[i] = strndup(environ[i], n);
            if (!names[i])
                abort();
        }
    }
    /* Unset only after the walk: unsetenv reshuffles environ. */
    for (size_t i = 0; i < cnt; i++) {
        if (names[i])
            unsetenv(names[i]);
        free(names[i]);
    }
    free(names);
    for (size_t i = 0; fc_fixed_env[i][0]; i++)
        if (setenv(fc_fixed_env[i][0], fc_fixed_env[i][1], 1) != 0)
            abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fc_fixed_environment();
    return 0;
}

static void fc_die(const char *what, const char *errstr) {
    fprintf(stderr, "fuzz_config: invariant broken: %s\nerrstr: %s\n", what,
            errstr ? errstr : "(none)");
    abort();
}

static const char *fc_find(const char *hay, size_t n, const char *needle) {
    size_t m = strlen(needle);

    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

static int fc_is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

/* A bijection on letters and digits that moves every one of them: equal
 * secrets stay equal, different ones stay different, classes are kept. */
static char fc_twin(char c) {
    if (c >= 'a' && c <= 'z')
        return (char)('a' + (c - 'a' + 13) % 26);
    if (c >= 'A' && c <= 'Z')
        return (char)('A' + (c - 'A' + 13) % 26);
    return (char)('0' + (c - '0' + 5) % 10);
}

/* Whether some mapping key of the (first) document holds "password=". */
static int fc_password_in_a_key(const char *buf, size_t len) {
    yaml_parser_t parser;
    yaml_document_t doc;
    int found = 0;

    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (yaml_parser_load(&parser, &doc)) {
        for (yaml_node_t *node = doc.nodes.start; node < doc.nodes.top;
             node++) {
            if (node->type != YAML_MAPPING_NODE)
                continue;
            for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
                 pair < node->data.mapping.pairs.top; pair++) {
                yaml_node_t *k = yaml_document_get_node(&doc, pair->key);
                if (k && k->type == YAML_SCALAR_NODE &&
                    fc_find((const char *)k->data.scalar.value,
                            k->data.scalar.length, "password="))
                    found = 1;
            }
        }
        yaml_document_delete(&doc);
    }
    /* A document libyaml cannot load gives a syntax error, which quotes
     * nothing: the difference check still applies. */
    yaml_parser_delete(&parser);
    return found;
}

/* Parses once, checks the invariants that need no second parse, and leaves
 * the message in errstr.  Returns kpb_config_parse()'s result. */
static int fc_parse(const char *buf, size_t len, char *errstr,
                    size_t errstr_size) {
    kpb_config_t *conf = (kpb_config_t *)&conf; /* must be reset to NULL */
    int rc;

    memset(errstr, 'X', errstr_size);
    rc = kpb_config_parse(buf, len, "fuzz.yaml", &conf, errstr, errstr_size);
    if (!memchr(errstr, '\0', errstr_size))
        fc_die("errstr is not NUL-terminated", NULL);
    if (rc == 0) {
        if (!conf)
            fc_die("success without a config", NULL);
        if (!conf->brokers || !*conf->brokers || !conf->conninfo ||
            !*conf->conninfo || !conf->group_id || !conf->dl_table)
            fc_die("a required string is missing", NULL);
        if (conf->topic_cnt == 0 || !conf->topics)
            fc_die("no topics", NULL);
        for (size_t i = 0; i < conf->topic_cnt; i++) {
            const kpb_topic_t *t = &conf->topics[i];
            if (!t->name || !t->table || t->stream_id.kind == KPB_SRC_NONE ||
                t->event_type.kind == KPB_SRC_NONE ||
                t->payload.kind == KPB_SRC_NONE)
                fc_die("a topic is incomplete", NULL);
            if (kpb_config_topic(conf, t->name) != &conf->topics[i])
                fc_die("a topic name is not unique", NULL);
        }
        if (conf->max_events < 1 || conf->max_pending < conf->max_events ||
            conf->flush_events < conf->max_events ||
            conf->flush_events > conf->max_pending)
            fc_die("batch limits out of range", NULL);
        kpb_config_destroy(conf);
        return 0;
    }
    if (rc != -1)
        fc_die("result is neither 0 nor -1", errstr);
    if (conf)
        fc_die("*out is not NULL after a failure", errstr);
    if (!errstr[0])
        fc_die("empty errstr on failure", errstr);
    if (strncmp(errstr, "fuzz.yaml:", 10) != 0)
        fc_die("errstr does not start with the file name", errstr);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;
    char errstr[512], errstr2[512];
    char *twin;
    const char *at;
    int rc, changed = 0;

    rc = fc_parse(buf, size, errstr, sizeof(errstr));

    /* A tiny buffer must be truncated, never overrun (ASan watches). */
    {
        char small[8];
        kpb_config_t *conf = NULL;
        if (kpb_config_parse(buf, size, "fuzz.yaml", &conf, small,
                             sizeof(small)) != rc)
            fc_die("result depends on the errstr size", errstr);
        kpb_config_destroy(conf);
        if (rc && (strncmp(small, errstr, sizeof(small) - 1) != 0 ||
                   strlen(small) != (strlen(errstr) < sizeof(small) - 1
                                         ? strlen(errstr)
                                         : sizeof(small) - 1)))
            fc_die("a short errstr is not a prefix of the long one", errstr);
    }

    if (rc == 0 || !fc_find(buf, size, "password="))
        return 0;
    if (fc_password_in_a_key(buf, size))
        return 0;

    twin = malloc(size ? size : 1);
    if (!twin)
        abort();
    memcpy(twin, buf, size);
    for (at = fc_find(buf, size, "password="); at;
         at = fc_find(at + 1, size - (size_t)(at + 1 - buf), "password=")) {
        for (size_t i = (size_t)(at - buf) + 9; i < size && fc_is_alnum(buf[i]);
             i++) {
            twin[i] = fc_twin(buf[i]);
            changed = 1;
        }
    }
    if (changed) {
        if (fc_parse(twin, size, errstr2, sizeof(errstr2)) != rc)
            fc_die("the password's text decides whether the file parses",
                   errstr);
        if (strcmp(errstr, errstr2) != 0) {
            fprintf(stderr, "fuzz_config: with the twin password: %s\n",
                    errstr2);
            fc_die("errstr quotes a password", errstr);
        }
    }
    free(twin);
    return 0;
}
