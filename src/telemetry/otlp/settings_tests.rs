use super::*;

const T: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const G: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const GRPC: (&str, &str) = ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");

fn read(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let var = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    };
    Settings::read(&var)
}

fn settings(vars: &[(&str, &str)]) -> Settings {
    read(vars).unwrap_or_else(|e| panic!("{vars:?}: {e}"))
}

#[test]
fn endpoints_resolve_as_the_exporter_resolves_them() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "http://localhost:4318/v1/traces"),
        (&[GRPC], "http://localhost:4317"),
        (&[(G, "http://c:4318")], "http://c:4318/v1/traces"),
        (&[(G, "http://c:4318/")], "http://c:4318/v1/traces"),
        (&[(G, "http://c:4318/otlp")], "http://c:4318/otlp/v1/traces"),
        // The per-signal URL is used as it is.
        (&[(T, "http://c/spans"), (G, "http://d")], "http://c/spans"),
        (&[GRPC, (G, "http://c:4317")], "http://c:4317"),
        (&[GRPC, (T, "http://c:1"), (G, "http://d:2")], "http://c:1"),
        // No scheme: gRPC is secure unless told otherwise.
        (&[GRPC, (G, "c:4317")], "https://c:4317"),
        (
            &[GRPC, (G, "c:4317"), ("OTEL_EXPORTER_OTLP_INSECURE", "true")],
            "http://c:4317",
        ),
        (
            &[
                GRPC,
                (G, "https://c:4317"),
                ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ],
            "https://c:4317",
        ),
    ];
    for (vars, endpoint) in cases {
        assert_eq!(settings(vars).endpoint, *endpoint, "{vars:?}");
    }
}

#[test]
fn the_endpoint_scheme_decides_tls() {
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[], false),
        (&[GRPC], false),
        (&[(G, "HTTPS://c:4318")], true),
        (&[(T, "https://c/v1/traces"), (G, "http://c:4318")], true),
        (&[GRPC, (T, "http://c:4317"), (G, "https://c:4317")], false),
        (&[GRPC, (G, "c:4317")], true),
    ];
    for (vars, https) in cases {
        assert_eq!(settings(vars).https(), *https, "{vars:?}");
    }
}

#[test]
fn a_bad_endpoint_or_protocol_or_compression_names_its_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[(G, "c:4318")], G),
        (&[(T, "not a url")], T),
        (&[GRPC, (G, "http://")], G),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")],
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ),
    ];
    for (vars, named) in cases {
        let error = read(vars).expect_err("refused").to_string();
        assert!(error.contains(named), "{vars:?}: {error}");
    }
}

#[test]
fn headers_are_percent_decoded_pairs_and_the_traces_list_wins() {
    let s = settings(&[(
        "OTEL_EXPORTER_OTLP_HEADERS",
        " api-key = a%20b ,x-tenant=blue,broken, =v,k=,bad key=1",
    )]);
    let got: Vec<_> = s
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(got, [("api-key", "a b"), ("x-tenant", "blue")]);
    let s = settings(&[
        ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
    ]);
    assert_eq!(s.headers.len(), 1);
    assert_eq!(s.headers[0].0.as_str(), "b");
}

#[test]
fn compression_and_timeout_read_the_traces_variable_first() {
    assert!(!settings(&[]).gzip);
    assert!(settings(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP")]).gzip);
    assert!(
        !settings(&[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
        ])
        .gzip
    );
    assert_eq!(settings(&[]).timeout, Duration::from_secs(10));
    let s = settings(&[
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon"),
    ]);
    assert_eq!(s.timeout, Duration::from_millis(2500), "unparsable skipped");
}
