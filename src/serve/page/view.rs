//! The page's HTML: one function per page over the data [`super`] gathered, sharing a frame (header,
//! navigation, auto-refresh switch, footer) and a few parts (state badges, tables, errors).
//!
//! Accessibility: landmarks (`header`, `nav`, `main`), one `h1` per page and `h2` per section, tables
//! with captions and column headers (`scope="col"`) inside labelled, keyboard-scrollable regions, every
//! state written as text (with a symbol) besides its colour, pictures labelled in words. Widths are
//! fluid: the page is read on a phone (375 px) as well.

use std::collections::HashMap;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::chart::{self, DurationBar, PortCell};
use super::{Frame, Overview, Part, ProjectPage, TasksPage, VmRow};
use crate::engine::Plan;
use crate::engine::render::{self, LineKind};
use crate::engine::status::{ResourceLine, ResourceStatus};
use crate::ops::ReconcileStatus;
use crate::ops::status::Status;
use crate::providers::{dns, ports as port_provider, tunnel};
use crate::store::ApplyRun;
use crate::timing::human_duration;
use crate::timing::service::{IntervalCoverage, StatsLine, TimerLine};

const CSS: &str = r#"
:root{color-scheme:light dark;--fg:#1f2328;--bg:#fff;--muted:#59636e;--line:#d1d9e0;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--link:#0969da;--soft:#f6f8fa;--idle:#818b98}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9198a1;--line:#3d444d;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--link:#4493f8;--soft:#151b23;--idle:#656c76}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--link)}
.skip{position:absolute;left:-9999px}.skip:focus{left:1rem;top:.5rem;background:var(--bg);padding:.25rem .5rem}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center;justify-content:space-between;padding:.5rem 1rem;border-bottom:1px solid var(--line)}
header .brand{font-weight:700}
nav ul{display:flex;flex-wrap:wrap;gap:.25rem 1rem;list-style:none;margin:0;padding:0}
nav a[aria-current]{font-weight:700;color:var(--fg);text-decoration:none}
.tools{display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:center;font-size:.9rem}
main{padding:0 1rem 2rem;max-width:84rem}
h1{font-size:1.4rem;margin:1rem 0 .5rem}
h2{font-size:1.15rem;margin:2rem 0 .5rem;padding-bottom:.2rem;border-bottom:1px solid var(--line)}
h3{font-size:1rem;margin:1rem 0 .25rem}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:.9rem}
caption{text-align:left;color:var(--muted);padding:.25rem 0;font-size:.85rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.st{white-space:nowrap;font-weight:600}
.st-in_sync,.ok{color:var(--ok)}.st-pending,.st-drifted,.warn{color:var(--warn)}.st-failed,.st-blocked,.bad{color:var(--bad)}
.muted{color:var(--muted)}
.alert{border-left:4px solid var(--bad);background:var(--soft);padding:.5rem .75rem;margin:.75rem 0}
.notice{border-left:4px solid var(--warn);background:var(--soft);padding:.5rem .75rem;margin:.75rem 0}
ul.notice{list-style:none;padding-left:.75rem}
.err{color:var(--bad)}
ul.plain{list-style:none;margin:0;padding:0}
ul.plain li{margin:.1rem 0}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem}
pre.plan{overflow-x:auto;background:var(--soft);padding:.75rem;border-radius:6px;line-height:1.35}
.l-destroy,.l-error{color:var(--bad)}.l-create{color:var(--ok)}.l-update,.l-warning{color:var(--warn)}.l-heading{font-weight:700}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(9rem,1fr));gap:.75rem;margin:.75rem 0}
.card{border:1px solid var(--line);border-radius:6px;padding:.5rem .75rem}
.card .big{font-size:1.3rem;font-weight:700}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.5rem 0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
svg{max-width:100%;height:auto;vertical-align:middle}
svg.spark{color:var(--link)}svg.spark .axis{stroke:var(--line)}
.grid .p-free rect{fill:var(--soft);stroke:var(--line)}.grid .p-idle rect{fill:var(--idle)}.grid .p-listen rect{fill:var(--ok)}.grid .p-listen circle{fill:var(--bg)}.grid .p-conflict rect{fill:var(--bad)}.grid .p-conflict path{stroke:var(--bg);stroke-width:2}
.durations .bar{fill:var(--idle)}.durations .in .bar{fill:var(--ok)}.durations .out .bar{fill:var(--bad)}.durations .whisker{stroke:var(--fg);stroke-width:1.5}.durations .tick{stroke:var(--fg);stroke-width:2.5}
ul.legend{display:flex;flex-wrap:wrap;gap:.25rem 1rem;list-style:none;padding:0;margin:.25rem 0;font-size:.85rem}
.sw{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;vertical-align:-1px;margin-right:.3rem;border:1px solid var(--line)}
.sw.p-listen{background:var(--ok)}.sw.p-idle{background:var(--idle)}.sw.p-free{background:var(--soft)}.sw.p-conflict{background:var(--bad)}.sw.in{background:var(--ok)}.sw.out{background:var(--bad)}.sw.none{background:var(--idle)}
form.login{display:grid;gap:.5rem;max-width:26rem}
input[type=password]{font:inherit;padding:.4rem;width:100%}
button{font:inherit;padding:.3rem .8rem;cursor:pointer}
form.inline{display:inline;margin:0}
footer{padding:1rem;color:var(--muted);font-size:.8rem;border-top:1px solid var(--line)}
"#;

// ---------------------------------------------------------------------------------------------------
// Parts

