//! compose.yaml: valid by the compose specification, then what this stack must
//! be: the images, pinned; the gateways wired to NATS and the collector with
//! the standard OTEL_* variables; health checks; every mounted file present;
//! and safe on a workstation (ports on 127.0.0.1 only, Grafana's anonymous
//! users Viewers at most, gateways given more than their shutdown grace).

use std::process::Command;

use clap::Parser as _;
use regex::Regex;
use serde_yaml_ng::Value;

use crate::checks::{checks, go_seconds, run, scalar, strings, venv_tool, yaml};

/// The gateways' --admin-listen port, where /metrics is served.
pub const ADMIN_PORT: u16 = 9091;
const GATEWAYS: [&str; 2] = ["gateway-a", "gateway-b"];

pub fn services() -> Value {
    yaml("compose.yaml")["services"].clone()
}

/// (host IP, published port) of a compose port in its short or long form; a
/// bare container port is published on an ephemeral port (`""`).
pub fn published(port: &Value) -> (String, String) {
    if port.is_mapping() {
        let field = |name| scalar(&port[name]).unwrap_or_default();
        return (field("host_ip"), field("published"));
    }
    let text = scalar(port).unwrap_or_default();
    let parts: Vec<&str> = text.split('/').next().unwrap_or("").split(':').collect();
    match parts[..] {
        [ip, published, _] => (ip.to_owned(), published.to_owned()),
        [published, _] => (String::new(), published.to_owned()),
        _ => (String::new(), String::new()),
    }
}

fn ports(service: &Value) -> &[Value] {
    service["ports"].as_sequence().map_or(&[], Vec::as_slice)
}

/// The compose specification's own schema, vendored in check-jsonschema: the
/// file must be one `docker compose` accepts before its meaning is checked.
#[test]
fn compose_yaml_follows_the_compose_specification() {
    let Some(tool) = venv_tool("check-jsonschema") else {
        return;
    };
    let compose = crate::checks::root().join("compose.yaml");
    let ran = run(Command::new(tool)
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(compose));
    assert!(
        ran.success,
        "compose.yaml does not validate against the compose spec:\n{}",
        ran.output()
    );
}

#[test]
fn images_are_the_stack_s_own_and_pinned() {
    let doc = yaml("compose.yaml");
    let services = &doc["services"];
    let tag_pattern = Regex::new(r"^v?\d+\.\d+(\.\d+)?(-[a-z0-9]+)?$").expect("regex");
    checks("compose.yaml images", |c| {
        for (name, repo) in [
            ("nats", "nats"),
            ("otel-collector", "otel/opentelemetry-collector-contrib"),
            ("jaeger", "jaegertracing/jaeger"),
            ("prometheus", "prom/prometheus"),
            ("grafana", "grafana/grafana"),
        ] {
            let image = services[name]["image"].as_str().unwrap_or("");
            let (found_repo, tag) = image.split_once(':').unwrap_or((image, ""));
            c.check(
                found_repo == repo,
                format!("service {name} runs {repo} (found {image:?})"),
            );
            c.check(
                tag_pattern.is_match(tag),
                format!("service {name} pins a version tag (found {tag:?})"),
            );
        }
        let whole = serde_yaml_ng::to_string(&doc).expect("YAML");
        c.check(
            !whole.contains("all-in-one"),
            "Jaeger is v2 (jaegertracing/jaeger), not the retired v1 all-in-one",
        );
    });
}

#[test]
fn gateways_join_nats_and_export_to_the_collector() {
    let services = services();
    checks("compose.yaml gateways", |c| {
        for gateway in GATEWAYS {
            let service = &services[gateway];
            let env = |name: &str| service["environment"][name].as_str();
            c.check(
                service["build"]["dockerfile"].as_str() == Some("Dockerfile"),
                format!("{gateway} is built from the Dockerfile"),
            );
            c.check(
                env("OTEL_EXPORTER_OTLP_ENDPOINT") == Some("http://otel-collector:4317"),
                format!(
                    "{gateway} exports to the collector over gRPC with an explicit http:// scheme"
                ),
            );
            c.check(
                env("OTEL_EXPORTER_OTLP_PROTOCOL") == Some("grpc"),
                format!("{gateway} selects OTLP/gRPC with the standard variable"),
            );
            c.check(
                env("WSGATE_NATS_URL") == Some("nats://nats:4222"),
                format!("{gateway} joins the others through NATS"),
            );
            c.check(
                env("WSGATE_NODE_ID") == Some(gateway),
                format!("{gateway} names itself {gateway}"),
            );
            let admin = format!("0.0.0.0:{ADMIN_PORT}");
            c.check(
                env("WSGATE_ADMIN_LISTEN") == Some(admin.as_str()),
                format!("{gateway} serves /metrics on its admin listener, {admin}"),
            );
            c.check(
                !ports(service).iter().any(|p| {
                    let text = scalar(p).unwrap_or_default();
                    text.rsplit(':')
                        .next()
                        .unwrap_or("")
                        .starts_with(&ADMIN_PORT.to_string())
                }),
                format!("{gateway} does not publish its admin port"),
            );
            // The process exits within --shutdown-grace plus one second (the
            // telemetry flush); compose kills it after stop_grace_period.
            let grace = go_seconds(env("WSGATE_SHUTDOWN_GRACE").unwrap_or("10s"));
            let stop_text = scalar(&service["stop_grace_period"]);
            let stop = go_seconds(stop_text.as_deref().unwrap_or("10s"));
            c.check(
                matches!((grace, stop), (Some(grace), Some(stop)) if stop > grace + 1.0),
                format!(
                    "{gateway}: stop_grace_period ({}) exceeds WSGATE_SHUTDOWN_GRACE + 1s",
                    stop_text.as_deref().unwrap_or("10s (default)")
                ),
            );
        }
    });
}

