//! `serve` keeps every project's knowledge folders indexed: a pass at start, after files in a folder
//! change (once the watch has settled), when the desired state's folders change, and at every resync.
//!
//! Runs as its own task — never inside a reconcile and never under the apply lock — and only on the
//! reconcile leader (several `serve` processes on one database index once). Passes are incremental
//! (`knowledge::index`): unchanged files cost a `stat`, and only changed chunks are embedded, on the
//! embedder's bounded worker.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use tokio::sync::Notify;

use crate::knowledge::folders::{FolderIndexer, KnowledgeFolder, declared_folders};
use crate::ops::Runtime;

/// How often the desired state is checked for new or removed folders.
const DESIRED_POLL: Duration = Duration::from_secs(2);

type Watcher = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Watches `paths` (those that exist) and notifies `changed` once a burst of changes has settled.
fn watch(paths: &BTreeSet<PathBuf>, settle: Duration, changed: Arc<Notify>) -> Option<Watcher> {
    let mut debouncer = notify_debouncer_full::new_debouncer(
        settle,
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            if let Ok(events) = result
                && events.iter().any(|e| !e.kind.is_access())
            {
                changed.notify_one();
            }
        },
    )
    .map_err(|e| tracing::warn!(error = %e, "cannot watch knowledge folders"))
    .ok()?;
    for p in paths.iter().filter(|p| p.is_dir()) {
        if let Err(e) = debouncer.watch(p, RecursiveMode::Recursive) {
            tracing::warn!(folder = %p.display(), error = %e, "cannot watch a knowledge folder");
        }
    }
    Some(debouncer)
}

/// Returns false when this process is not the leader (nothing done; try again later).
async fn pass(rt: &Runtime, indexer: &FolderIndexer, folders: &[KnowledgeFolder]) -> bool {
    if !rt.status.read().await.leader {
        return false;
    }
    for outcome in indexer.sync(folders).await {
        let f = &outcome.folder;
        match outcome.result {
            Ok(r) => {
                if r.added + r.changed + r.reembedded + r.deleted > 0
                    || !r.secrets_masked.is_empty()
                {
                    tracing::info!(
                        project = %f.target.project,
                        source = %f.target.source,
                        added = r.added,
                        changed = r.changed,
                        reembedded = r.reembedded,
                        deleted = r.deleted,
                        embedded = r.chunks_embedded,
                        credentials_masked = r.secrets_masked.len(),
                        "knowledge folder indexed"
                    );
                }
                for e in &r.errors {
                    tracing::warn!(project = %f.target.project, source = %f.target.source, error = %e, "knowledge indexing");
                }
            }
            Err(e) => tracing::warn!(
                project = %f.target.project,
                source = %f.target.source,
                error = %e,
                "knowledge folder could not be indexed"
            ),
        }
    }
    true
}

/// The task: runs until `rt.shutdown` is cancelled.
pub async fn keep_indexed(rt: Arc<Runtime>, settle: Duration, resync: Duration) {
    let indexer = FolderIndexer::new(rt.store.clone(), rt.embedder().await);
    let changed = Arc::new(Notify::new());
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut watcher: Option<Watcher> = None;
    let mut folders: Vec<KnowledgeFolder> = Vec::new();
    let mut due = true;
    let mut last_pass = tokio::time::Instant::now();
    loop {
        let desired = rt.desired().await;
        let now_declared = declared_folders(&desired);
        if now_declared != folders {
            folders = now_declared;
            due = true;
        }
        let paths: BTreeSet<PathBuf> = folders.iter().map(|f| f.path.clone()).collect();
        // (Re)watch when the set changes, or when a declared folder appeared since.
        let existing: BTreeSet<PathBuf> = paths.iter().filter(|p| p.is_dir()).cloned().collect();
        if existing != watched {
            drop(watcher.take());
            watcher = watch(&existing, settle, changed.clone());
            watched = existing;
            due = true;
        }
        if (due || last_pass.elapsed() >= resync) && pass(&rt, &indexer, &folders).await {
            last_pass = tokio::time::Instant::now();
            due = false;
        }
        tokio::select! {
            _ = changed.notified() => due = true,
            _ = tokio::time::sleep(DESIRED_POLL) => {}
            _ = rt.shutdown.cancelled() => break,
        }
    }
    drop(watcher);
}
