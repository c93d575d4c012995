//! `grpc-balancer-demo`: shows, on a real local control plane, every call of a
//! gRPC client landing on one pod behind a plain connection (the L4 problem),
//! then the same client balanced per request by grpc-balancer. `scripts/demo`
//! builds everything and runs it.

mod cli;
mod cluster;
mod http;
mod processes;
mod report;
mod scenario;
mod summary;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEMO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match scenario::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\ndemo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
