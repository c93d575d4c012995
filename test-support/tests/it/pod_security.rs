use grpc_balancer_test_support::{ControlPlane, TestNamespace};
use k8s_openapi::api::core::v1::{
    Capabilities, Pod, PodSecurityContext, SeccompProfile, SecurityContext,
};
use kube::Api;

use crate::{pod, pp, to_map};

#[tokio::test]
async fn restricted_namespace_rejects_privileged_pod() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let labels = to_map(&[("pod-security.kubernetes.io/enforce", "restricted")]);
    let ns = TestNamespace::with_labels(&client, "psa", labels).await;
    let pods: Api<Pod> = ns.api();

    let mut privileged = pod("privileged", &[("app", "x")]);
    if let Some(spec) = privileged.spec.as_mut() {
        spec.containers[0].security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
    }
    match pods.create(&pp(), &privileged).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message.contains("violates PodSecurity \"restricted"),
                "{}",
                s.message
            );
        }
        other => panic!("privileged pod was not rejected: {other:?}"),
    }

    // The same namespace admits a pod that meets the restricted profile, so the rejection
    // above is Pod Security admission and not something else.
    let mut ok = pod("restricted", &[("app", "x")]);
    if let Some(spec) = ok.spec.as_mut() {
        spec.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        spec.containers[0].security_context = Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    pods.create(&pp(), &ok)
        .await
        .expect("restricted-compliant pod is admitted");
}
