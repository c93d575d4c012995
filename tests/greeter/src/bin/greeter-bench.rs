//! Streaming load for the benchmark: prints one JSON report on stdout.
//!
//! Exit status: 0 when every call succeeded with the replies it should have,
//! 1 on the first failed call or wrong reply (the error on stderr).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use grpc_balancer_greeter::stream_bench::{StreamLoad, StreamMode, run_stream_load};

#[derive(Debug, Parser)]
#[command(about = "Streaming load against a greeter: message rate, ping-pong latency, MB/s")]
struct Args {
    /// `host:port` of the greeter or of a proxy in front of it.
    #[arg(long)]
    target: String,
    /// server-stream (many small replies per SayHelloStream call), ping-pong
    /// (Chat: one request, its reply, the next), download (SayHelloStream
    /// replies of --payload-bytes) or upload (CollectHellos requests of
    /// --payload-bytes).
    #[arg(long)]
    mode: StreamMode,
    /// Calls (streams) in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections the calls share.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds during which calls (ping-pong: requests) are started; the
    /// calls in flight then finish and count.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Replies per server-stream or download call, requests per upload call.
    #[arg(long, default_value_t = 1000)]
    messages_per_call: u32,
    /// Payload bytes of each download reply or upload request.
    #[arg(long, default_value_t = 1 << 20)]
    payload_bytes: u32,
    /// Tokio worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let duration = match Duration::try_from_secs_f64(args.duration_s) {
        Ok(duration) if !duration.is_zero() => duration,
        _ => {
            eprintln!("greeter-bench: --duration-s must be a positive number of seconds");
            return ExitCode::from(1);
        }
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("greeter-bench: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let load = StreamLoad {
        target: args.target,
        mode: args.mode,
        concurrency: args.concurrency,
        connections: args.connections,
        duration,
        messages_per_call: args.messages_per_call,
        payload_bytes: args.payload_bytes,
    };
    match runtime.block_on(run_stream_load(load)) {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("greeter-bench: cannot print the report: {error}");
                ExitCode::from(1)
            }
        },
        Err(error) => {
            eprintln!("greeter-bench: {}: {error}", args.mode.name());
            ExitCode::from(1)
        }
    }
}
