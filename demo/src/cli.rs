//! Command line of the demo.

use std::path::PathBuf;

#[derive(Debug, clap::Parser)]
#[command(
    name = "grpc-balancer-demo",
    about = "The L4 problem of gRPC on Kubernetes, and grpc-balancer's per-request fix, on a local control plane"
)]
pub struct Cli {
    /// Fewer calls in the phases that only illustrate (CI); the measured
    /// phases keep enough calls for their tolerances.
    #[arg(long, env = "GRPC_BALANCER_DEMO_SHORT")]
    pub short: bool,

    /// Write every phase's figures as JSON to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,

    /// Directory holding the built binaries: grpc-balancer-operator,
    /// grpc-balancer-proxy and greeter-server.
    #[arg(long, default_value = "target/debug")]
    pub bin_dir: PathBuf,

    /// The repository (for the chart's CRD).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,

    /// Use the control plane of this kubeconfig instead of starting one.
    #[arg(long, env = "GRPC_BALANCER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Keep the processes' logs in this directory (default: a temp dir,
    /// removed on success).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,

    /// No colours in the output.
    #[arg(long, env = "NO_COLOR")]
    pub no_color: bool,
}

impl Cli {
    /// Calls through the proxy in the weighted phase: at least 4,000 so a
    /// 75/25 split can be held to ±3 points.
    pub fn weighted_calls(&self) -> u64 {
        if self.short { 4_000 } else { 8_000 }
    }

    /// Calls in the phases that show where calls go.
    pub fn illustrative_calls(&self) -> u64 {
        if self.short { 400 } else { 1_000 }
    }

    /// Bidirectional streams in the stream phase.
    pub fn streams(&self) -> u64 {
        if self.short { 40 } else { 100 }
    }
}
