//! The demo pages trace in the browser in compose: each gateway gives its page
//! the collector's OTLP/HTTP endpoint as a browser reaches it, and the
//! collector's CORS allows each page's origin, on both spellings of loopback.

use crate::checks::{checks, scalar, strings, yaml};
use crate::compose;

const GATEWAYS: [&str; 2] = ["gateway-a", "gateway-b"];

#[test]
fn the_demo_pages_export_to_a_collector_that_allows_their_origins() {
    let services = compose::services();
    let collector = yaml("otel-collector/config.yaml");
    let http = &collector["receivers"]["otlp"]["protocols"]["http"];
    let allowed = strings(&http["cors"]["allowed_origins"]);
    let host_port = |service: &str, container: &str| {
        services[service]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| scalar(p).is_some_and(|p| p.ends_with(&format!(":{container}"))))
            .map(|p| compose::published(p).1)
    };
    checks(
        "compose.yaml and otel-collector/config.yaml: browser spans",
        |c| {
            let collector_http = host_port("otel-collector", "4318");
            c.check(
                collector_http.as_deref() == Some("4318"),
                "the collector's OTLP/HTTP port is published on 4318",
            );
            c.check(
                scalar(&http["endpoint"]).is_some_and(|e| e.ends_with(":4318")),
                "the collector receives OTLP/HTTP on 4318",
            );
            for gateway in GATEWAYS {
                let endpoint =
                    scalar(&services[gateway]["environment"]["WSGATE_DEMO_OTLP_ENDPOINT"]);
                c.check(
                endpoint.as_deref() == Some("http://localhost:4318"),
                format!("{gateway}'s demo page exports to the collector as the browser reaches it (found {endpoint:?})"),
            );
                let Some(port) = host_port(gateway, "8080") else {
                    c.check(false, format!("{gateway} publishes its port 8080"));
                    continue;
                };
                for host in ["localhost", "127.0.0.1"] {
                    let origin = format!("http://{host}:{port}");
                    c.check(
                        allowed.contains(&origin.as_str()),
                        format!("the collector's CORS allows {gateway}'s demo page at {origin}"),
                    );
                }
            }
        },
    );
}
