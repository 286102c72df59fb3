//! `supervisor import cloudflare`: take over what already exists in the zone and the tunnel, without
//! changing any of it.
//!
//! Two steps, both recorded, neither touching Cloudflare or cloudflared:
//! 1. **Into state.** A CNAME that points at the tunnel, whose hostname no service has yet, and whose
//!    ingress rule routes it to `localhost:<port>` where the port registry holds exactly one service
//!    without a hostname: that service gets `hostname:` in its project file (a validated, atomic,
//!    canonical machine edit; all files or none).
//! 2. **Into the inventory.** For every desired hostname, the single unmanaged A/AAAA/CNAME record at
//!    that name and the unmanaged ingress rule for it are recorded as adopted (`adopted = true`, the
//!    record's id, its attributes as found). Their comments and settings stay as they are; the next
//!    plan shows whatever still differs from the desired state as an ordinary update, which is also
//!    when an adopted record gets the `managed-by: supervisor` marker.
//!
//! What cannot be adopted is reported with the reason, never guessed at. Call it under the apply
//! lock: it writes the inventory and state files.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::json;

use super::ProviderContext;
use super::cloudflare::{connect, normalize_host};
use super::dns::{self, DnsProvider, ObservedRecord};
use super::tunnel::{self, TunnelProvider};
use crate::engine::ProviderError;
use crate::state::Desired;
use crate::state::edit::{self, EditError};
use crate::store::{DEFAULT_HOST, ManagedObject};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "there is no cloudflare section in supervisor.yaml: add the zone, tunnel and API token reference first"
    )]
    NotConfigured,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("nothing more was imported: {0}")]
    Edit(#[from] EditError),
}

/// A service that gets a public hostname in its project file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostnameEdit {
    pub project: String,
    pub service: String,
    pub hostname: String,
}

/// Something recorded as managed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adopted {
    pub address: String,
    pub project: String,
    /// What was found: `CNAME a.example.com → … (proxied) (id …)` or `ingress a.example.com → …`.
    pub found: String,
}

/// A hostname written into a project file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateEdit {
    pub file: String,
    #[serde(flatten)]
    pub edit: HostnameEdit,
    pub port: u16,
}

/// Something that points at the tunnel (or stands at a desired name) but was not adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub hostname: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub zone: String,
    pub tunnel: String,
    pub adopted: Vec<Adopted>,
    pub state_edits: Vec<StateEdit>,
    pub skipped: Vec<Skipped>,
    /// Desired hostnames whose record and rule were managed already.
    pub already_managed: usize,
}

