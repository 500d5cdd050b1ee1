# shellcheck shell=bash
# Helpers shared by scripts/test, scripts/quickstart, scripts/pg and friends.
# Source it from a bash script that runs with `set -euo pipefail`:
#
#   # shellcheck source-path=SCRIPTDIR source=lib.sh
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Environment knobs:
#   KPB_SKIP_DEPS=1   kpb_deps does nothing (machines you manage yourself)
#   KPB_PG_BINDIR     directory holding initdb/pg_ctl/postgres (default: the
#                     newest /usr/lib/postgresql/*/bin, else whatever is on PATH)
#   KPB_PG_USER       the non-root user the throwaway server runs as when the
#                     scripts run as root (default: postgres, else kpbtest)

if [[ -n "${KPB_LIB_SOURCED:-}" ]]; then
    return 0
fi
KPB_LIB_SOURCED=1

KPB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

# Debian packages the project needs to build, test and run the quickstart.
KPB_PACKAGES=(
    build-essential cmake pkg-config
    librdkafka-dev libpq-dev libyaml-dev libcriterion-dev libjansson-dev
    libmicrohttpd-dev uuid-dev
    postgresql postgresql-client
    util-linux procps python3
)

kpb_log() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
}

kpb_die() {
    kpb_log "error: $*"
    exit 1
}

# kpb_root: print the repository root.
kpb_root() {
    printf '%s\n' "$KPB_ROOT"
}

# _kpb_pkg_installed PKG: true when dpkg reports PKG installed. The metapackages
# postgresql and postgresql-client also count as installed when a versioned
# server/client package (postgresql-15, postgresql-client-15, ...) is.
_kpb_pkg_installed() {
    local pkg=$1 status
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" == "install ok installed" ]]; then
        return 0
    fi
    case "$pkg" in
        postgresql | postgresql-client)
            dpkg-query -W -f='${Status}\n' "$pkg-[0-9]*" 2>/dev/null |
                grep -qx 'install ok installed'
            return
            ;;
    esac
    return 1
}

# kpb_deps [EXTRA_PKG...]: install whatever of KPB_PACKAGES (plus the extra
# packages) is missing. `apt-get update` runs at most once per script run and
# only when something is missing.
kpb_deps() {
    if [[ "${KPB_SKIP_DEPS:-}" == 1 ]]; then
        return 0
    fi
    if ! command -v dpkg-query >/dev/null 2>&1; then
        kpb_log "warning: not a Debian system (no dpkg-query); install these yourself: ${KPB_PACKAGES[*]} $*"
        return 0
    fi
    local pkg missing=()
    for pkg in "${KPB_PACKAGES[@]}" "$@"; do
        _kpb_pkg_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    local sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            kpb_die "missing packages: ${missing[*]}; run as root or install them (or set KPB_SKIP_DEPS=1)"
        fi
    fi
    kpb_log "installing: ${missing[*]}"
    if [[ "${KPB_APT_UPDATED:-}" != 1 ]]; then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
            kpb_die "apt-get update failed"
        KPB_APT_UPDATED=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2 ||
        kpb_die "apt-get install failed: ${missing[*]}"
}

