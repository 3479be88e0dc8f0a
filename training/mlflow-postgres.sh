#!/usr/bin/env bash
# A team-like MLflow server on this machine: PostgreSQL as the backend store (runs, metrics, the model registry
# and its aliases) and artifacts proxied by the server (local folder by default, or S3). docs/team-mlflow.md.
#
#   bash training/mlflow-postgres.sh                 # = `make mlflow-postgres`: PostgreSQL + mlflow server,
#                                                    #   in the foreground; Ctrl-C stops both
#   bash training/mlflow-postgres.sh install         # install PostgreSQL (Debian's package) when it is missing
#   bash training/mlflow-postgres.sh bindir          # print the PostgreSQL server binaries' folder (1: none)
#   bash training/mlflow-postgres.sh start-db DIR PORT   # create (first time) and start a PostgreSQL cluster in
#                                                    #   DIR on 127.0.0.1:PORT with a database "mlflow"; prints
#                                                    #   its URI (what the tests' postgres_server fixture runs)
#   bash training/mlflow-postgres.sh stop-db DIR     # stop it (a no-op when it is not running)
#
# Settings (environment) of the server mode:
#   MLFLOW_SERVER_DIR            state folder (default: data/mlflow-server; the cluster in postgres/, artifacts in
#                                artifacts/); it holds a .gitignore of "*", so git never sees it
#   MLFLOW_PORT=5000  MLFLOW_HOST=127.0.0.1   where mlflow listens (loopback: only this machine reaches it)
#   MLFLOW_SERVER_ALLOWED_HOSTS  Host headers mlflow accepts (default: the host and localhost, with the port);
#                                with MLFLOW_HOST=0.0.0.0 name the server's DNS name, e.g. mlflow.example.internal
#   MLFLOW_PG_PORT=55432         PostgreSQL's port (always on 127.0.0.1)
#   MLFLOW_ARTIFACTS_DESTINATION where the server stores artifacts (default: <dir>/artifacts; s3://bucket/prefix
#                                with AWS_* / MLFLOW_S3_ENDPOINT_URL set and boto3 installed, see the docs)
#   PGPASSWORD                   at the FIRST start: the database user's password, and TCP logins need it
#                                (scram-sha-256); unset: loopback logins are trusted (a one-person machine).
#                                Later starts (and mlflow, through libpq) read it from the environment too.
#
# PostgreSQL refuses to run as root: as root the cluster runs as the `postgres` system user (the Debian package
# creates it) and DIR belongs to that user; as any other user it runs as that user. Installing it needs root:
# a non-root user without it runs `sudo apt-get install postgresql` once (any PostgreSQL >= 13 whose initdb,
# pg_ctl and postgres are on PATH or under /usr/lib/postgresql/*/bin works too).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DB_NAME=mlflow
DB_USER=mlflow