fn status_class(s: ResourceStatus) -> &'static str {
    match s {
        ResourceStatus::InSync => "st st-in_sync",
        ResourceStatus::Pending => "st st-pending",
        ResourceStatus::Drifted => "st st-drifted",
        ResourceStatus::Failed => "st st-failed",
        ResourceStatus::Blocked => "st st-blocked",
    }
}

fn status_symbol(s: ResourceStatus) -> &'static str {
    match s {
        ResourceStatus::InSync => "✓",
        ResourceStatus::Pending => "●",
        ResourceStatus::Drifted => "▲",
        ResourceStatus::Failed | ResourceStatus::Blocked => "✗",
    }
}

/// A state as text with a symbol, coloured.
fn badge(s: ResourceStatus) -> Markup {
    html! {
        span class=(status_class(s)) { span aria-hidden="true" { (status_symbol(s)) " " } (s.label()) }
    }
}

fn when(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) } }
}

/// `sha256:0123456789ab…` → `0123456789ab` (the full revision in a tooltip).
fn revision(r: &str) -> Markup {
    let short: String = r
        .strip_prefix("sha256:")
        .unwrap_or(r)
        .chars()
        .take(12)
        .collect();
    html! { code title=(r) { (short) } }
}

/// A section that could not be read: what failed, in its place.
fn failed(what: &str, why: &str) -> Markup {
    html! { p.alert { strong { "Could not read " (what) ": " } (why) } }
}