# kpb_build [BUILD_DIR] [EXTRA_CMAKE_ARGS...]: configure and build.
# BUILD_DIR defaults to ROOT/build; a first argument starting with '-' is
# taken as a cmake argument.
kpb_build() {
    local dir="$KPB_ROOT/build"
    if (($# > 0)) && [[ "$1" != -* ]]; then
        dir=$1
        shift
    fi
    cmake -S "$KPB_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
    cmake --build "$dir" -j"$(nproc)"
}

# kpb_free_port: print a TCP port that is free on 127.0.0.1 right now.
kpb_free_port() {
    local port
    if command -v python3 >/dev/null 2>&1 &&
        port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null) && [[ "$port" =~ ^[0-9]+$ ]]; then
        printf '%s\n' "$port"
        return 0
    fi
    # No python: probe random ports in 20000..59999; a refused connect means
    # nothing listens there.
    local i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    kpb_log "error: no free TCP port found on 127.0.0.1"
    return 1
}

# ---------------------------------------------------------------------------
# Throwaway PostgreSQL clusters.
#
# Layout of DIR:
#   DIR/.kpb-pg        marker: DIR belongs to scripts/pg (stop removes DIR only then)
#   DIR/data           the cluster (initdb)
#   DIR/run            unix socket directory
#   DIR/postgres.log   server log
#   DIR/port           the TCP port (kept across restarts)
#   DIR/conninfo       "host=127.0.0.1 port=PORT user=postgres dbname=postgres"
# ---------------------------------------------------------------------------

# kpb_pg_bindir: print the directory with initdb, pg_ctl and postgres.
kpb_pg_bindir() {
    if [[ -n "${KPB_PG_BINDIR:-}" ]]; then
        [[ -x "$KPB_PG_BINDIR/pg_ctl" ]] || kpb_die "KPB_PG_BINDIR=$KPB_PG_BINDIR has no pg_ctl"
        printf '%s\n' "$KPB_PG_BINDIR"
        return 0
    fi
    local d v best="" bestv=0
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
        v=$(basename "$(dirname "$d")")
        [[ "$v" =~ ^[0-9]+$ ]] || continue
        if ((v > bestv)); then
            best=$d
            bestv=$v
        fi
    done
    if [[ -z "$best" ]] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        best=$(dirname "$(command -v pg_ctl)")
    fi
    [[ -n "$best" ]] || kpb_die "PostgreSQL server binaries (initdb, pg_ctl) not found; install the postgresql package (scripts/lib.sh kpb_deps does) or set KPB_PG_BINDIR"
    printf '%s\n' "$best"
}

# _kpb_pg_user: the user to run the server as when we are root.
_kpb_pg_user() {
    local user=${KPB_PG_USER:-}
    if [[ -z "$user" ]]; then
        if id -u postgres >/dev/null 2>&1; then
            user=postgres
        else
            user=kpbtest
        fi
    fi
    if ! id -u "$user" >/dev/null 2>&1; then
        kpb_log "creating system user $user to run PostgreSQL (it refuses to run as root)"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$user" >&2 ||
            kpb_die "could not create system user $user"
    fi
    printf '%s\n' "$user"
}

# _kpb_pg_as USER CMD...: run CMD as USER (USER empty: as ourselves), from a
# directory the user can enter, with a C locale.
_kpb_pg_as() {
    local user=$1
    shift
    if [[ -z "$user" || "$user" == "$(id -un)" ]]; then
        (cd / && LC_ALL=C "$@")
    elif command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u "$user" -- env LC_ALL=C "$@")
    else
        local cmd
        printf -v cmd '%q ' env LC_ALL=C "$@"
        (cd / && su "$user" -s /bin/bash -c "$cmd")
    fi
}

# _kpb_pg_dir DIR: print DIR as an absolute path.
_kpb_pg_dir() {
    [[ -n "${1:-}" ]] || kpb_die "missing DIR argument"
    local parent base
    parent=$(dirname "$1")
    base=$(basename "$1")
    [[ -d "$parent" ]] || kpb_die "parent directory of $1 does not exist"
    parent=$(cd "$parent" && pwd -P)
    if [[ "$parent" == / ]]; then
        printf '/%s\n' "$base"
    else
        printf '%s/%s\n' "$parent" "$base"
    fi
}

# _kpb_pg_owner DIR: the user to run pg_ctl as for an existing cluster.
_kpb_pg_owner() {
    if ((EUID == 0)); then
        stat -c %U "$1/data"
    fi
}

