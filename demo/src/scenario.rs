//! The demo, step by step. Every number printed comes from real calls made by
//! a real gRPC client to real greeter processes, through the real proxy
//! configured by the real operator against a real kube-apiserver.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use grpc_balancer_crds::annotations;
use grpc_balancer_greeter::{LoadOptions, LoadReport, Mode, run_load};
use grpc_balancer_test_support::ControlPlane;
use grpc_balancer_test_support::cluster_dns::ClusterDns;
use grpc_balancer_test_support::control_plane::client_for;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::cluster;
use crate::http;
use crate::processes::Process;
use crate::report::{Style, percent, print_phase};
use crate::summary::{Phase, Summary};

/// Namespace of the backends, the `GrpcBalancing` and the client pod.
const NS: &str = "demo";
/// Namespace the operator keeps its webhook certificate in.
const SYSTEM_NS: &str = "grpc-balancer-system";
const BALANCING: &str = "greeter";
/// Kubernetes version the chart is rendered for (that of the control plane).
const KUBE_VERSION: &str = "1.34.4";
const GRPC_PORT: u16 = 50051;
/// Calls in flight at once, all over ONE HTTP/2 connection, like one gRPC
/// channel of a real client.
const CONCURRENCY: usize = 8;
/// Log filter variable of the proxy.
const PROXY_LOG_ENV: &str = "GRPC_BALANCER_LOG";

/// A greeter backend: its pod, version and loopback address.
#[derive(Debug, Clone)]
struct Backend {
    pod: String,
    version: String,
    ip: Ipv4Addr,
}