#[test]
fn services_have_health_checks_except_the_load_generator() {
    let services = services();
    checks("compose.yaml health checks", |c| {
        for name in ["nats", "prometheus", "grafana"] {
            c.check(
                !services[name]["healthcheck"].is_null(),
                format!("service {name} has a health check"),
            );
        }
        let load = &services["load"];
        c.check(
            strings(&load["profiles"]) == ["load"],
            "the load generator runs only in the `load` profile",
        );
        c.check(
            load["healthcheck"]["disable"].as_bool() == Some(true),
            "the load generator disables the image's /readyz HEALTHCHECK (it serves no /readyz, so it would be unhealthy forever)",
        );
    });
}

#[test]
fn published_ports_bind_loopback_only() {
    let services = services();
    checks("compose.yaml ports", |c| {
        for (name, service) in services.as_mapping().into_iter().flatten() {
            let name = name.as_str().unwrap_or("?");
            for port in ports(service) {
                let (host_ip, number) = published(port);
                let shown = if number.is_empty() {
                    scalar(port).unwrap_or_default()
                } else {
                    number
                };
                c.check(
                    host_ip == "127.0.0.1",
                    format!(
                        "{name} publishes {shown} on 127.0.0.1 only (found {:?})",
                        scalar(port).unwrap_or_else(|| format!("{port:?}"))
                    ),
                );
            }
        }
        let published_by = |name: &str| -> Vec<String> {
            ports(&services[name])
                .iter()
                .map(|p| published(p).1)
                .collect()
        };
        for (name, port, what) in [
            ("grafana", "3000", "Grafana"),
            ("jaeger", "16686", "Jaeger's UI"),
            ("prometheus", "9090", "Prometheus"),
        ] {
            c.check(
                published_by(name).iter().any(|p| p == port),
                format!("{what} is published on :{port}"),
            );
        }
    });
}

#[test]
fn grafana_lets_anonymous_users_view_only() {
    let services = services();
    let env = &services["grafana"]["environment"];
    let setting =
        |name: &str, default: &str| scalar(&env[name]).unwrap_or_else(|| default.to_owned());
    checks("compose.yaml grafana", |c| {
        if setting("GF_AUTH_ANONYMOUS_ENABLED", "false").eq_ignore_ascii_case("true") {
            let role = setting("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer");
            c.check(
                role == "Viewer",
                format!("Grafana's anonymous users are Viewers at most (found {role:?})"),
            );
        }
        c.check(
            setting("GF_USERS_ALLOW_SIGN_UP", "false").eq_ignore_ascii_case("false"),
            "Grafana allows no self sign-up",
        );
    });
}

/// The load profile runs the image's load generator with arguments that
/// this build's `wsgate-bench` parses into a valid plan.
#[test]
fn the_load_profile_runs_the_bench_with_arguments_that_parse() {
    let services = services();
    assert_eq!(
        strings(&services["load"]["entrypoint"]),
        ["/usr/local/bin/wsgate-bench"],
        "compose.yaml: the load profile runs the project's load generator"
    );
    let command = strings(&services["load"]["command"]);
    let args = wsgate_bench::BenchArgs::try_parse_from(
        std::iter::once("wsgate-bench").chain(command.iter().copied()),
    )
    .unwrap_or_else(|e| panic!("compose.yaml: the load profile's arguments do not parse: {e}"));
    if let Err(e) = args.plan() {
        panic!("compose.yaml: the load profile's arguments are refused: {e}");
    }
}

#[test]
fn mounted_files_exist() {
    let services = services();
    checks("compose.yaml volumes", |c| {
        for (name, service) in services.as_mapping().into_iter().flatten() {
            let name = name.as_str().unwrap_or("?");
            for volume in strings(&service["volumes"]) {
                let source = volume.split(':').next().unwrap_or("");
                if source.starts_with("./") {
                    c.check(
                        crate::checks::root().join(source).exists(),
                        format!("{name} mounts {source}, which exists"),
                    );
                }
            }
        }
    });
}