usage() { sed -n '2,30s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { echo "mlflow-postgres: $*" >&2; exit 1; }

# The folder holding initdb, pg_ctl and postgres: PATH first, then Debian's /usr/lib/postgresql/<version>/bin
# (newest version), where the package puts them (only psql is on PATH there).
bindir() {
    local found d
    if found="$(command -v pg_ctl 2>/dev/null)"; then
        d="$(dirname "$(readlink -f "$found")")"
        if [[ -x "$d/initdb" && -x "$d/postgres" ]]; then
            echo "$d"
            return 0
        fi
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

install() {
    if bindir >/dev/null; then
        echo "PostgreSQL already installed: $(bindir)"
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        die "PostgreSQL is not installed and installing it needs root: run \`sudo apt-get install -y postgresql\` (Debian/Ubuntu) and retry"
    fi
    echo "installing PostgreSQL (Debian's postgresql package)"
    export DEBIAN_FRONTEND=noninteractive
    # The package would also create and start a "main" cluster on port 5432: nothing here uses it.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/airwatt-no-main-cluster.conf
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    bindir >/dev/null || die "apt-get installed postgresql but no initdb/pg_ctl/postgres found"
    echo "PostgreSQL installed: $(bindir)"
}

# Run a PostgreSQL server program as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_db() {
    local dir="${1:?start-db DIR PORT}" port="${2:?start-db DIR PORT}" bin
    bin="$(bindir)" || die "PostgreSQL is not installed (bash training/mlflow-postgres.sh install)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [[ "$(id -u)" == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the postgres system user (Debian's postgresql package creates it)"
        chown postgres: "$dir"
        chmod 700 "$dir"
        as_owner test -x "$dir" || die "$dir: the postgres user cannot reach it (a parent folder is not traversable); choose another folder"
    fi
    local data="$dir/data" log="$dir/server.log"
    if [[ ! -f "$data/PG_VERSION" ]]; then
        local auth=(--auth-local=trust --auth-host=trust)
        local pwfile="$dir/.pwfile"
        if [[ -n "${PGPASSWORD:-}" ]]; then
            (umask 077; printf '%s\n' "$PGPASSWORD" >"$pwfile")
            [[ "$(id -u)" == 0 ]] && chown postgres: "$pwfile"
            auth=(--auth-local=trust --auth-host=scram-sha-256 --pwfile="$pwfile")
        fi
        as_owner "$bin/initdb" --pgdata="$data" --username="$DB_USER" --encoding=UTF8 --locale=C.UTF-8 \
            "${auth[@]}" >"$dir/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$dir/initdb.log" >&2; die "initdb failed in $data"; }
        rm -f "$pwfile"
    fi
    # Loopback TCP only; the unix socket in DIR (only its owner can open that folder).
    if ! as_owner "$bin/pg_ctl" --pgdata="$data" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" --pgdata="$data" --log="$log" --wait --timeout=60 --silent \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir" start \
            || { tail -n 20 "$log" >&2; die "PostgreSQL did not start (port $port; log: $log)"; }
    fi
    if ! as_owner "$bin/psql" -h "$dir" -p "$port" -U "$DB_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
        as_owner "$bin/createdb" -h "$dir" -p "$port" -U "$DB_USER" "$DB_NAME"
    fi
    echo "postgresql://$DB_USER@127.0.0.1:$port/$DB_NAME"
}

stop_db() {
    local dir="${1:?stop-db DIR}" bin
    bin="$(bindir)" || return 0
    [[ -f "$dir/data/PG_VERSION" ]] || return 0
    if as_owner "$bin/pg_ctl" --pgdata="$dir/data" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" --pgdata="$dir/data" --wait --timeout=60 --silent --mode=fast stop
    fi
}

serve() {
    local dir="${MLFLOW_SERVER_DIR:-$repo_root/data/mlflow-server}"
    local host="${MLFLOW_HOST:-127.0.0.1}" port="${MLFLOW_PORT:-5000}" pg_port="${MLFLOW_PG_PORT:-55432}"
    local mlflow="$repo_root/.venv/bin/mlflow"
    [[ -x "$mlflow" ]] || mlflow="$(command -v mlflow)" || die "mlflow not found (make setup)"
    install
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [[ -f "$dir/.gitignore" ]] || echo "*" >"$dir/.gitignore"
    local artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$dir/artifacts}"
    local backend pid
    backend="$(start_db "$dir/postgres" "$pg_port")"
    trap "stop_db $(printf %q "$dir/postgres")" EXIT
    echo "PostgreSQL: $backend (data: $dir/postgres/data)"
    echo "artifacts:  $artifacts"
    echo "MLflow:     http://$host:$port (the first start creates its tables: about 30 s)"
    echo
    echo "    export MLFLOW_TRACKING_URI=http://$host:$port"
    echo
    MLFLOW_DISABLE_TELEMETRY=true "$mlflow" server --backend-store-uri "$backend" \
        --artifacts-destination "$artifacts" --host "$host" --port "$port" \
        --allowed-hosts "${MLFLOW_SERVER_ALLOWED_HOSTS:-$host:$port,$host,localhost:$port,localhost}" &
    pid=$!
    # Ctrl-C or SIGTERM: stop mlflow (a background job ignores SIGINT), then PostgreSQL (the EXIT trap).
    trap "kill -TERM $pid 2>/dev/null" INT TERM
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
}

case "${1:-serve}" in
    -h | --help | help) usage ;;
    serve) serve ;;
    install) install ;;
    bindir) bindir ;;
    start-db) shift; start_db "$@" ;;
    stop-db) shift; stop_db "$@" ;;
    *) usage >&2; echo "mlflow-postgres: unknown command '$1'" >&2; exit 2 ;;
esac
