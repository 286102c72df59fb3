//! `supervisor serve` and `supervisor mcp` (stdio).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::serve::ListenerExt;
use rmcp::ServiceExt;

use super::common::{cli_actor, open_store};
use super::{Context, McpArgs, ServeArgs};
use crate::mcp::auth::Principal;
use crate::mcp::{Endpoint, McpServer};
use crate::ops::Runtime;
use crate::ops::runtime::VaultState;
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
    eprintln!(
        "supervisor serving on http://{bound} — /health, /metrics, /mcp/meta, /mcp/<project>{}{}",
        if args.no_auth {
            " (no auth: loopback only)"
        } else {
            ""
        },
        if auto_apply { "; auto-apply on" } else { "" }
    );
    let server_shutdown = shutdown.clone();
    // TCP_NODELAY: MCP answers in a session are server-sent events written in several small pieces
    // (rmcp's priming event, then the message); with Nagle's algorithm on, the second piece waits for the
    // client's delayed ACK, adding ~40 ms to every call.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = server_shutdown.cancelled() => {}
        }
        // In-flight requests finish; the reconciler stops at the next change boundary.
        server_shutdown.cancel();
    });
    let served = server.await;
    shutdown.cancel();
    let _ = reconciler.await;
    served.map_err(|e| anyhow::anyhow!("the HTTP server failed: {e}"))?;
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
