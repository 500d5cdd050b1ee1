#include "migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Any constant will do; it only has to be the same for every kpbridge. */
#define KPB_MIGRATE_LOCK 0x6b7062726964LL

static int exec_ok(PGconn *conn, const char *sql, char *errstr,
                   size_t errstr_size) {
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(errstr, errstr_size, "%s", PQresultErrorMessage(res));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static int is_applied(PGconn *conn, const char *name, int *applied,
                      char *errstr, size_t errstr_size) {
    const char *params[1] = {name};
    PGresult *res = PQexecParams(
        conn, "SELECT 1 FROM kpbridge_migrations WHERE name = $1", 1, NULL,
        params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(errstr, errstr_size, "%s", PQresultErrorMessage(res));
        rc = -1;
    } else {
        *applied = PQntuples(res) > 0;
    }
    PQclear(res);
    return rc;
}

static const char *create_table_sql =
    "CREATE TABLE IF NOT EXISTS kpbridge_migrations ("
    " name text PRIMARY KEY,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

int kpb_migrate_apply(PGconn *conn, int *applied, char *errstr,
                      size_t errstr_size) {
    int count = 0;
    char lock[128];
    snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%lld)",
             (long long)KPB_MIGRATE_LOCK);
    /* IF NOT EXISTS and DROP IF EXISTS chatter is not worth a user's eye. */
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    if (exec_ok(conn, lock, errstr, errstr_size))
        return -1;
    int rc = -1;
    if (exec_ok(conn, create_table_sql, errstr, errstr_size))
        goto out;
    for (const kpb_migration_t *m = kpb_migrations; m->name; m++) {
        int done = 0;
        if (is_applied(conn, m->name, &done, errstr, errstr_size))
            goto out;
        if (done)
            continue;
        if (exec_ok(conn, "BEGIN", errstr, errstr_size))
            goto out;
        char err[1024];
        if (exec_ok(conn, m->sql, err, sizeof(err))) {
            snprintf(errstr, errstr_size, "%s: %s", m->name, err);
            PQclear(PQexec(conn, "ROLLBACK"));
            goto out;
        }
        const char *params[1] = {m->name};
        PGresult *res = PQexecParams(
            conn, "INSERT INTO kpbridge_migrations (name) VALUES ($1)", 1,
            NULL, params, NULL, NULL, 0);
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(errstr, errstr_size, "%s", PQresultErrorMessage(res));
        PQclear(res);
        if (!ok || exec_ok(conn, "COMMIT", errstr, errstr_size)) {
            PQclear(PQexec(conn, "ROLLBACK"));
            goto out;
        }
        kpb_info("applied migration %s", m->name);
        count++;
    }
    rc = 0;
out:
    snprintf(lock, sizeof(lock), "SELECT pg_advisory_unlock(%lld)",
             (long long)KPB_MIGRATE_LOCK);
    PQclear(PQexec(conn, lock));
    if (applied)
        *applied = count;
    return rc;
}

int kpb_migrate_pending(PGconn *conn, int *pending, char *errstr,
                        size_t errstr_size) {
    PGresult *res = PQexec(conn, "SELECT to_regclass('kpbridge_migrations')"
                                 " IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(errstr, errstr_size, "%s", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    int exists = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    int count = 0;
    for (const kpb_migration_t *m = kpb_migrations; m->name; m++) {
        int done = 0;
        if (exists && is_applied(conn, m->name, &done, errstr, errstr_size))
            return -1;
        count += !done;
    }
    *pending = count;
    return 0;
}
