//! What the `vm get` and `vm health` commands (and their MCP tools) report about a VM listed in
//! `supervisor.yaml`: the instance as Compute Engine describes it, and its recent CPU, memory and disk
//! use from Cloud Monitoring.
//!
//! Numbers are never made up: CPU comes from `compute.googleapis.com/instance/cpu/utilization`
//! (which the hypervisor always reports while the VM runs); memory and disk use come from the Ops
//! Agent (`agent.googleapis.com/memory/percent_used`, `agent.googleapis.com/disk/percent_used`), and
//! when the agent does not report them the answer says "not reported" with why, and carries no
//! value. The statistics are pure functions of the returned series ([`cpu_report`],
//! [`usage_report`], [`disk_usage`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ProviderContext;
use super::gcloud::{self, GoogleCloud, google_error};
use crate::clients::google::monitoring::{TimeSeries, TimeSeriesQuery};
use crate::engine::ProviderError;
use crate::state::{Desired, Vm};

pub const CPU_METRIC: &str = "compute.googleapis.com/instance/cpu/utilization";
pub const MEMORY_METRIC: &str = "agent.googleapis.com/memory/percent_used";
pub const DISK_METRIC: &str = "agent.googleapis.com/disk/percent_used";

/// The longest window `vm health` looks back (a week).
pub const MAX_MINUTES: i64 = 7 * 24 * 60;

/// A VM as Compute Engine describes it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct VmInfo {
    pub name: String,
    pub gcp_project: String,
    pub zone: String,
    pub instance_id: String,
    /// RUNNING, TERMINATED, STOPPING, …
    pub status: String,
    pub machine_type: String,
    /// What `supervisor.yaml` asks for (differs from `machine_type` until the next apply).
    pub desired_machine_type: String,
    pub cpus: Option<i64>,
    pub memory_mb: Option<i64>,
    pub internal_ip: Option<String>,
    /// Only while the VM runs, for an ephemeral address.
    pub external_ip: Option<String>,
    pub cpu_platform: Option<String>,
    pub disks: Vec<DiskInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DiskInfo {
    pub device_name: String,
    pub size_gb: Option<i64>,
    pub boot: bool,
    /// PERSISTENT or SCRATCH.
    pub kind: Option<String>,
}

/// Recent use of a VM.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct VmHealth {
    pub name: String,
    pub status: String,
    pub machine_type: String,
    pub window_minutes: i64,
    /// Seconds per aligned sample.
    pub alignment_seconds: i64,
    pub cpu: UsageReport,
    pub memory: UsageReport,
    /// Sizes from the instance's disks.
    pub disks: Vec<DiskInfo>,
    pub disk_usage: DiskUsageReport,
}

/// Average, maximum and latest of a percentage over the window, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct UsageReport {
    pub reported: bool,
    pub average_percent: Option<f64>,
    pub max_percent: Option<f64>,
    pub current_percent: Option<f64>,
    pub samples: i64,
    /// Why there are no numbers (`not reported: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The samples, oldest first (the status page draws them; left out of JSON answers, which carry
    /// the summary).
    #[serde(skip)]
    #[schemars(skip)]
    pub points: Vec<UsagePoint>,
}

/// One aligned sample of a percentage.
#[derive(Debug, Clone, PartialEq)]
pub struct UsagePoint {
    /// RFC 3339, the end of the sample's interval.
    pub at: String,
    pub percent: f64,
}

impl UsageReport {
    fn not_reported(note: String) -> Self {
        UsageReport {
            reported: false,
            average_percent: None,
            max_percent: None,
            current_percent: None,
            samples: 0,
            note: Some(note),
            points: Vec::new(),
        }
    }
}

