/* kpbridge: wires the stages together and handles the command line and
 * signals; everything else lives in the library (bridge/). */
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge.h"
#include "config.h"
#include "consumer.h"
#include "http.h"
#include "metrics.h"
#include "migrate.h"
#include "util.h"
#include "writer.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    /* The first signal asks for a clean stop; the second exits at once:
     * nothing is lost, uncommitted records are simply read again. */
    if (stop_requested)
        _exit(1);
    stop_requested = 1;
}

static void usage(FILE *out) {
    fputs(
        "usage: kpbridge COMMAND [OPTIONS]\n"
        "\n"
        "Kafka -> PostgreSQL ingestion bridge for event stores.\n"
        "\n"
        "commands:\n"
        "  run     -c FILE [--exit-at-end]  consume until SIGTERM/SIGINT\n"
        "                                   (--exit-at-end: until every\n"
        "                                   partition is written to its end)\n"
        "  check   -c FILE                  validate the configuration, reach\n"
        "                                   Kafka and PostgreSQL, verify the\n"
        "                                   schema\n"
        "  migrate -c FILE                  apply the schema migrations not\n"
        "                                   applied yet\n"
        "\n"
        "options:\n"
        "  -c, --config FILE   the YAML configuration\n"
        "  --exit-at-end       (run) stop once caught up\n"
        "  -h, --help          this text\n"
        "  -V, --version       the version\n"
        "\n"
        "exit codes: 0 clean stop, 1 runtime failure, 2 usage or "
        "configuration error\n",
        out);
}

