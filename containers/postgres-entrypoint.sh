#!/bin/sh
# PostgreSQL for the cluster's containers, run as the postgres user: a cluster in $PGDATA (made on
# first start), a role and a database `agentic` whose password is $AGENTIC_DB_PASSWORD, then the
# server in the foreground, reachable from the compose network with that password only.
set -eu
: "${AGENTIC_DB_PASSWORD:?set AGENTIC_DB_PASSWORD}"
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    "$BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    echo "host agentic agentic all scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
# At every start, on the unix socket only: the role and database made if missing (a first start
# cut short), the password set from the environment (a changed AGENTIC_DB_PASSWORD takes effect).
"$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
psql -qtA -v ON_ERROR_STOP=1 -v pw="$AGENTIC_DB_PASSWORD" -d postgres >/dev/null <<'SQL'
SELECT 'CREATE ROLE agentic LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agentic') \gexec
ALTER ROLE agentic PASSWORD :'pw';
SELECT 'CREATE DATABASE agentic OWNER agentic' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'agentic') \gexec
SQL
"$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*'
