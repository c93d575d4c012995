//! Serves the greeter on one address (or several, each a backend of its own)
//! until SIGTERM or Ctrl-C, then prints the calls it received as one JSON
//! line on stdout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use grpc_balancer_greeter::{BackendError, BackendOptions, CallCounts, Faults, spawn_server};
use tonic::Code;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(about = "A gRPC greeter whose replies name the backend that answered")]
struct Args {
    /// Address to listen on. Repeated: one backend per address, named
    /// NAME-PORT (a benchmark's hundreds of endpoints in one process).
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// Name put in every reply.
    #[arg(long)]
    name: String,
    /// Version label put in every reply.
    #[arg(long, default_value = "v1")]
    version: String,
    /// Answer every call with this gRPC status code (number).
    #[arg(long)]
    fail_code: Option<i32>,
    /// Wait this many milliseconds before each first reply.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Send GOAWAY on connections older than this many seconds.
    #[arg(long)]
    max_connection_age_secs: Option<u64>,
    /// Seconds granted to calls in flight on shutdown.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("GREETER_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let several = args.listen.len() > 1;
    let mut backends = Vec::with_capacity(args.listen.len());
    for addr in &args.listen {
        let name = if several {
            format!("{}-{}", args.name, addr.port())
        } else {
            args.name.clone()
        };
        let mut options = BackendOptions::named(&name)
            .with_version(&args.version)
            .with_faults(Faults {
                fail_with: args.fail_code.map(|code| {
                    (
                        Code::from_i32(code),
                        "failure configured on the command line".to_owned(),
                    )
                }),
                delay: args.delay_ms.map(Duration::from_millis),
                ..Faults::default()
            });
        options.max_connection_age = args.max_connection_age_secs.map(Duration::from_secs);
        let backend = spawn_server(*addr, options).await?;
        eprintln!("greeter {name} listening on {}", backend.addr());
        backends.push((name, backend));
    }

    shutdown_signal().await?;
    let mut total = CallCounts::default();
    let mut each = serde_json::Map::new();
    for (name, backend) in backends {
        let counts = match backend.shutdown(Duration::from_secs(args.drain_secs)).await {
            Ok(counts) => counts,
            Err(BackendError::ShutdownTimeout { timeout, counts }) => {
                // The counters still matter to whoever reads them (the benchmark).
                tracing::warn!(
                    ?timeout,
                    "calls or connections were still open after the drain time"
                );
                counts
            }
            Err(error) => return Err(error).context("graceful shutdown"),
        };
        total.say_hello += counts.say_hello;
        total.say_hello_stream += counts.say_hello_stream;
        total.collect_hellos += counts.collect_hellos;
        total.chat += counts.chat;
        total.answered_ok += counts.answered_ok;
        total.answered_error += counts.answered_error;
        each.insert(name, serde_json::to_value(counts)?);
    }
    // `counts`: all backends together; `backends`: each, when there are several.
    let mut stats = serde_json::json!({
        "name": args.name,
        "version": args.version,
        "counts": total,
    });
    if several {
        stats["backends"] = serde_json::Value::Object(each);
    }
    println!("{stats}");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => Ok(()),
        interrupted = tokio::signal::ctrl_c() => interrupted.context("waiting for Ctrl-C"),
    }
}