/// Disk use per device, as the Ops Agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DiskUsageReport {
    pub reported: bool,
    pub devices: Vec<DeviceUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DeviceUsage {
    pub device: String,
    pub used_percent: f64,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Points of every series, newest first overall, as (end time, value).
fn values(series: &[TimeSeries], scale: f64) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter_map(|p| {
            let t = p.interval.end_time.clone().unwrap_or_default();
            p.value.as_f64().map(|x| (t, x * scale))
        })
        .collect();
    // RFC 3339 times in UTC sort as text.
    v.sort_by(|a, b| b.0.cmp(&a.0));
    v
}

/// Average, max and latest of the series' points (multiplied by `scale`), or `not reported: <why>`.
pub fn usage_report(series: &[TimeSeries], scale: f64, why_missing: &str) -> UsageReport {
    let v = values(series, scale);
    if v.is_empty() {
        return UsageReport::not_reported(format!("not reported: {why_missing}"));
    }
    let n = v.len() as f64;
    UsageReport {
        reported: true,
        average_percent: Some(round1(v.iter().map(|(_, x)| x).sum::<f64>() / n)),
        max_percent: Some(round1(v.iter().map(|(_, x)| *x).fold(f64::MIN, f64::max))),
        current_percent: Some(round1(v[0].1)),
        samples: v.len() as i64,
        note: None,
        points: v
            .iter()
            .rev()
            .map(|(at, percent)| UsagePoint {
                at: at.clone(),
                percent: *percent,
            })
            .collect(),
    }
}

/// CPU utilisation (the API's 0–1 fraction) as percentages.
pub fn cpu_report(series: &[TimeSeries], minutes: i64) -> UsageReport {
    usage_report(
        series,
        100.0,
        &format!(
            "Compute Engine has no CPU samples for the last {minutes} minutes (the VM was not running)"
        ),
    )
}

/// The latest used percentage of each device the agent reports.
pub fn disk_usage(series: &[TimeSeries]) -> DiskUsageReport {
    let mut devices: Vec<DeviceUsage> = series
        .iter()
        .filter_map(|s| {
            let device = s
                .metric
                .labels
                .get("device")
                .cloned()
                .unwrap_or_else(|| "?".into());
            let latest = values(std::slice::from_ref(s), 1.0).into_iter().next()?;
            Some(DeviceUsage {
                device,
                used_percent: round1(latest.1),
            })
        })
        .collect();
    devices.sort_by(|a, b| a.device.cmp(&b.device));
    if devices.is_empty() {
        DiskUsageReport {
            reported: false,
            devices,
            note: Some(
                "not reported: disk use comes from the Ops Agent, which does not report it for this VM"
                    .into(),
            ),
        }
    } else {
        DiskUsageReport {
            reported: true,
            devices,
            note: None,
        }
    }
}

/// The alignment for a window: one-minute samples up to four hours, then coarser (about 240
/// samples), always a whole number of minutes.
pub fn alignment_seconds(minutes: i64) -> i64 {
    let minutes = minutes.max(1) as u64;
    let per = (minutes * 60).div_ceil(240);
    (per.div_ceil(60) * 60).max(60) as i64
}

/// The declared VM `name`, or an error listing the declared ones.
pub fn declared<'a>(desired: &'a Desired, name: &str) -> Result<&'a Vm, ProviderError> {
    desired.vm(name).ok_or_else(|| {
        let known: Vec<&str> = desired.vms.iter().map(|v| v.name.as_str()).collect();
        ProviderError::Failed(if known.is_empty() {
            format!(
                "no VM `{name}` in {}: no VMs are declared (add one under vms:)",
                desired.dir.join(crate::state::SUPERVISOR_FILE).display()
            )
        } else {
            format!(
                "no VM `{name}` in {} (declared: {})",
                desired.dir.join(crate::state::SUPERVISOR_FILE).display(),
                known.join(", ")
            )
        })
    })
}

