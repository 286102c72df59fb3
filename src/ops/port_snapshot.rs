//! The ports of every service on the default host, kept in memory for the hot read path (`get_port`):
//! an allocated port is answered without a database round trip while nothing changed.
//!
//! Correctness across processes rests on the registry's version (`registry_versions`, bumped by
//! database triggers in the same transaction as every change to blocks, allocations and shared ports):
//! a snapshot is trusted for [`FRESH_FOR`], then its version is compared with the database's (one
//! small read, by one caller at a time) and the registry re-read only when it changed. So a port moved
//! or released by another process (a second `serve`, the CLI) is seen within [`FRESH_FOR`]; this
//! process's own applies invalidate the snapshot before they return. A service the snapshot does not
//! know is never answered from it: the caller reads the database, so a port allocated a moment ago
//! anywhere is found at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{DEFAULT_HOST, Store, StoreError};

/// How long a snapshot is used before its version is checked again.
pub const FRESH_FOR: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct PortSnapshot {
    current: RwLock<Option<Snap>>,
    /// One refresh at a time; the others wait for it and use its result.
    refresh: tokio::sync::Mutex<()>,
    /// Bumped by [`PortSnapshot::invalidate`]: a refresh that started before an invalidation does not
    /// install what it read.
    generation: AtomicU64,
}

struct Snap {
    version: i64,
    checked: Instant,
    ports: Arc<Ports>,
}

impl PortSnapshot {
    /// Forgets the snapshot (after this process changed the registry).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The answer of a fresh snapshot: `Some(port)` or `None` when it does not know the service;
    /// `Err(())` when there is no fresh snapshot.
    fn fresh(&self, project: &str, service: &str) -> Result<Option<i32>, ()> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some(s) if s.checked.elapsed() < FRESH_FOR => Ok(lookup(&s.ports, project, service)),
            _ => Err(()),
        }
    }

    /// The allocated port of `service` in `project` on the default host, if the snapshot has one. `None`
    /// means "ask the database", not "no port".
    pub async fn port(
        &self,
        store: &dyn Store,
        project: &str,
        service: &str,
    ) -> Result<Option<i32>, StoreError> {
        if let Ok(hit) = self.fresh(project, service) {
            return Ok(hit);
        }
        let _one = self.refresh.lock().await;
        if let Ok(hit) = self.fresh(project, service) {
            return Ok(hit);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        // The version first, then the registry: what is read is at least as new as the version it is
        // labelled with (at worst it is re-read once more).
        let version = store.ports_version().await?;
        let same = {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            match current.as_mut() {
                Some(s) if s.version == version => {
                    s.checked = Instant::now();
                    Some(lookup(&s.ports, project, service))
                }
                _ => None,
            }
        };
        if let Some(hit) = same {
            return Ok(hit);
        }
        let registry = store.port_registry(DEFAULT_HOST).await?;
        let mut ports = Ports::new();
        for a in registry.allocations {
            ports
                .entry(a.project)
                .or_default()
                .insert(a.service, a.port);
        }
        let ports = Arc::new(ports);
        let hit = lookup(&ports, project, service);
        if self.generation.load(Ordering::SeqCst) == generation {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Snap {
                version,
                checked: Instant::now(),
                ports,
            });
        }
        Ok(hit)
    }
}

/// Ports by project, then service.
type Ports = HashMap<String, HashMap<String, i32>>;

fn lookup(ports: &Ports, project: &str, service: &str) -> Option<i32> {
    ports.get(project)?.get(service).copied()
}
