//! `cluster-dns`: the test cluster DNS server as a process, for the demo.
//!
//! Answers A queries for headless Services from their EndpointSlices; see
//! `grpc_balancer_test_support::cluster_dns`. Uses `$KUBECONFIG` (or in-cluster config).

use std::net::SocketAddr;

use clap::Parser;
use grpc_balancer_test_support::cluster_dns::ClusterDns;

#[derive(Parser, Debug)]
#[command(about = "Answers <svc>.<ns>.svc.cluster.local A queries from EndpointSlices")]
struct Args {
    /// UDP address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let dns = ClusterDns::start_on(client, args.listen).await?;
    // Stdout carries only the address so scripts can read it.
    println!("{}", dns.addr());
    tokio::select! {
        _ = dns.run_forever() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
