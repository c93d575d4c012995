//! Makes greeter calls and reports which backend answered them.
//!
//! Exit status: 0 when every call succeeded, 2 when some failed, 1 when the
//! run could not start (bad arguments, no connection) or the `--post-when-done`
//! request was not answered with a 2xx.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use grpc_balancer_greeter::timeline::{TimelineOptions, TimelineWindow, run_timeline};
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
    /// Once the calls are done, POST to this `http://host:port/path` URL: how
    /// an app stops a proxy that runs as a plain container beside it (the
    /// legacy sidecar's `http://127.0.0.1:9901/shutdown`), so a Job's pod
    /// can complete.
    #[arg(long, value_parser = HttpUrl::parse)]
    post_when_done: Option<HttpUrl>,
    /// Instead of `--calls`: start this many calls per second for
    /// `--duration-s`, and print one JSON line per `--window-ms` with each
    /// backend's calls and the times of its first and last call sent.
    #[arg(long)]
    rate: Option<u32>,
    /// How long a `--rate` run lasts.
    #[arg(long, default_value_t = 3600, requires = "rate")]
    duration_s: u64,
    /// The window of a `--rate` run's report lines.
    #[arg(long, default_value_t = 1000, requires = "rate")]
    window_ms: u64,
}

/// A plain-HTTP URL: the authority to connect to and the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpUrl {
    authority: String,
    path: String,
}

impl HttpUrl {
    fn parse(text: &str) -> Result<HttpUrl, String> {
        let invalid = |why: &str| format!("{text:?} is not valid: {why}");
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| invalid("expected http://host:port/path"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| invalid("the port is missing"))?;
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        port.parse::<u16>()
            .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("the path has a space or control character"));
        }
        Ok(HttpUrl {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// POSTs an empty body to `url`; the response status, within 5 s.
async fn post(url: &HttpUrl) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&url.authority)
            .await
            .map_err(|e| format!("connecting to {}: {e}", url.authority))?;
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            url.path, url.authority
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending to {}: {e}", url.authority))?;
        let mut response = Vec::new();
        stream
            .take(64 * 1024)
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("reading from {}: {e}", url.authority))?;
        let head = String::from_utf8_lossy(&response);
        head.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("{} answered no HTTP status line", url.authority))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("{} did not answer within 5 s", url.authority))?
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
    if let Some(rate) = args.rate {
        let timeline = TimelineOptions {
            rate,
            window: Duration::from_millis(args.window_ms),
            duration: Duration::from_secs(args.duration_s),
        };
        return match run_timeline(options, timeline, print_window).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("greeter-client: {}", error_chain(&error));
                ExitCode::from(1)
            }
        };
    }
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
    if let Some(url) = &args.post_when_done {
        match post(url).await {
            Ok(status) if (200..300).contains(&status) => {}
            Ok(status) => {
                eprintln!(
                    "greeter-client: POST {}{} answered {status}",
                    url.authority, url.path
                );
                return ExitCode::from(1);
            }
            Err(error) => {
                eprintln!(
                    "greeter-client: POST {}{}: {error}",
                    url.authority, url.path
                );
                return ExitCode::from(1);
            }
        }
    }
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// One JSON line; `false` once stdout is gone (its reader left), which ends
/// the run instead of calling on for nobody.
fn print_window(window: &TimelineWindow) -> bool {
    use std::io::Write as _;
    let Ok(json) = serde_json::to_string(window) else {
        return false;
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").and_then(|()| out.flush()).is_ok()
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

#[cfg(test)]
mod tests {
    use super::HttpUrl;

    #[test]
    fn http_urls_parse() {
        let url = HttpUrl::parse("http://127.0.0.1:9901/shutdown").expect("valid");
        assert_eq!(url.authority, "127.0.0.1:9901");
        assert_eq!(url.path, "/shutdown");
        assert_eq!(
            HttpUrl::parse("http://[::1]:9901").expect("valid").path,
            "/"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (text, why) in [
            ("https://127.0.0.1:9901/shutdown", "expected http://"),
            ("127.0.0.1:9901/shutdown", "expected http://"),
            ("http://", "port is missing"),
            ("http://127.0.0.1/shutdown", "port is missing"),
            ("http://:9901/shutdown", "host is missing"),
            ("http://127.0.0.1:99999/x", "not a number"),
            ("http://127.0.0.1:9901/a b", "space or control"),
            ("http://127.0.0.1:9901/a\r\nX: y", "space or control"),
        ] {
            let error = HttpUrl::parse(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}