/// A table in a labelled region that scrolls sideways on narrow screens (and by keyboard).
fn table(caption: &str, head: &[&str], numeric: &[usize], rows: Markup) -> Markup {
    html! {
        div.scroll role="region" aria-label=(caption) tabindex="0" {
            table {
                caption { (caption) }
                thead { tr { @for (i, h) in head.iter().enumerate() {
                    th scope="col" class=[numeric.contains(&i).then_some("num")] { (h) }
                } } }
                tbody { (rows) }
            }
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Counts of each state among `lines`, in words (`12 in sync, 1 pending`).
fn counts(lines: &[&ResourceLine]) -> String {
    let mut parts = Vec::new();
    for s in [
        ResourceStatus::InSync,
        ResourceStatus::Pending,
        ResourceStatus::Drifted,
        ResourceStatus::Failed,
        ResourceStatus::Blocked,
    ] {
        let n = lines.iter().filter(|l| l.status == s).count();
        if n > 0 {
            parts.push(format!("{n} {}", s.label()));
        }
    }
    if parts.is_empty() {
        "no resources".into()
    } else {
        parts.join(", ")
    }
}

fn hostname_link(h: &str) -> Markup {
    html! { a href={ "https://" (h) "/" } rel="noreferrer" { (h) } }
}

/// The plan as `supervisor plan` prints it, each line marked by what it is.
fn plan_block(plan: &Plan) -> Markup {
    let text = render::plan_text(plan);
    html! {
        pre.plan aria-label="Plan" {
            @for line in text.lines() {
                @let class = match render::line_kind(line) {
                    LineKind::Destroy => Some("l-destroy"),
                    LineKind::Create => Some("l-create"),
                    LineKind::Update => Some("l-update"),
                    LineKind::Warning => Some("l-warning"),
                    LineKind::Error => Some("l-error"),
                    LineKind::Heading => Some("l-heading"),
                    LineKind::Plain => None,
                };
                span class=[class] { (line) } "\n"
            }
        }
    }
}

fn summary_sentence(plan: &Plan) -> Markup {
    if !plan.errors.is_empty() {
        html! { span.bad { "✗ The plan has " (plural(plan.errors.len(), "error", "errors")) " and cannot be applied; "
        (plural(plan.changes.len(), "change", "changes")) " planned." } }
    } else if plan.changes.is_empty() {
        html! { span.ok aria-hidden="true" { "✓ " } "No changes: reality matches the desired state." }
    } else {
        let s = plan.summary;
        html! { span.warn aria-hidden="true" { "● " } (s.add) " to add, " (s.change) " to change, " (s.destroy) " to destroy. Apply with "
        code { "supervisor apply" } " (or the MCP " code { "apply_plan" } " tool)." }
    }
}

/// Secrets needing a human, paths only.
fn secrets_section(status: &Status, vault_problem: Option<&str>, show_project: bool) -> Markup {
    let missing = &status.missing_secrets;
    let (expired, rotation) = (&status.secrets.expired, &status.secrets.rotation_required);
    html! {
        @if let Some(p) = vault_problem { p.notice { "The vault cannot be used: " (p) } }
        @if missing.is_empty() && expired.is_empty() && rotation.is_empty() {
            p { span.ok aria-hidden="true" { "✓ " } "No secret needs attention "
                span.muted { "(" (plural(status.secrets.total, "secret", "secrets")) " stored)" } }
        } @else {
            (table("Secrets needing attention (paths only)", if show_project { &["Path", "Project", "Problem"] } else { &["Path", "Problem"] }, &[], html! {
                @for m in missing {
                    tr { td { code { (m.path) } } @if show_project { td { (m.project) } }
                         td { span.bad { "✗ missing" } " — required but not set: " code { "supervisor secrets set " (m.path) } } }
                }
                @for p in expired {
                    tr { td { code { (p) } } @if show_project { td { (secret_owner(p)) } }
                         td { span.bad { "✗ expired" } " — still readable; replace it" } }
                }
                @for p in rotation {
                    tr { td { code { (p) } } @if show_project { td { (secret_owner(p)) } }
                         td { span.warn { "▲ rotation due" } " — flagged for rotation" } }
                }
            }))
        }
    }
}

/// The project a secret path belongs to (`project/<p>/…`, `service/<p>/…`), or `meta`.
fn secret_owner(path: &str) -> String {
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        (Some("project" | "service"), Some(p)) => p.to_string(),
        _ => "meta".into(),
    }
}

fn reconciler_section(r: &ReconcileStatus) -> Markup {
    html! {
        dl.facts {
            dt { "Role" } dd { @if r.leader { "leader (reconciles)" } @else { "follower (another process reconciles)" } }
            dt { "Auto-apply" } dd { @if r.auto_apply { "on (safe plans are applied without asking)" } @else { "off (plans wait for " code { "supervisor apply" } ")" } }
            dt { "Runs" } dd { (r.runs) " (" (plural(r.errors as usize, "error", "errors")) ")" }
            dt { "Last run" } dd {
                @match r.last_run_at { Some(t) => { (when(t)) }, None => { span.muted { "not yet" } } }
                @if let Some(res) = &r.last_result {
                    " — " span class=(match res.as_str() { "ok" => "ok", "error" | "invalid_state" => "bad", _ => "warn" }) { (res) }
                }
            }
            @if let Some(e) = &r.last_error { dt { "Last error" } dd.err { (e) } }
            @if let Some(s) = &r.retry_in_seconds { dt { "Next try" } dd { "in " (human_duration(*s as f64)) } }
            @if let Some(p) = &r.pending { dt { "Pending" } dd { (p.add) " to add, " (p.change) " to change, " (p.destroy) " to destroy" } }
        }
        @if !r.waiting_for_human.is_empty() {
            div.notice { p { strong { "Waiting for a human:" } } ul { @for w in &r.waiting_for_human { li { (w) } } } }
        }
    }
}

fn runs_table(runs: &[ApplyRun]) -> Markup {
    if runs.is_empty() {
        return html! { p.muted { "Nothing has been applied yet." } };
    }
    table(
        "Most recent applies, newest first",
        &["Started", "Result", "By", "Planned", "Applied", "Error"],
        &[4],
        html! {
            @for run in runs {
                @let planned = &run.summary.0["planned"];
                tr {
                    td { (when(run.started_at)) }
                    td { span class=(match run.status.as_str() { "succeeded" => "ok", "running" => "warn", _ => "bad" }) { (run.status) } }
                    td { (run.actor) }
                    td { "+" (planned["add"].as_u64().unwrap_or(0)) " ~" (planned["change"].as_u64().unwrap_or(0)) " −" (planned["destroy"].as_u64().unwrap_or(0)) }
                    td.num { (run.summary.0["applied"].as_u64().unwrap_or(0)) }
                    td.err { (run.summary.0["failed"].as_str().unwrap_or("")) }
                }
            }
        },
    )
}

fn coverage_sentence(c: &Part<IntervalCoverage>) -> Markup {
    match c {
        Ok(c) => html! {
            p { strong { "Estimator calibration: " } (c.describe()) "."
                // A verdict needs enough tasks: with a handful, any share is noise.
                @if let Some(s) = c.share.filter(|_| c.tasks >= 20) { " " span class=(if s >= 0.85 { "ok" } else { "warn" }) {
                    @if s >= 0.85 { "Well calibrated (about 95 % expected)." } @else { "The intervals are too narrow (about 95 % expected)." } } } }
        },
        Err(e) => failed("the estimator's calibration", e),
    }
}

fn timers_table(timers: &[TimerLine], caption: &str) -> Markup {
    if timers.is_empty() {
        return html! { p.muted { "No timer is running." } };
    }
    table(
        caption,
        &[
            "Task",
            "Project",
            "Type",
            "Running for",
            "Estimate",
            "Description",
        ],
        &[3, 4],
        html! {
            @for t in timers {
                tr {
                    td { code { (t.task_id) } }
                    td { (t.project.as_deref().unwrap_or("—")) }
                    td { (t.task_type) }
                    td.num { (human_duration(t.elapsed_seconds))
                        @if t.abandoned { " " span.bad { "(abandoned)" } } }
                    td.num { (t.supervisor_estimate_seconds.or(t.estimated_seconds).map(human_duration).unwrap_or_else(|| "—".into())) }
                    td { (t.description) }
                }
            }
        },
    )
}

/// Finished tasks: a chart of actual against estimated duration and the same numbers in a table.
fn durations_section(tasks: &[TimerLine]) -> Markup {
    let done: Vec<&TimerLine> = tasks.iter().filter(|t| t.status != "running").collect();
    if done.is_empty() {
        return html! { p.muted { "No task has finished yet." } };
    }
    let bar = |t: &TimerLine| DurationBar {
        actual: t.elapsed_seconds,
        estimate: t.supervisor_estimate_seconds.or(t.estimated_seconds),
        interval: t
            .supervisor_interval_low_seconds
            .zip(t.supervisor_interval_high_seconds),
        inside: t.inside_interval,
    };
    let bars: Vec<DurationBar> = done.iter().map(|t| bar(t)).collect();
    let with = bars.iter().filter(|b| b.inside.is_some()).count();
    let inside = bars.iter().filter(|b| b.inside == Some(true)).count();
    let label = format!(
        "Actual against estimated duration of the {} most recent finished tasks, newest first: {inside} of the {with} with an interval ended inside it",
        done.len()
    );
    html! {
        figure {
            (chart::durations(&bars, &label))
            figcaption {
                ul.legend {
                    li { span.sw.in {} "bar: actual, inside the interval" }
                    li { span.sw.out {} "outside the interval" }
                    li { span.sw.none {} "no interval" }
                    li { "tick: estimate; whisker: 95 % interval (log scale)" }
                }
            }
        }
        (table("Finished tasks, newest first", &["Task", "Project", "Type", "Result", "Actual", "Estimate", "95 % interval", "Inside"], &[4, 5], html! {
            @for (t, b) in done.iter().zip(&bars) {
                tr {
                    td { code { (t.task_id) } }
                    td { (t.project.as_deref().unwrap_or("—")) }
                    td { (t.task_type) }
                    td { span class=(if t.status == "completed" { "ok" } else { "bad" }) { (t.status) } }
                    td.num { (human_duration(b.actual)) }
                    td.num { (b.estimate.map(human_duration).unwrap_or_else(|| "—".into())) }
                    td { @match b.interval { Some((lo, hi)) => { (human_duration(lo)) " – " (human_duration(hi)) }, None => { span.muted { "—" } } } }
                    td { @match b.inside { Some(true) => { span.ok { "✓ yes" } }, Some(false) => { span.bad { "✗ no" } }, None => { span.muted { "—" } } } }
                }
            }
        }))
    }
}

// ---------------------------------------------------------------------------------------------------
// The frame

const PAGES: [(&str, &str); 4] = [
    ("/", "Overview"),
    ("/plan", "Plan"),
    ("/tasks", "Tasks"),
    ("/vms", "VMs"),
];

/// Every page's `<head>`: the title, the inline style, and the auto-refresh when it is on.
fn head(title: &str, refresh: Option<u32>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(s) = refresh { meta http-equiv="refresh" content=(s); }
            title { (title) " — supervisor" }
            style { (PreEscaped(CSS)) }
        }
    }
}

