#!/usr/bin/env bash
# A real ElasticMQ server (an SQS-compatible message queue, in memory) for Branchline's tests,
# demo and local development.
#
#   bash scripts/elasticmq.sh fetch    download the server jars with Maven (once, cached)
#   bash scripts/elasticmq.sh start    fetch if needed, start, wait until it answers SQS requests
#   bash scripts/elasticmq.sh stop     stop the server this script started (SIGTERM, then SIGKILL)
#   bash scripts/elasticmq.sh status   say whether it runs and where its files are
#
# Everything lives outside the git tree, under $BRANCHLINE_ELASTICMQ_HOME
# (default ~/.cache/branchline/elasticmq-<version>): libs/ (jars), and per port
# elasticmq-<port>.conf, elasticmq-<port>.log, elasticmq-<port>.pid. The server listens on 127.0.0.1 only and keeps queues in memory: a restart
# starts empty. `start` is idempotent: a server that already answers on the port is reused,
# whoever started it.
#
# Clients: endpoint http://127.0.0.1:9324, any region, any non-empty access key and secret
# (ElasticMQ does not check signatures); queue URLs look like
# http://127.0.0.1:9324/000000000000/<queue>.
#
# Environment: ELASTICMQ_PORT (9324), ELASTICMQ_HEAP_OPTS (-Xmx256m -Xms32m),
# ELASTICMQ_START_TIMEOUT (seconds, 60), BRANCHLINE_ELASTICMQ_HOME, BRANCHLINE_CACHE, JAVA_HOME,
# ELASTICMQ_DATA_DIR: when set, queues and messages (with their visibility deadlines) are kept in
# that directory and survive a restart, for tests that restart the server under a consumer.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pom="$repo/elasticmq/pom.xml"
version="$(sed -n 's:.*<elasticmq.version>\(.*\)</elasticmq.version>.*:\1:p' "$pom")"
cache="${BRANCHLINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/branchline}"
home="${BRANCHLINE_ELASTICMQ_HOME:-$cache/elasticmq-$version}"
libs="$home/libs"
port="${ELASTICMQ_PORT:-9324}"
# Per port, so that servers on two ports (ELASTICMQ_PORT) never read each other's pid file.
config="$home/elasticmq-$port.conf"
logfile="$home/elasticmq-$port.log"
pidfile="$home/elasticmq-$port.pid"
heap="${ELASTICMQ_HEAP_OPTS:--Xmx256m -Xms32m}"
timeout="${ELASTICMQ_START_TIMEOUT:-60}"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"

say() { echo "elasticmq.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
  die "ELASTICMQ_PORT must be a TCP port number (1-65535), got \"$port\""
fi

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when the port answers an SQS ListQueues request, i.e. it is an SQS endpoint and not just
# any process holding the port.
list_queues() {
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET /?Action=ListQueues HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$port" >&3
  timeout 5 cat <&3
}
answers_sqs() {
  local reply
  reply="$( (list_queues) 2>/dev/null)" || return 1
  [[ "$reply" == *ListQueuesResponse* ]]
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qF -- "-Dconfig.file=$config" "/proc/$pid/cmdline" 2>/dev/null &&
    echo "$pid"
}

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch ElasticMQ $version; install it (apt-get install maven)"
  say "fetching ElasticMQ $version with Maven into $libs"
  mkdir -p "$home"
  rm -rf "$libs.tmp"
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs.tmp" ||
    die "Maven could not fetch org.elasticmq:elasticmq-server_2.13:$version (see the output above); check that Maven Central is reachable"
  [ -f "$libs.tmp/elasticmq-server_2.13-$version.jar" ] || die "Maven finished but $libs.tmp/elasticmq-server_2.13-$version.jar is missing"
  touch "$libs.tmp/.complete"
  rm -rf "$libs"
  mv "$libs.tmp" "$libs"
}

