//! How `apply` shows what it is doing: one JSON event per change and per step with `--json`; on a
//! terminal a spinner per long change (its current step and the elapsed time); otherwise one line
//! per event.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::Context;
use crate::engine::{ApplyEvent, render};

pub struct ApplyProgress<'a> {
    ctx: &'a Context,
    /// Spinners on stderr (a terminal, not JSON).
    spinners: bool,
    bars: HashMap<String, ProgressBar>,
}

impl<'a> ApplyProgress<'a> {
    pub fn new(ctx: &'a Context) -> Self {
        ApplyProgress {
            ctx,
            spinners: !ctx.out.json && std::io::stderr().is_terminal(),
            bars: HashMap::new(),
        }
    }

    fn bar(&mut self, address: &str) -> &ProgressBar {
        self.bars.entry(address.to_string()).or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {msg}")
            {
                bar.set_style(style);
            }
            bar.set_prefix(address.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        })
    }

    fn done(&mut self, address: &str) {
        if let Some(bar) = self.bars.remove(address) {
            bar.finish_and_clear();
        }
    }

    /// One event as one JSON line (in the output envelope).
    fn emit(&self, event: serde_json::Value) {
        let _ = self.ctx.out.json_line(&event);
    }

    pub fn on(&mut self, event: ApplyEvent<'_>) {
        let json = self.ctx.out.json;
        match event {
            ApplyEvent::Started { change } => {
                if json {
                    self.emit(
                        json!({"type": "apply_start", "address": change.address, "action": change.action}),
                    );
                } else {
                    let _ = self.ctx.out.text(&format!(
                        "{}: {}\n",
                        change.address,
                        render::action_verb(change.action, false)
                    ));
                }
            }
            ApplyEvent::Step {
                change,
                step,
                elapsed,
            } => {
                if json {
                    self.emit(json!({
                        "type": "apply_progress",
                        "address": change.address,
                        "step": step.name,
                        "detail": step.detail,
                        "elapsed_ms": elapsed.as_millis() as u64,
                    }));
                } else if self.spinners {
                    let msg = format!("{}: {}", step.name, step.detail);
                    self.bar(&change.address).set_message(msg);
                } else {
                    let _ = self.ctx.out.text(&format!(
                        "{}: [{:.1} s] {}: {}\n",
                        change.address,
                        elapsed.as_secs_f64(),
                        step.name,
                        step.detail
                    ));
                }
            }
            ApplyEvent::Finished { change, elapsed } => {
                self.done(&change.address);
                if json {
                    self.emit(
                        json!({"type": "apply_complete", "address": change.address, "action": change.action, "elapsed_ms": elapsed.as_millis() as u64}),
                    );
                } else {
                    let _ = self.ctx.out.text(&format!(
                        "{}: {} after {:.0?}\n",
                        change.address,
                        render::action_verb(change.action, true),
                        elapsed
                    ));
                }
            }
            ApplyEvent::Failed { change, error } => {
                self.done(&change.address);
                if json {
                    self.emit(
                        json!({"type": "apply_errored", "address": change.address, "error": error}),
                    );
                } else {
                    eprintln!("{}: failed: {error}", change.address);
                }
            }
        }
    }
}