/// The connection and the declared VM for a read tool.
pub async fn connect_for(
    desired: &Desired,
    ctx: &ProviderContext,
    name: &str,
) -> Result<(Arc<GoogleCloud>, Vm), ProviderError> {
    let vm = declared(desired, name)?.clone();
    let g = desired.gcloud.as_ref().ok_or_else(|| {
        ProviderError::Failed("gcloud is not configured in supervisor.yaml".into())
    })?;
    Ok((gcloud::connect(g, ctx).await?, vm))
}

/// `vm get`: the instance, its machine type's CPUs and memory, addresses and disks.
pub async fn describe_vm(cloud: &GoogleCloud, vm: &Vm) -> Result<VmInfo, ProviderError> {
    let addr = super::vm::address(&vm.name);
    let i = cloud
        .compute
        .get_instance(&vm.gcp_project, &vm.zone, &vm.name)
        .await
        .map_err(|e| {
            if e.is_not_found() {
                ProviderError::Failed(format!(
                    "{addr}: there is no instance `{}` in project {} zone {}",
                    vm.name, vm.gcp_project, vm.zone
                ))
            } else {
                google_error(format!("{addr}: reading the instance"), e)
            }
        })?;
    let machine_type = i.machine_type_name().to_string();
    let spec = cloud
        .compute
        .get_machine_type(&vm.gcp_project, &vm.zone, &machine_type)
        .await
        .map(Some)
        .or_else(|e| {
            if e.is_not_found() {
                Ok(None)
            } else {
                Err(google_error(
                    format!("{addr}: reading machine type {machine_type}"),
                    e,
                ))
            }
        })?;
    let nic = i.network_interfaces.first();
    Ok(VmInfo {
        name: vm.name.clone(),
        gcp_project: vm.gcp_project.clone(),
        zone: vm.zone.clone(),
        instance_id: i.id.clone(),
        status: i.status.clone(),
        desired_machine_type: vm.machine_type.clone(),
        cpus: spec.as_ref().map(|s| s.guest_cpus),
        memory_mb: spec.as_ref().map(|s| s.memory_mb),
        internal_ip: nic.and_then(|n| n.network_ip.clone()),
        external_ip: nic.and_then(|n| n.access_configs.iter().find_map(|a| a.nat_ip.clone())),
        cpu_platform: i.cpu_platform.clone(),
        disks: disks(&i),
        machine_type,
    })
}

fn disks(i: &crate::clients::google::compute::Instance) -> Vec<DiskInfo> {
    i.disks
        .iter()
        .map(|d| DiskInfo {
            device_name: d
                .device_name
                .clone()
                .or_else(|| {
                    d.source
                        .as_deref()
                        .map(|s| crate::clients::google::short_name(s).to_string())
                })
                .unwrap_or_default(),
            size_gb: d.disk_size_gb.as_deref().and_then(|s| s.parse().ok()),
            boot: d.boot,
            kind: d.kind.clone(),
        })
        .collect()
}

