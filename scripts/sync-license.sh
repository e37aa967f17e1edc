#!/usr/bin/env bash
# Copies the root LICENSE into every package directory, so each published tarball carries the
# license text (npm packs a LICENSE file found in the package directory whatever `files` says).
# Run it after editing LICENSE or adding a package; test/packaging.test.ts fails when a
# package's copy is missing or differs from the root one.
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in packages/*/; do
  [ -f "${dir}package.json" ] || continue
  cp LICENSE "${dir}LICENSE"
done
