#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, no ZooKeeper) for Branchline's tests, demo and
# local development.
#
#   bash scripts/kafka.sh fetch    download the broker jars with Maven (once, cached)
#   bash scripts/kafka.sh start    fetch if needed, format the store once, start, wait until ready
#   bash scripts/kafka.sh stop     stop the broker this script started (SIGTERM, then SIGKILL)
#   bash scripts/kafka.sh status   say whether it runs and where its files are
#   bash scripts/kafka.sh reset    stop and delete the data directory (topics, offsets, groups)
#
# Everything lives outside the git tree, under $BRANCHLINE_KAFKA_HOME
# (default ~/.cache/branchline/kafka-<version>): libs/ (jars), data/ (the KRaft log),
# server.properties, kafka.log, kafka.pid. `start` is idempotent: a broker that already accepts
# clients on the port is reused, whoever started it.
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HEAP_OPTS (-Xmx512m -Xms128m),
# KAFKA_START_TIMEOUT (seconds, 120), BRANCHLINE_KAFKA_HOME.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pom="$repo/kafka/pom.xml"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
cache="${BRANCHLINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/branchline}"
home="${BRANCHLINE_KAFKA_HOME:-$cache/kafka-$version}"
libs="$home/libs"
data="$home/data"
config="$home/server.properties"
logfile="$home/kafka.log"
pidfile="$home/kafka.pid"
port="${KAFKA_PORT:-9092}"
cport="${KAFKA_CONTROLLER_PORT:-9093}"
heap="${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m}"
timeout="${KAFKA_START_TIMEOUT:-120}"

say() { echo "kafka.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null &&
    echo "$pid"
}

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Kafka $version; install it (apt-get install maven)"
  command -v java >/dev/null || die "Java 17+ is needed to run Kafka $version; install it (apt-get install openjdk-17-jre-headless)"
  say "fetching Apache Kafka $version with Maven into $libs"
  mkdir -p "$home"
  rm -rf "$libs.tmp"
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs.tmp" ||
    die "Maven could not fetch org.apache.kafka:kafka_2.13:$version (see the output above); check that Maven Central is reachable"
  [ -f "$libs.tmp/kafka_2.13-$version.jar" ] || die "Maven finished but $libs.tmp/kafka_2.13-$version.jar is missing"
  touch "$libs.tmp/.complete"
  rm -rf "$libs"
  mv "$libs.tmp" "$libs"
}

java_cmd() {
  # shellcheck disable=SC2086
  java $heap -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$repo/kafka/log4j.properties" -cp "$libs/*" "$@"
}

format() {
  sed -e "s#@PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$cport#g" -e "s#@DATA_DIR@#$data#g" \
    "$repo/kafka/server.properties.template" >"$config"
  if [ -f "$data/meta.properties" ]; then return 0; fi
  local id
  id="$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
  [ -n "$id" ] || die "could not generate a cluster id with kafka.tools.StorageTool"
  say "formatting a KRaft store in $data (cluster $id)"
  mkdir -p "$data"
  java_cmd kafka.tools.StorageTool format --ignore-formatted -t "$id" -c "$config" >>"$logfile" 2>&1 ||
    die "formatting the KRaft store failed; see $logfile"
}

start() {
  if accepts "$port"; then
    if pid="$(running_pid)"; then say "broker already running (pid $pid) on 127.0.0.1:$port"; else
      say "something already accepts connections on 127.0.0.1:$port; reusing it as the broker"
    fi
    return 0
  fi
  if pid="$(running_pid)"; then
    say "broker process $pid is starting; waiting for it"
  else
    accepts "$cport" && die "port $cport (the KRaft controller port) is taken by another process; set KAFKA_CONTROLLER_PORT"
    fetch
    format
    say "starting Kafka $version on 127.0.0.1:$port (log: $logfile)"
    : >"$logfile"
    # A pid file left by a broker that died without `stop` (a killed machine, a lost container)
    # would be read below as the new broker's pid, and its absence taken for a failed start.
    rm -f "$pidfile"
    # setsid + nohup: the broker outlives the shell (and the test run) that started it.
    # shellcheck disable=SC2086
    setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" \
      java $heap -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
      -Dlog4j.configuration="file:$repo/kafka/log4j.properties" -cp "$libs/*" kafka.Kafka "$config" \
      >>"$logfile" 2>&1 </dev/null 9>&- &
    for _ in $(seq 1 50); do
      [ -s "$pidfile" ] && break
      sleep 0.1
    done
    [ -s "$pidfile" ] || die "the broker process did not start within 5 s (no pid in $pidfile); see $logfile"
    pid="$(cat "$pidfile")"
  fi
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2 || true
      die "the broker exited while starting; the last lines of $logfile are above"
    fi
    if accepts "$port" && grep -q 'Kafka Server started' "$logfile"; then
      say "broker ready on 127.0.0.1:$port (pid $pid)"
      return 0
    fi
    sleep 0.5
  done
  die "the broker did not accept clients on 127.0.0.1:$port within ${timeout}s; see $logfile"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pidfile"
    say "no broker started by this script is running"
    return 0
  fi
  say "stopping broker (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "broker did not stop within 30 s; killing it"
    kill -KILL "$pid" || true
  fi
  rm -f "$pidfile"
}

status() {
  local pid
  if pid="$(running_pid)" && accepts "$port"; then
    echo "running: pid $pid, 127.0.0.1:$port, Kafka $version, home $home"
  elif accepts "$port"; then
    echo "running: 127.0.0.1:$port accepts connections (not started by this script)"
  else
    echo "stopped: Kafka $version, home $home"
    return 3
  fi
}

# One at a time: several test projects may ask for the broker at once.
lock() {
  mkdir -p "$home"
  exec 9>"$home/.lock"
  if command -v flock >/dev/null; then flock -w 600 9 || die "another kafka.sh held $home/.lock for 10 minutes"; fi
}

case "${1:-}" in
  fetch) lock && fetch ;;
  start) lock && start ;;
  stop) lock && stop ;;
  status) status ;;
  reset)
    lock
    stop
    rm -rf "$data" "$config"
    ;;
  *)
    echo "usage: bash scripts/kafka.sh fetch|start|stop|status|reset" >&2
    exit 2
    ;;
esac
