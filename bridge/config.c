/*
 * config.c - the YAML configuration of DESIGN.md §3, read with libyaml's
 * document API into a kpb_config_t.
 *
 * The whole file is composed into a node tree first and then walked against a
 * fixed schema.  Walking a tree instead of an event stream lets every check
 * point at the node it is about: each node carries the mark where it starts,
 * so every message can say FILE:LINE:COL and the dotted key.  Because the
 * walk only ever descends as deep as the schema (root, section, topic,
 * scalar), an alias that refers to its own ancestor cannot make it loop.
 *
 * Secrets: postgres.conninfo and kafka.properties values may hold passwords.
 * No message ever quotes a configured value, with the one exception of topic
 * names, which are not secret and make "duplicate topic" errors readable.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <yaml.h>

/* The most keys any one mapping of the schema has (a topic has 7). */
#define KPB_CFG_MAXKEYS 8

/* Dotted key paths are short; a path that does not fit is cut, not lost. */
#define KPB_CFG_PATHMAX 256

/* The parse context: where messages go and what they are about. */
typedef struct kpb_cfgp_s {
    const char *name; /* the file name, for messages */
    yaml_document_t *doc;
    char *errstr;
    size_t errstr_size;
} kpb_cfgp_t;

/* The value (and key, for messages) of every known key of one mapping. */
typedef struct kpb_cfgmap_s {
    yaml_node_t *key[KPB_CFG_MAXKEYS];
    yaml_node_t *val[KPB_CFG_MAXKEYS];
} kpb_cfgmap_t;

static int cfg_fail(kpb_cfgp_t *p, yaml_mark_t mark, const char *key,
                    const char *fmt, ...) KPB_PRINTF(4, 5);

/* Fills errstr as FILE:LINE:COL: KEY: MESSAGE; libyaml counts from 0, people
 * count from 1.  Always returns -1 so callers can `return cfg_fail(...)`. */
static int cfg_fail(kpb_cfgp_t *p, yaml_mark_t mark, const char *key,
                    const char *fmt, ...) {
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (p->errstr && p->errstr_size)
        snprintf(p->errstr, p->errstr_size, "%s:%zu:%zu: %s: %s", p->name,
                 mark.line + 1, mark.column + 1, key, msg);
    return -1;
}

static yaml_node_t *cfg_node(kpb_cfgp_t *p, int id) {
    return yaml_document_get_node(p->doc, id);
}

