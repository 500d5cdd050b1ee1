/*
 * scripts/replay end to end: each fixture of tests/data/replay/ is loaded
 * into a development Kafka the script starts itself, run through the real
 * kpbridge into a fresh database, and the script's report is held against
 * the counts gen.py wrote next to the fixture (FIXTURE.expected) and against
 * the database itself.  The last tests break a replayed database behind the
 * script's back and check that `--verify-only` says what is wrong.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define REPLAY_TIMEOUT_S 100 /* the script's own --timeout is below it */

/* ---- running the script ------------------------------------------------ */

static char *tmp_path(const char *tag, const char *ext) {
    char *p = malloc(256);
    cr_assert(p);
    snprintf(p, 256, "/tmp/kpbt_replay_%s_%d.%s", tag, (int)getpid(), ext);
    unlink(p);
    return p;
}

/*
 * Runs scripts/replay ARGS with stdout and stderr to @p log and returns its
 * exit status.  The script runs in a process group of its own, so that on a
 * timeout the development Kafka and kpbridge it started go with it.
 */
static int run_replay(const char *log, const char *const *args) {
    char script[512];
    snprintf(script, sizeof(script), "%s/scripts/replay", KPB_SOURCE_DIR);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) {
            dup2(null, 0);
            close(null);
        }
        setenv("KPBRIDGE", KPB_BINARY_DIR "/kpbridge", 1);
        setenv("KPB_DEVKAFKA", KPB_BINARY_DIR "/kpbridge-devkafka", 1);
        const char *argv[32];
        int n = 0;
        argv[n++] = script;
        for (int i = 0; args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(script, (char *const *)argv);
        _exit(127);
    }
    setpgid(pid, pid); /* also here: no race with the child's own call */

    double until = kpbt_now() + REPLAY_TIMEOUT_S;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (kpbt_now() > until) {
            /* TERM first: the script's trap stops what it started. */
            kill(-pid, SIGTERM);
            for (int i = 0; i < 100 && waitpid(pid, &status, WNOHANG) == 0; i++)
                nanosleep(&(struct timespec){0, 100000000L}, NULL);
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            cr_assert_fail("scripts/replay did not finish within %d s",
                           REPLAY_TIMEOUT_S);
        }
        nanosleep(&(struct timespec){0, 50000000L}, NULL);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

/* ---- reading the report and the expected counts ------------------------ */

typedef struct {
    char name[64];
    long long count;
} count_t;

typedef struct {
    count_t items[64];
    int cnt;
} counts_t;

static void counts_put(counts_t *c, const char *name, long long count) {
    cr_assert_lt(c->cnt, 64, "too many counts");
    snprintf(c->items[c->cnt].name, sizeof(c->items[c->cnt].name), "%s", name);
    c->items[c->cnt].count = count;
    c->cnt++;
}

/* The count of @p name, or -1 when there is none. */
static long long counts_get(const counts_t *c, const char *name) {
    for (int i = 0; i < c->cnt; i++)
        if (!strcmp(c->items[i].name, name))
            return c->items[i].count;
    return -1;
}

static int is_total(const char *name) {
    return !strcmp(name, "records") || !strcmp(name, "events") ||
           !strcmp(name, "dead_letters") || !strcmp(name, "streams");
}

/* FIXTURE.expected: "name count" lines; # starts a comment. */
static void read_expected(const char *path, counts_t *c) {
    char *text = kpbt_read_file(path, NULL);
    cr_assert(text, "cannot read %s", path);
    memset(c, 0, sizeof(*c));
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64];
        long long n;
        if (line[0] == '#' || line[0] == '\0')
            continue;
        cr_assert_eq(sscanf(line, "%63s %lld", name, &n), 2, "%s: %s", path,
                     line);
        counts_put(c, name, n);
    }
    free(text);
}

