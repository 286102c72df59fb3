use std::process::ExitCode;

use clap::Parser;

use supervisor::cli::{self, Cli};
use supervisor::logging;
use supervisor::secrets::detector;

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process: reqwest, sqlx and gcp_auth must agree, or the first
    // TLS handshake panics.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            print_usage_error(&e);
            // --help and --version are not errors; usage errors exit 1 (2 means "changes present").
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    logging::init(cli.global.verbosity(), logging::LogFormat::from_env());

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors pass through the detector too: a credential must not leak even through a message
            // built by a library.
            eprintln!("{}", detector::redact(&format!("error: {e:#}")));
            ExitCode::from(1)
        }
    }
}

/// Prints clap's error, except that an unexpected argument is never repeated: it may be a secret typed
/// where it does not belong (`secrets set PATH VALUE`), and the terminal, shell history aside, should not
/// echo it back into logs and scrollback. Flags are shown by name only (`--value`, not `--value=…`).
fn print_usage_error(e: &clap::Error) {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let invalid = match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (
            ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand,
            Some(ContextValue::String(a)),
        ) => a.clone(),
        _ => {
            let _ = e.print();
            return;
        }
    };
    let what = if invalid.starts_with('-') {
        let flag = invalid.split('=').next().unwrap_or("");
        format!("unexpected argument '{flag}' found")
    } else {
        "unexpected argument found (not repeated here, in case it is a secret value)".to_string()
    };
    let mut text = format!("error: {what}\n");
    match e.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(s)) => {
            text.push_str(&format!("\n  tip: a similar argument exists: '{s}'\n"))
        }
        Some(ContextValue::Strings(v)) if !v.is_empty() => text.push_str(&format!(
            "\n  tip: similar arguments exist: '{}'\n",
            v.join("', '")
        )),
        _ => {}
    }
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let secrets_set = args
        .iter()
        .position(|a| a == "secrets")
        .is_some_and(|i| args[i + 1..].iter().any(|a| a == "set"));
    if secrets_set {
        text.push_str(
            "\n  tip: `secrets set` reads the value from stdin or --value-file, never from the command line\n",
        );
    }
    if let Some(ContextValue::StyledStr(usage)) = e.get(ContextKind::Usage) {
        text.push_str(&format!("\n{usage}\n"));
    }
    text.push_str("\nFor more information, try '--help'.\n");
    eprint!("{text}");
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
