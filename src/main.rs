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
            let _ = e.print();
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

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
