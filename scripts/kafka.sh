#!/usr/bin/env bash
# scripts/kafka.sh - a real single-node Kafka 4.x broker (KRaft, broker+controller
# in one JVM) from Maven Central jars: no tarball, no Docker. For tests and local runs.
#
#   bash scripts/kafka.sh start     # fetch jars if needed, format, start, wait until ready
#   bash scripts/kafka.sh stop      # SIGTERM (clean shutdown), SIGKILL after 60 s
#   bash scripts/kafka.sh kill      # SIGKILL (crash; data and committed offsets survive)
#   bash scripts/kafka.sh restart   # stop + start on the same data
#   bash scripts/kafka.sh status    # exit 0: running and accepting connections, 3: not running
#   bash scripts/kafka.sh logs [-f] # tail of the broker log (LINES=100)
#   bash scripts/kafka.sh fetch     # only download the jars (idempotent)
#   bash scripts/kafka.sh bootstrap # print the bootstrap address
#   bash scripts/kafka.sh clean     # stop, then delete this node's data (topics, offsets)
#
# Environment:
#   STREAMNN_KAFKA_HOME            jars + data, default $HOME/.cache/streamnn/kafka (outside the repo)
#   STREAMNN_KAFKA_PORT            bootstrap (PLAINTEXT) port on 127.0.0.1, default 19092
#   STREAMNN_KAFKA_CONTROLLER_PORT KRaft controller port on 127.0.0.1,    default 19093
#   STREAMNN_KAFKA_START_TIMEOUT   seconds to wait for readiness, default 90
#   STREAMNN_KAFKA_STOP_TIMEOUT    seconds to wait after SIGTERM, default 60
#   STREAMNN_KAFKA_JVM_OPTS        extra JVM options (appended)
#   JAVA_HOME / JAVA               java to use (default: java on PATH)
#
# Layout under $STREAMNN_KAFKA_HOME:
#   libs/                 the broker classpath (46 jars, 44 MB; libs/.stamp = kafka version)
#   node-<port>/          one broker: server.properties, cluster.id, kafka.pid,
#                         server.out (broker log), format.out, data/ (log.dirs)
#
# Measured (Debian 12, OpenJDK 17.0.15, 2 cores, Kafka 4.3.1, log4j 2.25.4):
#   first fetch, empty ~/.m2 (plugin + 46 jars from Maven Central) ... 3-9 s
#   fetch when libs/ is present ...................................... 0.01 s (skipped)
#   start -> ready, fresh data dir (format ~0.8 s + broker) .......... 2.8-5.2 s
#   start -> ready, restart after a clean stop ....................... 3.0-5.9 s
#   start -> ready, restart after SIGKILL ............................ 6.8-8.8 s
#     (waits for the killed incarnation's broker.session.timeout.ms=4000; ~13 s at Kafka's default 9000)
#   broker RSS (-Xms256m -Xmx512m) idle / after 1000 msgs + groups ... ~320 MB / ~340 MB
#   stop (SIGTERM -> exit, controlled shutdown) ...................... ~2 s; kill ~1.5 s
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf_src="$here/kafka"

KHOME="${STREAMNN_KAFKA_HOME:-$HOME/.cache/streamnn/kafka}"
PORT="${STREAMNN_KAFKA_PORT:-19092}"
CPORT="${STREAMNN_KAFKA_CONTROLLER_PORT:-19093}"
HOST=127.0.0.1
START_TIMEOUT="${STREAMNN_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${STREAMNN_KAFKA_STOP_TIMEOUT:-60}"

LIBS="$KHOME/libs"
NODE="$KHOME/node-$PORT"
DATA="$NODE/data"
PROPS="$NODE/server.properties"
PIDFILE="$NODE/kafka.pid"
LOG="$NODE/server.out"

if [[ -n "${JAVA:-}" ]]; then :
elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"
else JAVA=java; fi

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

kafka_version() {
  sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$conf_src/pom.xml" | head -n1
}

# Returns the PID of this node's broker if it is alive, else nothing (exit 1).
broker_pid() {
  [[ -s "$PIDFILE" ]] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # guard against PID reuse: must be our kafka.Kafka with our server.properties
  # (no `| grep -q` here: with pipefail an early grep exit can fail the pipeline)
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmdline; cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    [[ "$cmdline" == *"kafka.Kafka $PROPS"* ]] || return 1
  fi
  echo "$pid"
}

port_open() { # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

libs_ok() {
  [[ -f "$LIBS/.stamp" && "$(cat "$LIBS/.stamp")" == "$(kafka_version)" ]] \
    && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null
}

cmd_fetch() {
  if libs_ok; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven) to fetch the Kafka jars"
  mkdir -p "$KHOME"
  (
    # serialise concurrent fetches (pytest-xdist workers, parallel shells)
    if command -v flock >/dev/null; then exec 9>"$KHOME/.fetch.lock"; flock 9; fi
    if libs_ok; then exit 0; fi
    local tmp="$KHOME/libs.tmp.$$"
    rm -rf "$tmp"
    log "fetching Kafka $(kafka_version) jars from Maven Central into $LIBS"
    local t0=$SECONDS
    if ! mvn -B -Dstyle.color=never -f "$conf_src/pom.xml" dependency:copy-dependencies \
           -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KHOME/fetch.log" 2>&1; then
      tail -n 40 "$KHOME/fetch.log" >&2; rm -rf "$tmp"
      die "mvn dependency:copy-dependencies failed (full output: $KHOME/fetch.log)"
    fi
    kafka_version >"$tmp/.stamp"
    rm -rf "$LIBS"; mv "$tmp" "$LIBS"
    log "fetched $(ls "$LIBS" | wc -l) jars in $((SECONDS - t0)) s"
  )
}

