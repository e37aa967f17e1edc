# shellcheck shell=bash
# Puts a supported Node.js (24 by default, or 22) first on PATH, installing it from the npm
# registry's `node` package into a cache outside the git tree the first time.
#
#   source scripts/node-env.sh        # Node 24
#   source scripts/node-env.sh 22     # Node 22
#
# The machine's own Node may be older than we support (20 is past end of life); this keeps
# CI, the test setup and developers on the same runtime without touching the system install.
bl_node_major="${1:-${BRANCHLINE_NODE_MAJOR:-24}}"
bl_cache="${BRANCHLINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/branchline}"
bl_prefix="$bl_cache/node$bl_node_major"
bl_pkg="$bl_prefix/node_modules/node"
if [ ! -x "$bl_pkg/bin/node" ]; then
  echo "branchline: installing Node.js $bl_node_major into $bl_prefix (once)" >&2
  mkdir -p "$bl_cache"
  # Installed next to its final place and renamed into it when complete, so a test run or
  # another checkout installing the same version at the same time never sees half of it.
  bl_tmp="$(mktemp -d "$bl_cache/.node$bl_node_major.XXXXXX")" || return 1 2>/dev/null || exit 1
  chmod 755 "$bl_tmp"
  # The `node` package's preinstall links the platform binary; it is the only script allowed.
  printf '{"private":true,"allowScripts":{"node":true}}\n' >"$bl_tmp/package.json"
  if npm install --prefix "$bl_tmp" --no-audit --no-fund --loglevel=error "node@$bl_node_major" >&2; then
    # Whoever finishes first wins; a later, identical install is dropped.
    if [ ! -x "$bl_pkg/bin/node" ]; then
      rm -rf "$bl_prefix"
      mv "$bl_tmp" "$bl_prefix"
    fi
  fi
  rm -rf "$bl_tmp"
  [ -x "$bl_pkg/bin/node" ] || return 1 2>/dev/null || exit 1
fi
bl_headers=""
for bl_dir in "$bl_pkg"/node_modules/node-linux-* "$bl_pkg"/node_modules/node-darwin-*; do
  if [ -d "$bl_dir/include/node" ]; then bl_headers="$bl_dir"; break; fi
done
export PATH="$bl_pkg/bin:$PATH"
# Native addons (none today) would build against the headers shipped in the package.
if [ -n "$bl_headers" ]; then export npm_config_nodedir="$bl_headers"; fi
unset bl_node_major bl_cache bl_prefix bl_pkg bl_headers bl_dir bl_tmp
