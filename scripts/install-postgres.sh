#!/usr/bin/env bash
# Install the PostgreSQL server that the tests start (tests/servers/postgres.py) on a fresh
# Debian/Ubuntu machine. Does nothing when server binaries are already there, so CI may call it
# on every run. The tests start their own throwaway server; the cluster Debian's package sets
# up is not used by them.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; then
    echo "PostgreSQL server binaries already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
