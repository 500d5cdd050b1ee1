/* TLS to PostgreSQL with sslmode=verify-full, against a second throwaway
 * cluster with a certificate made here by openssl. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static void sh(const char *cmd) {
    cr_assert_eq(system(cmd), 0, "failed: %s", cmd);
}

static char dir[64];

static void stop_cluster(void) {
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s/scripts/pg stop %s/pg >/dev/null 2>&1",
             KPB_SOURCE_DIR, dir);
    if (system(cmd)) {
        /* best effort: the directory goes away below anyway */
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd)) {
    }
}

Test(tls, connects_with_verify_full_and_refuses_a_wrong_ca, .timeout = 180,
     .fini = stop_cluster) {
    snprintf(dir, sizeof(dir), "/tmp/kpbt_tls_%d", (int)getpid());
    mkdir(dir, 0755);
    /* a CA, a server certificate for localhost signed by it, another CA */
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2"
       " -subj /CN=kpbt-ca -keyout ca.key -out ca.crt >/dev/null 2>&1"
       " && openssl req -x509 -newkey rsa:2048 -nodes -days 2"
       " -subj /CN=other-ca -keyout other.key -out other.crt >/dev/null 2>&1"
       " && openssl req -newkey rsa:2048 -nodes -subj /CN=localhost"
       " -keyout server.key -out server.csr >/dev/null 2>&1"
       " && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext"
       " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key"
       " -CAcreateserial -days 2 -extfile san.ext -out server.crt"
       " >/dev/null 2>&1",
       dir);
    sh(cmd);
    snprintf(cmd, sizeof(cmd), "%s/scripts/pg start %s/pg >/dev/null",
             KPB_SOURCE_DIR, dir);
    sh(cmd);
    snprintf(cmd, sizeof(cmd),
             "cd %s && owner=$(stat -c %%U pg/data) && cp server.crt"
             " server.key pg/data/ && chown $owner pg/data/server.crt"
             " pg/data/server.key && chmod 600 pg/data/server.key && printf"
             " \"ssl = on\\nssl_cert_file = 'server.crt'\\nssl_key_file ="
             " 'server.key'\\n\" >> pg/data/postgresql.conf &&"
             " %s/scripts/pg restart %s/pg",
             dir, KPB_SOURCE_DIR, dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    char path[256];
    snprintf(path, sizeof(path), "%s/pg/port", dir);
    char *port = kpbt_read_file(path, NULL);
    cr_assert(port);
    port[strcspn(port, "\n")] = '\0';

    char ci[1024], conf[512], log[512];
    snprintf(ci, sizeof(ci),
             "host=localhost port=%s user=postgres dbname=postgres"
             " sslmode=verify-full sslrootcert=%s/ca.crt",
             port, dir);
    /* the test's own connection proves the session is encrypted */
    PGconn *conn = kpbt_pg(ci);
    cr_expect_eq(kpbt_int(conn, "SELECT ssl::int FROM pg_stat_ssl WHERE pid"
                                " = pg_backend_pid()"),
                 1);
    PQfinish(conn);

    for (int wrong = 0; wrong < 2; wrong++) {
        snprintf(conf, sizeof(conf), "%s/kpbridge%d.yaml", dir, wrong);
        snprintf(log, sizeof(log), "%s/kpbridge%d.log", dir, wrong);
        FILE *f = fopen(conf, "w");
        fprintf(f,
                "kafka:\n  brokers: \"127.0.0.1:1\"\n"
                "postgres:\n  conninfo: \"host=localhost port=%s"
                " user=postgres dbname=postgres sslmode=verify-full"
                " sslrootcert=%s/%s\"\n"
                "topics:\n  - name: t\n    event_type: const:T\n",
                port, dir, wrong ? "other.crt" : "ca.crt");
        fclose(f);
        const char *args[] = {"migrate", "-c", conf, NULL};
        int rc = kpbt_wait(kpbt_spawn(log, args), 60);
        char *out = kpbt_read_file(log, NULL);
        cr_assert(out);
        if (wrong) {
            cr_expect_eq(rc, 1, "a wrong CA must be refused");
            cr_expect(strstr(out, "certificate verify failed"), "%s", out);
        } else {
            cr_expect_eq(rc, 0, "%s", out);
            cr_expect(strstr(out, "schema up to date"), "%s", out);
        }
        free(out);
    }
    free(port);
}
