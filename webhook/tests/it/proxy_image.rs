//! The injected container against the proxy image it runs: the command the
//! container runtime would exec (image entrypoint and cmd combined with the
//! container's `command` and `args`, as the kubelet does), the lifecycle
//! hooks' commands and the user must all work in an image that is `FROM
//! scratch` (no shell, no `PATH` lookup of a bare name).
//!
//! Two sources of the image config:
//! - `images/proxy.Containerfile` (ENTRYPOINT, USER, COPY destinations),
//!   always;
//! - the built image's OCI config and unpacked layer, when
//!   `scripts/test-images` runs the ignored test with
//!   `GRPC_BALANCER_PROXY_IMAGE_CONFIG` and `GRPC_BALANCER_PROXY_IMAGE_ROOTFS`
//!   set: then the hooks also run against the real binary.

use std::path::{Path, PathBuf};

use grpc_balancer_webhook::{
    Args, InjectionContext, SidecarMode, mutate, sidecar::PROXY_CONTAINER_NAME,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

/// What a container runtime takes from an image to start a container.
#[derive(Debug)]
struct ImageConfig {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    /// `uid[:gid]`, numeric.
    user: String,
    /// Absolute paths of the files the image holds.
    files: Vec<String>,
}

impl ImageConfig {
    fn uid_gid(&self) -> (i64, Option<i64>) {
        let (uid, gid) = match self.user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (self.user.as_str(), None),
        };
        let number = |s: &str| {
            s.parse::<i64>()
                .unwrap_or_else(|_| panic!("image USER {:?} is not numeric", self.user))
        };
        (number(uid), gid.map(number))
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the webhook crate sits in the workspace")
        .to_owned()
}

/// ENTRYPOINT, CMD (exec form only: the base has no shell), USER and the COPY
/// destinations of a Containerfile.
fn containerfile_config(text: &str) -> ImageConfig {
    let mut config = ImageConfig {
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        user: "0".into(),
        files: Vec::new(),
    };
    for line in text.lines().map(str::trim) {
        let Some((instruction, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim();
        let exec_form = |what: &str| -> Vec<String> {
            serde_json::from_str(rest).unwrap_or_else(|e| {
                panic!("{what} {rest:?} is not in exec form (a JSON array): {e}")
            })
        };
        match instruction.to_ascii_uppercase().as_str() {
            "ENTRYPOINT" => config.entrypoint = exec_form("ENTRYPOINT"),
            "CMD" => config.cmd = exec_form("CMD"),
            "USER" => config.user = rest.to_owned(),
            "COPY" => {
                let dest = rest
                    .split_whitespace()
                    .rfind(|w| !w.starts_with("--"))
                    .expect("COPY has a destination");
                config.files.push(dest.to_owned());
            }
            _ => {}
        }
    }
    config
}

/// The argv a container runtime execs for `container` in an image with
/// `image`'s config: `command` replaces the entrypoint (and drops the image's
/// cmd), `args` replace the cmd.
fn container_argv(image: &ImageConfig, container: &Container) -> Vec<String> {
    match (&container.command, &container.args) {
        (Some(command), args) => command
            .iter()
            .chain(args.iter().flatten())
            .cloned()
            .collect(),
        (None, Some(args)) => image.entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// The exec hooks of a container (legacy mode has `postStart` and `preStop`).
fn hook_commands(container: &Container) -> Vec<(&'static str, Vec<String>)> {
    let Some(lifecycle) = &container.lifecycle else {
        return Vec::new();
    };
    [
        ("postStart", &lifecycle.post_start),
        ("preStop", &lifecycle.pre_stop),
    ]
    .into_iter()
    .filter_map(|(name, handler)| {
        let command = handler.as_ref()?.exec.as_ref()?.command.clone()?;
        Some((name, command))
    })
    .collect()
}

fn injected_proxy(mode: SidecarMode) -> Container {
    let mut settings = Args::defaults()
        .expect("default flags parse")
        .proxy_settings(mode);
    settings.image = "localhost/grpc-balancer-proxy:test".into();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "client", "annotations": { "grpcbalancer.io/sidecar.inject": "true" } },
        "spec": { "containers": [{ "name": "app", "image": "example.com/app:1" }] }
    }))
    .expect("a pod");
    let ctx = InjectionContext {
        settings: &settings,
        balancings: &[],
        discovery_ca: None,
    };
    let patch = mutate(&pod, &ctx)
        .expect("the pod is injected")
        .expect("a patch");
    let mut value = serde_json::to_value(&pod).expect("serialises");
    json_patch::patch(&mut value, &patch).expect("the patch applies");
    let pod: Pod = serde_json::from_value(value).expect("still a pod");
    let spec = pod.spec.expect("a spec");
    spec.init_containers
        .into_iter()
        .flatten()
        .chain(spec.containers)
        .find(|c| c.name == PROXY_CONTAINER_NAME)
        .expect("the proxy container")
}

/// Every way the injected container could fail to start in `image`.
fn problems(image: &ImageConfig, mode: SidecarMode) -> Vec<String> {
    let container = injected_proxy(mode);
    let mut problems = Vec::new();
    let mut execs = vec![(
        "the container".to_owned(),
        container_argv(image, &container),
    )];
    execs.extend(
        hook_commands(&container)
            .into_iter()
            .map(|(hook, argv)| (format!("the {hook} hook"), argv)),
    );
    for (what, argv) in &execs {
        match argv.first() {
            None => problems.push(format!("{mode:?}: {what} has no command")),
            Some(program) if !program.starts_with('/') => problems.push(format!(
                "{mode:?}: {what} runs {program:?}, a bare name: the image has no PATH to look it up in"
            )),
            Some(program) if !image.files.contains(program) => problems.push(format!(
                "{mode:?}: {what} runs {program:?}, which the image does not hold (it has {:?})",
                image.files
            )),
            Some(_) => {}
        }
    }
    let (uid, gid) = image.uid_gid();
    let sc = container.security_context.clone().unwrap_or_default();
    if sc.run_as_user != Some(uid) {
        problems.push(format!(
            "{mode:?}: runAsUser {:?}, the image's user is {uid}",
            sc.run_as_user
        ));
    }
    if gid.is_some() && sc.run_as_group != gid {
        problems.push(format!(
            "{mode:?}: runAsGroup {:?}, the image's group is {gid:?}",
            sc.run_as_group
        ));
    }
    problems
}

#[test]
fn the_injected_container_starts_in_the_image_the_containerfile_builds() {
    let path = workspace_root().join("images/proxy.Containerfile");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let image = containerfile_config(&text);
    assert!(
        !image.entrypoint.is_empty(),
        "{} has no ENTRYPOINT",
        path.display()
    );
    let mut found = problems(&image, SidecarMode::Native);
    found.extend(problems(&image, SidecarMode::Legacy));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("{name} is not set: run scripts/test-images, which builds the image and sets it")
        })
}

