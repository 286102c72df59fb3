//! Waiting for long-running operations: Compute Engine zonal operations (through
//! `zoneOperations.wait`, which the server holds open for up to about two minutes and may answer
//! early) and API Keys operations (polled with `operations.get`).
//!
//! Guarantees:
//! - Every wait is bounded by [`WaitPolicy::timeout`]; running out is [`OperationError::TimedOut`]
//!   naming the operation, its type and what it was doing — the operation itself may still finish.
//! - `error` is checked whenever the operation is done, whatever its other fields say: an operation
//!   that is `DONE` with errors is [`OperationError::Failed`], carrying every error code (e.g.
//!   `ZONE_RESOURCE_POOL_EXHAUSTED`).
//! - A wait answer that comes back at once without the operation being done (the server is allowed
//!   to) does not turn into a busy loop: the next call waits [`WaitPolicy::poll_interval`] first.

use std::fmt;
use std::time::{Duration, Instant};

use super::GoogleError;
use super::apikeys::{ApiKeysClient, KeyOperation, V2Key};
use super::compute::{ComputeClient, Operation, OperationErrorItem, WAIT_CALL_TIMEOUT};

/// How long and how often to wait for an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    /// The whole wait; past it the operation is reported as timed out.
    pub timeout: Duration,
    /// Between polls (API Keys), and after an early empty answer of `zoneOperations.wait`.
    pub poll_interval: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// One error of a failed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationFault {
    /// `ZONE_RESOURCE_POOL_EXHAUSTED`, `QUOTA_EXCEEDED`, or a google.rpc code number for API Keys.
    pub code: String,
    pub message: String,
}

impl fmt::Display for OperationFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "[{}]", self.code)
        } else {
            write!(f, "[{}] {}", self.code, self.message)
        }
    }
}

struct Faults<'a>(&'a [OperationFault]);

impl fmt::Display for Faults<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no error details");
        }
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// An operation that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    #[error("{api}: operation {name} ({what}) failed: {}", Faults(.errors))]
    Failed {
        api: &'static str,
        name: String,
        what: String,
        errors: Vec<OperationFault>,
    },
    #[error(
        "{api}: operation {name} ({what}) was not done after {:.0} s; it may still finish — the next plan re-reads the resource",
        .waited.as_secs_f64()
    )]
    TimedOut {
        api: &'static str,
        name: String,
        what: String,
        waited: Duration,
    },
}

impl OperationError {
    /// The error codes of a failed operation.
    pub fn codes(&self) -> Vec<&str> {
        match self {
            OperationError::Failed { errors, .. } => {
                errors.iter().map(|e| e.code.as_str()).collect()
            }
            OperationError::TimedOut { .. } => Vec::new(),
        }
    }

    /// The zone could not give the resources (`ZONE_RESOURCE_POOL_EXHAUSTED`, its `_WITH_DETAILS`
    /// form, a stockout) or a quota was exceeded: a start after a resize can fail like this.
    pub fn is_capacity_or_quota(&self) -> bool {
        self.codes().iter().any(|c| {
            c.starts_with("ZONE_RESOURCE_POOL_EXHAUSTED")
                || c.contains("QUOTA")
                || *c == "RESOURCE_EXHAUSTED"
                || c.contains("STOCKOUT")
        })
    }
}

const COMPUTE_API: &str = "Compute Engine API";
const APIKEYS_API: &str = "API Keys API";

fn compute_faults(op: &Operation) -> Option<Vec<OperationFault>> {
    let errors = op.error.as_ref()?;
    let mut out: Vec<OperationFault> = errors
        .errors
        .iter()
        .map(|e: &OperationErrorItem| OperationFault {
            code: e.code.clone(),
            message: e.message.clone().unwrap_or_default(),
        })
        .collect();
    if out.is_empty() {
        out.push(OperationFault {
            code: op
                .http_error_status_code
                .map_or_else(|| "UNKNOWN".into(), |c| c.to_string()),
            message: op.http_error_message.clone().unwrap_or_default(),
        });
    }
    Some(out)
}

fn compute_what(op: &Operation) -> String {
    let kind = op.operation_type.as_deref().unwrap_or("operation");
    match op.target_link.as_deref() {
        Some(t) => format!("{kind} of {}", super::short_name(t)),
        None => kind.to_string(),
    }
}

