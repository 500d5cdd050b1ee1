/**
 * @file migrate.h
 * @brief Applies the numbered migrations of sql/, compiled into the binary.
 */
#ifndef KPB_MIGRATE_H
#define KPB_MIGRATE_H

#include <libpq-fe.h>
#include <stddef.h>

#include "util.h"

typedef struct kpb_migration_s {
    const char *name; /**< file name, e.g. "001_eventcore_events.sql" */
    const char *sql;
} kpb_migration_t;

/** @brief The migrations in order, ended by a {NULL, NULL} entry. */
extern const kpb_migration_t kpb_migrations[];

/**
 * @brief Applies every migration not yet recorded in kpbridge_migrations,
 *        each in its own transaction, under an advisory lock so that two
 *        instances started together do not race.
 * @param applied  set to how many were applied now (may be NULL)
 * @returns 0 on success, -1 with errstr filled.
 */
int kpb_migrate_apply(PGconn *conn, int *applied, char *errstr,
                      size_t errstr_size) KPB_MUSTCHECK;

/**
 * @brief Counts the migrations not applied yet (0 when up to date).
 * @returns 0 on success, -1 with errstr filled.
 */
int kpb_migrate_pending(PGconn *conn, int *pending, char *errstr,
                        size_t errstr_size) KPB_MUSTCHECK;

#endif
