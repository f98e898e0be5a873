#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl) are installed, for the
# serving tests' throw-away server (tests/serving/postgres.py starts and stops it).
# Run as root before the tests: `bash .ci/postgres.sh`.
set -euo pipefail

have_pg() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1
}

if ! have_pg; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "PostgreSQL is not installed and this is not root: install the 'postgresql' package" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Binaries only: no default cluster started as a system service.
    apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
    conf=/etc/postgresql-common/createcluster.conf
    if grep -qE '^#? *create_main_cluster' "$conf"; then
        sed -i -E 's/^#? *create_main_cluster.*/create_main_cluster = false/' "$conf"
    else
        echo 'create_main_cluster = false' >>"$conf"
    fi
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
# PostgreSQL refuses to run as root: the tests run it as this system user.
if [ "$(id -u)" -eq 0 ] && ! id caravan-pg >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin caravan-pg
fi
bindir="$(dirname "$(readlink -f "$(command -v pg_ctl || ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")")"
echo "PostgreSQL: $("$bindir/pg_ctl" --version) in $bindir"
