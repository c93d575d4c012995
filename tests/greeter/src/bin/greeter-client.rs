//! Makes greeter calls and reports which backend answered them.
//!
//! Exit status: 0 when every call succeeded, 2 when some failed, 1 when the
//! run could not start (bad arguments, no connection).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use grpc_balancer_greeter::{LoadOptions, LoadReport, Mode, run_load};

#[derive(Debug, Parser)]
#[command(about = "Calls a greeter and counts the calls per backend")]
struct Args {
    /// `host:port` of the greeter or of a proxy in front of it.
    #[arg(long)]
    target: String,
    /// Calls to make.
    #[arg(long, default_value_t = 100)]
    calls: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// HTTP/2 connections (1: every call shares one connection, as a typical
    /// gRPC client does).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// unary, stream (server streaming) or bidi.
    #[arg(long, default_value = "unary")]
    mode: Mode,
    /// Replies per stream call, requests per bidi call.
    #[arg(long, default_value_t = 10)]
    messages: u32,
    /// Metadata sent with every call, `key=value`; repeatable.
    #[arg(long = "metadata", value_parser = key_value)]
    metadata: Vec<(String, String)>,
    /// Deadline of each call in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("metadata: {text:?} is not valid: expected key=value"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let options = LoadOptions {
        concurrency: args.concurrency,
        connections: args.connections,
        mode: args.mode,
        messages_per_call: args.messages,
        metadata: args.metadata,
        call_timeout: args.timeout_ms.map(Duration::from_millis),
        ..LoadOptions::new(args.target, args.calls)
    };
    let report = match run_load(options).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("greeter-client: {}", error_chain(&error));
            return ExitCode::from(1);
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("greeter-client: {error}");
                return ExitCode::from(1);
            }
        }
    } else {
        print_text(&report);
    }
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn print_text(report: &LoadReport) {
    println!(
        "{} calls in {} ms: {} ok, {} failed",
        report.calls, report.elapsed_ms, report.ok, report.failed
    );
    for (backend, calls) in &report.by_backend {
        println!("  {backend:<20} {calls:>8}");
    }
    for (failure, calls) in &report.failure_messages {
        println!("  failed: {failure} ({calls})");
    }
    if report.split_streams > 0 {
        println!(
            "  streams answered by more than one backend: {}",
            report.split_streams
        );
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
