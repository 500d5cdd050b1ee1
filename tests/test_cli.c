/* The command line of DESIGN §2, through the real binary. */
#include <criterion/criterion.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"

static char *tmp_path(const char *tag, const char *ext) {
    char *p = malloc(256);
    snprintf(p, 256, "/tmp/kpbt_cli_%s_%d.%s", tag, (int)getpid(), ext);
    unlink(p);
    return p;
}

static int run_cli(const char *log, const char *a0, const char *a1,
                   const char *a2) {
    const char *args[] = {a0, a1, a2, NULL};
    return kpbt_wait(kpbt_spawn(log, args), 60);
}

Test(cli, prints_help_and_version_with_exit_0) {
    char *log = tmp_path("help", "log");
    cr_expect_eq(run_cli(log, "--help", NULL, NULL), 0);
    cr_expect_eq(run_cli(log, "--version", NULL, NULL), 0);
    char *out = kpbt_read_file(log, NULL);
    cr_assert(out);
    cr_expect(strstr(out, "run     -c FILE [--exit-at-end]"));
    cr_expect(strstr(out, "kpbridge 0."));
    free(out);
    free(log);
}

Test(cli, exits_2_on_usage_errors) {
    char *log = tmp_path("usage", "log");
    cr_expect_eq(run_cli(log, NULL, NULL, NULL), 2);
    cr_expect_eq(run_cli(log, "frobnicate", "-c", "x.yaml"), 2);
    cr_expect_eq(run_cli(log, "run", NULL, NULL), 2, "run without -c");
    cr_expect_eq(run_cli(log, "check", "--exit-at-end", NULL), 2);
    free(log);
}

Test(cli, exits_2_naming_file_line_and_column_of_a_config_mistake) {
    char *conf = tmp_path("bad", "yaml");
    FILE *f = fopen(conf, "w");
    fputs("kafka:\n  brokers: \"x:1\"\npostgres:\n  conninfo: \"host=x\"\n"
          "topics:\n  - name: t\n    event_type: const:T\n    colour: red\n",
          f);
    fclose(f);
    char *log = tmp_path("bad", "log");
    cr_expect_eq(run_cli(log, "check", "-c", conf), 2);
    char *out = kpbt_read_file(log, NULL);
    cr_assert(out);
    char want[300];
    snprintf(want, sizeof(want), "%s:8:5:", conf);
    cr_expect(strstr(out, want), "message: %s", out);
    cr_expect(strstr(out, "colour"), "message: %s", out);
    free(out);
    unlink(conf);
    free(conf);
    free(log);
}

static char *write_conf(const char *tag, const char *conninfo) {
    char *conf = tmp_path(tag, "yaml");
    FILE *f = fopen(conf, "w");
    /* A broker nobody listens on: check must say so, not hang. */
    fprintf(f,
            "kafka:\n  brokers: \"127.0.0.1:1\"\n  properties:\n"
            "    socket.connection.setup.timeout.ms: \"1000\"\n"
            "postgres:\n  conninfo: \"%s\"\n"
            "topics:\n  - name: t\n    event_type: const:T\n",
            conninfo);
    fclose(f);
    return conf;
}

Test(cli, migrate_applies_the_schema_once_and_check_verifies_it,
     .timeout = 120) {
    char *ci = kpbt_db_new("cli_migrate", 0);
    /* trust auth ignores the password; it must still never be printed */
    size_t n = strlen(ci) + 64;
    char *ci_pw = malloc(n);
    snprintf(ci_pw, n, "%s password=hunter2secret", ci);
    char *conf = write_conf("migrate", ci_pw);
    char *log = tmp_path("migrate", "log");

    cr_expect_eq(run_cli(log, "check", "-c", conf), 1,
                 "check before migrate must fail");
    char *out = kpbt_read_file(log, NULL);
    cr_assert(out);
    cr_expect(strstr(out, "not applied: run kpbridge migrate"), "%s", out);
    cr_expect(strstr(out, "kafka: cannot reach 127.0.0.1:1"), "%s", out);
    free(out);

    cr_expect_eq(run_cli(log, "migrate", "-c", conf), 0);
    cr_expect_eq(run_cli(log, "migrate", "-c", conf), 0);
    int total = 0;
    while (kpb_migrations[total].name)
        total++;
    char want[64];
    snprintf(want, sizeof(want), "migrate: %d migration(s) applied", total);
    out = kpbt_read_file(log, NULL);
    cr_expect(strstr(out, want), "%s", out);
    cr_expect(strstr(out, "migrate: 0 migration(s) applied"), "%s", out);
    free(out);

    unlink(log);
    cr_expect_eq(run_cli(log, "check", "-c", conf), 1, "kafka is down");
    out = kpbt_read_file(log, NULL);
    cr_expect(strstr(out, "postgres: schema up to date"), "%s", out);
    cr_expect(strstr(out, "password=****"), "%s", out);
    cr_expect_null(strstr(out, "hunter2secret"), "password printed: %s", out);
    free(out);

    PGconn *conn = kpbt_pg(ci);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_migrations"),
                 total);
    PQfinish(conn);
    unlink(conf);
    free(conf);
    free(log);
    free(ci_pw);
    free(ci);
}