/// The final state of a zonal operation: `Ok` when DONE without errors.
pub fn check_zone_operation(op: Operation) -> Result<Operation, OperationError> {
    match compute_faults(&op) {
        Some(errors) if op.is_done() => Err(OperationError::Failed {
            api: COMPUTE_API,
            name: op.name.clone(),
            what: compute_what(&op),
            errors,
        }),
        _ => Ok(op),
    }
}

/// Waits until the zonal operation `op` is DONE (bounded by `policy.timeout`) and checks its errors.
pub async fn wait_zone_operation(
    client: &ComputeClient,
    project: &str,
    zone: &str,
    op: Operation,
    policy: WaitPolicy,
) -> Result<Operation, GoogleError> {
    let started = Instant::now();
    let mut op = op;
    loop {
        if op.is_done() {
            return Ok(check_zone_operation(op)?);
        }
        let left = policy.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(OperationError::TimedOut {
                api: COMPUTE_API,
                name: op.name.clone(),
                what: compute_what(&op),
                waited: started.elapsed(),
            }
            .into());
        }
        let call = Instant::now();
        let timeout = WAIT_CALL_TIMEOUT.min(left + Duration::from_secs(5));
        let next = match tokio::time::timeout(
            left,
            client.wait_operation(project, zone, &op.name, timeout),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => continue,
        };
        if !next.is_done() && call.elapsed() < policy.poll_interval {
            tokio::time::sleep(policy.poll_interval.min(left)).await;
        }
        op = next;
    }
}

fn key_faults(op: &KeyOperation) -> Option<Vec<OperationFault>> {
    op.error.as_ref().map(|s| {
        vec![OperationFault {
            code: s.code.to_string(),
            message: s.message.clone(),
        }]
    })
}

/// Polls the API Keys operation `op` until done (bounded) and returns the key it produced.
pub async fn wait_key_operation(
    client: &ApiKeysClient,
    op: KeyOperation,
    what: &str,
    policy: WaitPolicy,
) -> Result<Option<V2Key>, GoogleError> {
    let started = Instant::now();
    let mut op = op;
    loop {
        if op.done {
            if let Some(errors) = key_faults(&op) {
                return Err(OperationError::Failed {
                    api: APIKEYS_API,
                    name: op.name.clone(),
                    what: what.to_string(),
                    errors,
                }
                .into());
            }
            return Ok(op.response);
        }
        let left = policy.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(OperationError::TimedOut {
                api: APIKEYS_API,
                name: op.name.clone(),
                what: what.to_string(),
                waited: started.elapsed(),
            }
            .into());
        }
        tokio::time::sleep(policy.poll_interval.min(left)).await;
        op = client.get_operation(&op.name).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::google::compute::OperationErrors;

    fn op(status: &str, codes: &[&str]) -> Operation {
        Operation {
            name: "operation-1".into(),
            status: status.into(),
            operation_type: Some("start".into()),
            target_link: Some("https://x/projects/p/zones/z/instances/host-1".into()),
            error: (!codes.is_empty()).then(|| OperationErrors {
                errors: codes
                    .iter()
                    .map(|c| OperationErrorItem {
                        code: (*c).into(),
                        location: None,
                        message: Some(format!("{c} happened")),
                    })
                    .collect(),
            }),
            ..Operation::default()
        }
    }

    #[test]
    fn done_with_errors_is_a_failure_and_capacity_is_recognised() {
        let e = check_zone_operation(op("DONE", &["ZONE_RESOURCE_POOL_EXHAUSTED"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Compute Engine API: operation operation-1 (start of host-1) failed: [ZONE_RESOURCE_POOL_EXHAUSTED] ZONE_RESOURCE_POOL_EXHAUSTED happened"
        );
        assert!(e.is_capacity_or_quota());
        let e = check_zone_operation(op("DONE", &["QUOTA_EXCEEDED"])).unwrap_err();
        assert!(e.is_capacity_or_quota());
        let e = check_zone_operation(op("DONE", &["RESOURCE_NOT_FOUND"])).unwrap_err();
        assert!(!e.is_capacity_or_quota());
        assert!(check_zone_operation(op("DONE", &[])).is_ok());
        assert!(check_zone_operation(op("RUNNING", &[])).is_ok());
    }
}
