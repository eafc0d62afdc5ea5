//! What the rendered manifests must say, in the base and every overlay: probes
//! on /readyz and /healthz, a termination grace period above preStop +
//! WSGATE_SHUTDOWN_GRACE + 1s, requests and limits, a non-root read-only
//! container with the image's own uid, the listeners on 0.0.0.0 with their
//! ports wired through the Service to the ServiceMonitor, selectors that
//! match, and every NATS file a flag names in a Secret mounted read-only.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;
use serde_yaml_ng::Value;

use crate::checks::{Checks, checks, go_seconds, scalar, strings, text};
use crate::kube_render::rendered;

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

/// A selector selects when it is not empty and every label it names matches.
fn matches(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

/// (host, port) of `HOST:PORT`, IPv6 brackets removed.
fn host_port(value: &str) -> (String, Option<u64>) {
    let (host, port) = value.rsplit_once(':').unwrap_or(("", value));
    (host.trim_matches(['[', ']']).to_owned(), port.parse().ok())
}

#[test]
fn manifests_run_the_gateway_safely_and_wire_its_metrics() {
    let image_uid = Regex::new(r"useradd .*--uid (\d+)")
        .expect("regex")
        .captures(&text("Dockerfile"))
        .map(|c| c[1].parse::<u64>().expect("digits"));
    checks("deploy/kubernetes manifests", |c| {
        for rendering in rendered() {
            properties(c, &rendering.name, &rendering.docs, image_uid);
        }
    });
}

fn properties(c: &mut Checks, name: &str, docs: &[Value], image_uid: Option<u64>) {
    let of_kind = |kind: &str| -> Vec<&Value> {
        docs.iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect()
    };
    let deployments = of_kind("Deployment");
    if !c.check(deployments.len() == 1, format!("{name}: one Deployment")) {
        return;
    }
    let deployment = deployments[0];
    let pod = &deployment["spec"]["template"];
    let spec = &pod["spec"];
    let containers = seq(&spec["containers"]);
    let Some(container) = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("wsgate"))
        .or(containers.first())
    else {
        c.check(false, format!("{name}: the Deployment has a container"));
        return;
    };
    // name → plain value (None for valueFrom), as the process sees them.
    let env: HashMap<&str, Option<String>> = seq(&container["env"])
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, scalar(&e["value"]))))
        .collect();
    let var = |name: &str| env.get(name).cloned().flatten();
    let ports: HashMap<&str, u64> = seq(&container["ports"])
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?, p["containerPort"].as_u64()?)))
        .collect();

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        let on_declared_port = get["port"].as_str().is_some_and(|p| ports.contains_key(p));
        c.check(
            get["path"].as_str() == Some(path) && on_declared_port,
            format!("{name}: {probe} is GET {path} on a declared container port (found {get:?})"),
        );
    }

    let grace = go_seconds(&var("WSGATE_SHUTDOWN_GRACE").unwrap_or_else(|| "10s".to_owned()));
    let pre_stop = strings(&container["lifecycle"]["preStop"]["exec"]["command"]);
    let sleep = match pre_stop[..] {
        ["sleep", seconds] => seconds.parse().unwrap_or(0.0),
        _ => 0.0,
    };
    let termination = spec["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap_or(30.0);
    c.check(
        grace.is_some_and(|grace| termination > sleep + grace + 1.0),
        format!(
            "{name}: terminationGracePeriodSeconds ({termination}) exceeds preStop ({sleep}s) + WSGATE_SHUTDOWN_GRACE ({}) + 1s",
            grace.map_or("not a duration".to_owned(), |g| format!("{g}s"))
        ),
    );

    for bound in ["requests", "limits"] {
        let set = &container["resources"][bound];
        c.check(
            !set["cpu"].is_null() && !set["memory"].is_null(),
            format!("{name}: the container sets cpu and memory {bound}"),
        );
    }

    let pod_security = &spec["securityContext"];
    let security = &container["securityContext"];
    c.check(
        pod_security["runAsNonRoot"].as_bool() == Some(true)
            || security["runAsNonRoot"].as_bool() == Some(true),
        format!("{name}: runs as non-root"),
    );
    let uid = security["runAsUser"]
        .as_u64()
        .or(pod_security["runAsUser"].as_u64());
    c.check(
        uid.is_some_and(|u| u != 0),
        format!("{name}: runs as a fixed non-zero uid (found {uid:?})"),
    );
    c.check(
        image_uid.is_some() && image_uid == uid,
        format!(
            "{name}: the uid is the image's own user ({uid:?}; the Dockerfile's is {image_uid:?})"
        ),
    );
    c.check(
        security["readOnlyRootFilesystem"].as_bool() == Some(true),
        format!("{name}: the root filesystem is read-only"),
    );
    c.check(
        security["allowPrivilegeEscalation"].as_bool() == Some(false),
        format!("{name}: no privilege escalation"),
    );
    c.check(
        strings(&security["capabilities"]["drop"]).contains(&"ALL"),
        format!("{name}: every capability is dropped"),
    );
    c.check(
        spec["automountServiceAccountToken"].as_bool() == Some(false),
        format!("{name}: no Kubernetes API token is mounted"),
    );

    let listen = var("WSGATE_LISTEN").unwrap_or_default();
    let (listen_host, listen_port) = host_port(&listen);
    c.check(
        listen_host == "0.0.0.0",
        format!("{name}: WSGATE_LISTEN listens on 0.0.0.0 (found {listen:?})"),
    );
    c.check(
        listen_port.is_some() && ports.get("http").copied() == listen_port,
        format!("{name}: container port `http` is WSGATE_LISTEN's port"),
    );
    let admin = var("WSGATE_ADMIN_LISTEN").unwrap_or_default();
    let (admin_host, admin_port) = host_port(&admin);
    c.check(
        admin_host == "0.0.0.0" && admin_port.is_some() && ports.get("admin").copied() == admin_port,
        format!("{name}: container port `admin` is WSGATE_ADMIN_LISTEN's port, on 0.0.0.0 (found {admin:?})"),
    );
    c.check(
        var("WSGATE_NATS_URL").is_some_and(|u| !u.is_empty()),
        format!("{name}: WSGATE_NATS_URL points the pods at NATS"),
    );
    c.check(
        deployment["spec"]["replicas"].as_u64().unwrap_or(1) >= 2,
        format!("{name}: at least two replicas"),
    );

    let labels = &pod["metadata"]["labels"];
    c.check(
        matches(&deployment["spec"]["selector"]["matchLabels"], labels),
        format!("{name}: the Deployment's selector matches its pods"),
    );
    let services = of_kind("Service");
    let service = services.first().copied().unwrap_or(&Value::Null);
    c.check(
        services.len() == 1 && service["metadata"]["name"].as_str() == Some("wsgate"),
        format!("{name}: one Service, named wsgate (the scrape job, which the alerts select as job=\"wsgate\")"),
    );
    c.check(
        matches(&service["spec"]["selector"], labels),
        format!("{name}: the Service selects the pods"),
    );
    let admin_target = seq(&service["spec"]["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some("admin"))
        .map(|p| &p["targetPort"]);
    c.check(
        admin_target.is_some_and(|t| {
            t.as_str() == Some("admin") || (admin_port.is_some() && t.as_u64() == admin_port)
        }),
        format!("{name}: the Service's `admin` port reaches the metrics port"),
    );
    let pdbs = of_kind("PodDisruptionBudget");
    c.check(
        pdbs.len() == 1 && matches(&pdbs[0]["spec"]["selector"]["matchLabels"], labels),
        format!("{name}: a PodDisruptionBudget covers the pods"),
    );
    let monitors = of_kind("ServiceMonitor");
    if c.check(monitors.len() == 1, format!("{name}: one ServiceMonitor")) {
        let monitor = monitors[0];
        c.check(
            matches(
                &monitor["spec"]["selector"]["matchLabels"],
                &service["metadata"]["labels"],
            ),
            format!("{name}: the ServiceMonitor selects the Service"),
        );
        let endpoints = seq(&monitor["spec"]["endpoints"]);
        c.check(
            endpoints.iter().any(|e| {
                e["port"].as_str() == Some("admin")
                    && e["path"].as_str().unwrap_or("/metrics") == "/metrics"
            }),
            format!("{name}: the ServiceMonitor scrapes /metrics on the `admin` port"),
        );
        let node_label = endpoints
            .iter()
            .flat_map(|e| seq(&e["relabelings"]))
            .any(|r| {
                r["targetLabel"].as_str() == Some("node")
                    && strings(&r["sourceLabels"]) == ["__meta_kubernetes_pod_name"]
            });
        c.check(node_label, format!("{name}: the ServiceMonitor labels each target with node=<pod name>, as the alerts and dashboard expect"));
        let node_id_is_pod_name = var("WSGATE_NODE_ID").is_none()
            && seq(&container["env"]).iter().any(|e| {
                e["name"].as_str() == Some("WSGATE_NODE_ID")
                    && e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("metadata.name")
            });
        c.check(
            node_id_is_pod_name,
            format!("{name}: WSGATE_NODE_ID is the pod's name"),
        );
    }

    // NATS TLS and credentials: every file a flag names lies in a Secret mounted read-only.
    let mounts: HashMap<&str, &Value> = seq(&container["volumeMounts"])
        .iter()
        .filter_map(|m| Some((m["mountPath"].as_str()?, m)))
        .collect();
    let volumes: HashMap<&str, &Value> = seq(&spec["volumes"])
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    for variable in [
        "WSGATE_NATS_CA",
        "WSGATE_NATS_CERT",
        "WSGATE_NATS_KEY",
        "WSGATE_NATS_CREDS",
    ] {
        if !env.contains_key(variable) {
            continue;
        }
        let path = var(variable).unwrap_or_default();
        let path = Path::new(&path);
        let directory = path.parent().and_then(Path::to_str).unwrap_or("");
        let mount = mounts.get(directory);
        let volume = mount
            .and_then(|m| m["name"].as_str())
            .and_then(|n| volumes.get(n));
        let secret = volume.map(|v| &v["secret"]).filter(|s| !s.is_null());
        c.check(
            mount.is_some_and(|m| m["readOnly"].as_bool() == Some(true)) && secret.is_some(),
            format!(
                "{name}: {variable} ({}) is in a Secret mounted read-only",
                path.display()
            ),
        );
        if let Some(secret) = secret {
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
            c.check(
                secret["items"].is_null()
                    || seq(&secret["items"])
                        .iter()
                        .any(|i| i["path"].as_str() == Some(file)),
                format!("{name}: the Secret volume holds {file}"),
            );
        }
    }
    if ["WSGATE_NATS_CA", "WSGATE_NATS_CERT", "WSGATE_NATS_KEY"]
        .iter()
        .any(|v| env.contains_key(v))
    {
        c.check(
            var("WSGATE_NATS_URL").is_some_and(|u| u.starts_with("tls://")),
            format!("{name}: with NATS TLS, the NATS URL is tls://"),
        );
        let group = pod_security["runAsGroup"].as_u64().or(uid);
        c.check(
            pod_security["fsGroup"].as_u64() == group,
            format!("{name}: fsGroup makes the Secret files readable by the gateway's group"),
        );
    }
}