/// `vm health`: CPU, memory and disk use over the last `minutes` (1 to a week).
pub async fn vm_health(
    cloud: &GoogleCloud,
    vm: &Vm,
    minutes: i64,
    now: DateTime<Utc>,
) -> Result<VmHealth, ProviderError> {
    let addr = super::vm::address(&vm.name);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ProviderError::Failed(format!(
            "minutes must be from 1 to {MAX_MINUTES} (a week), not {minutes}"
        )));
    }
    let i = cloud
        .compute
        .get_instance(&vm.gcp_project, &vm.zone, &vm.name)
        .await
        .map_err(|e| google_error(format!("{addr}: reading the instance"), e))?;
    let alignment = alignment_seconds(minutes);
    let query = |metric: &str, extra: &str| TimeSeriesQuery {
        filter: format!(
            "metric.type = \"{metric}\" AND resource.type = \"gce_instance\" AND resource.labels.instance_id = \"{}\"{extra}",
            i.id
        ),
        start: now - chrono::Duration::minutes(minutes),
        end: now,
        alignment_period_secs: Some(alignment as u64),
        per_series_aligner: Some("ALIGN_MEAN".into()),
    };
    let read = |q: TimeSeriesQuery, what: &'static str| {
        let addr = addr.clone();
        async move {
            cloud
                .monitoring
                .list_time_series(&vm.gcp_project, &q)
                .await
                .map_err(|e| google_error(format!("{addr}: reading {what}"), e))
        }
    };
    let used = " AND metric.labels.state = \"used\"";
    let (cpu, memory, disk) = tokio::try_join!(
        read(query(CPU_METRIC, ""), "CPU utilisation"),
        read(query(MEMORY_METRIC, used), "memory use"),
        read(query(DISK_METRIC, used), "disk use"),
    )?;
    Ok(VmHealth {
        name: vm.name.clone(),
        status: i.status.clone(),
        machine_type: i.machine_type_name().to_string(),
        window_minutes: minutes,
        alignment_seconds: alignment,
        cpu: cpu_report(&cpu, minutes),
        memory: usage_report(
            &memory,
            1.0,
            "memory use comes from the Ops Agent, which does not report it for this VM (install the agent to see it)",
        ),
        disks: disks(&i),
        disk_usage: disk_usage(&disk),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::google::monitoring::{Metric, Point, TimeInterval, TypedValue};

    fn series(labels: &[(&str, &str)], points: &[(&str, f64)]) -> TimeSeries {
        TimeSeries {
            metric: Metric {
                kind: "m".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            points: points
                .iter()
                .map(|(t, v)| Point {
                    interval: TimeInterval {
                        start_time: Some(t.to_string()),
                        end_time: Some(t.to_string()),
                    },
                    value: TypedValue {
                        double_value: Some(*v),
                        ..TypedValue::default()
                    },
                })
                .collect(),
            ..TimeSeries::default()
        }
    }

    #[test]
    fn cpu_statistics_are_exact_and_missing_data_is_not_invented() {
        let s = series(
            &[],
            &[
                ("2026-12-01T10:02:00Z", 0.5),
                ("2026-12-01T10:00:00Z", 0.1),
                ("2026-12-01T10:01:00Z", 0.3333),
            ],
        );
        let r = cpu_report(&[s], 60);
        assert_eq!(
            (
                r.reported,
                r.average_percent,
                r.max_percent,
                r.current_percent,
                r.samples
            ),
            (true, Some(31.1), Some(50.0), Some(50.0), 3)
        );
        let r = cpu_report(&[], 60);
        assert_eq!(
            (r.reported, r.average_percent, r.current_percent),
            (false, None, None)
        );
        assert_eq!(
            r.note.as_deref(),
            Some(
                "not reported: Compute Engine has no CPU samples for the last 60 minutes (the VM was not running)"
            )
        );
        let m = usage_report(&[], 1.0, "no agent");
        assert_eq!(m.note.as_deref(), Some("not reported: no agent"));
    }

    #[test]
    fn disk_use_is_the_latest_per_device() {
        let r = disk_usage(&[
            series(
                &[("device", "sdb")],
                &[
                    ("2026-12-01T10:00:00Z", 10.0),
                    ("2026-12-01T10:05:00Z", 12.25),
                ],
            ),
            series(&[("device", "sda1")], &[("2026-12-01T10:05:00Z", 40.0)]),
        ]);
        assert!(r.reported);
        assert_eq!(
            r.devices,
            vec![
                DeviceUsage {
                    device: "sda1".into(),
                    used_percent: 40.0
                },
                DeviceUsage {
                    device: "sdb".into(),
                    used_percent: 12.3
                },
            ]
        );
        assert!(!disk_usage(&[]).reported);
    }

    #[test]
    fn alignment_grows_with_the_window() {
        assert_eq!(alignment_seconds(1), 60);
        assert_eq!(alignment_seconds(60), 60);
        assert_eq!(alignment_seconds(240), 60);
        assert_eq!(alignment_seconds(24 * 60), 360);
        assert_eq!(alignment_seconds(MAX_MINUTES), 2520);
    }
}
