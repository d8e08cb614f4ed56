#!/usr/bin/env bash
# Drops the databases tests and schemathesis create: those named like the
# LIKE pattern given (default: every test database, gct_%).
set -euo pipefail
pattern=${1:-gct_%}
psql_cmd=(psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
for db in $("${psql_cmd[@]}" -c "SELECT datname FROM pg_database WHERE datname LIKE '${pattern//\'/}'"); do
  "${psql_cmd[@]}" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
done
