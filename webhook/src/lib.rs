//! The mutating admission webhook that injects `grpc-balancer-proxy`.

/// Command-line settings of the webhook server; the operator flattens these
/// into its own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

/// Serves the webhook until `shutdown` resolves.
pub async fn run(
    _client: kube::Client,
    _args: Args,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    shutdown.await;
    Ok(())
}
