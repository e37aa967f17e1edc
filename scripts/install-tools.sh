#!/usr/bin/env bash
# Debian tools some tests use, installed when missing: kcat (a non-Node Kafka client, to prove a
# message produced outside Node is routed like one from kafkajs). With `bench`, also what the
# benchmarks compare against or measure with: nginx (the proxy and sidecar baselines) and
# valgrind (instruction counts). Needs root (CI runs as root); elsewhere it prints the command.
set -euo pipefail
missing=()
command -v kcat >/dev/null || missing+=(kcat)
if [ "${1:-}" = bench ]; then
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v valgrind >/dev/null || missing+=(valgrind)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-tools.sh: missing ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-tools.sh: installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
