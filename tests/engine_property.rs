//! Properties of the engine with the ports provider, on a real SQLite store: for random desired states,
//! apply then plan is empty, no two services share a port, every port is inside its project's block —
//! and this keeps holding across a random second state applied on top of the first.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use supervisor::engine::{ApplyOptions, Engine, Scope};
use supervisor::state::{Desired, PortSettings, Project, RequiredSecrets, Service, SharedService};
use supervisor::store::{self, Location, Store};

const BLOCKS: u16 = 10;

#[derive(Debug, Clone)]
struct Shape {
    /// per project: pinned block index (if any), services as (pinned offset in block)
    projects: Vec<(Option<u16>, Vec<Option<u16>>)>,
    shared: Vec<u16>,
}

fn shape() -> impl Strategy<Value = Shape> {
    let project = (
        proptest::option::of(0..BLOCKS),
        proptest::collection::vec(proptest::option::weighted(0.3, 0u16..100), 0..8),
    );
    (
        proptest::collection::vec(project, 0..7),
        proptest::collection::vec(9000u16..9100, 0..3),
    )
        .prop_map(|(projects, shared)| Shape { projects, shared })
}

/// A valid desired state from a shape: duplicate pins are dropped (the validator would refuse them).
fn desired(shape: &Shape) -> Desired {
    let mut used_blocks = HashSet::new();
    let mut projects = BTreeMap::new();
    for (i, (block, services)) in shape.projects.iter().enumerate() {
        let block = block.filter(|b| used_blocks.insert(*b));
        let lo = block.map(|b| 3000 + b * 100);
        let mut pinned = HashSet::new();
        let services = services
            .iter()
            .enumerate()
            .map(|(j, off)| Service {
                name: format!("s{j}"),
                port: lo.and_then(|lo| off.filter(|o| pinned.insert(*o)).map(|o| lo + o)),
                hostname: None,
                prevent_destroy: false,
            })
            .collect();
        let name = format!("p{i}");
        projects.insert(
            name.clone(),
            Project {
                name,
                host: "default".into(),
                path: None,
                port_range: lo,
                services,
                secrets: RequiredSecrets::default(),
                checks: vec![],
                knowledge: vec![],
                instructions: None,
                instructions_dir: None,
                api_keys: vec![],
            },
        );
    }
    let mut seen = HashSet::new();
    let shared = shape
        .shared
        .iter()
        .enumerate()
        .filter(|(_, p)| seen.insert(**p))
        .map(|(i, p)| SharedService {
            name: format!("shared{i}"),
            port: *p,
        })
        .collect();
    Desired {
        dir: "state".into(),
        revision: format!("{shape:?}"),
        ports: PortSettings {
            projects_start: 3000,
            projects_end: 3000 + BLOCKS * 100 - 1,
            block: 100,
            shared_start: 9000,
            shared_end: 9999,
        },
        shared_services: shared,
        cloudflare: None,
        gcloud: None,
        vms: vec![],
        instructions: Default::default(),
        projects,
        warnings: vec![],
    }
}

async fn converge(store: &Arc<dyn Store>, d: &Desired) -> Result<(), TestCaseError> {
    let ctx = supervisor::providers::ProviderContext::new(store.clone());
    let providers = supervisor::providers::for_desired(d, &ctx).await.unwrap();
    let engine = Engine::new(store.clone(), providers);
    let plan = engine.plan(d, &Scope::default()).await.unwrap();
    if !plan.errors.is_empty() {
        // Only a legitimately full range may refuse (more unpinned projects than free blocks), or a
        // pin onto a block another declared project holds (one project never moves another's ports).
        prop_assert!(
            plan.errors
                .iter()
                .all(|e| e.message.contains("no free block")
                    || e.message.contains("swap")
                    || e.message.contains("holds the block")),
            "{:?}",
            plan.errors
        );
        return Ok(());
    }
    let opts = ApplyOptions {
        force: true,
        allow_disruptive: true,
        actor: "test".into(),
        ..Default::default()
    };
    let report = engine.apply(&plan, &opts, |_| {}).await.unwrap();
    prop_assert!(report.failed.is_none(), "{:?}", report.failed);
    let again = engine.plan(d, &Scope::default()).await.unwrap();
    prop_assert!(
        again.changes.is_empty(),
        "not converged: {:#?}",
        again.changes
    );

    let reg = store.port_registry("default").await.unwrap();
    let ports: HashSet<i32> = reg.allocations.iter().map(|a| a.port).collect();
    prop_assert_eq!(ports.len(), reg.allocations.len(), "a port is shared");
    let wanted: usize = d.projects.values().map(|p| p.services.len()).sum();
    prop_assert_eq!(reg.allocations.len(), wanted);
    for a in &reg.allocations {
        let r = reg.ranges.iter().find(|r| r.project == a.project).unwrap();
        prop_assert!(a.port >= r.start_port && a.port <= r.end_port);
        let svc = d.projects[&a.project]
            .services
            .iter()
            .find(|s| s.name == a.service)
            .unwrap();
        if let Some(pin) = svc.port {
            prop_assert_eq!(a.port, i32::from(pin));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn apply_then_plan_is_empty_and_ports_are_unique(first in shape(), second in shape()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = store::open(&Location::Sqlite(dir.path().join("s.db"))).await.unwrap();
            converge(&store, &desired(&first)).await?;
            converge(&store, &desired(&second)).await
        })?;
    }
}
