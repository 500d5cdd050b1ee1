#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty data directory
# (/docker-entrypoint-initdb.d): creates `bridge`, the login kpbridge runs
# as, in the role kpbridge_writer, which may read and append the event,
# dead-letter and offset tables and nothing else (sql/004 grants it that;
# `kpbridge migrate`, run as the owner POSTGRES_USER, creates the role too
# and tolerates it existing already).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v password="${KPB_BRIDGE_PASSWORD:?set KPB_BRIDGE_PASSWORD}" <<'SQL'
DO $$
BEGIN
    CREATE ROLE kpbridge_writer NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;
CREATE ROLE bridge LOGIN PASSWORD :'password' IN ROLE kpbridge_writer;
SQL