start() {
  if accepts "$port"; then
    if answers_sqs; then
      if pid="$(running_pid)"; then say "server already running (pid $pid) on 127.0.0.1:$port"; else
        say "an SQS endpoint already answers on 127.0.0.1:$port; reusing it"
      fi
      return 0
    fi
    if ! pid="$(running_pid)"; then
      die "port $port is taken by a process that does not answer SQS requests; stop it or set ELASTICMQ_PORT"
    fi
  fi
  if pid="$(running_pid)"; then
    say "server process $pid is starting; waiting for it"
  else
    command -v "$java" >/dev/null ||
      die "Java is needed to run ElasticMQ $version and \"$java\" was not found; install it (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    fetch
    sed -e "s#@PORT@#$port#g" "$repo/elasticmq/elasticmq.conf.template" >"$config"
    if [ -n "${ELASTICMQ_DATA_DIR:-}" ]; then
      mkdir -p "$ELASTICMQ_DATA_DIR"
      local data
      data="$(cd "$ELASTICMQ_DATA_DIR" && pwd)"
      printf '%s\n' "queues-storage { enabled = true, path = \"$data/queues.conf\" }" \
        "messages-storage { enabled = true, uri = \"jdbc:h2:$data/messages\" }" >>"$config"
    fi
    say "starting ElasticMQ $version on 127.0.0.1:$port (log: $logfile)"
    : >"$logfile"
    # A pid file left by a server that died without `stop` (a killed machine, a lost container)
    # would be read below as the new server's pid, and its absence taken for a failed start.
    rm -f "$pidfile"
    # setsid + nohup: the server outlives the shell (and the test run) that started it.
    # shellcheck disable=SC2086,SC2016
    setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" \
      "$java" $heap -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
      -Dconfig.file="$config" -cp "$libs/*" org.elasticmq.server.Main \
      >>"$logfile" 2>&1 </dev/null 9>&- &
    for _ in $(seq 1 50); do
      [ -s "$pidfile" ] && break
      sleep 0.1
    done
    [ -s "$pidfile" ] || die "the server process did not start within 5 s (no pid in $pidfile); see $logfile"
    pid="$(cat "$pidfile")"
  fi
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2 || true
      die "the server exited while starting; the last lines of $logfile are above"
    fi
    if answers_sqs; then
      say "server ready on 127.0.0.1:$port (pid $pid)"
      return 0
    fi
    # ElasticMQ logs a failed bind and keeps running without a listener; stop it rather than wait.
    if grep -q 'Cannot start SQS rest server' "$logfile"; then
      grep -m1 'BindException' "$logfile" >&2 || true
      stop_pid "$pid"
      die "ElasticMQ could not listen on 127.0.0.1:$port (another process took the port?); stop that process or set ELASTICMQ_PORT; see $logfile"
    fi
    sleep 0.3
  done
  stop_pid "$pid"
  die "the server did not answer SQS requests on 127.0.0.1:$port within ${timeout}s, so it was stopped; see $logfile"
}

# SIGTERM, then SIGKILL after 20 s.
stop_pid() {
  local pid="$1"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "server did not stop within 20 s; killing it"
    kill -KILL "$pid" || true
  fi
  rm -f "$pidfile"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pidfile"
    say "no server started by this script is running"
    return 0
  fi
  say "stopping server (pid $pid)"
  stop_pid "$pid"
}

status() {
  local pid
  if pid="$(running_pid)" && answers_sqs; then
    echo "running: pid $pid, 127.0.0.1:$port, ElasticMQ $version, home $home"
  elif answers_sqs; then
    echo "running: 127.0.0.1:$port answers SQS requests (not started by this script)"
  else
    echo "stopped: ElasticMQ $version, home $home"
    return 3
  fi
}

# One at a time: several test projects may ask for the server at once.
lock() {
  mkdir -p "$home"
  exec 9>"$home/.lock"
  if command -v flock >/dev/null; then flock -w 600 9 || die "another elasticmq.sh held $home/.lock for 10 minutes"; fi
}

case "${1:-}" in
  fetch) lock && fetch ;;
  start) lock && start ;;
  stop) lock && stop ;;
  status) status ;;
  *)
    echo "usage: bash scripts/elasticmq.sh fetch|start|stop|status" >&2
    exit 2
    ;;
esac