jvm_opts() {
  # -Xms/-Xmx small; GC flags as in Kafka's kafka-run-class.sh
  echo "-Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35" \
       "-XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true" \
       "-Dlog4j2.configurationFile=$conf_src/log4j2.properties -Dkafka.logs.dir=$NODE" \
       "${STREAMNN_KAFKA_JVM_OPTS:-}"
}

render_props() {
  mkdir -p "$DATA"
  sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CPORT|g" -e "s|@LOG_DIRS@|$DATA|g" \
    "$conf_src/server.properties.in" >"$PROPS.tmp"
  mv "$PROPS.tmp" "$PROPS"
}

cluster_id() {
  if [[ ! -s "$NODE/cluster.id" ]]; then
    # Kafka's Uuid.randomUuid(): 16 random bytes, URL-safe base64 without padding (22 chars)
    head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$NODE/cluster.id.tmp"
    mv "$NODE/cluster.id.tmp" "$NODE/cluster.id"
  fi
  cat "$NODE/cluster.id"
}

wait_ready() { # pid
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
  while (( SECONDS < deadline )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker (pid $pid) exited during startup; last log lines ($LOG):"
      tail -n 60 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      return 1
    fi
    if grep -q "Kafka Server started" "$LOG" 2>/dev/null && port_open "$HOST" "$PORT"; then
      return 0
    fi
    sleep 0.25
  done
  log "broker not ready after ${START_TIMEOUT}s; killing pid $pid; last log lines ($LOG):"
  tail -n 60 "$LOG" >&2 || true
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  return 1
}

cmd_start() {
  local pid
  mkdir -p "$NODE"
  # serialise concurrent starts of the same node (pytest-xdist workers); the lock
  # is released when this script exits (fd 8 is closed for the broker itself)
  if command -v flock >/dev/null; then exec 8>"$NODE/.start.lock"; flock 8; fi
  if pid="$(broker_pid)"; then
    # running (maybe still starting from a concurrent call): wait for it, no-op
    wait_ready "$pid" || exit 1
    log "already running (pid $pid) on $HOST:$PORT"
    return 0
  fi
  if port_open "$HOST" "$PORT"; then
    die "$HOST:$PORT already accepts connections but is not a broker started by this script (no live $PIDFILE)"
  fi
  command -v "$JAVA" >/dev/null || die "java not found (need Java 17+; apt-get install openjdk-17-jre-headless)"
  cmd_fetch
  render_props
  local cid; cid="$(cluster_id)"
  local t0; t0=$(date +%s.%N)
  # shellcheck disable=SC2046
  if ! "$JAVA" -cp "$LIBS/*" $(jvm_opts) -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format --standalone \
         --ignore-formatted -t "$cid" -c "$PROPS" >"$NODE/format.out" 2>&1; then
    log "StorageTool format failed:"; cat "$NODE/format.out" >&2; exit 1
  fi
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  local launcher=()
  command -v setsid >/dev/null && launcher=(setsid)
  # shellcheck disable=SC2046
  "${launcher[@]}" "$JAVA" -cp "$LIBS/*" $(jvm_opts) kafka.Kafka "$PROPS" \
    </dev/null >"$LOG" 2>&1 8>&- &
  pid=$!
  disown "$pid" 2>/dev/null || true
  echo "$pid" >"$PIDFILE"
  wait_ready "$pid" || exit 1
  log "started pid $pid on $HOST:$PORT in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s (data: $DATA)"
}

wait_exit() { # pid seconds
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    (( SECONDS < deadline )) || return 1
    sleep 0.2
  done
}

cmd_stop() {
  local pid
  if ! pid="$(broker_pid)"; then rm -f "$PIDFILE"; log "not running"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  if wait_exit "$pid" "$STOP_TIMEOUT"; then
    log "stopped pid $pid"
  else
    log "pid $pid still alive after ${STOP_TIMEOUT}s SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_exit "$pid" 10 || die "pid $pid survived SIGKILL"
  fi
  rm -f "$PIDFILE"
}

cmd_kill() {
  local pid
  if ! pid="$(broker_pid)"; then rm -f "$PIDFILE"; log "not running"; return 0; fi
  kill -KILL "$pid" 2>/dev/null || true
  wait_exit "$pid" 10 || die "pid $pid survived SIGKILL"
  rm -f "$PIDFILE"
  log "killed pid $pid"
}

cmd_status() {
  local pid
  if pid="$(broker_pid)"; then
    if port_open "$HOST" "$PORT"; then
      echo "running pid=$pid bootstrap=$HOST:$PORT data=$DATA"; return 0
    fi
    echo "starting pid=$pid (not accepting connections on $HOST:$PORT yet)"; return 3
  fi
  echo "not running (bootstrap would be $HOST:$PORT, home $KHOME)"; return 3
}

cmd_logs() {
  [[ -f "$LOG" ]] || die "no log at $LOG"
  if [[ "${1:-}" == "-f" ]]; then exec tail -n "${LINES:-100}" -F "$LOG"; fi
  tail -n "${LINES:-100}" "$LOG"
}

cmd_clean() {
  cmd_stop
  rm -rf "$NODE"
  log "removed $NODE"
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  kill) cmd_kill ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  bootstrap) echo "$HOST:$PORT" ;;
  clean) cmd_clean ;;
  *) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
