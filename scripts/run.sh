#!/usr/bin/env bash
# Entry point behind `npm test`, `npm run demo` and `npm run bench`: switches to a supported
# Node.js (installing it once, see node-env.sh), installs dependencies from the lock file when
# they are missing or stale, builds, and runs the task. This keeps the README's two commands
# true on a fresh clone whose system Node is older than we support.
set -euo pipefail
cd "$(dirname "$0")/.."
task="${1:?usage: scripts/run.sh test|test-packages|demo|bench [args]}"
shift
# shellcheck source=scripts/node-env.sh
source scripts/node-env.sh "${BRANCHLINE_NODE_MAJOR:-24}"
export TURBO_TELEMETRY_DISABLED=1
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "branchline: installing dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
npx turbo run build --output-logs=errors-only
case "$task" in
  test|test-packages)
    # Debian tools the tests drive: kcat (a non-Node Kafka client) and Chromium (dashboard).
    bash scripts/install-tools.sh
    bash scripts/install-browser.sh
    ;;
  bench)
    # nginx and valgrind, which some benchmarks compare against or count with; a benchmark
    # that finds one missing says so and skips that part.
    bash scripts/install-tools.sh bench || true
    ;;
esac
case "$task" in
  test) exec npx vitest run "$@" ;;
  test-packages) exec npx turbo run test --concurrency=1 --output-logs=new-only "$@" ;;
  demo) exec node examples/demo.mjs "$@" ;;
  bench) exec node bench/run.mjs "$@" ;;
  *) echo "unknown task $task" >&2; exit 2 ;;
esac