fn layout(frame: &Frame, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, frame.refresh))
            body {
                a.skip href="#main" { "Skip to the content" }
                header {
                    span.brand { "supervisor" }
                    nav aria-label="Pages" { ul {
                        @for (href, name) in PAGES {
                            li { a href=(href) aria-current=[(frame.path == href).then_some("page")] { (name) } }
                        }
                    } }
                    div.tools {
                        span {
                            "Auto-refresh: "
                            @match frame.refresh {
                                Some(s) => { strong { "every " (s) " s" } " · " a href=(frame.path) { "turn off" } },
                                None => { strong { "off" } " · " a href={ (frame.path) "?refresh=30" } { "every 30 s" } },
                            }
                        }
                        @if frame.viewer.session {
                            form.inline method="post" action="/logout" { button type="submit" { "Log out" } }
                        }
                    }
                }
                main #main {
                    @if let Some(e) = &frame.desired_error {
                        div.alert role="alert" {
                            p { strong { "state/ is invalid" } " since " (when(e.at)) "; the last good desired state is shown and reconciled." }
                            pre { (e.message) }
                        }
                    }
                    (body)
                }
                footer { "supervisor " (env!("CARGO_PKG_VERSION")) " · generated " (when(Utc::now())) " · read only: apply with the CLI or MCP" }
            }
        }
    }
}

/// A page that only says something (a refusal, an error).
pub(super) fn message_page(status: StatusCode, message: &str, no_auth: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&status.as_u16().to_string(), None))
            body { main #main {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.alert role="alert" { (message) }
                @if !no_auth { p { a href="/login" { "Log in" } " · " a href="/" { "Overview" } } }
            } }
        }
    }
}

pub(super) fn login(message: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in", None))
            body { main #main {
                h1 { "Log in to the supervisor's status page" }
                @if let Some(m) = message { p.alert role="alert" #login-error { (m) } }
                form.login method="post" action="/login" {
                    label for="token" { "Meta token" }
                    input #token type="password" name="token" autocomplete="off" required
                        aria-describedby=[message.map(|_| "login-error")];
                    button type="submit" { "Log in" }
                }
                p.muted { "Create a token with " code { "supervisor token create --meta" } ". The page keeps a session (ended after 12 hours without use, or when you log out), never the token. Project tokens cannot open the page: it shows every project." }
            } }
        }
    }
}

pub(super) fn not_found(frame: &Frame, message: &str) -> Markup {
    layout(
        frame,
        "Not found",
        html! { h1 { "Not found" } p.alert { (message) } p { a href="/" { "Every project" } } },
    )
}

// ---------------------------------------------------------------------------------------------------
// Pages

pub(super) fn overview(frame: &Frame, d: &Overview) -> Markup {
    let body = html! {
        h1 { "Status of every project" }
        @match &d.status {
            Ok(s) => { (overview_summary(d, s)) }
            Err(e) => { (failed("the status (a fresh plan)", e)) }
        }
        h2 #projects { "Projects" }
        (projects_table(d))
        h2 #secrets { "Secrets needing attention" }
        @match &d.status {
            Ok(s) => { (secrets_section(s, d.vault_problem.as_deref(), true)) }
            Err(e) => { (failed("the secrets' state", e)) }
        }
        h2 #reconciler { "Reconciler" }
        (reconciler_section(&d.reconcile))
        h3 { "Recent applies" }
        @match &d.runs { Ok(r) => { (runs_table(r)) }, Err(e) => { (failed("the recent applies", e)) } }
        h2 #tasks { "Tasks" }
        (coverage_sentence(&d.coverage))
        @match &d.running { Ok(t) => { (timers_table(t, "Running task timers")) }, Err(e) => { (failed("the running timers", e)) } }
        p { a href="/tasks" { "Recent tasks, durations against estimates, statistics" } }
        h2 #vms { "VMs" }
        @if d.desired.vms.is_empty() {
            p.muted { "No VM is declared (vms: in supervisor.yaml)." }
        } @else {
            (table("VMs declared in supervisor.yaml", &["VM", "Google Cloud project", "Zone", "Machine type", "Keep"], &[], html! {
                @for vm in &d.desired.vms {
                    tr { td { (vm.name) } td { (vm.gcp_project) } td { (vm.zone) } td { (vm.machine_type) }
                         td { @match vm.running { Some(true) => "running", Some(false) => "stopped", None => "as it is" } } }
                }
            }))
            p { a href="/vms" { "Status, CPU and memory of each VM" } " (asks Compute Engine and Cloud Monitoring)" }
        }
    };
    layout(frame, "Overview", body)
}