static const char *cfg_kind(const yaml_node_t *node) {
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

static int cfg_scalar_is(const yaml_node_t *node, const char *s) {
    size_t n = strlen(s);
    return node->type == YAML_SCALAR_NODE && node->data.scalar.length == n &&
           memcmp(node->data.scalar.value, s, n) == 0;
}

/* An unquoted empty value, `~` or `null`: YAML's null.  A section written as
 * `batch:` with all its keys commented out then simply takes the defaults. */
static int cfg_is_null(const yaml_node_t *node) {
    if (node->type != YAML_SCALAR_NODE ||
        node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    return node->data.scalar.length == 0 || cfg_scalar_is(node, "~") ||
           cfg_scalar_is(node, "null") || cfg_scalar_is(node, "Null") ||
           cfg_scalar_is(node, "NULL");
}

static void cfg_join(char *out, size_t size, const char *path,
                     const char *key) {
    if (*path)
        snprintf(out, size, "%s.%s", path, key);
    else
        snprintf(out, size, "%s", key);
}

/*
 * Splits a mapping into the values of the keys in names[] (NULL-terminated).
 * Anything else is an error, so a misspelt or misplaced key is reported
 * instead of silently leaving a default in force.  libyaml's composer keeps
 * duplicate keys, so they are caught here too.
 */
static int cfg_mapping(kpb_cfgp_t *p, yaml_node_t *node, const char *path,
                       const char *const names[], kpb_cfgmap_t *map) {
    char key[KPB_CFG_PATHMAX];

    memset(map, 0, sizeof(*map));
    if (cfg_is_null(node))
        return 0;
    if (node->type != YAML_MAPPING_NODE)
        return cfg_fail(p, node->start_mark, *path ? path : "(root)",
                        "expected a mapping, found %s", cfg_kind(node));

    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = cfg_node(p, pair->key);
        yaml_node_t *v = cfg_node(p, pair->value);
        size_t i;

        if (k->type != YAML_SCALAR_NODE)
            return cfg_fail(p, k->start_mark, *path ? path : "(root)",
                            "expected a key name, found %s", cfg_kind(k));
        for (i = 0; names[i]; i++)
            if (cfg_scalar_is(k, names[i]))
                break;
        if (!names[i]) {
            char expected[256] = "";
            size_t off = 0;
            char name[80];

            for (size_t j = 0; names[j] && off < sizeof(expected); j++) {
                int n = snprintf(expected + off, sizeof(expected) - off, "%s%s",
                                 j ? ", " : "", names[j]);
                if (n < 0)
                    break;
                off += (size_t)n;
            }
            snprintf(
                name, sizeof(name), "%.*s",
                (int)(k->data.scalar.length < 64 ? k->data.scalar.length : 64),
                (const char *)k->data.scalar.value);
            cfg_join(key, sizeof(key), path, name);
            return cfg_fail(p, k->start_mark, key,
                            "unknown key; expected one of: %s", expected);
        }
        cfg_join(key, sizeof(key), path, names[i]);
        if (map->key[i])
            return cfg_fail(p, k->start_mark, key,
                            "duplicate key (first at %zu:%zu)",
                            map->key[i]->start_mark.line + 1,
                            map->key[i]->start_mark.column + 1);
        map->key[i] = k;
        map->val[i] = v;
    }
    return 0;
}

/* A missing key is reported where its mapping starts.  A section left empty
 * (`postgres:` and nothing under it) has no mapping, so its own key is shown
 * instead of the blank after the colon. */
static int cfg_missing(kpb_cfgp_t *p, const yaml_node_t *parent,
                       const yaml_node_t *parent_key, const char *path,
                       const char *name) {
    char key[KPB_CFG_PATHMAX];
    const yaml_node_t *at =
        parent_key && cfg_is_null(parent) ? parent_key : parent;

    cfg_join(key, sizeof(key), path, name);
    return cfg_fail(p, at->start_mark, key, "required key is missing");
}

static int cfg_is_name_start(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int cfg_is_name_char(char c) {
    return cfg_is_name_start(c) || (c >= '0' && c <= '9');
}

/*
 * Expands ${VAR}, ${VAR:-default} and $$ in a scalar, so secrets can live in
 * the environment instead of the file.  As in the shell, the default is used
 * when VAR is unset or empty.  A `$` followed by anything else stays as it is,
 * which keeps passwords with a `$` in them working.  An unset variable without
 * a default is an error rather than an empty string: an empty broker list or
 * password fails much later and much less clearly.
 */
static int cfg_expand(kpb_cfgp_t *p, const yaml_node_t *node, const char *key,
                      char **out) {
    const char *s = (const char *)node->data.scalar.value;
    size_t n = node->data.scalar.length;
    kpb_buf_t buf;
    char *var = NULL;
    int rc = -1;

    kpb_buf_init(&buf);
    kpb_buf_reserve(&buf, n);
    buf.data[0] = '\0';
    for (size_t i = 0; i < n;) {
        size_t start, j;
        const char *val, *def = NULL;
        size_t def_len = 0;

        if (s[i] != '$' || i + 1 == n) {
            kpb_buf_putc(&buf, s[i++]);
            continue;
        }
        if (s[i + 1] == '$') {
            kpb_buf_putc(&buf, '$');
            i += 2;
            continue;
        }
        if (s[i + 1] != '{') {
            kpb_buf_putc(&buf, s[i++]);
            continue;
        }
        start = j = i + 2;
        if (j < n && cfg_is_name_start(s[j]))
            while (j < n && cfg_is_name_char(s[j]))
                j++;
        if (j == start || j == n || (s[j] != '}' && s[j] != ':')) {
            cfg_fail(p, node->start_mark, key,
                     "bad variable reference; expected ${NAME} or "
                     "${NAME:-default}, NAME made of A-Z a-z 0-9 _");
            goto out;
        }
        if (s[j] == ':') {
            const char *close;

            if (j + 1 == n || s[j + 1] != '-' ||
                !(close = memchr(s + j + 2, '}', n - j - 2))) {
                cfg_fail(p, node->start_mark, key,
                         "bad variable reference; expected ${NAME} or "
                         "${NAME:-default}");
                goto out;
            }
            def = s + j + 2;
            def_len = (size_t)(close - def);
        }
        free(var);
        var = kpb_xstrndup(s + start, j - start);
        val = getenv(var);
        if (def && (!val || !*val)) {
            kpb_buf_append(&buf, def, def_len);
        } else if (!val) {
            cfg_fail(p, node->start_mark, key,
                     "environment variable %s is not set (write ${%s:-default} "
                     "to give a default)",
                     var, var);
            goto out;
        } else {
            kpb_buf_puts(&buf, val);
        }
        i = def ? (size_t)(def - s) + def_len + 1 : j + 1;
    }
    *out = buf.data;
    kpb_buf_init(&buf);
    rc = 0;
out:
    free(var);
    kpb_buf_fini(&buf);
    return rc;
}

/* A scalar value as a new string, after ${VAR} expansion. */
static int cfg_string(kpb_cfgp_t *p, const yaml_node_t *node, const char *key,
                      char **out) {
    if (node->type != YAML_SCALAR_NODE)
        return cfg_fail(p, node->start_mark, key, "expected a string, found %s",
                        cfg_kind(node));
    /* "\0" is valid in a double-quoted YAML string but would silently cut
     * every C string made from it. */
    if (memchr(node->data.scalar.value, '\0', node->data.scalar.length))
        return cfg_fail(p, node->start_mark, key,
                        "expected a string without NUL characters");
    return cfg_expand(p, node, key, out);
}

static int cfg_nonempty(kpb_cfgp_t *p, const yaml_node_t *node, const char *key,
                        char **out) {
    if (cfg_string(p, node, key, out))
        return -1;
    if (!**out) {
        free(*out);
        *out = NULL;
        return cfg_fail(p, node->start_mark, key,
                        "expected a non-empty string");
    }
    return 0;
}

/* A decimal integer in lo..hi; no signs other than '-', no spaces, no 1e3. */
static int cfg_int(kpb_cfgp_t *p, const yaml_node_t *node, const char *key,
                   long lo, long hi, int *out) {
    char *s = NULL, *end;
    long v;
    int rc = -1;

    if (node->type != YAML_SCALAR_NODE) {
        cfg_fail(p, node->start_mark, key,
                 "expected an integer in %ld..%ld, found %s", lo, hi,
                 cfg_kind(node));
        goto out;
    }
    if (cfg_string(p, node, key, &s))
        goto out;
    errno = 0;
    v = strtol(s, &end, 10);
    if (!((s[0] >= '0' && s[0] <= '9') ||
          (s[0] == '-' && s[1] >= '0' && s[1] <= '9')) ||
        *end || errno || v < lo || v > hi) {
        cfg_fail(p, node->start_mark, key, "expected an integer in %ld..%ld",
                 lo, hi);
        goto out;
    }
    *out = (int)v;
    rc = 0;
out:
    free(s);
    return rc;
}

/* One of words[] (NULL-terminated); *out is its index. */
static int cfg_enum(kpb_cfgp_t *p, const yaml_node_t *node, const char *key,
                    const char *const words[], const char *expected, int *out) {
    char *s = NULL;
    int rc = -1;

    if (node->type != YAML_SCALAR_NODE) {
        cfg_fail(p, node->start_mark, key, "expected %s, found %s", expected,
                 cfg_kind(node));
        goto out;
    }
    if (cfg_string(p, node, key, &s))
        goto out;
    for (int i = 0; words[i]; i++) {
        if (strcmp(s, words[i]) == 0) {
            *out = i;
            rc = 0;
            goto out;
        }
    }
    cfg_fail(p, node->start_mark, key, "expected %s", expected);
out:
    free(s);
    return rc;
}

/*
 * Kafka's legal topic names: 1..249 of [a-zA-Z0-9._-].  Checked here because
 * librdkafka reads a subscription starting with '^' as a regular expression,
 * which would quietly subscribe to topics nothing maps.
 */
static int cfg_topic_name(kpb_cfgp_t *p, const yaml_node_t *node,
                          const char *key, char **out) {
    size_t n;

    if (cfg_nonempty(p, node, key, out))
        return -1;
    n = strlen(*out);
    for (size_t i = 0; i < n; i++) {
        char c = (*out)[i];
        if (!(cfg_is_name_char(c) || c == '.' || c == '-'))
            n = 0;
    }
    if (n == 0 || n > 249 || strcmp(*out, ".") == 0 ||
        strcmp(*out, "..") == 0) {
        free(*out);
        *out = NULL;
        return cfg_fail(p, node->start_mark, key,
                        "expected a Kafka topic name (1 to 249 characters of "
                        "a-z A-Z 0-9 . _ -)");
    }
    return 0;
}

/*
 * A table name: an identifier, optionally schema-qualified, that PostgreSQL
 * takes without quoting (letters, digits, _ and $, at most 63 bytes each).
 * The name ends up in SQL text, so anything else is refused here rather than
 * becoming a syntax error, or worse, at the first flush.
 */
static int cfg_table(kpb_cfgp_t *p, const yaml_node_t *node, const char *key,
                     char **out) {
    const char *s;
    int parts = 0, ok = 1;

    if (cfg_nonempty(p, node, key, out))
        return -1;
    s = *out;
    while (ok) {
        size_t len = 0;

        if (!cfg_is_name_start(*s))
            ok = 0;
        while (ok && (cfg_is_name_char(s[len]) || s[len] == '$'))
            len++;
        if (len > 63)
            ok = 0;
        parts++;
        s += len;
        if (!ok || *s == '\0')
            break;
        if (*s != '.' || parts == 2)
            ok = 0;
        s++;
    }
    if (!ok) {
        free(*out);
        *out = NULL;
        return cfg_fail(
            p, node->start_mark, key,
            "expected a table name, optionally schema-qualified "
            "(letters, digits, _ and $, not starting with a digit)");
    }
    return 0;
}

/*
 * HOST:PORT, as in "127.0.0.1:9187" or "[::1]:9187".  Checked here so a typo
 * is reported with its line instead of as a failed bind at start-up.
 */
static int cfg_listen(kpb_cfgp_t *p, const yaml_node_t *node, const char *key,
                      char **out) {
    const char *colon;
    long port = 0;

    if (cfg_string(p, node, key, out))
        return -1;
    if (!**out) {
        /* "" switches the HTTP endpoint off. */
        free(*out);
        *out = NULL;
        return 0;
    }
    colon = strrchr(*out, ':');
    if (colon && colon != *out && colon[1]) {
        const char *d = colon + 1;
        while (*d >= '0' && *d <= '9' && port <= 65535)
            port = port * 10 + (*d++ - '0');
        if (*d)
            port = 0;
    }
    if (port < 1 || port > 65535) {
        free(*out);
        *out = NULL;
        return cfg_fail(p, node->start_mark, key,
                        "expected HOST:PORT (e.g. \"127.0.0.1:9187\"), or \"\" "
                        "to disable");
    }
    return 0;
}

#define KPB_SRC_BIT(kind) (1u << (kind))

/* RFC 6901: "/" then reference tokens, where '~' only escapes 0 or 1. */
static int cfg_json_pointer_ok(const char *s) {
    if (s[0] != '/')
        return 0;
    for (; *s; s++)
        if (s[0] == '~' && s[1] != '0' && s[1] != '1')
            return 0;
    return 1;
}

/*
 * A field source: key | value | header:NAME | json:/pointer | const:TEXT,
 * limited to the kinds in `allowed`.  The expected text lists exactly those,
 * so the message tells the user what this particular field accepts.
 */
static int cfg_src(kpb_cfgp_t *p, const yaml_node_t *node, const char *key,
                   unsigned allowed, kpb_src_t *out) {
    static const struct {
        kpb_src_kind_t kind;
        const char *prefix; /* "key" is a whole word; "header:" a prefix */
        const char *shown;
    } forms[] = {
        {KPB_SRC_KEY, "key", "key"},
        {KPB_SRC_VALUE, "value", "value"},
        {KPB_SRC_HEADER, "header:", "header:NAME"},
        {KPB_SRC_JSON, "json:", "json:/pointer"},
        {KPB_SRC_CONST, "const:", "const:TEXT"},
    };
    const size_t nforms = sizeof(forms) / sizeof(forms[0]);
    char expected[128] = "";
    size_t off = 0, shown = 0, total = 0;
    char *s = NULL;
    int rc = -1;

    for (size_t i = 0; i < nforms; i++)
        if (allowed & KPB_SRC_BIT(forms[i].kind))
            total++;
    for (size_t i = 0; i < nforms; i++) {
        if (!(allowed & KPB_SRC_BIT(forms[i].kind)))
            continue;
        shown++;
        int n = snprintf(expected + off, sizeof(expected) - off, "%s%s",
                         shown == 1       ? ""
                         : shown == total ? " or "
                                          : ", ",
                         forms[i].shown);
        if (n > 0 && (size_t)n < sizeof(expected) - off)
            off += (size_t)n;
    }

    if (node->type != YAML_SCALAR_NODE) {
        cfg_fail(p, node->start_mark, key, "expected %s, found %s", expected,
                 cfg_kind(node));
        goto out;
    }
    if (cfg_string(p, node, key, &s))
        goto out;
    for (size_t i = 0; i < nforms; i++) {
        size_t plen = strlen(forms[i].prefix);
        int whole = forms[i].prefix[plen - 1] != ':';
        const char *arg = s + plen;

        if (strncmp(s, forms[i].prefix, plen) != 0 || (whole && *arg))
            continue;
        if (!(allowed & KPB_SRC_BIT(forms[i].kind)))
            break;
        if (forms[i].kind == KPB_SRC_JSON && !cfg_json_pointer_ok(arg)) {
            cfg_fail(p, node->start_mark, key,
                     "expected a JSON pointer starting with / after json: "
                     "(e.g. json:/id; ~ only as ~0 or ~1)");
            goto out;
        }
        if (!whole && !*arg) {
            cfg_fail(p, node->start_mark, key,
                     "expected a non-empty %s after %s",
                     forms[i].kind == KPB_SRC_HEADER ? "header name" : "text",
                     forms[i].prefix);
            goto out;
        }
        out->kind = forms[i].kind;
        out->arg = whole ? NULL : kpb_xstrdup(arg);
        rc = 0;
        goto out;
    }
    cfg_fail(p, node->start_mark, key, "expected %s", expected);
out:
    free(s);
    return rc;
}

/*
 * kafka.properties: scalar -> scalar, kept in file order so that a later
 * setting overrides an earlier one in librdkafka just as it reads.  The keys
 * that kpbridge sets itself are refused: brokers and group have their own
 * keys, and offsets are committed by the bridge only after the database
 * transaction commits (DESIGN §5), which auto-commit would undercut.
 */
static int cfg_properties(kpb_cfgp_t *p, yaml_node_t *node,
                          kpb_config_t *conf) {
    static const char *const reserved[] = {
        "bootstrap.servers",  "metadata.broker.list",     "group.id",
        "enable.auto.commit", "enable.auto.offset.store", NULL,
    };
    const char *path = "kafka.properties";
    char key[KPB_CFG_PATHMAX];
    size_t cnt;

    if (cfg_is_null(node))
        return 0;
    if (node->type != YAML_MAPPING_NODE)
        return cfg_fail(p, node->start_mark, path,
                        "expected a mapping of librdkafka properties, found %s",
                        cfg_kind(node));
    cnt =
        (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    conf->kafka_props = kpb_xcalloc(cnt, sizeof(*conf->kafka_props));
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_pair_t *pair = node->data.mapping.pairs.start + i;
        yaml_node_t *k = cfg_node(p, pair->key);
        yaml_node_t *v = cfg_node(p, pair->value);
        const char *name;

        if (k->type != YAML_SCALAR_NODE || k->data.scalar.length == 0 ||
            memchr(k->data.scalar.value, '\0', k->data.scalar.length))
            return cfg_fail(p, k->start_mark, path,
                            "expected a librdkafka property name");
        name = (const char *)k->data.scalar.value;
        for (size_t j = 0; j < i; j++)
            if (strcmp(conf->kafka_props[j].key, name) == 0) {
                yaml_node_t *first =
                    cfg_node(p, node->data.mapping.pairs.start[j].key);
                return cfg_fail(p, k->start_mark, path,
                                "duplicate property %s (first at %zu:%zu)",
                                name, first->start_mark.line + 1,
                                first->start_mark.column + 1);
            }
        for (size_t j = 0; reserved[j]; j++)
            if (strcmp(name, reserved[j]) == 0)
                return cfg_fail(p, k->start_mark, path,
                                "%s is set by kpbridge%s", name,
                                j < 2    ? "; use kafka.brokers"
                                : j == 2 ? "; use kafka.group_id"
                                         : " (offsets are committed after the "
                                           "database commit)");
        snprintf(key, sizeof(key), "%s.%s", path, name);
        /* The value may be a password: messages below name only the key. */
        if (v->type != YAML_SCALAR_NODE)
            return cfg_fail(p, v->start_mark, key,
                            "expected a scalar value, found %s", cfg_kind(v));
        if (cfg_string(p, v, key, &conf->kafka_props[i].value))
            return -1;
        conf->kafka_props[i].key = kpb_xstrdup(name);
        conf->kafka_prop_cnt = i + 1;
    }
    return 0;
}

static int cfg_kafka(kpb_cfgp_t *p, yaml_node_t *key, yaml_node_t *node,
                     kpb_config_t *conf) {
    static const char *const names[] = {"brokers", "group_id", "properties",
                                        NULL};
    kpb_cfgmap_t map;

    if (cfg_mapping(p, node, "kafka", names, &map))
        return -1;
    if (map.val[0] &&
        cfg_nonempty(p, map.val[0], "kafka.brokers", &conf->brokers))
        return -1;
    if (map.val[1] &&
        cfg_nonempty(p, map.val[1], "kafka.group_id", &conf->group_id))
        return -1;
    if (map.val[2] && cfg_properties(p, map.val[2], conf))
        return -1;
    if (!map.val[0])
        return cfg_missing(p, node, key, "kafka", "brokers");
    return 0;
}

/*
 * The conninfo is checked here, once, with libpq's own parser: its message
 * for a malformed string quotes the offending word, which may hold the
 * password (a URI behind a blank is one such word), so it is not repeated.
 * Blanks around the value are dropped first; libpq would refuse a URI
 * behind them.
 */
static int cfg_conninfo(kpb_cfgp_t *p, const yaml_node_t *node, char *ci) {
    size_t n = strlen(ci), lead = 0;
    while (lead < n && strchr(" \t\r\n", ci[lead]))
        lead++;
    while (n > lead && strchr(" \t\r\n", ci[n - 1]))
        n--;
    memmove(ci, ci + lead, n - lead);
    ci[n - lead] = '\0';
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(ci, &err);
    PQfreemem(err);
    if (!opts)
        return cfg_fail(p, node->start_mark, "postgres.conninfo",
                        "not a libpq connection string (a URI, or "
                        "key=value words); the value is not shown, it may "
                        "hold a password");
    PQconninfoFree(opts);
    return 0;
}

static int cfg_postgres(kpb_cfgp_t *p, yaml_node_t *key, yaml_node_t *node,
                        kpb_config_t *conf) {
    static const char *const names[] = {"conninfo", "give_up_after_s",
                                        "versioning", NULL};
    /* In kpb_versioning_t order. */
    static const char *const versionings[] = {"trigger", "statement", NULL};
    kpb_cfgmap_t map;
    int v;

    if (cfg_mapping(p, node, "postgres", names, &map))
        return -1;
    if (map.val[1] && cfg_int(p, map.val[1], "postgres.give_up_after_s", 0,
                              31536000, &conf->give_up_after_s))
        return -1;
    if (map.val[2]) {
        if (cfg_enum(p, map.val[2], "postgres.versioning", versionings,
                     "trigger or statement", &v))
            return -1;
        conf->versioning = (kpb_versioning_t)v;
    }
    if (!map.val[0])
        return cfg_missing(p, node, key, "postgres", "conninfo");
    if (cfg_nonempty(p, map.val[0], "postgres.conninfo", &conf->conninfo))
        return -1;
    return cfg_conninfo(p, map.val[0], conf->conninfo);
}

/*
 * batch.max_events stops at 1000 because one multi-row INSERT binds a
 * handful of parameters per row and PostgreSQL allows at most 65535;
 * max_pending must hold at least one full batch or back-pressure would pause
 * consumption before any batch could fill.  flush_events sits between them:
 * one transaction carries several full statements, so its fixed costs (the
 * round trip, the offsets rows, the commit's WAL flush) are shared by more
 * rows, while a retried or revoked flush stays small.
 */
static int cfg_batch(kpb_cfgp_t *p, yaml_node_t *node, kpb_config_t *conf) {
    static const char *const names[] = {"max_events",   "linger_ms",
                                        "max_pending",  "max_record_bytes",
                                        "flush_events", NULL};
    kpb_cfgmap_t map;

    if (cfg_mapping(p, node, "batch", names, &map))
        return -1;
    if (map.val[0] &&
        cfg_int(p, map.val[0], "batch.max_events", 1, 1000, &conf->max_events))
        return -1;
    if (map.val[1] &&
        cfg_int(p, map.val[1], "batch.linger_ms", 0, 60000, &conf->linger_ms))
        return -1;
    if (map.val[2] && cfg_int(p, map.val[2], "batch.max_pending", 1, 10000000,
                              &conf->max_pending))
        return -1;
    if (map.val[3] && cfg_int(p, map.val[3], "batch.max_record_bytes", 1024,
                              100 * 1024 * 1024, &conf->max_record_bytes))
        return -1;
    if (map.val[4] && cfg_int(p, map.val[4], "batch.flush_events", 1, 10000000,
                              &conf->flush_events))
        return -1;
    if (map.val[2] && conf->max_pending < conf->max_events)
        return cfg_fail(p, map.val[2]->start_mark, "batch.max_pending",
                        "expected at least batch.max_events (%d)",
                        conf->max_events);
    if (!map.val[4]) {
        /* The default follows a smaller max_pending down. */
        if (conf->flush_events > conf->max_pending)
            conf->flush_events = conf->max_pending;
        return 0;
    }
    if (conf->flush_events < conf->max_events)
        return cfg_fail(p, map.val[4]->start_mark, "batch.flush_events",
                        "expected at least batch.max_events (%d)",
                        conf->max_events);
    if (conf->flush_events > conf->max_pending)
        return cfg_fail(p, map.val[4]->start_mark, "batch.flush_events",
                        "expected at most batch.max_pending (%d)",
                        conf->max_pending);
    return 0;
}

static int cfg_topic(kpb_cfgp_t *p, yaml_node_t *node, size_t idx,
                     kpb_topic_t *topic, yaml_node_t **name_node) {
    static const char *const names[] = {
        "name",       "table",    "stream_id",
        "event_type", "event_id", "expected_version",
        "payload",    NULL,
    };
    /* Which sources each field takes; see kpb_topic_t. */
    static const unsigned allowed[] = {
        0,
        0,
        KPB_SRC_BIT(KPB_SRC_KEY) | KPB_SRC_BIT(KPB_SRC_HEADER) |
            KPB_SRC_BIT(KPB_SRC_JSON),
        KPB_SRC_BIT(KPB_SRC_HEADER) | KPB_SRC_BIT(KPB_SRC_JSON) |
            KPB_SRC_BIT(KPB_SRC_CONST),
        KPB_SRC_BIT(KPB_SRC_HEADER) | KPB_SRC_BIT(KPB_SRC_JSON),
        KPB_SRC_BIT(KPB_SRC_HEADER) | KPB_SRC_BIT(KPB_SRC_JSON),
        KPB_SRC_BIT(KPB_SRC_VALUE) | KPB_SRC_BIT(KPB_SRC_JSON),
    };
    kpb_src_t *srcs[] = {NULL,
                         NULL,
                         &topic->stream_id,
                         &topic->event_type,
                         &topic->event_id,
                         &topic->expected_version,
                         &topic->payload};
    char path[64], key[KPB_CFG_PATHMAX];
    kpb_cfgmap_t map;

    snprintf(path, sizeof(path), "topics[%zu]", idx);
    if (node->type != YAML_MAPPING_NODE)
        return cfg_fail(p, node->start_mark, path,
                        "expected a topic mapping, found %s", cfg_kind(node));
    if (cfg_mapping(p, node, path, names, &map))
        return -1;
    *name_node = map.val[0];
    cfg_join(key, sizeof(key), path, "name");
    if (map.val[0] && cfg_topic_name(p, map.val[0], key, &topic->name))
        return -1;
    cfg_join(key, sizeof(key), path, "table");
    if (map.val[1] && cfg_table(p, map.val[1], key, &topic->table))
        return -1;
    for (size_t i = 2; names[i]; i++) {
        if (!map.val[i])
            continue;
        cfg_join(key, sizeof(key), path, names[i]);
        if (cfg_src(p, map.val[i], key, allowed[i], srcs[i]))
            return -1;
    }
    if (!map.val[0])
        return cfg_missing(p, node, NULL, path, "name");
    if (!map.val[3])
        return cfg_missing(p, node, NULL, path, "event_type");

    if (!topic->table)
        topic->table = kpb_xstrdup("eventcore_events");
    if (topic->stream_id.kind == KPB_SRC_NONE)
        topic->stream_id.kind = KPB_SRC_KEY;
    if (topic->payload.kind == KPB_SRC_NONE)
        topic->payload.kind = KPB_SRC_VALUE;
    return 0;
}

static int cfg_topics(kpb_cfgp_t *p, yaml_node_t *node, kpb_config_t *conf) {
    yaml_node_t **names = NULL;
    size_t cnt;
    int rc = -1;

    if (node->type != YAML_SEQUENCE_NODE ||
        node->data.sequence.items.top == node->data.sequence.items.start)
        return cfg_fail(p, node->start_mark, "topics",
                        "expected a non-empty sequence of topic mappings, "
                        "found %s",
                        node->type == YAML_SEQUENCE_NODE ? "an empty sequence"
                                                         : cfg_kind(node));
    cnt = (size_t)(node->data.sequence.items.top -
                   node->data.sequence.items.start);
    conf->topics = kpb_xcalloc(cnt, sizeof(*conf->topics));
    names = kpb_xcalloc(cnt, sizeof(*names));
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = cfg_node(p, node->data.sequence.items.start[i]);

        /* Counted before parsing so destroy frees a half-filled topic. */
        conf->topic_cnt = i + 1;
        if (cfg_topic(p, item, i, &conf->topics[i], &names[i]))
            goto out;
        for (size_t j = 0; j < i; j++) {
            char key[64];

            if (strcmp(conf->topics[j].name, conf->topics[i].name) != 0)
                continue;
            /* Two mappings for one topic: which one applies to a record
             * would depend on lookup order, so refuse it. */
            snprintf(key, sizeof(key), "topics[%zu].name", i);
            cfg_fail(p, names[i]->start_mark, key,
                     "duplicate topic %s (first at %zu:%zu)",
                     conf->topics[i].name, names[j]->start_mark.line + 1,
                     names[j]->start_mark.column + 1);
            goto out;
        }
    }
    rc = 0;
out:
    free(names);
    return rc;
}

static int cfg_dead_letter(kpb_cfgp_t *p, yaml_node_t *node,
                           kpb_config_t *conf) {
    static const char *const names[] = {"table", "topic", NULL};
    kpb_cfgmap_t map;

    if (cfg_mapping(p, node, "dead_letter", names, &map))
        return -1;
    if (map.val[0] &&
        cfg_table(p, map.val[0], "dead_letter.table", &conf->dl_table))
        return -1;
    if (map.val[1]) {
        char *topic = NULL;

        if (cfg_string(p, map.val[1], "dead_letter.topic", &topic))
            return -1;
        if (!*topic) {
            free(topic);
            return 0;
        }
        free(topic);
        if (cfg_topic_name(p, map.val[1], "dead_letter.topic", &conf->dl_topic))
            return -1;
        /* A consumed dead-letter topic feeds failed records back in: they
         * fail again and loop forever. */
        if (kpb_config_topic(conf, conf->dl_topic))
            return cfg_fail(p, map.val[1]->start_mark, "dead_letter.topic",
                            "expected a topic that is not in topics (%s is "
                            "consumed, so its dead letters would loop)",
                            conf->dl_topic);
    }
    return 0;
}

static int cfg_http(kpb_cfgp_t *p, yaml_node_t *node, kpb_config_t *conf) {
    static const char *const names[] = {"listen", NULL};
    kpb_cfgmap_t map;

    if (cfg_mapping(p, node, "http", names, &map))
        return -1;
    if (map.val[0])
        return cfg_listen(p, map.val[0], "http.listen", &conf->http_listen);
    conf->http_listen = kpb_xstrdup("127.0.0.1:9187");
    return 0;
}

static int cfg_log(kpb_cfgp_t *p, yaml_node_t *node, kpb_config_t *conf) {
    static const char *const names[] = {"level", "format", NULL};
    /* In kpb_log_level_t / kpb_log_format_t order. */
    static const char *const levels[] = {"error", "warn", "info", "debug",
                                         NULL};
    static const char *const formats[] = {"text", "json", NULL};
    kpb_cfgmap_t map;
    int v;

    if (cfg_mapping(p, node, "log", names, &map))
        return -1;
    if (map.val[0]) {
        if (cfg_enum(p, map.val[0], "log.level", levels,
                     "error, warn, info or debug", &v))
            return -1;
        conf->log_level = (kpb_log_level_t)v;
    }
    if (map.val[1]) {
        if (cfg_enum(p, map.val[1], "log.format", formats, "text or json", &v))
            return -1;
        conf->log_format = (kpb_log_format_t)v;
    }
    return 0;
}

/*
 * Sections run in a fixed order rather than file order, so topics are known
 * before dead_letter is checked against them.  Here and in every mapping,
 * what is written is checked before what is missing: a mistake in a line the
 * user wrote is the more useful first message.
 */
static int cfg_root(kpb_cfgp_t *p, yaml_node_t *root, kpb_config_t *conf) {
    static const char *const names[] = {"kafka",  "postgres",    "batch",
                                        "topics", "dead_letter", "http",
                                        "log",    NULL};
    enum { KAFKA, POSTGRES, BATCH, TOPICS, DEAD_LETTER, HTTP, LOG };
    kpb_cfgmap_t map;

    if (cfg_mapping(p, root, "", names, &map))
        return -1;
    if (map.val[KAFKA] && cfg_kafka(p, map.key[KAFKA], map.val[KAFKA], conf))
        return -1;
    if (map.val[POSTGRES] &&
        cfg_postgres(p, map.key[POSTGRES], map.val[POSTGRES], conf))
        return -1;
    if (map.val[BATCH] && cfg_batch(p, map.val[BATCH], conf))
        return -1;
    if (map.val[TOPICS] && cfg_topics(p, map.val[TOPICS], conf))
        return -1;
    if (map.val[DEAD_LETTER] && cfg_dead_letter(p, map.val[DEAD_LETTER], conf))
        return -1;
    if (map.val[HTTP]) {
        if (cfg_http(p, map.val[HTTP], conf))
            return -1;
    } else {
        conf->http_listen = kpb_xstrdup("127.0.0.1:9187");
    }
    if (map.val[LOG] && cfg_log(p, map.val[LOG], conf))
        return -1;
    if (!map.val[KAFKA])
        return cfg_missing(p, root, NULL, "", "kafka");
    if (!map.val[POSTGRES])
        return cfg_missing(p, root, NULL, "", "postgres");
    if (!map.val[TOPICS])
        return cfg_missing(p, root, NULL, "", "topics");

    if (!conf->group_id)
        conf->group_id = kpb_xstrdup("kpbridge");
    if (!conf->dl_table)
        conf->dl_table = kpb_xstrdup("kpbridge_dead_letters");
    return 0;
}

/* libyaml's own words and mark for a file it could not parse. */
static void cfg_yaml_error(kpb_cfgp_t *p, const yaml_parser_t *parser,
                           const char *buf, size_t len) {
    yaml_mark_t mark = parser->problem_mark;
    char context[128] = "";

    if (parser->error == YAML_MEMORY_ERROR) {
        fputs("kpbridge: out of memory\n", stderr);
        abort();
    }
    if (parser->error == YAML_READER_ERROR) {
        /* The reader (encoding) stage reports a byte offset, not a mark. */
        memset(&mark, 0, sizeof(mark));
        for (size_t i = 0; i < parser->problem_offset && i < len; i++) {
            if (buf[i] == '\n') {
                mark.line++;
                mark.column = 0;
            } else {
                mark.column++;
            }
        }
    }
    if (parser->context)
        snprintf(context, sizeof(context), " (%s at %zu:%zu)", parser->context,
                 parser->context_mark.line + 1,
                 parser->context_mark.column + 1);
    cfg_fail(p, mark, "YAML syntax error", "%s%s",
             parser->problem ? parser->problem : "cannot parse", context);
}

int kpb_config_parse(const char *buf, size_t len, const char *name,
                     kpb_config_t **out, char *errstr, size_t errstr_size) {
    kpb_cfgp_t p = {name, NULL, errstr, errstr_size};
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    int have_doc = 0, have_extra = 0;
    yaml_node_t *root;
    kpb_config_t *conf = NULL;
    int rc = -1;

    *out = NULL;
    if (errstr && errstr_size)
        errstr[0] = '\0';
    if (!yaml_parser_initialize(&parser)) {
        fputs("kpbridge: out of memory\n", stderr);
        abort();
    }
    yaml_parser_set_input_string(
        &parser, (const unsigned char *)(buf ? buf : ""), buf ? len : 0);
    if (!yaml_parser_load(&parser, &doc)) {
        cfg_yaml_error(&p, &parser, buf, len);
        goto out;
    }
    have_doc = 1;
    p.doc = &doc;
    root = yaml_document_get_root_node(&doc);
    if (!root || cfg_is_null(root)) {
        cfg_fail(&p, root ? root->start_mark : doc.start_mark, "(root)",
                 "empty document; expected a mapping with kafka, postgres "
                 "and topics");
        goto out;
    }
    /* A second document would be silently ignored by a single load. */
    if (!yaml_parser_load(&parser, &extra)) {
        cfg_yaml_error(&p, &parser, buf, len);
        goto out;
    }
    have_extra = 1;
    if (yaml_document_get_root_node(&extra)) {
        cfg_fail(&p, extra.start_mark, "(root)",
                 "expected a single YAML document, found another");
        goto out;
    }

    conf = kpb_xcalloc(1, sizeof(*conf));
    conf->path = kpb_xstrdup(name);
    conf->max_events = 1000;
    conf->linger_ms = 20;
    conf->max_pending = 100000;
    conf->flush_events = 4000;
    conf->max_record_bytes = 1024 * 1024;
    conf->give_up_after_s = 0;
    conf->versioning = KPB_VERSIONS_TRIGGER;
    conf->log_level = KPB_LOG_INFO;
    conf->log_format = KPB_LOG_TEXT;
    if (cfg_root(&p, root, conf))
        goto out;

    *out = conf;
    conf = NULL;
    rc = 0;
out:
    kpb_config_destroy(conf);
    if (have_extra)
        yaml_document_delete(&extra);
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int kpb_config_load(const char *path, kpb_config_t **out, char *errstr,
                    size_t errstr_size) {
    FILE *f = NULL;
    kpb_buf_t buf;
    char chunk[8192];
    size_t n;
    int rc = -1;

    *out = NULL;
    kpb_buf_init(&buf);
    f = fopen(path, "rb");
    if (!f)
        goto fail;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        kpb_buf_append(&buf, chunk, n);
    if (ferror(f))
        goto fail;
    rc = kpb_config_parse(buf.data ? buf.data : "", buf.len, path, out, errstr,
                          errstr_size);
    goto out;
fail:
    if (errstr && errstr_size)
        snprintf(errstr, errstr_size, "%s: cannot read: %s", path,
                 strerror(errno));
out:
    if (f)
        fclose(f);
    kpb_buf_fini(&buf);
    return rc;
}

static void cfg_src_fini(kpb_src_t *src) {
    free(src->arg);
    src->arg = NULL;
}

void kpb_config_destroy(kpb_config_t *conf) {
    if (!conf)
        return;
    free(conf->path);
    free(conf->brokers);
    free(conf->group_id);
    for (size_t i = 0; i < conf->kafka_prop_cnt; i++) {
        free(conf->kafka_props[i].key);
        free(conf->kafka_props[i].value);
    }
    free(conf->kafka_props);
    free(conf->conninfo);
    for (size_t i = 0; i < conf->topic_cnt; i++) {
        kpb_topic_t *t = &conf->topics[i];
        free(t->name);
        free(t->table);
        cfg_src_fini(&t->stream_id);
        cfg_src_fini(&t->event_type);
        cfg_src_fini(&t->event_id);
        cfg_src_fini(&t->expected_version);
        cfg_src_fini(&t->payload);
    }
    free(conf->topics);
    free(conf->dl_table);
    free(conf->dl_topic);
    free(conf->http_listen);
    free(conf);
}

const kpb_topic_t *kpb_config_topic(const kpb_config_t *conf,
                                    const char *name) {
    for (size_t i = 0; i < conf->topic_cnt; i++)
        if (conf->topics[i].name && strcmp(conf->topics[i].name, name) == 0)
            return &conf->topics[i];
    return NULL;
}