_kpb_pg_running() {
    local dir=$1 bindir=$2 owner=$3
    [[ -f "$dir/data/postmaster.pid" ]] &&
        _kpb_pg_as "$owner" "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

_kpb_pg_log_tail() {
    local dir=$1
    if [[ -f "$dir/postgres.log" ]]; then
        kpb_log "last lines of $dir/postgres.log:"
        tail -n 40 "$dir/postgres.log" >&2
    fi
}

# _kpb_pg_wait DIR BINDIR: wait until the server accepts connections.
_kpb_pg_wait() {
    local dir=$1 bindir=$2 port isready i
    port=$(<"$dir/port")
    isready="$bindir/pg_isready"
    [[ -x "$isready" ]] || isready=$(command -v pg_isready || true)
    [[ -n "$isready" ]] || kpb_die "pg_isready not found"
    for ((i = 0; i < 120; i++)); do
        if "$isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
            return 0
        fi
        sleep 0.5
    done
    _kpb_pg_log_tail "$dir"
    kpb_die "PostgreSQL in $dir is not ready on 127.0.0.1:$port after 60 s"
}

_kpb_pg_write_conf() {
    local dir=$1 port=$2
    # postgresql.conf: the last setting wins, so the block we append overrides
    # initdb's defaults. Rewritten on each start (the port may change).
    local conf="$dir/data/postgresql.conf"
    if [[ -f "$conf" ]]; then
        sed -i '/^# kpbridge-begin$/,/^# kpbridge-end$/d' "$conf"
    fi
    cat >>"$conf" <<EOF
# kpbridge-begin
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
# Durable like production: the benchmarks must be honest.
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
shared_buffers = 128MB
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
lc_messages = 'C'
# kpbridge-end
EOF
    printf '%s\n' "$port" >"$dir/port"
}

# kpb_pg_start DIR: create (if needed) and start a throwaway cluster in DIR;
# print its conninfo.
kpb_pg_start() {
    local dir bindir user=""
    dir=$(_kpb_pg_dir "${1:-}")
    bindir=$(kpb_pg_bindir)

    if [[ -e "$dir" && ! -d "$dir" ]]; then
        kpb_die "$dir exists and is not a directory"
    fi
    if [[ -d "$dir" && ! -f "$dir/.kpb-pg" ]] && [[ -n "$(ls -A "$dir")" ]]; then
        kpb_die "$dir is not empty and was not made by scripts/pg; refusing to use it"
    fi
    mkdir -p "$dir"
    touch "$dir/.kpb-pg"

    if [[ -f "$dir/data/PG_VERSION" ]]; then
        user=$(_kpb_pg_owner "$dir")
        if _kpb_pg_running "$dir" "$bindir" "$user" && [[ -f "$dir/conninfo" ]]; then
            kpb_log "PostgreSQL in $dir is already running"
            cat "$dir/conninfo"
            return 0
        fi
    else
        if ((EUID == 0)); then
            user=$(_kpb_pg_user)
        fi
        rm -rf "$dir/data"
        mkdir -p "$dir/run"
        [[ -z "$user" ]] || chown -R "$user:" "$dir"
        chmod 700 "$dir"
        if [[ -n "$user" ]] && ! _kpb_pg_as "$user" test -w "$dir" -a -x "$dir"; then
            kpb_die "user $user cannot write to $dir (is a parent directory closed to it?); use a directory under /tmp"
        fi
        if ! _kpb_pg_as "$user" "$bindir/initdb" -D "$dir/data" -U postgres \
            --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
            cat "$dir/initdb.log" >&2
            kpb_die "initdb failed in $dir/data"
        fi
    fi
    mkdir -p "$dir/run"
    [[ -z "$user" ]] || chown "$user:" "$dir/run"

    local port attempt
    if [[ -f "$dir/port" ]]; then
        port=$(<"$dir/port")
    else
        port=$(kpb_free_port)
    fi
    # The port is free when we pick it but someone may take it before the
    # server binds it: on a bind failure pick another one.
    for attempt in 1 2 3; do
        _kpb_pg_write_conf "$dir" "$port"
        [[ -z "$user" ]] || chown "$user:" "$dir/port" "$dir/data/postgresql.conf"
        [[ -z "$user" ]] || { touch "$dir/postgres.log" && chown "$user:" "$dir/postgres.log"; }
        if _kpb_pg_as "$user" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
            -w -t 60 start >/dev/null 2>&1; then
            break
        fi
        if ((attempt < 3)) && grep -q 'could not bind\|could not create any TCP/IP sockets' "$dir/postgres.log"; then
            kpb_log "port $port is taken, trying another one"
            port=$(kpb_free_port)
            continue
        fi
        _kpb_pg_log_tail "$dir"
        kpb_die "PostgreSQL failed to start in $dir (port $port)"
    done
    _kpb_pg_wait "$dir" "$bindir"

    printf 'host=127.0.0.1 port=%s user=postgres dbname=postgres\n' "$port" >"$dir/conninfo"
    chmod 644 "$dir/conninfo"
    cat "$dir/conninfo"
}

# kpb_pg_stop DIR: stop the cluster and remove DIR.
kpb_pg_stop() {
    local dir bindir owner
    dir=$(_kpb_pg_dir "${1:-}")
    if [[ ! -e "$dir" ]]; then
        kpb_log "$dir does not exist; nothing to stop"
        return 0
    fi
    [[ -f "$dir/.kpb-pg" ]] || kpb_die "$dir was not made by scripts/pg; refusing to stop/remove it"
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        bindir=$(kpb_pg_bindir)
        owner=$(_kpb_pg_owner "$dir")
        if _kpb_pg_running "$dir" "$bindir" "$owner"; then
            if ! _kpb_pg_as "$owner" "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1; then
                kpb_log "fast shutdown failed, trying immediate"
                _kpb_pg_as "$owner" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
                    kpb_die "could not stop PostgreSQL in $dir"
            fi
        fi
    fi
    rm -rf "$dir"
}

# kpb_pg_halt DIR: stop the cluster but keep DIR, so `start` brings it back on
# the same port (fault tests take the database away for a while).
kpb_pg_halt() {
    local dir bindir owner
    dir=$(_kpb_pg_dir "${1:-}")
    [[ -f "$dir/.kpb-pg" && -f "$dir/data/PG_VERSION" ]] ||
        kpb_die "no cluster in $dir"
    bindir=$(kpb_pg_bindir)
    owner=$(_kpb_pg_owner "$dir")
    _kpb_pg_running "$dir" "$bindir" "$owner" || return 0
    _kpb_pg_as "$owner" "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
        kpb_die "could not stop PostgreSQL in $dir"
}

# kpb_pg_restart DIR: restart the cluster (same port); start it if it is down.
kpb_pg_restart() {
    local dir bindir owner
    dir=$(_kpb_pg_dir "${1:-}")
    [[ -f "$dir/.kpb-pg" && -f "$dir/data/PG_VERSION" ]] ||
        kpb_die "no cluster in $dir; use: scripts/pg start $dir"
    bindir=$(kpb_pg_bindir)
    owner=$(_kpb_pg_owner "$dir")
    if ! _kpb_pg_running "$dir" "$bindir" "$owner"; then
        kpb_pg_start "$dir" >/dev/null
        return 0
    fi
    if ! _kpb_pg_as "$owner" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
        -m fast -w -t 60 restart >/dev/null 2>&1; then
        _kpb_pg_log_tail "$dir"
        kpb_die "PostgreSQL failed to restart in $dir"
    fi
    _kpb_pg_wait "$dir" "$bindir"
}

# kpb_pg_conninfo DIR: print the conninfo of the cluster in DIR.
kpb_pg_conninfo() {
    local dir
    dir=$(_kpb_pg_dir "${1:-}")
    [[ -f "$dir/conninfo" ]] || kpb_die "no conninfo in $dir; use: scripts/pg start $dir"
    cat "$dir/conninfo"
}