/* The number after a "  LABEL" line of the report, or -1. */
static long long report_value(const char *out, const char *label) {
    char key[80];
    snprintf(key, sizeof(key), "\n  %s ", label);
    const char *p = strstr(out, key);
    if (!p)
        return -1;
    return strtoll(p + strlen(key), NULL, 10);
}

/*
 * The report as counts: the totals under the names FIXTURE.expected uses,
 * and one count per dead-letter reason (the indented lines between
 * "dead letters" and "streams").
 */
static void read_report(const char *out, counts_t *c) {
    memset(c, 0, sizeof(*c));
    counts_put(c, "records", report_value(out, "records in fixture"));
    counts_put(c, "events", report_value(out, "events written"));
    counts_put(c, "dead_letters", report_value(out, "dead letters"));
    counts_put(c, "streams", report_value(out, "streams"));
    const char *p = strstr(out, "\n  dead letters ");
    cr_assert(p, "no dead letters line in:\n%s", out);
    p = strchr(p + 1, '\n');
    while (p && !strncmp(p, "\n    ", 5)) {
        char name[64];
        long long n;
        cr_assert_eq(sscanf(p + 5, "%63s %lld", name, &n), 2,
                     "bad reason line in:\n%s", out);
        counts_put(c, name, n);
        p = strchr(p + 1, '\n');
    }
}

/* The last non-empty line of @p out (static buffer). */
static const char *last_line(const char *out) {
    static char line[1024];
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '\n')
        n--;
    size_t start = n;
    while (start > 0 && out[start - 1] != '\n')
        start--;
    snprintf(line, sizeof(line), "%.*s", (int)(n - start), out + start);
    return line;
}

static char *fixture_path(const char *name, const char *ext) {
    char *p = malloc(512);
    cr_assert(p);
    snprintf(p, 512, "%s/tests/data/replay/%s.%s", KPB_SOURCE_DIR, name, ext);
    return p;
}

/* ---- one fixture ------------------------------------------------------- */

/*
 * Replays tests/data/replay/NAME.jsonl into a fresh database and checks the
 * report against NAME.expected, and the report's numbers against the
 * database (the report is what is under test, so it is not taken on trust).
 */
static void replay_fixture(const char *name, const char *tag) {
    char *ci = kpbt_db_new(tag, 0);
    char *fixture = fixture_path(name, "jsonl");
    char *expected_path = fixture_path(name, "expected");
    char *log = tmp_path(tag, "log");
    counts_t want, got;
    read_expected(expected_path, &want);

    const char *args[] = {"--conninfo", ci, "--timeout", "90", fixture, NULL};
    int rc = run_replay(log, args);
    char *out = kpbt_read_file(log, NULL);
    cr_assert(out, "no output in %s", log);
    cr_assert_eq(rc, 0, "scripts/replay exited %d:\n%s", rc, out);

    read_report(out, &got);
    for (int i = 0; i < want.cnt; i++)
        cr_expect_eq(counts_get(&got, want.items[i].name), want.items[i].count,
                     "%s: report says %lld, %s says %lld", want.items[i].name,
                     counts_get(&got, want.items[i].name), expected_path,
                     want.items[i].count);
    for (int i = 0; i < got.cnt; i++)
        cr_expect(counts_get(&want, got.items[i].name) >= 0,
                  "the report has %s %lld, which %s does not expect",
                  got.items[i].name, got.items[i].count, expected_path);

    char ok[160];
    snprintf(ok, sizeof(ok),
             "replay: OK — %lld records: %lld events, %lld dead letters",
             counts_get(&want, "records"), counts_get(&want, "events"),
             counts_get(&want, "dead_letters"));
    cr_expect_str_eq(last_line(out), ok);
    cr_expect_eq(report_value(out, "records read"),
                 counts_get(&want, "records"));
    cr_expect_eq(report_value(out, "streams with version gaps"), 0);
    cr_expect_eq(report_value(out, "streams out of Kafka order"), 0);
    cr_expect_eq(report_value(out, "records unaccounted for"), 0);
    cr_expect_eq(report_value(out, "records stored twice"), 0);

    /* The database agrees with the report. */
    PGconn *conn = kpbt_pg(ci);
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"),
                 counts_get(&want, "events"), "rows in eventcore_events");
    cr_expect_eq(
        kpbt_int(conn,
                 "SELECT count(DISTINCT stream_id) FROM eventcore_events"),
        counts_get(&want, "streams"), "streams in eventcore_events");
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"),
                 counts_get(&want, "dead_letters"), "dead letters");
    for (int i = 0; i < want.cnt; i++) {
        if (is_total(want.items[i].name))
            continue;
        cr_expect_eq(kpbt_intf(conn,
                               "SELECT count(*) FROM kpbridge_dead_letters"
                               " WHERE reason = '%s'",
                               want.items[i].name),
                     want.items[i].count, "dead letters of reason %s",
                     want.items[i].name);
    }
    cr_expect_eq(kpbt_int(conn, "SELECT coalesce(sum(next_offset), 0)"
                                " FROM kpbridge_offsets"),
                 counts_get(&want, "records"),
                 "positions stored (a fresh topic starts at 0)");
    PQfinish(conn);

    free(out);
    unlink(log);
    free(log);
    free(expected_path);
    free(fixture);
    free(ci);
}

