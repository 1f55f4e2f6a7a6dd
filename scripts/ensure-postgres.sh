#!/bin/sh
# Make PostgreSQL's server binaries (initdb, pg_ctl) available for the connector tests and
# benchmarks. They run a throwaway cluster; nothing here configures a system service.
set -eu
for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
        echo "$dir"
        exit 0
    fi
done
if [ "$(id -u)" != "0" ]; then
    echo "PostgreSQL server binaries are missing; install them: sudo apt-get install -y postgresql" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq postgresql >&2
for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ]; then
        echo "$dir"
        exit 0
    fi
done
echo "installing postgresql did not provide initdb" >&2
exit 1
