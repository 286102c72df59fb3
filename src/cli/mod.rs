//! The command line: argument definitions and dispatch. Each command lives in its own file, thin:
//! arguments in, one library call, output rendered (text or `--json`). No logic lives here that the MCP
//! tools would need too.

mod common;
mod doctor;
mod import;
mod instructions;
mod knowledge;
pub mod output;
mod plan;
mod ports;
mod progress;
mod secrets;
mod serve;
mod state;
mod status;
mod timing;
mod token;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{CONFIG_ENV, Overrides, STATE_DIR_ENV, Settings};
pub use knowledge::KnowledgeCommand;

/// Declarative desired state for a fleet of projects on cloud VMs — planned, applied, kept converged,
/// and served to AI coding agents over MCP.
#[derive(Debug, Parser)]
#[command(
    name = "supervisor",
    version,
    propagate_version = true,
    max_term_width = 110
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The desired-state directory (supervisor.yaml + projects/*.yaml).
    #[arg(long = "state", value_name = "DIR", env = STATE_DIR_ENV, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Database URL: postgres://… for PostgreSQL; default: SQLite in .supervisor/ next to the state
    /// directory.
    #[arg(
        long,
        value_name = "URL",
        env = "DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Print machine-readable JSON (a versioned shape per command) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The per-host configuration file (default: ./supervisor.toml when it exists).
    #[arg(long = "config", value_name = "FILE", env = CONFIG_ENV, global = true)]
    pub config_file: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace). LOG_LEVEL overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output (errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
}

impl GlobalArgs {
    pub fn verbosity(&self) -> i8 {
        (self.verbose.min(3) as i8) - (self.quiet.min(1) as i8)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a state directory with a commented example project.
    Init {
        /// Where to create it (default: the --state directory).
        dir: Option<PathBuf>,
    },
    /// Parse and check every state file; errors point at file:line:col.
    Validate,
    /// Rewrite state files in canonical form (the form machine edits produce).
    Fmt {
        /// Only report files that are not in canonical form (exit 1 if any).
        #[arg(long)]
        check: bool,
    },
    /// Show what apply would change, provider by provider.
    Plan(PlanArgs),
    /// Make reality match the desired state (or carry out a saved plan).
    Apply(ApplyArgs),
    /// Per resource: in sync, pending, drifted or failed; last apply and its revision.
    Status,
    /// Serve /health, /metrics and the MCP endpoints, and keep reality converged.
    Serve(ServeArgs),
    /// Serve one MCP endpoint over stdio (for `claude mcp add … -- supervisor mcp …`).
    Mcp(McpArgs),
    /// The encrypted secret vault.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// The port registry.
    #[command(subcommand)]
    Ports(PortsCommand),
    /// Task timers and estimates.
    #[command(subcommand)]
    Timing(TimingCommand),
    /// Project knowledge: index, search, learn, list, remove.
    #[command(subcommand)]
    Knowledge(KnowledgeCommand),
    /// Agent instructions (CLAUDE.md).
    #[command(subcommand)]
    Instructions(InstructionsCommand),
    /// Adopt existing records or allocations into state and registry.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Bearer tokens for the MCP endpoints.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Compute Engine VMs listed in supervisor.yaml: their state and recent use.
    #[command(subcommand)]
    Vm(VmCommand),
    /// What is configured, reachable and missing.
    Doctor,
    /// Print the JSON Schema of the state files (for editors' yaml-language-server).
    Schema,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Save the plan to FILE, to be carried out later by `apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 1 on error, 2 when there are changes.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Only this project's resources.
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Only resources whose address starts with KIND[/NAME…], e.g. ports/consilio.
    #[arg(long, value_name = "KIND/NAME")]
    pub only: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved by `plan --out`; refused when reality or desired state changed since.
    pub plan_file: Option<PathBuf>,
    /// Apply without asking for confirmation (required when not on a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// Allow deleting more than 30 % of the managed objects of a kind.
    #[arg(long)]
    pub force: bool,
    /// Allow disruptive changes (a VM resize stops the VM).
    #[arg(long)]
    pub allow_disruptive: bool,
    /// How long to wait for another apply to finish (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub lock_timeout: u64,
    /// Adopt an existing, unmanaged DNS record at HOST instead of refusing.
    #[arg(long, value_name = "HOST")]
    pub adopt: Vec<String>,
    /// Only this project's resources.
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Only resources whose address starts with KIND[/NAME…].
    #[arg(long, value_name = "KIND/NAME")]
    pub only: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080, or [serve] listen in supervisor.toml).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Apply safe plans automatically.
    #[arg(long)]
    pub auto_apply: bool,
    /// Serve MCP without bearer tokens (only allowed on a loopback address).
    #[arg(long)]
    pub no_auth: bool,
    /// Read the encryption key from FILE instead of SECRETS_ENCRYPTION_KEY.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct McpArgs {
    /// Serve the endpoint of project P.
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Serve the meta endpoint (every project).
    #[arg(long)]
    pub meta: bool,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Read the encryption key from FILE (64 hex characters) instead of SECRETS_ENCRYPTION_KEY.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print a secret's value (alone, for `$(supervisor secrets get …)`).
    Get {
        path: String,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Store a secret; the value is read from stdin or --value-file, never from the command line.
    Set {
        path: String,
        /// Read the value from FILE instead of stdin.
        #[arg(long, value_name = "FILE")]
        value_file: Option<PathBuf>,
        #[arg(long)]
        description: Option<String>,
        /// When the secret expires (RFC 3339, or a number of days such as 90d).
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// Flag the secret as needing rotation.
        #[arg(long)]
        rotation_required: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// List secrets (metadata only, never values).
    List {
        #[arg(long, value_name = "S")]
        scope: Option<String>,
        #[arg(long, value_name = "P")]
        project: Option<String>,
    },
    /// Delete a secret. With a key configured, the key is verified first (a wrong key deletes nothing).
    Delete {
        path: String,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Re-encrypt every secret with a new key, in one transaction.
    RotateKey {
        /// The new key (64 hex characters).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Report credentials found in files (file:line, kind; values masked).
    Scan {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Find credentials in text on stdin and suggest a vault path for each.
    Detect {
        /// Suggest paths under this project.
        #[arg(long, value_name = "P")]
        project: Option<String>,
    },
    /// The access log: who read or wrote which secret, when, with what outcome.
    Audit {
        #[arg(long, value_name = "PATH")]
        path: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Import secrets from a database of the original service (16-byte IV ‖ tag ‖ data layout).
    ImportLegacy {
        /// The legacy database URL.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The legacy key file (64 hex characters).
        #[arg(long, value_name = "FILE")]
        legacy_key_file: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortsCommand {
    /// Allocated ports (from the registry).
    List {
        #[arg(long, value_name = "P")]
        project: Option<String>,
    },
    /// Compare the registry with sockets listening on this host.
    Audit,
}

#[derive(Debug, Subcommand)]
pub enum TimingCommand {
    /// Start a task timer (prints its id and the supervisor's estimate).
    Start(TimingStartArgs),
    /// Complete a running task timer (prints its duration and the estimation error).
    Complete(TimingCompleteArgs),
    /// Estimate a task from similar completed ones, or every line of --batch FILE.jsonl.
    Estimate(TimingEstimateArgs),
    /// Statistics per task type and project: count, success rate, mean, median, p95, min, max.
    Stats {
        #[arg(long = "type", value_name = "TYPE")]
        task_type: Option<String>,
        #[arg(long, value_name = "P")]
        project: Option<String>,
    },
    /// Task timers, newest first.
    List(TimingListArgs),
    /// Import completed tasks from a JSONL file: all or nothing, idempotent on task_id.
    Import {
        /// Lines {task_id, description, task_type, project, duration_seconds[, started_at,
        /// completed_at, estimated_seconds, success]}; `-` reads stdin.
        file: PathBuf,
    },
    /// Parallel groups: tasks run by several agents at once.
    #[command(subcommand)]
    Group(TimingGroupCommand),
}

#[derive(Debug, Args)]
pub struct TimingStartArgs {
    /// What the task is (similar past tasks are found by these words).
    #[arg(long, short = 'd')]
    pub description: String,
    /// The kind of task, e.g. feature, bugfix, refactor.
    #[arg(long = "type", value_name = "TYPE")]
    pub task_type: String,
    #[arg(long, value_name = "P")]
    pub project: String,
    /// Your id for the task (default: generated).
    #[arg(long, value_name = "ID")]
    pub task_id: Option<String>,
    /// The agent type, e.g. claude-code.
    #[arg(long)]
    pub agent: Option<String>,
    /// The model, e.g. claude-opus-4.
    #[arg(long)]
    pub model: Option<String>,
    /// simple, medium or complex.
    #[arg(long)]
    pub complexity: Option<String>,
    /// The task this one is part of.
    #[arg(long, value_name = "ID")]
    pub parent: Option<String>,
    /// Your own estimate (seconds, or 15m, 2h, 1h30m).
    #[arg(long, value_name = "DURATION")]
    pub estimate: Option<String>,
    /// The parallel group the task runs in.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
}

#[derive(Debug, Args)]
pub struct TimingCompleteArgs {
    pub task_id: String,
    /// The task did not succeed.
    #[arg(long)]
    pub failed: bool,
    /// Why it failed.
    #[arg(long, value_name = "MESSAGE")]
    pub error: Option<String>,
    /// What was done, briefly.
    #[arg(long)]
    pub summary: Option<String>,
    /// Lines of code changed.
    #[arg(long, value_name = "N")]
    pub lines: Option<i64>,
    /// Files changed.
    #[arg(long, value_name = "N")]
    pub files: Option<i64>,
    /// Tests written.
    #[arg(long, value_name = "N")]
    pub tests: Option<i64>,
    /// Tokens used.
    #[arg(long, value_name = "N")]
    pub tokens: Option<i64>,
    /// Retries.
    #[arg(long, value_name = "N")]
    pub retries: Option<i64>,
    /// The real working time when it differs from the time since start (seconds, or 15m, 2h).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
}

#[derive(Debug, Args)]
pub struct TimingEstimateArgs {
    /// What the task is.
    #[arg(long, short = 'd', required_unless_present = "batch")]
    pub description: Option<String>,
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "batch")]
    pub task_type: Option<String>,
    #[arg(long, value_name = "P", required_unless_present = "batch")]
    pub project: Option<String>,
    /// Your own estimate, calibrated against the history of estimates vs actual durations.
    #[arg(long, value_name = "DURATION")]
    pub own_estimate: Option<String>,
    /// Estimate every line {task_id, description, task_type, project[, agent_estimate_seconds]} of
    /// FILE (`-`: stdin); with --json, one JSON line per task.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["description", "task_type", "project", "own_estimate"])]
    pub batch: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TimingListArgs {
    /// Only running timers.
    #[arg(long)]
    pub running: bool,
    /// Only running timers older than the abandoned age.
    #[arg(long)]
    pub abandoned: bool,
    /// The abandoned age (default: [timing] abandoned_after_secs in supervisor.toml, else 24h).
    #[arg(long, value_name = "DURATION")]
    pub abandoned_after: Option<String>,
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

#[derive(Debug, Subcommand)]
pub enum TimingGroupCommand {
    /// Start a parallel group.
    Start {
        #[arg(long, short = 'd')]
        description: String,
        #[arg(long, value_name = "P")]
        project: String,
        /// Your id for the group (default: generated).
        #[arg(long, value_name = "ID")]
        group_id: Option<String>,
        /// The tasks that run in parallel (comma-separated or repeated).
        #[arg(long = "task", value_name = "ID", value_delimiter = ',')]
        tasks: Vec<String>,
        /// How many agents work in parallel (default: the number of tasks).
        #[arg(long, value_name = "N")]
        agents: Option<i64>,
        /// How long the tasks would take one after another (default at completion: the sum of their
        /// durations).
        #[arg(long, value_name = "DURATION")]
        sequential_estimate: Option<String>,
    },
    /// Complete a parallel group whose tasks have all completed.
    Complete { group_id: String },
}

#[derive(Debug, Subcommand)]
pub enum InstructionsCommand {
    /// Print a project's (or the meta supervisor's) CLAUDE.md section, assembled from its layers.
    Render {
        /// The project.
        #[arg(required_unless_present = "meta", conflicts_with = "meta")]
        project: Option<String>,
        /// The meta supervisor's section (core + meta layers + the fleet's facts).
        #[arg(long)]
        meta: bool,
        /// Print the whole CLAUDE.md as apply would write it (the user's text outside the markers
        /// included), not only the supervisor's section.
        #[arg(long)]
        file: bool,
    },
    /// Draft a project's instruction layer from its folder (languages, build/test/lint commands,
    /// what it runs); prints it, or writes it into a project's state file with --project.
    Adapt {
        /// The project folder to inspect.
        path: PathBuf,
        /// Write the draft as this project's `instructions:` (refused over hand-written ones).
        #[arg(long, value_name = "P")]
        project: Option<String>,
        /// Replace hand-written instructions.
        #[arg(long, requires = "project")]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Adopt existing DNS records and tunnel ingress rules for the hostnames in state/, and write
    /// hostnames that already point at the tunnel into the services that hold their ports. Changes
    /// nothing at Cloudflare.
    Cloudflare {
        /// How long to wait for a running apply to finish (seconds).
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        lock_timeout: u64,
    },
    /// Adopt existing port allocations.
    Ports,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Status, machine type, CPUs, memory, internal and external IP, disks.
    Get {
        /// The VM's name in supervisor.yaml.
        name: String,
    },
    /// CPU (average, max, current) from Cloud Monitoring; memory and disk use when the Ops Agent
    /// reports them (otherwise "not reported").
    Health {
        /// The VM's name in supervisor.yaml.
        name: String,
        /// How far back to look, in minutes (1 to 10080).
        #[arg(long, default_value_t = 60, value_name = "N")]
        minutes: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once.
    Create {
        /// A token valid on every endpoint.
        #[arg(long, conflicts_with = "project", required_unless_present = "project")]
        meta: bool,
        /// A token valid only on /mcp/P.
        #[arg(long, value_name = "P")]
        project: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List tokens (ids and scopes, never the tokens).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

/// Everything a command needs: resolved settings and the output mode.
pub struct Context {
    pub settings: Settings,
    pub out: output::Output,
}

fn not_implemented(command: &str) -> anyhow::Result<ExitCode> {
    eprintln!("not implemented yet: {command}");
    Ok(ExitCode::from(1))
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let key_file = match &cli.command {
        Command::Serve(a) => a.key_file.clone(),
        _ => None,
    };
    let settings = Settings::resolve(Overrides {
        state_dir: cli.global.state_dir.clone(),
        database_url: cli.global.database_url.clone(),
        config_file: cli.global.config_file.clone(),
        key_file,
    })?;
    let ctx = Context {
        settings,
        out: output::Output::new(cli.global.json),
    };
    match cli.command {
        Command::Doctor => doctor::run(&ctx).await,
        Command::Init { dir } => state::init(&ctx, dir),
        Command::Validate => state::validate(&ctx),
        Command::Fmt { check } => state::fmt(&ctx, check),
        Command::Plan(args) => plan::plan(&ctx, args).await,
        Command::Apply(args) => plan::apply(&ctx, args).await,
        Command::Status => status::run(&ctx).await,
        Command::Serve(args) => serve::serve(&ctx, args).await,
        Command::Mcp(args) => serve::mcp_stdio(&ctx, args).await,
        Command::Secrets(command) => secrets::run(&ctx, command).await,
        Command::Ports(PortsCommand::List { project }) => ports::list(&ctx, project).await,
        Command::Ports(PortsCommand::Audit) => ports::audit(&ctx).await,
        Command::Timing(command) => timing::run(&ctx, command).await,
        Command::Knowledge(cmd) => knowledge::run(&ctx, cmd).await,
        Command::Instructions(cmd) => instructions::run(&ctx, cmd).await,
        Command::Import(ImportCommand::Cloudflare { lock_timeout }) => {
            import::cloudflare(&ctx, lock_timeout).await
        }
        Command::Import(ImportCommand::Ports) => not_implemented("import ports"),
        Command::Token(cmd) => token::run(&ctx, cmd).await,
        Command::Vm(VmCommand::Get { name }) => vm::get(&ctx, &name).await,
        Command::Vm(VmCommand::Health { name, minutes }) => vm::health(&ctx, &name, minutes).await,
        Command::Schema => state::schema(&ctx),
    }
}