Test(replay, writes_every_record_of_a_normal_day_as_an_event, .timeout = 110) {
    replay_fixture("normal-day", "replay_normal");
}

Test(replay, dead_letters_every_kind_of_poison_with_its_reason,
     .timeout = 110) {
    replay_fixture("poison-mix", "replay_poison");
}

Test(replay, writes_a_huge_stream_gap_free_in_offset_order, .timeout = 110) {
    replay_fixture("huge-stream", "replay_huge");
}

/* ---- verification of a database changed after the run ----------------- */

/* 40 records over 4 streams, all good; returns the fixture's path. */
static char *small_fixture(const char *tag) {
    char *path = tmp_path(tag, "jsonl");
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs("# a small fixture written by test_replay\n", f);
    for (int i = 0; i < 40; i++)
        fprintf(f,
                "{\"key\":\"cart-%d\",\"headers\":{\"event-type\":"
                "\"ItemAdded\"},\"value\":{\"seq\":%d}}\n",
                i % 4, i / 4 + 1);
    fclose(f);
    return path;
}

/* Replays a small fixture into a fresh database; returns its conninfo. */
static char *replay_small(const char *tag, char **fixture) {
    char *ci = kpbt_db_new(tag, 0);
    *fixture = small_fixture(tag);
    char *log = tmp_path(tag, "log");
    const char *args[] = {"--conninfo", ci,   "--partitions", "2",
                          "--timeout",  "90", *fixture,       NULL};
    int rc = run_replay(log, args);
    char *out = kpbt_read_file(log, NULL);
    cr_assert(out);
    cr_assert_eq(rc, 0, "scripts/replay exited %d:\n%s", rc, out);
    cr_assert_str_eq(last_line(out),
                     "replay: OK — 40 records: 40 events, 0 dead letters");
    free(out);
    unlink(log);
    free(log);
    return ci;
}

static char *verify_only(const char *tag, const char *ci, const char *fixture,
                         int *rc) {
    char *log = tmp_path(tag, "verify.log");
    const char *args[] = {"--verify-only", "--conninfo", ci, fixture, NULL};
    *rc = run_replay(log, args);
    char *out = kpbt_read_file(log, NULL);
    cr_assert(out);
    unlink(log);
    free(log);
    return out;
}

