//! Cloud Monitoring API v3: `projects.timeSeries.list`, every page, with the request parameters and
//! response fields of the published discovery document.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::auth::TokenSource;
use super::{GoogleApi, GoogleError};
use crate::clients::HttpPolicy;
use crate::clients::http::{ApiError, ApiRequest};

const API: &str = "Cloud Monitoring API";

/// What to read: one metric type (in `filter`), an interval, and how points are aligned.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeriesQuery {
    /// A monitoring filter naming one metric type, e.g. `metric.type = "…" AND resource.labels.instance_id = "…"`.
    pub filter: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `aggregation.alignmentPeriod` in seconds (at least 60), with `per_series_aligner`.
    pub alignment_period_secs: Option<u64>,
    /// e.g. `ALIGN_MEAN`.
    pub per_series_aligner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TimeSeries {
    pub metric: Metric,
    pub resource: MonitoredResource,
    pub metric_kind: Option<String>,
    pub value_type: Option<String>,
    /// Newest first, as the API returns them.
    pub points: Vec<Point>,
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Metric {
    #[serde(rename = "type")]
    pub kind: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct MonitoredResource {
    #[serde(rename = "type")]
    pub kind: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Point {
    pub interval: TimeInterval,
    pub value: TypedValue,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TimeInterval {
    pub start_time: Option<String>,
    pub end_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TypedValue {
    pub double_value: Option<f64>,
    /// int64 as a string.
    pub int64_value: Option<String>,
    pub bool_value: Option<bool>,
    pub string_value: Option<String>,
}

impl TypedValue {
    /// The value as a number, when it is one.
    pub fn as_f64(&self) -> Option<f64> {
        self.double_value
            .or_else(|| self.int64_value.as_deref().and_then(|v| v.parse().ok()))
            .filter(|v| v.is_finite())
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ListTimeSeriesResponse {
    time_series: Vec<TimeSeries>,
    next_page_token: Option<String>,
}

/// The Monitoring client.
pub struct MonitoringClient {
    api: GoogleApi,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl MonitoringClient {
    /// `base_url` like `https://monitoring.googleapis.com/v3`.
    pub fn new(
        base_url: &str,
        auth: Arc<TokenSource>,
        policy: HttpPolicy,
    ) -> Result<Self, ApiError> {
        Ok(MonitoringClient {
            api: GoogleApi::new(API, base_url, auth, policy)?,
        })
    }

    /// Every time series matching the query (view FULL), all pages.
    pub async fn list_time_series(
        &self,
        project: &str,
        q: &TimeSeriesQuery,
    ) -> Result<Vec<TimeSeries>, GoogleError> {
        let segs = vec![
            "projects".to_string(),
            project.to_string(),
            "timeSeries".to_string(),
        ];
        self.api
            .paged(
                |token| {
                    let mut req = ApiRequest::new(Method::GET, segs.clone())
                        .query("filter", &q.filter)
                        .query("interval.startTime", rfc3339(q.start))
                        .query("interval.endTime", rfc3339(q.end))
                        .query("view", "FULL");
                    if let Some(p) = q.alignment_period_secs {
                        req = req.query("aggregation.alignmentPeriod", format!("{p}s"));
                    }
                    if let Some(a) = &q.per_series_aligner {
                        req = req.query("aggregation.perSeriesAligner", a);
                    }
                    if let Some(t) = token {
                        req = req.query("pageToken", t);
                    }
                    req
                },
                |page: ListTimeSeriesResponse| (page.time_series, page.next_page_token),
            )
            .await
    }
}
