//! Checks of the deployment files, which no Docker engine or cluster runs
//! here: the compose stack (compose.yaml, the collector, Jaeger, Grafana and
//! Prometheus wiring), the Dockerfile, the Kubernetes manifests and the
//! dashboards (their rules, and their queries on a real Prometheus scraping
//! the real gateway under `wsgate-bench --mix dashboards`). Each module
//! reads one concept's files with serde and checks what they must say; where
//! only a real tool can judge a file (the compose specification's schema,
//! kustomize, kubernetes-validate, the PrometheusRule generator) the test runs
//! it and reads nothing but its exit status and its YAML. A missing tool skips
//! the test locally and fails it under CI=true, as in tests/it; kubectl alone
//! is optional (kube_render.rs says why and what is checked without it).

mod alerts;
mod browser_traces;
mod checks;
mod collector;
mod compose;
mod dashboards;
mod dashboards_live;
mod dockerfile;
mod docs;
mod grafana;
mod jaeger;
mod kube_manifests;
mod kube_render;
mod kube_schemas;
mod layering;
mod live_stack;
mod monitoring;
mod prometheusrule;