Test(replay, verify_only_names_an_event_removed_after_the_run, .timeout = 110) {
    char *fixture = NULL;
    char *ci = replay_small("replay_gone", &fixture);

    /* Negative control: the untouched database verifies. */
    int rc = -1;
    char *out = verify_only("replay_gone", ci, fixture, &rc);
    cr_expect_eq(rc, 0, "verify-only of an intact run:\n%s", out);
    cr_expect_str_eq(last_line(out),
                     "replay: OK — 40 records: 40 events, 0 dead letters");
    free(out);

    /* Events are immutable: only a replica-role session gets past the
     * trigger.  Remove one from the middle of a stream. */
    PGconn *conn = kpbt_pg(ci);
    long long part = kpbt_int(conn, "SELECT (metadata->'kafka'->>'partition')"
                                    "::int FROM eventcore_events WHERE"
                                    " stream_id = 'cart-2' AND"
                                    " stream_version = 5");
    long long off = kpbt_int(conn, "SELECT (metadata->'kafka'->>'offset')"
                                   "::bigint FROM eventcore_events WHERE"
                                   " stream_id = 'cart-2' AND"
                                   " stream_version = 5");
    cr_assert(part >= 0 && off >= 0);
    kpbt_exec(conn, "SET session_replication_role = replica");
    kpbt_exec(conn, "DELETE FROM eventcore_events WHERE stream_id = 'cart-2'"
                    " AND stream_version = 5");
    PQfinish(conn);

    out = verify_only("replay_gone", ci, fixture, &rc);
    cr_expect_eq(rc, 1, "verify-only after the delete:\n%s", out);
    char want[200];
    snprintf(want, sizeof(want),
             "1 record(s) unaccounted for: partition %lld offset %lld", part,
             off);
    const char *last = last_line(out);
    cr_expect(!strncmp(last, "replay: FAILED — ", strlen("replay: FAILED — ")),
              "last line: %s", last);
    cr_expect(strstr(last, want), "want \"%s\" in: %s", want, last);
    cr_expect(strstr(last, "39 events + 0 dead letters = 39, not 40"),
              "last line: %s", last);
    cr_expect(strstr(last, "1 stream(s) with version gaps"), "last line: %s",
              last);
    cr_expect(strstr(out, "cart-2 has 9 events, versions 1..10"),
              "the report names the stream:\n%s", out);
    free(out);
    unlink(fixture);
    free(fixture);
    free(ci);
}

Test(replay, verify_only_names_a_record_stored_twice, .timeout = 110) {
    char *fixture = NULL;
    char *ci = replay_small("replay_twice", &fixture);

    /* A dead letter for a record that is an event already. */
    PGconn *conn = kpbt_pg(ci);
    long long part = kpbt_int(conn, "SELECT (metadata->'kafka'->>'partition')"
                                    "::int FROM eventcore_events WHERE"
                                    " stream_id = 'cart-1' AND"
                                    " stream_version = 3");
    long long off = kpbt_int(conn, "SELECT (metadata->'kafka'->>'offset')"
                                   "::bigint FROM eventcore_events WHERE"
                                   " stream_id = 'cart-1' AND"
                                   " stream_version = 3");
    cr_assert(part >= 0 && off >= 0);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO kpbridge_dead_letters (topic, partition, \"offset\","
             " reason) VALUES ('replay', %lld, %lld, 'invalid_json')",
             part, off);
    kpbt_exec(conn, sql);
    PQfinish(conn);

    int rc = -1;
    char *out = verify_only("replay_twice", ci, fixture, &rc);
    cr_expect_eq(rc, 1, "verify-only after the insert:\n%s", out);
    const char *last = last_line(out);
    char want[200];
    snprintf(want, sizeof(want),
             "1 record(s) stored more than once (partition %lld offset %lld"
             " (2 times))",
             part, off);
    cr_expect(strstr(last, want), "want \"%s\" in: %s", want, last);
    cr_expect(strstr(last, "40 events + 1 dead letters = 41, not 40"),
              "last line: %s", last);
    free(out);
    unlink(fixture);
    free(fixture);
    free(ci);
}
