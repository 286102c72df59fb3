//! `supervisor serve` and `supervisor mcp` (stdio).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use rmcp::ServiceExt;

use super::common::{cli_actor, open_store};
use super::{Context, McpArgs, ServeArgs};
use crate::mcp::auth::Principal;
use crate::mcp::{Endpoint, McpServer};
use crate::ops::Runtime;
use crate::ops::runtime::VaultState;
use crate::serve::connections::{self, ConnectionLimits};
use crate::serve::http::{self, HttpConfig};
use crate::serve::reconcile::{self, LoopConfig};

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// A long-running server refuses to start with a key it cannot use (rather than failing every secret
/// call later); no key at all is fine (secret tools say how to configure one).
async fn vault_state(
    ctx: &Context,
    store: &std::sync::Arc<dyn crate::store::Store>,
) -> anyhow::Result<VaultState> {
    Ok(match super::common::vault(ctx, store.clone()).await? {
        Some(v) => VaultState::Ready(v),
        None => VaultState::NoKey,
    })
}

pub async fn serve(ctx: &Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = &ctx.settings.file.serve;
    let listen_text = args.listen.clone().unwrap_or_else(|| cfg.listen.clone());
    let listen: SocketAddr = listen_text.parse().map_err(|e| {
        anyhow::anyhow!(
            "invalid listen address `{listen_text}`: {e} (expected e.g. 127.0.0.1:8080)"
        )
    })?;
    if args.no_auth && !listen.ip().is_loopback() {
        anyhow::bail!(
            "--no-auth is only allowed on a loopback address (got {listen}); create tokens with `supervisor token create` instead"
        );
    }
    let auto_apply = args.auto_apply || cfg.auto_apply;
    let store = open_store(ctx).await?;
    let vault = vault_state(ctx, &store).await?;
    let rt = Runtime::load(ctx.settings.clone(), store, vault, auto_apply).await?;

    let nofile = connections::raise_fd_limit();
    let limits = ConnectionLimits {
        max_connections: connections::effective_max(cfg.max_connections as usize, nofile),
        header_read_timeout: Duration::from_secs(cfg.header_read_timeout_secs.max(1)),
    };
    if limits.max_connections < cfg.max_connections as usize {
        tracing::warn!(
            configured = cfg.max_connections,
            open_file_limit = nofile,
            cap = limits.max_connections,
            "max_connections lowered to fit the open-file limit (raise LimitNOFILE)"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr()?;
    let shutdown = rt.shutdown.clone();
    let app = http::router(
        rt.clone(),
        HttpConfig {
            listen: bound,
            no_auth: args.no_auth,
            allowed_hosts: cfg.allowed_hosts.clone(),
            rate_limit_per_second: cfg.rate_limit_per_second,
            sessions_per_token: cfg.sessions_per_token.max(1),
            session_idle: Duration::from_secs(cfg.session_idle_secs.max(1)),
            auth_failures_burst: cfg.auth_failures_burst.max(1),
        },
        &shutdown,
    );
    let _watcher = reconcile::watch(rt.clone(), Duration::from_millis(cfg.debounce_millis))
        .map_err(|e| anyhow::anyhow!(e))?;
    let loop_cfg = LoopConfig {
        auto_apply,
        resync: Duration::from_secs(cfg.resync_interval_secs.max(1)),
        debounce: Duration::from_millis(cfg.debounce_millis),
        leader_retry: Duration::from_secs(2),
    };
    let reconciler = tokio::spawn(reconcile::run(rt.clone(), loop_cfg, shutdown.clone()));
    let knowledge = tokio::spawn(crate::serve::knowledge::keep_indexed(
        rt.clone(),
        Duration::from_millis(cfg.debounce_millis).max(Duration::from_millis(500)),
        Duration::from_secs(cfg.resync_interval_secs.max(1)),
    ));
    eprintln!(
        "supervisor serving on http://{bound} — status page at /, /health, /metrics, /mcp/meta, /mcp/<project>{}{}",
        if args.no_auth {
            " (no auth: loopback only)"
        } else {
            ""
        },
        if auto_apply { "; auto-apply on" } else { "" }
    );
    tracing::info!(
        max_connections = limits.max_connections,
        open_file_limit = nofile,
        header_read_timeout_secs = limits.header_read_timeout.as_secs(),
        "connection limits"
    );
    let signalled = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = signalled.cancelled() => {}
        }
        // In-flight requests finish; the reconciler stops at the next change boundary.
        signalled.cancel();
    });
    let counted = rt.clone();
    connections::serve(
        listener,
        app,
        limits,
        move || counted.metrics.rejected("connection_limit"),
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = reconciler.await;
    let _ = knowledge.await;
    eprintln!("supervisor stopped");
    Ok(ExitCode::SUCCESS)
}

pub async fn mcp_stdio(ctx: &Context, args: McpArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(ctx).await?;
    let vault = vault_state(ctx, &store).await?;
    let rt = Runtime::load(ctx.settings.clone(), store, vault, false).await?;
    let endpoint = match args.project {
        Some(p) => {
            if !rt.desired().await.projects.contains_key(&p) {
                anyhow::bail!(
                    "there is no project `{p}` in {}",
                    ctx.settings.state_dir.display()
                );
            }
            Endpoint::Project(p)
        }
        None => Endpoint::Meta,
    };
    let server = McpServer::new(rt, endpoint, Principal::Local { who: cli_actor() });
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP over stdio failed to start: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("MCP over stdio stopped: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