fn overview_summary(d: &Overview, s: &Status) -> Markup {
    let r = &s.report;
    let lines: Vec<&ResourceLine> = r.resources.iter().collect();
    let services: usize = d.desired.service_count();
    let meta = r.resources.iter().find(|l| {
        l.address == crate::providers::instructions::address(crate::providers::instructions::META)
    });
    let attention =
        s.missing_secrets.len() + s.secrets.expired.len() + s.secrets.rotation_required.len();
    let pending = s.plan.changes.len();
    // With auto-apply off every pending change waits for a human: the pending line says it already.
    let waiting = if d.reconcile.auto_apply {
        d.reconcile.waiting_for_human.len()
    } else {
        0
    };
    html! {
        @if r.problems {
            div.alert role="alert" {
                p { strong { "Something needs attention." } }
                @if !r.errors.is_empty() { ul { @for e in &r.errors { li { (e.message) } } } }
            }
        }
        @if pending + attention + waiting > 0 {
            ul.notice {
                @if pending > 0 { li { (plural(pending, "change is", "changes are")) " pending — " a href="/plan" { "see the plan" } "." } }
                @if attention > 0 { li { (plural(attention, "secret needs", "secrets need")) " attention — " a href="#secrets" { "see below" } "." } }
                @if waiting > 0 { li { (plural(waiting, "change waits", "changes wait")) " for a human — " a href="#reconciler" { "see the reconciler" } "." } }
            }
        } @else if !r.problems {
            p { span.ok aria-hidden="true" { "✓ " } "Everything is in sync; nothing needs attention." }
        }
        div.cards {
            div.card { div.big { (d.desired.projects.len()) } "projects" }
            div.card { div.big { (services) } "services" }
            div.card { div.big { (r.resources.len()) } "resources: " (counts(&lines)) }
            div.card { div.big { (s.plan.changes.len()) } "pending changes · " a href="/plan" { "plan" } }
        }
        dl.facts {
            dt { "Desired state" } dd { (revision(&r.desired_revision))
                @if let Some(g) = &r.git_revision { " (git " code { (g) } ")" } }
            dt { "Last apply" } dd {
                @match &r.last_apply {
                    Some(run) => { (when(run.started_at)) " — " (run.status) " by " (run.actor) ", revision " (revision(&run.desired_revision)) }
                    None => { span.muted { "never" } }
                }
            }
            dt { "Meta CLAUDE.md" } dd { @match meta { Some(l) => { (badge(l.status)) }, None => { span.muted { "not managed (set instructions.meta_path)" } } } }
        }
    }
}

/// A project's resources, and the state that needs the most attention among them.
fn project_lines<'a>(s: &'a Status, name: &str) -> Vec<&'a ResourceLine> {
    s.report
        .resources
        .iter()
        .filter(|l| l.project.as_deref() == Some(name))
        .collect()
}

/// When and from which revision a project's resources were last applied.
fn last_applied(lines: &[&ResourceLine], runs: &HashMap<String, ApplyRun>) -> Markup {
    let newest = lines
        .iter()
        .filter_map(|l| l.last_applied_at.zip(l.last_applied_run.as_ref()))
        .max_by_key(|(t, _)| *t);
    match newest {
        None => html! { span.muted { "never" } },
        Some((t, run)) => html! {
            (when(t))
            @if let Some(run) = runs.get(run) {
                br; "revision " (revision(&run.desired_revision))
                @if let Some(g) = &run.git_revision { " (git " code { (g) } ")" }
            }
        },
    }
}

fn projects_table(d: &Overview) -> Markup {
    let status = d.status.as_ref().ok();
    let listing = d.listing.as_ref().ok();
    let running = d.running.as_ref().ok();
    // One lookup per service, not a scan of the registry (1,000 services at 100 × 10).
    let ports: HashMap<(&str, &str), i32> = listing
        .map(|l| {
            l.ports
                .iter()
                .map(|p| ((p.project.as_str(), p.service.as_str()), p.port))
                .collect()
        })
        .unwrap_or_default();
    html! {
        @if let Err(e) = &d.listing { (failed("the port registry", e)) }
        @if d.desired.projects.is_empty() {
            p.muted { "No project is declared (state/projects/*.yaml)." }
        } @else {
            (table(&format!("{} — state, services with their ports and hostnames, CLAUDE.md, last apply", plural(d.desired.projects.len(), "project", "projects")),
                &["Project", "State", "Services (port, hostname)", "Port block", "CLAUDE.md", "Last applied", "Timers"], &[6], html! {
                @for (name, p) in &d.desired.projects {
                    @let lines = status.map(|s| project_lines(s, name)).unwrap_or_default();
                    tr {
                        th scope="row" { a href={ "/projects/" (name) } { (name) } }
                        td {
                            @if status.is_some() { (badge(ResourceStatus::worst(lines.iter().map(|l| l.status)))) br; span.muted { (counts(&lines)) } }
                            @else { span.muted { "unknown" } }
                        }
                        td {
                            @if p.services.is_empty() { span.muted { "none" } }
                            ul.plain { @for svc in &p.services {
                                @let port = ports.get(&(name.as_str(), svc.name.as_str()));
                                li { (svc.name) " "
                                    @match port { Some(n) => { code { ":" (n) } }, None => { span.muted { "(no port yet)" } } }
                                    @if let Some(h) = &svc.hostname { " → " (hostname_link(h.as_str())) } }
                            } }
                        }
                        td { @match listing.and_then(|l| l.blocks.iter().find(|b| b.project == *name)) {
                            Some(b) => { (b.start_port) "–" (b.end_port) }, None => { span.muted { "—" } } } }
                        td { @match lines.iter().find(|l| l.provider == crate::providers::instructions::NAME) {
                            Some(l) => { (badge(l.status)) }, None => { span.muted { @if p.path.is_some() { "—" } @else { "no path" } } } } }
                        td { (last_applied(&lines, &d.applied)) }
                        td.num { (running.map(|t| t.iter().filter(|t| t.project.as_deref() == Some(name.as_str())).count()).unwrap_or(0)) }
                    }
                }
            }))
        }
    }
}