static PGconn *connect_pg(const kpb_config_t *conf) {
    PGconn *conn = PQconnectdb(conf->conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        char *msg = PQerrorMessage(conn);
        size_t n = strlen(msg);
        while (n && msg[n - 1] == '\n')
            n--;
        kpb_error("cannot connect to PostgreSQL: %.*s", (int)n, msg);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

static void warn_if_readable(const char *path, const kpb_config_t *conf) {
    struct stat st;
    if (stat(path, &st) || !(st.st_mode & S_IROTH))
        return;
    int secret = strstr(conf->conninfo, "password") != NULL;
    if (!secret && !strncmp(conf->conninfo, "postgres", 8)) {
        const char *auth = strstr(conf->conninfo, "://");
        const char *at = auth ? strchr(auth + 3, '@') : NULL;
        secret = at && memchr(auth + 3, ':', (size_t)(at - auth - 3));
    }
    for (size_t i = 0; i < conf->kafka_prop_cnt && !secret; i++)
        secret = strstr(conf->kafka_props[i].key, "password") != NULL;
    if (secret)
        kpb_warn("%s holds a secret and is readable by others; chmod o-r it",
                 path);
}

static int cmd_migrate(const kpb_config_t *conf) {
    PGconn *conn = connect_pg(conf);
    if (!conn)
        return 1;
    char err[1024];
    int applied = 0;
    int rc = kpb_migrate_apply(conn, &applied, err, sizeof(err));
    PQfinish(conn);
    if (rc) {
        kpb_error("migrate: %s", err);
        return 1;
    }
    printf("migrate: %d migration(s) applied, schema up to date\n", applied);
    return 0;
}

static int check_kafka(const kpb_config_t *conf) {
    char err[512];
    rd_kafka_conf_t *kc = kpb_consumer_conf(conf, err, sizeof(err));
    if (!kc) {
        printf("kafka: configuration: %s\n", err);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(kc);
        printf("kafka: %s\n", err);
        return 2;
    }
    int rc = 0;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t merr = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
    if (merr) {
        printf("kafka: cannot reach %s: %s\n", conf->brokers,
               rd_kafka_err2str(merr));
        rc = 1;
    } else {
        printf("kafka: reached %s (%d broker(s))\n", conf->brokers,
               md->broker_cnt);
        for (size_t i = 0; i < conf->topic_cnt; i++) {
            int parts = -1;
            for (int k = 0; k < md->topic_cnt; k++)
                if (!strcmp(md->topics[k].topic, conf->topics[i].name) &&
                    !md->topics[k].err)
                    parts = md->topics[k].partition_cnt;
            if (parts < 0)
                printf("kafka: topic %s: not found (it may be created on "
                       "first use)\n",
                       conf->topics[i].name);
            else
                printf("kafka: topic %s: %d partition(s)\n",
                       conf->topics[i].name, parts);
        }
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    return rc;
}

static int table_exists(PGconn *conn, const char *table) {
    char *quoted = kpb_quote_table(conn, table);
    if (!quoted)
        return 0;
    const char *params[1] = {quoted};
    PGresult *res = PQexecParams(conn, "SELECT to_regclass($1) IS NOT NULL",
                                 1, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK &&
             PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    free(quoted);
    return ok;
}

static int check_pg(const kpb_config_t *conf) {
    char masked[1024];
    kpb_mask_conninfo(conf->conninfo, masked, sizeof(masked));
    PGconn *conn = connect_pg(conf);
    if (!conn) {
        printf("postgres: cannot connect to %s\n", masked);
        return 1;
    }
    printf("postgres: connected to %s (server %d)\n", masked,
           PQserverVersion(conn));
    int rc = 0;
    char err[1024];
    int pending = 0;
    if (kpb_migrate_pending(conn, &pending, err, sizeof(err))) {
        printf("postgres: %s\n", err);
        rc = 1;
    } else if (pending) {
        printf("postgres: %d migration(s) not applied: run kpbridge "
               "migrate\n",
               pending);
        rc = 1;
    } else {
        printf("postgres: schema up to date\n");
    }
    const char *tables[64];
    size_t nt = 0;
    tables[nt++] = "kpbridge_offsets";
    tables[nt++] = conf->dl_table;
    for (size_t i = 0; i < conf->topic_cnt && nt < 64; i++)
        tables[nt++] = conf->topics[i].table;
    for (size_t i = 0; i < nt; i++) {
        if (!table_exists(conn, tables[i])) {
            printf("postgres: table %s: missing\n", tables[i]);
            rc = 1;
        }
    }
    PQfinish(conn);
    return rc;
}

/* Ready: connected to PostgreSQL and holding an assignment (which needs a
 * working Kafka connection).  Runs on the HTTP thread: atomics only. */
static int ready(void *opaque) {
    (void)opaque;
    return kpb_metrics_gauge(KPB_METRIC_DB_CONNECTED) == 1 &&
           kpb_metrics_gauge(KPB_METRIC_KAFKA_ASSIGNED_PARTITIONS) > 0;
}

static int cmd_run(const kpb_config_t *conf, int exit_at_end) {
    kpb_http_t *http = NULL;
    if (conf->http_listen) {
        char err[512];
        http = kpb_http_start(conf->http_listen, ready, NULL, err, sizeof(err));
        if (!http) {
            kpb_error("%s", err);
            return 1;
        }
        kpb_info("serving /metrics, /healthz and /readyz on %s",
                 conf->http_listen);
    }
    int rc = kpb_bridge_run(conf, exit_at_end, &stop_requested);
    kpb_http_stop(http);
    return rc;
}

int main(int argc, char **argv) {
    const char *cmd = NULL, *path = NULL;
    int exit_at_end = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("kpbridge %s (librdkafka %s, libpq %d)\n", KPB_VERSION,
                   rd_kafka_version_str(), PQlibVersion());
            return 0;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            if (++i == argc) {
                fprintf(stderr, "kpbridge: %s needs a file\n", a);
                return 2;
            }
            path = argv[i];
        } else if (!strncmp(a, "--config=", 9)) {
            path = a + 9;
        } else if (!strcmp(a, "--exit-at-end")) {
            exit_at_end = 1;
        } else if (a[0] == '-' || cmd) {
            fprintf(stderr, "kpbridge: unknown argument %s\n\n", a);
            usage(stderr);
            return 2;
        } else {
            cmd = a;
        }
    }
    if (!cmd) {
        usage(stderr);
        return 2;
    }
    if (strcmp(cmd, "run") && strcmp(cmd, "check") && strcmp(cmd, "migrate")) {
        fprintf(stderr, "kpbridge: unknown command %s\n\n", cmd);
        usage(stderr);
        return 2;
    }
    if (!path) {
        fprintf(stderr, "kpbridge %s: -c FILE is required\n", cmd);
        return 2;
    }
    if (exit_at_end && strcmp(cmd, "run")) {
        fprintf(stderr, "kpbridge: --exit-at-end goes with run\n");
        return 2;
    }

    char err[1024];
    kpb_config_t *conf = NULL;
    if (kpb_config_load(path, &conf, err, sizeof(err))) {
        fprintf(stderr, "kpbridge: %s\n", err);
        return 2;
    }
    kpb_log_setup(conf->log_level, conf->log_format);
    kpb_metrics_init();
    warn_if_readable(path, conf);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc;
    if (!strcmp(cmd, "migrate")) {
        rc = cmd_migrate(conf);
    } else if (!strcmp(cmd, "check")) {
        rc = check_kafka(conf);
        int prc = check_pg(conf);
        if (prc > rc)
            rc = prc;
        printf("check: %s\n", rc ? "FAILED" : "ok");
    } else {
        rc = cmd_run(conf, exit_at_end);
    }
    kpb_config_destroy(conf);
    return rc;
}
