//! `secrets scan`: the detector over files and directory trees.
//!
//! Directories are walked recursively in name order, without following symbolic links and skipping
//! `.git`, `target` and `node_modules` (paths named explicitly are always scanned). Binary files (a NUL
//! byte in the first 8 KiB) and files over [`MAX_FILE_BYTES`] are skipped and counted. Findings carry
//! `file:line:column`, the kind and the masked value — never the value. Blocking I/O: call it from
//! `spawn_blocking` in async code.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::detector::{self, LineIndex, SecretKind};

pub const SKIPPED_DIRECTORIES: [&str; 3] = [".git", "target", "node_modules"];
pub const MAX_FILE_BYTES: u64 = 16 << 20;
const BINARY_SNIFF: usize = 8192;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileFinding {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub kind: SecretKind,
    pub masked: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    pub findings: Vec<FileFinding>,
    pub files_scanned: usize,
    pub skipped_binary: usize,
    pub skipped_large: usize,
    /// Paths that could not be read, with the reason.
    pub errors: Vec<String>,
}

/// Scans every file under `paths`.
pub fn scan_paths(paths: &[PathBuf]) -> ScanReport {
    let mut report = ScanReport::default();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut report),
            Ok(_) => scan_file(p, &mut report),
            Err(e) => report.errors.push(format!("{}: {e}", p.display())),
        }
    }
    report
}

fn walk(dir: &Path, report: &mut ScanReport) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            report.errors.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            continue;
        }
        if kind.is_dir() {
            let name = entry.file_name();
            if !SKIPPED_DIRECTORIES.iter().any(|s| name == *s) {
                walk(&path, report);
            }
        } else if kind.is_file() {
            scan_file(&path, report);
        }
    }
}

fn scan_file(path: &Path, report: &mut ScanReport) {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            report.errors.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    if file.metadata().is_ok_and(|m| m.len() > MAX_FILE_BYTES) {
        report.skipped_large += 1;
        return;
    }
    let mut bytes = Vec::new();
    if let Err(e) = file.read_to_end(&mut bytes) {
        report.errors.push(format!("{}: {e}", path.display()));
        return;
    }
    if bytes[..bytes.len().min(BINARY_SNIFF)].contains(&0) {
        report.skipped_binary += 1;
        return;
    }
    report.files_scanned += 1;
    let text = String::from_utf8_lossy(&bytes);
    let found = detector::scan(&text);
    if found.is_empty() {
        return;
    }
    let lines = LineIndex::new(&text);
    for f in found {
        let (line, column) = lines.position(&text, f.start);
        report.findings.push(FileFinding {
            file: path.to_path_buf(),
            line,
            column,
            kind: f.kind,
            masked: f.masked().to_string(),
        });
    }
}