impl Backend {
    fn new(pod: &str, version: &str, last_octet: u8) -> Backend {
        Backend {
            pod: pod.to_owned(),
            version: version.to_owned(),
            ip: Ipv4Addr::new(127, 0, 0, last_octet),
        }
    }
    fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, GRPC_PORT))
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let style = Style::new(cli.no_color);
    let started = Instant::now();
    let (log_dir, keep_logs) = match &cli.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            (dir.clone(), true)
        }
        None => (
            std::env::temp_dir().join(format!("grpc-balancer-demo.{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&log_dir)?;

    style.heading(1, "A local Kubernetes control plane");
    let control_plane = match &cli.kubeconfig {
        Some(path) => ControlPlane::existing(path.clone())?,
        None => ControlPlane::start_owned().await.context(
            "starting the control plane (scripts/control-plane install builds it the first time)",
        )?,
    };
    let client = client_for(control_plane.kubeconfig()).await?;
    let version = client.apiserver_version().await?;
    style.step(&format!(
        "kube-apiserver {} with etcd and kube-controller-manager (no kubelet: the demo plays it)",
        version.git_version
    ));
    style.note(&format!(
        "KUBECONFIG={}",
        control_plane.kubeconfig().display()
    ));

    let mut demo = Demo {
        cli: &cli,
        style,
        client: client.clone(),
        kubeconfig: control_plane.kubeconfig().to_path_buf(),
        log_dir: log_dir.clone(),
        processes: Vec::new(),
        dns: None,
        summary: Summary::default(),
        versions: BTreeMap::new(),
    };
    let outcome = tokio::select! {
        outcome = demo.run() => outcome,
        signal = shutdown_signal() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    demo.summary.total_elapsed_ms = started.elapsed().as_millis() as u64;
    if outcome.is_ok()
        && let Some(path) = &cli.summary
    {
        let json = serde_json::to_string_pretty(&demo.summary)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }

    // Cleanup of everything the demo started, whatever happened above.
    println!();
    demo.stop_processes().await;
    if control_plane.started_here() {
        if let Err(error) = control_plane.down().await {
            eprintln!("stopping the control plane: {error:#}");
        }
    } else {
        for ns in [NS, SYSTEM_NS] {
            if let Err(error) = cluster::delete_namespace(&client, ns).await {
                eprintln!("{error:#}");
            }
        }
    }
    match &outcome {
        Ok(()) if !keep_logs => {
            let _ = std::fs::remove_dir_all(&log_dir);
        }
        _ => println!("  logs of the demo's processes: {}", log_dir.display()),
    }
    style.step(&format!(
        "cleaned up: processes stopped{} ({:.0} s in all)",
        if control_plane.started_here() {
            ", control plane removed"
        } else {
            ", namespaces deleted"
        },
        started.elapsed().as_secs_f64()
    ));
    outcome
}

struct Demo<'a> {
    cli: &'a Cli,
    style: Style,
    client: Client,
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    processes: Vec<Process>,
    dns: Option<ClusterDns>,
    summary: Summary,
    /// Version of every backend ever started, by pod name.
    versions: BTreeMap<String, String>,
}

impl Demo<'_> {
    async fn run(&mut self) -> anyhow::Result<()> {
        let style = self.style;
        let v1a = Backend::new("greeter-v1-a", "v1", 11);
        let v1b = Backend::new("greeter-v1-b", "v1", 12);
        let v2a = Backend::new("greeter-v2-a", "v2", 13);
        let v1c = Backend::new("greeter-v1-c", "v1", 14);

        style.heading(
            2,
            "grpc-balancer's operator and webhook, as local processes",
        );
        self.start_operator().await?;

        style.heading(3, "Three greeter backend pods: v1 ×2, v2 ×1");
        cluster::create_namespace(&self.client, NS).await?;
        for backend in [&v1a, &v1b, &v2a] {
            self.start_backend(backend).await?;
        }

        style.heading(4, "A GrpcBalancing: 75 % of the calls to v1, 25 % to v2");
        let listener_port = free_port()?;
        self.apply_balancing(listener_port).await?;

        style.heading(
            5,
            "An annotated client pod gets the proxy as a native sidecar",
        );
        self.show_injection().await?;

        style.heading(6, "The proxy, running the config the operator rendered");
        let proxy = SocketAddr::from((Ipv4Addr::LOCALHOST, listener_port));
        self.start_proxy(proxy, 3).await?;

        style.heading(
            7,
            "Without grpc-balancer: one HTTP/2 connection to the Service",
        );
        style.note(
            "A ClusterIP Service balances connections, not calls: kube-proxy picked one pod\n\
             when the client connected, and every call of that connection goes there.",
        );
        let report = load(
            &v1a.addr().to_string(),
            self.cli.illustrative_calls(),
            Mode::Unary,
        )
        .await?;
        self.record("direct", &report);

        style.heading(
            8,
            "With grpc-balancer: the same client, calls balanced per request",
        );
        style.note(&format!(
            "The client dials the proxy on 127.0.0.1:{listener_port} over ONE connection; the proxy picks a backend per call."
        ));
        let report = load(&proxy.to_string(), self.cli.weighted_calls(), Mode::Unary).await?;
        self.record("proxy", &report);
        let v1 = self.summary.phases["proxy"]
            .by_version
            .get("v1")
            .copied()
            .unwrap_or(0);
        style.note(&format!(
            "v1 got {:.1} % of the calls (asked: 75 %); round robin within v1.",
            percent(v1, report.ok)
        ));

        style.heading(9, "A stream stays on one backend");
        let mut options = LoadOptions::new(proxy.to_string(), self.cli.streams());
        options.mode = Mode::Bidi;
        options.messages_per_call = 20;
        options.concurrency = 4;
        let report = run_load(options).await?;
        self.record("stream", &report);
        style.note(&format!(
            "{} bidirectional streams of 20 messages; streams split over several backends: {}",
            report.calls, report.split_streams
        ));

        style.heading(10, "Scale out: a fourth backend pod (v1) becomes Ready");
        self.scale_out(&v1c, proxy).await?;

        style.heading(
            11,
            "Scale in: a backend pod is deleted while calls keep flowing",
        );
        self.scale_in(&v1b, proxy).await?;

        style.heading(12, "Summary");
        self.print_recap();
        Ok(())
    }

    async fn start_operator(&mut self) -> anyhow::Result<()> {
        let crd = self
            .cli
            .repo
            .join("charts/grpc-balancer/crds/grpcbalancing.yaml");
        let name = cluster::install_crd(&self.client, &crd).await?;
        self.style
            .step(&format!("CRD {name} installed from the chart"));
        cluster::create_namespace(&self.client, SYSTEM_NS).await?;

        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let webhook = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let discovery = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let url = format!("https://{webhook}/mutate");
        // The chart's own MutatingWebhookConfiguration, pointed at the local
        // webhook by its `webhook.url` value; the operator then does what it
        // does in a cluster: certificate in a Secret, caBundle patched.
        let yaml = self.render_chart_webhook_configuration(&url).await?;
        let mwc = cluster::apply_webhook_configuration(&self.client, &yaml).await?;
        self.style.step(&format!(
            "the chart's MutatingWebhookConfiguration {mwc} applied, with webhook.url={url}"
        ));
        let args: Vec<String> = vec![
            format!("--metrics-listen={metrics}"),
            format!("--webhook-listen={webhook}"),
            format!("--discovery-listen={discovery}"),
            format!("--webhook-namespace={SYSTEM_NS}"),
            format!("--webhook-configuration={mwc}"),
            format!("--leader-election-namespace={SYSTEM_NS}"),
        ];
        let program = self.cli.bin_dir.join("grpc-balancer-operator");
        let kubeconfig = self.kubeconfig.clone();
        let envs = [
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("RUST_LOG", OsStr::new("info")),
        ];
        let process = Process::spawn("operator", &program, &args, &envs, &self.log_dir)?;
        self.processes.push(process);
        let ready = format!("http://{metrics}/readyz");
        self.wait_for("the operator's /readyz", Duration::from_secs(60), || {
            http::expect_ok(&ready)
        })
        .await?;
        self.style.step(&format!(
            "operator running: controller, leader election, metrics on {metrics}"
        ));
        let client = self.client.clone();
        self.wait_for(
            "the operator to patch the caBundle",
            Duration::from_secs(30),
            || {
                let client = client.clone();
                let mwc = mwc.clone();
                async move {
                    anyhow::ensure!(
                        cluster::webhook_ca_bundle_set(&client, &mwc).await?,
                        "no caBundle yet"
                    );
                    Ok(())
                }
            },
        )
        .await?;
        self.style.step(&format!(
            "webhook serving {url}; its self-signed CA is in the caBundle"
        ));
        Ok(())
    }

    /// `helm template` of the chart's MutatingWebhookConfiguration, released
    /// as `grpc-balancer` in [`SYSTEM_NS`] (so that namespace is excluded).
    async fn render_chart_webhook_configuration(&self, url: &str) -> anyhow::Result<String> {
        let helm = grpc_balancer_test_support::control_plane::tool_path()
            .into_iter()
            .map(|dir| dir.join("helm"))
            .find(|path| path.is_file())
            .context("helm is not installed; run scripts/control-plane install")?;
        let chart = self.cli.repo.join("charts/grpc-balancer");
        let out = tokio::process::Command::new(&helm)
            .arg("template")
            .arg("grpc-balancer")
            .arg(&chart)
            .args(["--namespace", SYSTEM_NS])
            .args(["--kube-version", KUBE_VERSION])
            .args(["--show-only", "templates/mutatingwebhookconfiguration.yaml"])
            .arg("--set")
            .arg(format!("webhook.url={url}"))
            .output()
            .await
            .with_context(|| format!("running {}", helm.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn start_backend(&mut self, backend: &Backend) -> anyhow::Result<()> {
        cluster::create_backend_pod(&self.client, NS, &backend.pod, &backend.version, GRPC_PORT)
            .await?;
        let program = self.cli.bin_dir.join("greeter-server");
        let args = [
            "--listen".to_owned(),
            backend.addr().to_string(),
            "--name".to_owned(),
            backend.pod.clone(),
            "--version".to_owned(),
            backend.version.clone(),
        ];
        let process = Process::spawn(&backend.pod, &program, &args, &[], &self.log_dir)?;
        self.processes.push(process);
        self.versions
            .insert(backend.pod.clone(), backend.version.clone());
        let target = backend.addr().to_string();
        self.wait_for(
            &format!("{} to answer", backend.pod),
            Duration::from_secs(20),
            || {
                let target = target.clone();
                async move {
                    let report = run_load(LoadOptions::new(target, 1)).await?;
                    anyhow::ensure!(report.ok == 1, "no answer yet");
                    Ok(())
                }
            },
        )
        .await?;
        // Ready only once the process answers, as a readiness probe would.
        cluster::set_running(&self.client, NS, &backend.pod, backend.ip).await?;
        self.style.step(&format!(
            "pod {:<13} version {}  Running on {}  (greeter-server process)",
            backend.pod,
            backend.version,
            backend.addr()
        ));
        Ok(())
    }

    async fn apply_balancing(&mut self, listener_port: u16) -> anyhow::Result<()> {
        let weights = [("v1", 75u32), ("v2", 25u32)];
        let object = json!({
            "apiVersion": "grpcbalancer.io/v1alpha1",
            "kind": "GrpcBalancing",
            "metadata": { "name": BALANCING, "namespace": NS },
            "spec": {
                "selector": { "app": "greeter" },
                "port": "grpc",
                "listenerPort": listener_port,
                "policy": { "kind": "round_robin" },
                "subsets": weights.iter().map(|(v, w)| json!({
                    "name": v, "labels": { "version": v }, "weight": w,
                })).collect::<Vec<_>>(),
                // Quick re-resolution keeps the scale-out phase short.
                "dnsRefreshInterval": "1s",
            },
        });
        self.summary.weights = weights.iter().map(|(v, w)| (v.to_string(), *w)).collect();
        cluster::apply_balancing(&self.client, NS, &object).await?;
        let yaml = serde_yaml::to_string(&object["spec"])?;
        self.style.note(&format!("spec:\n{}", indent(&yaml, "  ")));

        let client = self.client.clone();
        let status = self
            .wait_for(
                "the GrpcBalancing to be Ready with 2 + 1 endpoints",
                Duration::from_secs(60),
                || {
                    let client = client.clone();
                    async move {
                        let status = cluster::balancing_status(&client, NS, BALANCING).await?;
                        let ready = condition(&status, "Ready");
                        let endpoints = ready_endpoints(&status);
                        let want = BTreeMap::from([("v1".to_owned(), 2), ("v2".to_owned(), 1)]);
                        if ready.as_deref() == Some("True") && endpoints == want {
                            Ok(status)
                        } else {
                            Err(anyhow::anyhow!(
                                "Ready={ready:?}, ready endpoints {endpoints:?}"
                            ))
                        }
                    }
                },
            )
            .await?;
        self.style
            .step("status: Ready (reconciled by the operator)");
        for subset in status["subsets"].as_array().into_iter().flatten() {
            self.style.note(&format!(
                "subset {:<4} headless Service {:<22} ready endpoints {}",
                subset["name"].as_str().unwrap_or("?"),
                subset["service"].as_str().unwrap_or("?"),
                subset["readyEndpoints"]
            ));
        }
        Ok(())
    }

    async fn show_injection(&mut self) -> anyhow::Result<()> {
        let pod = cluster::create_client_pod(&self.client, NS, "greeter-client").await?;
        let sidecar = injected_sidecar(&pod).context(
            "the webhook did not inject grpc-balancer-proxy into the annotated pod (see the operator log)",
        )?;
        self.style.step(&format!(
            "pod greeter-client annotated {}: \"true\"",
            annotations::INJECT
        ));
        let restart = sidecar["restartPolicy"]
            .as_str()
            .unwrap_or("(none: plain container)");
        self.style.note(&format!(
            "injected container  {}\nimage               {}\nrestartPolicy       {restart}  (native sidecar: ready before the app, stops after it)\nstartupProbe        {}\nsecurityContext     {}",
            sidecar["name"].as_str().unwrap_or("?"),
            sidecar["image"].as_str().unwrap_or("?"),
            sidecar["startupProbe"]["httpGet"]["path"].as_str().map_or("(none)".to_owned(), |p| format!("GET {p}")),
            compact_security_context(&sidecar["securityContext"]),
        ));
        let app_env = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.env.as_ref())
            .into_iter()
            .flatten()
            .filter(|e| e.name.starts_with("GRPC_BALANCER_"))
            .map(|e| format!("{}={}", e.name, e.value.as_deref().unwrap_or("")))
            .collect::<Vec<_>>();
        if !app_env.is_empty() {
            self.style
                .note(&format!("app env             {}", app_env.join(" ")));
        }
        self.summary.injected_sidecar = Some(sidecar);
        Ok(())
    }

    async fn start_proxy(&mut self, listener: SocketAddr, backends: usize) -> anyhow::Result<()> {
        let config = cluster::proxy_config(&self.client, NS).await?;
        let config_path = self.log_dir.join("proxy-config.yaml");
        std::fs::write(&config_path, &config)?;
        self.style.step(&format!(
            "ConfigMap {} rendered by the operator:",
            grpc_balancer_crds::config::CONFIG_MAP_NAME
        ));
        self.style.note(&indent(config.trim_end(), "  "));

        // The cluster DNS stand-in answers the headless Services' names from
        // their EndpointSlices, as CoreDNS would.
        let dns = ClusterDns::start(self.client.clone()).await?;
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let args = [
            "--config".to_owned(),
            config_path.display().to_string(),
            "--dns-server".to_owned(),
            dns.addr().to_string(),
            "--admin".to_owned(),
            admin.to_string(),
        ];
        self.dns = Some(dns);
        let program = self.cli.bin_dir.join("grpc-balancer-proxy");
        let envs = [(PROXY_LOG_ENV, OsStr::new("info"))];
        let process = Process::spawn("proxy", &program, &args, &envs, &self.log_dir)?;
        self.processes.push(process);
        let ready = format!("http://{admin}/ready");
        self.wait_for("the proxy's /ready", Duration::from_secs(30), || {
            http::expect_ok(&ready)
        })
        .await?;
        let target = listener.to_string();
        self.wait_for(
            &format!("the proxy to reach all {backends} backends"),
            Duration::from_secs(30),
            || {
                let target = target.clone();
                async move {
                    let report = load(&target, 60, Mode::Unary).await?;
                    anyhow::ensure!(
                        report.failed == 0 && report.by_backend.len() == backends,
                        "{} failed, backends reached: {:?}",
                        report.failed,
                        report.by_backend.keys().collect::<Vec<_>>()
                    );
                    Ok(())
                }
            },
        )
        .await?;
        self.style.step(&format!(
            "grpc-balancer-proxy listening on {listener} (h2c), admin on {admin}; it resolves the headless Services"
        ));
        Ok(())
    }

    async fn scale_out(&mut self, backend: &Backend, proxy: SocketAddr) -> anyhow::Result<()> {
        self.start_backend(backend).await?;
        let ready_at = Instant::now();
        let mut seen_after = None;
        let deadline = ready_at + Duration::from_secs(30);
        while Instant::now() < deadline {
            let report = load(&proxy.to_string(), 100, Mode::Unary).await?;
            anyhow::ensure!(
                report.failed == 0,
                "calls failed while waiting for the new backend: {:?}",
                report.failure_messages
            );
            if report.by_backend.contains_key(&backend.pod) {
                seen_after = Some(ready_at.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen_after = seen_after.with_context(|| {
            format!(
                "the proxy sent no call to {} within 30 s of it becoming Ready",
                backend.pod
            )
        })?;
        self.style.step(&format!(
            "{} got its first call {:.1} s after its pod became Ready (EndpointSlice → DNS → proxy)",
            backend.pod,
            seen_after.as_secs_f64()
        ));
        self.summary.added_backend = Some(backend.pod.clone());
        self.summary.added_backend_first_call_ms = Some(seen_after.as_millis() as u64);
        let report = load(
            &proxy.to_string(),
            self.cli.illustrative_calls(),
            Mode::Unary,
        )
        .await?;
        self.record("scale_out", &report);
        Ok(())
    }

    async fn scale_in(&mut self, backend: &Backend, proxy: SocketAddr) -> anyhow::Result<()> {
        // Calls keep flowing in batches until told to stop.
        let stop = Arc::new(AtomicBool::new(false));
        let target = proxy.to_string();
        let load_task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut reports = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    reports.push(load(&target, 100, Mode::Unary).await?);
                }
                anyhow::Ok(reports)
            })
        };
        // Let calls reach the backend before it goes.
        tokio::time::sleep(Duration::from_millis(500)).await;

        // What a kubelet does on deletion: the pod leaves the EndpointSlices
        // and the process gets SIGTERM (it sends GOAWAY and finishes its calls).
        let index = self
            .processes
            .iter()
            .position(|p| p.name() == backend.pod)
            .context("the backend process to remove is not running")?;
        let mut process = self.processes.remove(index);
        let client = self.client.clone();
        let (deleted, terminated) = tokio::join!(
            cluster::delete_pod(&client, NS, &backend.pod),
            process.terminate(Duration::from_secs(10))
        );
        deleted?;
        terminated?;
        self.style.step(&format!(
            "pod {} deleted and its process stopped (SIGTERM) under load",
            backend.pod
        ));
        // Keep the calls flowing until the proxy's discovery has caught up.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        let reports = load_task.await.context("the load task panicked")??;
        let mut phase = Phase::default();
        for report in &reports {
            phase.add(report, |b| self.version_of(b));
        }
        self.style.step(&format!(
            "{} calls during the removal, {} failed",
            phase.calls, phase.failed
        ));
        print_phase(&self.style, &phase, &self.versions);
        self.summary.removed_backend = Some(backend.pod.clone());
        self.summary.phases.insert("scale_in".into(), phase);
        Ok(())
    }

    fn version_of(&self, backend: &str) -> String {
        self.versions
            .get(backend)
            .cloned()
            .unwrap_or_else(|| "?".into())
    }

    fn record(&mut self, name: &str, report: &LoadReport) {
        let phase = Phase::from_report(report, |b| self.version_of(b));
        print_phase(&self.style, &phase, &self.versions);
        self.summary.phases.insert(name.to_owned(), phase);
    }

    fn print_recap(&self) {
        let rows = [
            ("direct", "one connection, no proxy"),
            ("proxy", "through grpc-balancer"),
            ("stream", "bidi streams"),
            ("scale_out", "after adding a pod"),
            ("scale_in", "while deleting a pod"),
        ];
        println!(
            "    {:<26} {:>7} {:>9} {:>8} {:>7}",
            self.style.dim("phase"),
            self.style.dim("calls"),
            self.style.dim("backends"),
            self.style.dim("v1/v2 %"),
            self.style.dim("failed")
        );
        for (key, title) in rows {
            let Some(phase) = self.summary.phases.get(key) else {
                continue;
            };
            let total: u64 = phase.by_version.values().sum();
            let v1 = percent(phase.by_version.get("v1").copied().unwrap_or(0), total);
            let v2 = percent(phase.by_version.get("v2").copied().unwrap_or(0), total);
            println!(
                "    {:<26} {:>7} {:>9} {:>8} {:>7}",
                title,
                phase.calls,
                phase.by_backend.len(),
                format!("{v1:.0}/{v2:.0}"),
                phase.failed
            );
        }
        println!(
            "\n    Without the proxy every call of a connection lands on one pod; with it, each call is\n    balanced: 75/25 by version, round robin within a version, new pods used within seconds,\n    and a deleted pod costs no call."
        );
    }

    /// Polls `f` until it succeeds, checking that every process still runs so
    /// a crash is reported at once with its log instead of as a timeout.
    async fn wait_for<T, F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            for process in &mut self.processes {
                process.ensure_running()?;
            }
            match f().await {
                Ok(value) => return Ok(value),
                Err(error) if Instant::now() >= deadline => {
                    return Err(
                        error.context(format!("timed out after {timeout:?} waiting for {what}"))
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn stop_processes(&mut self) {
        for mut process in self.processes.drain(..).rev() {
            if let Err(error) = process.terminate(Duration::from_secs(5)).await {
                eprintln!("stopping {}: {error:#}", process.name());
            }
        }
        self.dns = None;
    }
}

/// Resolves on Ctrl-C or SIGTERM, naming which; the demo then cleans up.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Calls through one connection with [`CONCURRENCY`] calls in flight.
async fn load(target: &str, calls: u64, mode: Mode) -> anyhow::Result<LoadReport> {
    let mut options = LoadOptions::new(target, calls);
    options.concurrency = CONCURRENCY;
    options.connections = 1;
    options.mode = mode;
    Ok(run_load(options).await?)
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn condition(status: &Value, kind: &str) -> Option<String> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

fn ready_endpoints(status: &Value) -> BTreeMap<String, u64> {
    status["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["name"].as_str()?.to_owned(),
                s["readyEndpoints"].as_u64()?,
            ))
        })
        .collect()
}

/// The `grpc-balancer-proxy` container of a pod, as JSON.
fn injected_sidecar(pod: &Pod) -> Option<Value> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == annotations::PROXY_CONTAINER_NAME)
        .and_then(|c| serde_json::to_value(c).ok())
}

fn compact_security_context(context: &Value) -> String {
    let mut parts = Vec::new();
    if context["runAsNonRoot"] == true {
        parts.push("runAsNonRoot".to_owned());
    }
    if context["readOnlyRootFilesystem"] == true {
        parts.push("readOnlyRootFilesystem".to_owned());
    }
    if let Some(drop) = context["capabilities"]["drop"].as_array() {
        let names: Vec<&str> = drop.iter().filter_map(Value::as_str).collect();
        parts.push(format!("drop {}", names.join(",")));
    }
    if context["allowPrivilegeEscalation"] == false {
        parts.push("no privilege escalation".to_owned());
    }
    if parts.is_empty() {
        "(none)".to_owned()
    } else {
        parts.join(", ")
    }
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
