# shellcheck shell=bash
# browser_install: the headless browser tests/status_page.rs drives — Debian's `chromium` package —
# installed with apt-get when it is missing and this runs as root (`--no-install-recommends`; the
# package lists are refreshed only when the first attempt fails). Exports SUPERVISOR_TEST_CHROMIUM.
# Not root and missing: a failure naming the command that installs it, never a skip (the test itself
# fails the same way when the variable is unset).
#
# The test drives Chromium over the DevTools protocol from the Node 22 that scripts/lib/clients.sh
# installs (its built-in WebSocket; no npm package). Needs log() and _clients_run (clients.sh).

browser_install() {
  local chromium
  mkdir -p "$target_dir"
  chromium=$(command -v chromium || true)
  if [ -z "$chromium" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium (Debian package) for the status page's browser test"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
      >"$target_dir/chromium-install.log" 2>&1; then
      _clients_run "$target_dir/chromium-install.log" "apt-get install chromium" \
        sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium'
    fi
    chromium=$(command -v chromium || true)
  fi
  [ -n "$chromium" ] || {
    log "chromium is missing: install it with \`apt-get install --no-install-recommends chromium\` (as root), or run scripts/test as root"
    exit 1
  }
  "$chromium" --headless --no-sandbox --disable-gpu --version >"$target_dir/chromium.version.log" 2>&1 \
    || { log "$chromium does not run:"; cat "$target_dir/chromium.version.log" >&2; exit 1; }
  export SUPERVISOR_TEST_CHROMIUM="$chromium"
}
