#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy), then pytest on SQLite and PostgreSQL.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# PostgreSQL: use the one on 127.0.0.1:5432 (started here if this machine has a cluster but it
# is down). Without one, the PostgreSQL tests skip loudly unless FLEETPKI_REQUIRE_PG=1 (CI).
export FLEETPKI_TEST_PG_URL=${FLEETPKI_TEST_PG_URL:-postgresql://postgres@127.0.0.1:5432/test}
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "test: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi

echo "== ruff"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
echo "== mypy"
.venv/bin/mypy src
echo "== pytest"
.venv/bin/python -m pytest -n 2 -q "$@"
