//! The deployment files agree with the server: the probes name its routes, Kubernetes' grace
//! period covers the drain timeout, the image runs as a non-root user on the port the manifests
//! use. (`docker build` itself is not run here: see deploy/kubernetes/README.md.)

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The value after `key:` on the first line that has it (inline comments dropped).
fn yaml_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.split(" #").next().unwrap_or("").trim().trim_matches('"'))
        .unwrap_or_else(|| panic!("no {key}"))
}

/// The `value:` of the env entry `name`.
fn env_value<'a>(text: &'a str, name: &str) -> &'a str {
    let mut lines = text.lines();
    lines
        .find(|l| l.trim() == format!("- name: {name}"))
        .unwrap_or_else(|| panic!("no env {name}"));
    let v = lines.next().expect("a value line").trim();
    v.strip_prefix("value:")
        .unwrap_or_else(|| panic!("{name}: {v}"))
        .split(" #")
        .next()
        .unwrap()
        .trim()
        .trim_matches('"')
}

#[test]
fn manifests_match_the_server() {
    let d = read("deploy/kubernetes/deployment.yaml");
    let drain: u64 = env_value(&d, "VOICEGATE_DRAIN_TIMEOUT_S").parse().unwrap();
    let grace: u64 = yaml_value(&d, "terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    assert_eq!(grace, drain + 30, "grace period = drain timeout + 30 s");
    assert!(d.contains("path: /readyz") && d.contains("path: /healthz"));
    assert_eq!(env_value(&d, "VOICEGATE_LISTEN"), "0.0.0.0:3000");
    assert_eq!(yaml_value(&d, "containerPort"), "3000");
    assert_eq!(yaml_value(&d, "runAsNonRoot"), "true");
    let max: usize = env_value(&d, "VOICEGATE_MAX_CALLS").parse().unwrap();
    assert!(max <= 700, "above the loadtest's 700 calls per instance");
    // Every secret the pods read is in the example, including the shared ones.
    let s = read("deploy/kubernetes/secret.example.yaml");
    for k in [
        "VOICEGATE_MEDIA_TOKEN_KEY",
        "VOICEGATE_REDIS_URL",
        "VONAGE_SIGNATURE_SECRET",
    ] {
        assert!(s.contains(k), "{k}");
    }
    let i = read("deploy/kubernetes/ingress.yaml");
    assert!(i.contains("proxy-read-timeout") && i.contains("path: /voice-stream"));
    let h = read("deploy/kubernetes/hpa.yaml");
    assert!(h.contains("name: cpu"));
    let k = read("deploy/kubernetes/kustomization.yaml");
    for f in [
        "deployment",
        "service",
        "ingress",
        "hpa",
        "pdb",
        "redis",
        "secret.example",
    ] {
        assert!(k.contains(&format!("- {f}.yaml")), "{f}");
    }
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let f = read("Dockerfile");
    assert_eq!(f.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    let user = f
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    assert!(f.contains("EXPOSE 3000") && f.contains("VOICEGATE_LISTEN=0.0.0.0:3000"));
    assert!(f.contains("--locked"));
    // Everything the build copies is let through .dockerignore.
    let ignore = read(".dockerignore");
    for dir in ["src", "benches", "examples"] {
        assert!(f.contains(&format!("COPY {dir} ")), "{dir}");
        assert!(!ignore.lines().any(|l| l.trim() == dir), "{dir} ignored");
    }
}
