#!/usr/bin/env bash
# The peers' own environment: never dependencies of headwater, only of the benchmark.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../.peers-venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet \
  "dbos==3.4.0" "pgqueuer==1.6.*" "procrastinate[psycopg]==3.10.*" "faststream[redis]==0.7.8" \
  "asyncpg" "psycopg[binary]" "redis"
echo "peers installed in $venv"