pub(super) fn project(frame: &Frame, d: &ProjectPage) -> Markup {
    let name = &d.project.name;
    let lines = d
        .status
        .as_ref()
        .map(|s| project_lines(s, name))
        .unwrap_or_default();
    let body = html! {
        h1 { "Project " (name) " "
            @if d.status.is_ok() { (badge(ResourceStatus::worst(lines.iter().map(|l| l.status)))) } }
        dl.facts {
            dt { "Folder" } dd { @match &d.project.path { Some(p) => { code { (p.display()) } }, None => { span.muted { "none declared" } } } }
            dt { "Resources" } dd { (counts(&lines)) }
            dt { "Last applied" } dd { (last_applied(&lines, &d.applied)) }
            dt { "CLAUDE.md" } dd { @match lines.iter().find(|l| l.provider == crate::providers::instructions::NAME) {
                Some(l) => { (badge(l.status)) @if let Some(e) = &l.error { " " span.err { (e) } } },
                None => { span.muted { "not managed here (the project has no folder on this host)" } } } }
        }
        @if let Err(e) = &d.status { (failed("the status (a fresh plan)", e)) }
        h2 #services { "Services" }
        (services_table(d, &lines))
        h2 #ports { "Port block" }
        (port_block(d))
        h2 #resources { "Resources" }
        (resources_table(&lines))
        h2 #plan { "Plan for " (name) }
        @match &d.status {
            Ok(s) => { p { (summary_sentence(&s.plan)) } (plan_block(&s.plan)) }
            Err(e) => { (failed("the plan", e)) }
        }
        // (With auto-apply off every pending change waits: the plan above says so.)
        @if d.reconcile.auto_apply && !d.reconcile.waiting_for_human.is_empty() {
            div.notice { p { strong { "The reconciler waits for a human:" } } ul { @for w in &d.reconcile.waiting_for_human { li { (w) } } } }
        }
        h2 #secrets { "Secrets needing attention" }
        @match &d.status { Ok(s) => { (secrets_section(s, None, false)) }, Err(e) => { (failed("the secrets' state", e)) } }
        h2 #checks { "Checks" }
        (checks_section(d))
        h2 #tasks { "Tasks" }
        (coverage_sentence(&d.coverage))
        @match &d.tasks {
            Ok(t) => {
                @let running: Vec<TimerLine> = t.iter().filter(|t| t.status == "running").cloned().collect();
                (timers_table(&running, "Running task timers"))
                (durations_section(t))
            }
            Err(e) => { (failed("the tasks", e)) }
        }
    };
    layout(frame, &format!("Project {name}"), body)
}

fn services_table(d: &ProjectPage, lines: &[&ResourceLine]) -> Markup {
    let name = &d.project.name;
    if d.project.services.is_empty() {
        return html! { p.muted { "No service is declared." } };
    }
    let state = |address: &str| {
        lines
            .iter()
            .find(|l| l.address == address)
            .map(|l| l.status)
    };
    let listing = d.listing.as_ref().ok();
    let audit = d.audit.as_ref().ok();
    html! {
        @if let Err(e) = &d.listing { (failed("the port registry", e)) }
        (table("Services with their ports and public hostnames", &["Service", "Port", "Port state", "Listening", "Hostname", "Hostname state"], &[1], html! {
            @for svc in &d.project.services {
                @let port = listing.and_then(|l| l.ports.iter().find(|x| x.project == *name && x.service == svc.name)).map(|x| x.port);
                @let listener = audit.and_then(|a| a.allocations.iter().find(|x| x.project == *name && x.service == svc.name));
                tr {
                    th scope="row" { (svc.name) }
                    td.num { @match port { Some(n) => { (n) }, None => { span.muted { "—" } } } }
                    td { @match state(&port_provider::service_address(name, &svc.name)) { Some(s) => { (badge(s)) }, None => { span.muted { "—" } } } }
                    td { @match listener {
                        Some(a) => { @match &a.listener {
                            Some(l) => { span.ok { "✓ listening" } " " span.muted { (l.command.as_deref().unwrap_or("")) @if let Some(pid) = l.pid { " (pid " (pid) ")" } } },
                            None => { span.muted { "idle" } } } },
                        None => { span.muted { "—" } } } }
                    td { @match &svc.hostname { Some(h) => { (hostname_link(h.as_str())) }, None => { span.muted { "none" } } } }
                    td { @match &svc.hostname {
                        Some(h) => {
                            @let states: Vec<ResourceStatus> = [dns::address(h.as_str()), tunnel::address(h.as_str())].iter().filter_map(|a| state(a)).collect();
                            @if states.is_empty() { span.muted { "not managed" } } @else { (badge(ResourceStatus::worst(states))) }
                        }
                        None => { span.muted { "—" } }
                    } }
                }
            }
        }))
    }
}