Test(cli, check_passes_when_kafka_and_postgres_are_reachable,
     .timeout = 120) {
    char *ci = kpbt_db_new("cli_check", 1);
    kpbt_kafka_t *k = kpbt_kafka_new(1);
    kpbt_topic(k, "t", 2);
    char *conf = kpbt_config("cli_check", k->bootstrap, ci,
                             "  - name: t\n    event_type: const:T\n", NULL);
    char *log = tmp_path("check", "log");
    cr_expect_eq(run_cli(log, "check", "-c", conf), 0);
    char *out = kpbt_read_file(log, NULL);
    cr_assert(out);
    cr_expect(strstr(out, "kafka: topic t: 2 partition(s)"), "%s", out);
    cr_expect(strstr(out, "check: ok"), "%s", out);
    free(out);
    kpbt_kafka_destroy(k);
    unlink(conf);
    free(conf);
    free(log);
    free(ci);
}

Test(cli, never_prints_a_sasl_password_and_warns_about_a_readable_secret,
     .timeout = 120) {
    char *ci = kpbt_db_new("cli_secret", 1);
    kpbt_kafka_t *k = kpbt_kafka_new(1);
    kpbt_topic(k, "t", 1);
    char *conf = tmp_path("secret", "yaml");
    FILE *f = fopen(conf, "w");
    fprintf(f,
            "kafka:\n  brokers: \"%s\"\n  properties:\n"
            "    security.protocol: SASL_PLAINTEXT\n"
            "    sasl.mechanisms: PLAIN\n"
            "    sasl.username: bridge\n"
            "    sasl.password: hunter2sasl\n"
            "    socket.connection.setup.timeout.ms: \"2000\"\n"
            "postgres:\n  conninfo: \"%s password=hunter2pg\"\n"
            "http:\n  listen: \"\"\n"
            "log:\n  level: debug\n"
            "topics:\n  - name: t\n    event_type: const:T\n",
            k->bootstrap, ci);
    fclose(f);
    chmod(conf, 0644);
    char *log = tmp_path("secret", "log");
    /* check, then a few seconds of run against a broker that does not
     * speak SASL: plenty of errors, none of them may quote a secret */
    int rc = run_cli(log, "check", "-c", conf);
    cr_expect_neq(rc, 2, "the configuration itself is valid");
    const char *args[] = {"run", "-c", conf, NULL};
    pid_t pid = kpbt_spawn(log, args);
    nanosleep(&(struct timespec){4, 0}, NULL);
    kill(pid, SIGTERM);
    kpbt_wait(pid, 60);
    char *out = kpbt_read_file(log, NULL);
    cr_assert(out);
    cr_expect_null(strstr(out, "hunter2sasl"), "SASL password printed");
    cr_expect_null(strstr(out, "hunter2pg"), "PostgreSQL password printed");
    cr_expect(strstr(out, "holds a secret and is readable by others"), "%s",
              out);
    free(out);
    /* not readable by others: no warning */
    chmod(conf, 0600);
    unlink(log);
    run_cli(log, "check", "-c", conf);
    out = kpbt_read_file(log, NULL);
    cr_expect_null(strstr(out, "readable by others"));
    free(out);
    kpbt_kafka_destroy(k);
    unlink(conf);
    free(conf);
    free(log);
    free(ci);
}