/// The config of the built image (its OCI config blob) and the files of its
/// unpacked layer.
fn built_image() -> (ImageConfig, PathBuf) {
    let config_path = env_path("GRPC_BALANCER_PROXY_IMAGE_CONFIG");
    let rootfs = env_path("GRPC_BALANCER_PROXY_IMAGE_ROOTFS");
    let text = std::fs::read_to_string(&config_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", config_path.display()));
    let blob: Value = serde_json::from_str(&text).expect("the image config is JSON");
    let strings = |key: &str| -> Vec<String> {
        blob["config"][key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let files = std::fs::read_dir(&rootfs)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", rootfs.display()))
        .filter_map(|e| e.ok())
        .map(|e| format!("/{}", e.file_name().to_string_lossy()))
        .collect();
    let image = ImageConfig {
        entrypoint: strings("Entrypoint"),
        cmd: strings("Cmd"),
        user: blob["config"]["User"].as_str().unwrap_or("0").to_owned(),
        files,
    };
    (image, rootfs)
}

/// Runs `argv` with its program taken from the unpacked image.
fn run_in_rootfs(rootfs: &Path, argv: &[String]) -> std::process::Output {
    let program = rootfs.join(argv[0].trim_start_matches('/'));
    std::process::Command::new(&program)
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

#[test]
#[ignore = "needs the built image: scripts/test-images runs it"]
fn the_injected_container_starts_in_the_built_image() {
    let (image, rootfs) = built_image();
    let mut found = problems(&image, SidecarMode::Native);
    found.extend(problems(&image, SidecarMode::Legacy));
    assert!(found.is_empty(), "{}", found.join("\n"));

    // The binary accepts exactly what it is given: the container's flags
    // (help stops it before it serves), and each hook's subcommand.
    for mode in [SidecarMode::Native, SidecarMode::Legacy] {
        let container = injected_proxy(mode);
        let mut argv = container_argv(&image, &container);
        argv.push("--help".into());
        let out = run_in_rootfs(&rootfs, &argv);
        assert!(
            out.status.success(),
            "{mode:?}: {argv:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (hook, mut argv) in hook_commands(&container) {
            if hook == "preStop" {
                // The real thing, shortened: sleep then exit 0.
                argv.truncate(2);
                argv.push("0s".into());
            } else {
                argv.push("--help".into());
            }
            let out = run_in_rootfs(&rootfs, &argv);
            assert!(
                out.status.success(),
                "{mode:?}: {hook} {argv:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_containerfile_reader_sees_what_a_bare_name_would_break() {
    // The reader itself, on an image without the binary on a PATH.
    let image = containerfile_config(
        "FROM scratch\nCOPY --chmod=0555 p /p\nUSER 65532:65532\nENTRYPOINT [\"/p\"]\n",
    );
    assert_eq!(image.entrypoint, ["/p"]);
    assert_eq!(image.files, ["/p"]);
    assert_eq!(image.uid_gid(), (65532, Some(65532)));
    let bare = Container {
        command: Some(vec!["p".into()]),
        args: Some(vec!["--x".into()]),
        ..Container::default()
    };
    assert_eq!(container_argv(&image, &bare), ["p", "--x"]);
    let args_only = Container {
        args: Some(vec!["--x".into()]),
        ..Container::default()
    };
    assert_eq!(container_argv(&image, &args_only), ["/p", "--x"]);
}