fn port_block(d: &ProjectPage) -> Markup {
    let name = &d.project.name;
    let (listing, audit) = match (&d.listing, &d.audit) {
        (Ok(l), Ok(a)) => (l, a),
        (Err(e), _) => return failed("the port registry", e),
        (_, Err(e)) => return failed("the sockets listening on this host", e),
    };
    let Some(block) = listing.blocks.iter().find(|b| b.project == *name) else {
        return html! { p.muted { "No block is allocated yet (apply allocates one)." } };
    };
    let (first, last) = (block.start_port, block.end_port);
    let cells: Vec<(PortCell, String)> = (first..=last)
        .map(|port| {
            let p = port as u16;
            if let Some(c) = audit.conflicts.iter().find(|c| c.port == p) {
                return (PortCell::Conflict, c.message.clone());
            }
            match audit
                .allocations
                .iter()
                .find(|a| a.port == p && a.project == *name)
            {
                Some(a) if a.listener.is_some() => {
                    (PortCell::Listening, format!("{} (listening)", a.service))
                }
                Some(a) => (PortCell::Idle, format!("{} (idle)", a.service)),
                None => (PortCell::Free, "free".into()),
            }
        })
        .collect();
    let count = |k: PortCell| cells.iter().filter(|(c, _)| *c == k).count();
    let (listening, idle, free, conflict) = (
        count(PortCell::Listening),
        count(PortCell::Idle),
        count(PortCell::Free),
        count(PortCell::Conflict),
    );
    let label = format!(
        "Ports {first} to {last}: {} used ({listening} listening, {idle} idle), {free} free, {conflict} conflicting",
        listening + idle
    );
    let conflicts: Vec<_> = audit
        .conflicts
        .iter()
        .filter(|c| {
            i32::from(c.port) >= first && i32::from(c.port) <= last
                || audit
                    .allocations
                    .iter()
                    .any(|a| a.port == c.port && a.project == *name)
        })
        .collect();
    html! {
        p { (label) "." }
        figure {
            (chart::port_grid(first as u16, &cells, &label))
            figcaption { ul.legend {
                @for k in [PortCell::Listening, PortCell::Idle, PortCell::Free, PortCell::Conflict] {
                    li { span class={ "sw " (match k { PortCell::Listening => "p-listen", PortCell::Idle => "p-idle", PortCell::Free => "p-free", PortCell::Conflict => "p-conflict" }) } {} (k.label()) }
                }
            } }
        }
        @if conflicts.is_empty() {
            p { span.ok aria-hidden="true" { "✓ " } "No conflicting listener." }
        } @else {
            div.alert { p { strong { (plural(conflicts.len(), "conflict", "conflicts")) ":" } }
                ul { @for c in conflicts { li { (c.message) } } } }
        }
    }
}

fn resources_table(lines: &[&ResourceLine]) -> Markup {
    if lines.is_empty() {
        return html! { p.muted { "No resource is declared." } };
    }
    table(
        "Every resource of the project",
        &[
            "Address",
            "Provider",
            "State",
            "Pending",
            "Last applied",
            "Error",
        ],
        &[],
        html! {
            @for l in lines {
                tr {
                    td { code { (l.address) } }
                    td { (l.provider) }
                    td { (badge(l.status)) }
                    td { (l.pending.map(|a| a.as_str()).unwrap_or("")) }
                    td { @if let Some(t) = l.last_applied_at { (when(t)) } }
                    td.err { (l.error.as_deref().unwrap_or("")) }
                }
            }
        },
    )
}

fn checks_section(d: &ProjectPage) -> Markup {
    let declared = &d.project.checks;
    if declared.is_empty() {
        return html! { p.muted { "No check is declared (checks: in the project's file)." } };
    }
    let runs = match &d.checks {
        Ok(r) => r,
        Err(e) => return failed("the checks' last runs", e),
    };
    table(
        "Declared checks and their last run",
        &["Command", "Last result", "Took", "When"],
        &[2],
        html! {
            @for cmd in declared {
                @let run = runs.iter().find(|r| &r.command == cmd);
                tr {
                    td { code { (cmd) } }
                    td { @match run {
                        Some(r) if r.passed => { span.ok { "✓ passed" } },
                        Some(r) => { span.bad { "✗ failed" } @if r.timed_out { " (timed out)" } @else if let Some(c) = r.exit_code { " (exit " (c) ")" } },
                        None => { span.muted { "never run" } } } }
                    td.num { @if let Some(r) = run { (human_duration(r.duration_ms as f64 / 1000.0)) } }
                    td { @if let Some(r) = run { (when(r.started_at)) } }
                }
            }
        },
    )
}

pub(super) fn plan(frame: &Frame, plan: &Part<Plan>) -> Markup {
    let body = html! {
        h1 { "Pending plan" }
        @match plan {
            Ok(p) => {
                p { (summary_sentence(p)) }
                p.muted { "Desired state " (revision(&p.desired_revision)) "; the same text as " code { "supervisor plan" } "." }
                (plan_block(p))
            }
            Err(e) => { (failed("the plan", e)) }
        }
    };
    layout(frame, "Plan", body)
}

