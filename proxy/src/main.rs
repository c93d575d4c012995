//! grpc-balancer-proxy binary: parse flags, start logging, run the library.

use std::process::ExitCode;

use clap::Parser;
use grpc_balancer_proxy::cli::{self, Cli, Command};
use grpc_balancer_proxy::{lifecycle_hooks, telemetry};

// musl's allocator is slow under many small allocations: see Cargo.toml.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Check { config }) => {
            let (report, ok) = cli::check(config);
            print!("{report}");
            return if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Some(Command::WaitReady { admin, timeout }) => {
            return run_hook(lifecycle_hooks::wait_ready(*admin, *timeout));
        }
        Some(Command::Sleep { duration }) => {
            let duration = *duration;
            return run_hook(async move {
                tokio::time::sleep(duration).await;
                Ok::<(), std::convert::Infallible>(())
            });
        }
        None => {}
    }
    telemetry::init(cli.run.log_format);
    let settings = match cli.run.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("grpc-balancer-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if cli.run.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.run.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grpc-balancer-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let proxy = grpc_balancer_proxy::run(settings, shutdown_signal()).await?;
        proxy.wait().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "proxy failed");
            ExitCode::FAILURE
        }
    }
}

/// Runs a lifecycle-hook subcommand on a small runtime.
fn run_hook<E: std::fmt::Display>(
    hook: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grpc-balancer-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hook) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grpc-balancer-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (the kubelet) or SIGINT (a terminal).
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
