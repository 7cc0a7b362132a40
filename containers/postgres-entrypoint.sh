#!/bin/sh
# PostgreSQL for the cluster's containers, run as the postgres user: on first start a cluster in
# $PGDATA with a role and a database `agentic` (password $AGENTIC_DB_PASSWORD), then the server
# in the foreground, reachable from the compose network with that password only.
set -eu
: "${AGENTIC_DB_PASSWORD:?set AGENTIC_DB_PASSWORD}"
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    "$BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    echo "host agentic agentic all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 -v pw="$AGENTIC_DB_PASSWORD" -d postgres >/dev/null <<'SQL'
CREATE ROLE agentic LOGIN PASSWORD :'pw';
CREATE DATABASE agentic OWNER agentic;
SQL
    "$BIN/pg_ctl" -D "$PGDATA" -w stop >/dev/null
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*'