pub(super) fn tasks(frame: &Frame, d: &TasksPage) -> Markup {
    let body = html! {
        h1 { "Tasks" }
        (coverage_sentence(&d.coverage))
        h2 { "Running timers" }
        @match &d.running { Ok(t) => { (timers_table(t, "Running task timers")) }, Err(e) => { (failed("the running timers", e)) } }
        h2 { "Recent tasks: actual against estimated duration" }
        @match &d.recent { Ok(t) => { (durations_section(t)) }, Err(e) => { (failed("the recent tasks", e)) } }
        h2 { "Statistics per task type" }
        @match &d.stats { Ok(s) => { (stats_table(s)) }, Err(e) => { (failed("the statistics", e)) } }
    };
    layout(frame, "Tasks", body)
}

fn stats_table(lines: &[StatsLine]) -> Markup {
    if lines.is_empty() {
        return html! { p.muted { "No task has completed yet." } };
    }
    let opt = |v: Option<f64>| v.map(human_duration).unwrap_or_else(|| "—".into());
    table(
        "Durations per task type (median and p95 of the log-normal fit)",
        &[
            "Type",
            "Project",
            "Count",
            "Success",
            "Median",
            "p95",
            "Own estimates ×",
        ],
        &[2, 3, 4, 5, 6],
        html! {
            @for l in lines {
                tr {
                    td { (l.task_type) }
                    td { (l.project.as_deref().unwrap_or("(all)")) }
                    td.num { (l.count) }
                    td.num { (format!("{:.0} %", l.success_rate * 100.0)) }
                    td.num { (opt(l.median_seconds)) }
                    td.num { (opt(l.p95_seconds)) }
                    td.num { (l.own_estimate_bias.map(|b| format!("{b:.2}")).unwrap_or_else(|| "—".into())) }
                }
            }
        },
    )
}

fn usage(what: &str, r: &crate::providers::vm_info::UsageReport, minutes: i64) -> Markup {
    if !r.reported {
        return html! { span.muted { (r.note.as_deref().unwrap_or("not reported")) } };
    }
    let pct = |v: Option<f64>| v.map(|v| format!("{v:.1} %")).unwrap_or_else(|| "—".into());
    let label = format!(
        "{what} over the last {minutes} minutes: now {}, average {}, max {}",
        pct(r.current_percent),
        pct(r.average_percent),
        pct(r.max_percent)
    );
    let values: Vec<f64> = r.points.iter().map(|p| p.percent).collect();
    html! {
        (chart::sparkline(&values, &label))
        br;
        span { "now " strong { (pct(r.current_percent)) } " · avg " (pct(r.average_percent)) " · max " (pct(r.max_percent)) }
    }
}

pub(super) fn vms(frame: &Frame, rows: &[VmRow], gcloud: bool, minutes: i64) -> Markup {
    let body = html! {
        h1 { "VMs" }
        @if rows.is_empty() {
            p.muted { "No VM is declared (vms: in supervisor.yaml)." }
        } @else if !gcloud {
            p.notice { "gcloud is not configured in supervisor.yaml: the VMs cannot be described." }
        }
        @for row in rows {
            h2 { (row.declared.name) }
            @match &row.info {
                Ok(i) => {
                    dl.facts {
                        dt { "Status" } dd { span class=(if i.status == "RUNNING" { "ok" } else { "warn" }) { (i.status) } }
                        dt { "Machine type" } dd { (i.machine_type)
                            @if i.machine_type != i.desired_machine_type { " " span.warn { "(desired: " (i.desired_machine_type) " — pending)" } }
                            @if let (Some(c), Some(m)) = (i.cpus, i.memory_mb) { span.muted { " · " (c) " vCPU, " (format!("{:.1}", m as f64 / 1024.0)) " GB" } } }
                        dt { "Zone" } dd { (i.gcp_project) " / " (i.zone) }
                        @if let Some(ip) = &i.internal_ip { dt { "Internal IP" } dd { code { (ip) } } }
                        @if let Some(ip) = &i.external_ip { dt { "External IP" } dd { code { (ip) } } }
                    }
                }
                Err(e) => { (failed("the instance", e)) }
            }
            @match &row.health {
                Ok(h) => {
                    (table(&format!("CPU and memory of {} over the last {minutes} minutes", row.declared.name), &["Metric", "Use"], &[], html! {
                        tr { th scope="row" { "CPU" } td { (usage("CPU", &h.cpu, minutes)) } }
                        tr { th scope="row" { "Memory" } td { (usage("Memory", &h.memory, minutes)) } }
                        tr { th scope="row" { "Disks" } td {
                            @if h.disk_usage.reported { @for d in &h.disk_usage.devices { (d.device) ": " (format!("{:.1} %", d.used_percent)) " " } }
                            @else { span.muted { (h.disk_usage.note.as_deref().unwrap_or("not reported")) } } } }
                    }))
                }
                Err(e) => { (failed("the VM's health", e)) }
            }
        }
    };
    layout(frame, "VMs", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_of_secret_paths() {
        assert_eq!(secret_owner("project/shop/db"), "shop");
        assert_eq!(secret_owner("service/shop/api/key"), "shop");
        assert_eq!(secret_owner("meta/cloudflare/token"), "meta");
    }

    #[test]
    fn states_are_text_and_symbol_not_only_colour() {
        let b = badge(ResourceStatus::Drifted).into_string();
        assert_eq!(
            b,
            r#"<span class="st st-drifted"><span aria-hidden="true">▲ </span>drifted</span>"#
        );
    }

    #[test]
    fn revisions_are_shortened_with_the_whole_one_in_a_tooltip() {
        let r = revision("sha256:0123456789abcdef0123").into_string();
        assert_eq!(
            r,
            r#"<code title="sha256:0123456789abcdef0123">0123456789ab</code>"#
        );
    }

    #[test]
    fn text_is_escaped() {
        let page = message_page(StatusCode::FORBIDDEN, "<script>alert(1)</script>", true);
        let html = page.into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }
}