/// `http://localhost:3101` → 3101 (also 127.0.0.1, [::1], https).
fn local_port(service: &str) -> Option<u16> {
    let rest = service
        .strip_prefix("http://")
        .or_else(|| service.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
        .then(|| port.parse().ok())
        .flatten()
}

/// Adopts existing records and rules for `desired` (see the module docs). `desired` must be the state
/// as loaded from its directory (its revision guards the state edits).
pub async fn import_cloudflare(
    desired: &Desired,
    ctx: &ProviderContext,
) -> Result<ImportReport, ImportError> {
    let cf = desired
        .cloudflare
        .as_ref()
        .ok_or(ImportError::NotConfigured)?;
    let api = connect(cf, ctx).await?;
    let dns = DnsProvider::new(ctx.store.clone(), api.clone(), &[]);
    let tunnel = TunnelProvider::new(ctx.store.clone(), api, cf, &[]);
    let records = dns.observe().await?;
    let ingress = tunnel.observe().await?;
    if let Some(why) = &ingress.unreadable {
        return Err(ProviderError::Failed(why.clone()).into());
    }
    let registry = ctx
        .store
        .port_registry(DEFAULT_HOST)
        .await
        .map_err(ProviderError::from)?;
    let mut report = ImportReport {
        zone: cf.zone.clone(),
        tunnel: cf.tunnel.id.clone(),
        ..Default::default()
    };

    let target = normalize_host(&cf.tunnel.target);
    let managed_dns: HashSet<&str> = records
        .managed
        .iter()
        .map(|m| m.hostname.as_str())
        .collect();
    let owned_ids: HashSet<&str> = records
        .managed
        .iter()
        .filter_map(|m| m.id.as_deref())
        .collect();
    let managed_rules: HashSet<&str> = ingress
        .managed
        .iter()
        .map(|m| m.hostname.as_str())
        .collect();
    let rules: BTreeMap<String, &crate::clients::cloudflare::IngressRule> = ingress
        .config
        .ingress
        .iter()
        .filter(|r| r.path.as_deref().is_none_or(str::is_empty))
        .filter_map(|r| r.hostname.as_deref().map(|h| (normalize_host(h), r)))
        .collect();
    let desired_hosts: HashSet<String> = desired
        .projects
        .values()
        .flat_map(|p| {
            p.services
                .iter()
                .filter_map(|s| s.hostname.as_ref().map(|h| h.to_string()))
        })
        .collect();

    // 1. Hostnames pointing at the tunnel that state does not know yet.
    let mut edits: Vec<StateEdit> = Vec::new();
    let mut claimed: HashSet<(String, String)> = HashSet::new();
    let mut to_tunnel: Vec<&ObservedRecord> = records
        .records
        .iter()
        .filter(|r| r.snapshot.fields.record_type == "CNAME" && r.snapshot.fields.content == target)
        .filter(|r| !desired_hosts.contains(&r.snapshot.fields.name))
        .filter(|r| !managed_dns.contains(r.snapshot.fields.name.as_str()))
        .collect();
    to_tunnel.sort_by(|a, b| a.snapshot.fields.name.cmp(&b.snapshot.fields.name));
    for r in to_tunnel {
        let host = r.snapshot.fields.name.clone();
        let skip = |reason: String| Skipped {
            hostname: host.clone(),
            reason,
        };
        let Some(rule) = rules.get(&host) else {
            report.skipped.push(skip(
                "it points at the tunnel, but no ingress rule routes it".into(),
            ));
            continue;
        };
        let Some(port) = local_port(&rule.service) else {
            report.skipped.push(skip(format!(
                "its ingress rule routes it to {}, not to a local port",
                rule.service
            )));
            continue;
        };
        let holders: Vec<_> = registry
            .allocations
            .iter()
            .filter(|a| a.port as u16 == port)
            .collect();
        let [holder] = holders.as_slice() else {
            report.skipped.push(skip(format!(
                "its ingress rule routes it to port {port}, which no service in the port registry holds (apply the ports first, or add the service)"
            )));
            continue;
        };
        let service = desired
            .projects
            .get(&holder.project)
            .and_then(|p| p.services.iter().find(|s| s.name == holder.service));
        match service {
            None => report.skipped.push(skip(format!(
                "port {port} belongs to {}/{}, which is no longer in state/",
                holder.project, holder.service
            ))),
            Some(s) if s.hostname.is_some() => report.skipped.push(skip(format!(
                "port {port} belongs to {}/{}, which already has the hostname {}",
                holder.project,
                holder.service,
                s.hostname.as_deref().unwrap_or_default()
            ))),
            Some(_) if !claimed.insert((holder.project.clone(), holder.service.clone())) => {
                report.skipped.push(skip(format!(
                    "port {port} belongs to {}/{}, which another hostname in this import already took",
                    holder.project, holder.service
                )))
            }
            Some(_) => edits.push(StateEdit {
                file: desired.project_file(&holder.project).display().to_string(),
                edit: HostnameEdit {
                    project: holder.project.clone(),
                    service: holder.service.clone(),
                    hostname: host.clone(),
                },
                port,
            }),
        }
    }
    // One validated, atomic, revision-checked edit per service; a hostname state refuses is reported.
    let mut revision = desired.revision.clone();
    let mut edited: Option<Desired> = None;
    for e in edits {
        let base = edited.as_ref().unwrap_or(desired);
        let Some(mut service) = base
            .projects
            .get(&e.edit.project)
            .and_then(|p| p.services.iter().find(|s| s.name == e.edit.service))
            .cloned()
        else {
            continue;
        };
        service.hostname = Some(crate::state::Hostname::new(&e.edit.hostname));
        match edit::upsert_service(&desired.dir, &e.edit.project, &service, &revision) {
            Ok(done) => {
                revision = done.revision.clone();
                edited = Some(done.desired);
                report.state_edits.push(e);
            }
            Err(EditError::Invalid(diags)) => report.skipped.push(Skipped {
                hostname: e.edit.hostname.clone(),
                reason: format!(
                    "it cannot be given to {}/{} in state/: {}",
                    e.edit.project,
                    e.edit.service,
                    diags.to_string().trim()
                ),
            }),
            Err(other) => return Err(other.into()),
        }
    }
    let desired = edited.as_ref().unwrap_or(desired);

    // 2. The record and the rule at every desired hostname.
    let mut by_name: BTreeMap<&str, Vec<&ObservedRecord>> = BTreeMap::new();
    for r in &records.records {
        by_name
            .entry(r.snapshot.fields.name.as_str())
            .or_default()
            .push(r);
    }
    for d in dns::desired_records(desired) {
        let host = d.fields.name.as_str();
        if !managed_dns.contains(host) {
            let unowned = dns::unowned(by_name.get(host), &owned_ids);
            match unowned.as_slice() {
                [] => {}
                [r] if matches!(
                    r.snapshot.fields.record_type.as_str(),
                    "CNAME" | "A" | "AAAA"
                ) =>
                {
                    let mut attributes = serde_json::to_value(&r.snapshot).unwrap_or_default();
                    if let Some(obj) = attributes.as_object_mut() {
                        obj.insert("project".into(), json!(d.project));
                    }
                    ctx.store
                        .upsert_managed(&ManagedObject {
                            provider: dns::NAME.into(),
                            address: dns::address(host),
                            external_id: Some(r.id.clone()),
                            attributes: sqlx::types::Json(attributes),
                            adopted: true,
                        })
                        .await
                        .map_err(ProviderError::from)?;
                    report.adopted.push(Adopted {
                        address: dns::address(host),
                        project: d.project.clone(),
                        found: format!("{} (id {})", r.snapshot.fields.describe(), r.id),
                    });
                }
                many => {
                    report.skipped.push(Skipped {
                        hostname: host.to_string(),
                        reason: format!(
                            "{} record(s) stand at this name ({}); adoption takes over exactly one A, AAAA or CNAME record",
                            many.len(),
                            many.iter()
                                .map(|r| format!("{} id {}", r.snapshot.fields.record_type, r.id))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
        if !managed_rules.contains(host)
            && let Some(rule) = rules.get(host)
        {
            tunnel::adopt_rule(&*ctx.store, &cf.tunnel.id, host, &rule.service, &d.project).await?;
            report.adopted.push(Adopted {
                address: tunnel::address(host),
                project: d.project.clone(),
                found: format!("ingress {host} → {}", rule.service),
            });
        }
        if managed_dns.contains(host) && managed_rules.contains(host) {
            report.already_managed += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ports_are_read_from_loopback_services_only() {
        assert_eq!(local_port("http://localhost:3101"), Some(3101));
        assert_eq!(local_port("https://127.0.0.1:8443/"), Some(8443));
        assert_eq!(local_port("http://[::1]:80"), Some(80));
        assert_eq!(local_port("http://10.0.0.5:8080"), None);
        assert_eq!(local_port("http://localhost"), None);
        assert_eq!(local_port("http_status:404"), None);
        assert_eq!(local_port("unix:/run/app.sock"), None);
    }
}
