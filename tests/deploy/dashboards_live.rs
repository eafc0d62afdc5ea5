//! The dashboards, the Grafana links and the alert rules on a real
//! Prometheus, without Grafana: the real gateway (on the embedded broker, and
//! on a real nats-server) under `wsgate-bench`'s `--mix dashboards`, scraped
//! every second; then every panel query, every template variable, every
//! trace-to-metrics link and every rule expression runs as Grafana and the
//! rule evaluator would run it. A rejected query fails, and so does an empty
//! result for a series that must have data (all but `MAY_BE_EMPTY`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value as Json;

use crate::checks::{Checks, checks_async, system_tool, yaml};
use crate::dashboards::{LINK_MAY_BE_EMPTY_METRIC, MAY_BE_EMPTY, NATS_ONLY};
use crate::grafana::{self, BUILTINS, LABEL_VALUES, interpolate, regex_value};
use crate::live_stack::{Proc, Prom, Stack, count_instant, count_range, now, wait_until};

const JOB: &str = "wsgate";
/// Scrapes of the gateway before querying (~15 s of data).
const MIN_SCRAPES: u32 = 15;
/// The range and step of /api/v1/query_range.
const RANGE_SECONDS: f64 = 20.0;
const RANGE_STEP: &str = "2s";
const DATA: Duration = Duration::from_secs(60);
/// Long-lived connections of the mix: steady and modest for 2 cores.
const MIX_CONNECTIONS: usize = 30;
/// Series whose zeros would hide a broken error panel (counters with a label
/// exist at 0 from start-up, so "has data" alone cannot tell): the mix must
/// move each, or the dashboards were checked without the traffic they show.
const MIX_MOVES: [&str; 6] = [
    r#"websocket_messages_received_total{type="invalid"}"#,
    r#"websocket_errors_total"#,
    r#"websocket_connection_duration_seconds_count{close_code="1009"}"#,
    r#"websocket_connection_duration_seconds_count{close_code="1000"}"#,
    r#"http_server_request_duration_seconds_count{http_response_status_code="400"}"#,
    r#"http_server_request_duration_seconds_count{http_response_status_code="415"}"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_have_data_on_the_embedded_broker() {
    live(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_have_data_on_nats() {
    live(true).await;
}

async fn live(nats: bool) {
    let what = if nats {
        "dashboards on NATS"
    } else {
        "dashboards on the embedded broker"
    };
    let Some(prometheus) = system_tool("prometheus") else {
        return;
    };
    let nats_server = match nats {
        true => match system_tool("nats-server") {
            Some(path) => Some(path),
            None => return,
        },
        false => None,
    };
    let mut stack = Stack::new();
    let mut mix_counts = None;
    checks_async(what, async |c: &mut Checks| {
        let outcome = run(
            c,
            &mut stack,
            &prometheus,
            nats_server.as_deref(),
            &mut mix_counts,
        )
        .await;
        if let Err(e) = outcome {
            c.check(false, e);
        }
        eprintln!("{what}: the mix: {mix_counts:?}");
        if !c.problems().is_empty() {
            for p in &stack.procs {
                eprintln!("--- {} log (tail) ---\n{}", p.name, p.log_tail());
            }
        }
    })
    .await;
}

async fn run(
    c: &mut Checks,
    stack: &mut Stack,
    prometheus: &Path,
    nats_server: Option<&Path>,
    mix_counts: &mut Option<BTreeMap<String, u64>>,
) -> Result<(), String> {
    stack.start(prometheus, nats_server, JOB).await?;
    let Stack {
        procs,
        prom,
        ws_url,
        ..
    } = stack;
    // The mix for the whole run, stopped before the result is judged.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let url = ws_url.clone();
    let mix = tokio::spawn(async move {
        wsgate_bench::run_mix(&url, MIX_CONNECTIONS, async {
            let _ = stopped.await;
        })
        .await
    });
    let queried = async {
        wait_until(
            &format!("{MIN_SCRAPES} scrapes with message data"),
            DATA,
            procs,
            async || {
                let received = format!(r#"websocket_messages_received_total{{job="{JOB}"}}"#);
                prom.scalar(&format!("count({received})"))
                    .await
                    .unwrap_or(0.0)
                    > 0.0
                    && prom
                        .scalar(&format!("sum(increase({received}[1m]))"))
                        .await
                        .unwrap_or(0.0)
                        > 0.0
                    && prom
                        .scalar(&format!(r#"count_over_time(up{{job="{JOB}"}}[1m])"#))
                        .await
                        .unwrap_or(0.0)
                        >= f64::from(MIN_SCRAPES)
                    && prom.scalar(&format!(r#"min(up{{job="{JOB}"}})"#)).await == Some(1.0)
            },
        )
        .await?;
        query_all(c, prom, nats_server.is_some(), procs).await
    };
    let result = queried.await;
    let _ = stop.send(());
    *mix_counts = match mix.await {
        Ok(Ok(counts)) => Some(counts),
        Ok(Err(e)) => return Err(format!("the mix failed: {e:#}")),
        Err(e) => return Err(format!("the mix panicked: {e}")),
    };
    result
}

async fn query_all(
    c: &mut Checks,
    prom: &Prom,
    nats: bool,
    procs: &mut [Proc],
) -> Result<(), String> {
    let at = now();
    let may_be_empty: Vec<&str> = MAY_BE_EMPTY
        .iter()
        .filter(|(_, why)| !(nats && *why == NATS_ONLY))
        .map(|(title, _)| *title)
        .collect();
    let mut rows = 0;
    for (name, dash) in grafana::dashboards() {
        // Template variables, as Grafana resolves them.
        let mut vars: BTreeMap<String, String> = BUILTINS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (var, query) in grafana::variables(&dash) {
            let Some(m) = LABEL_VALUES.captures(&query) else {
                c.check(
                    false,
                    format!("{name}: variable ${var}: unsupported query {query:?}"),
                );
                continue;
            };
            let matcher = match interpolate(&m[1], &vars) {
                Ok(m) => m,
                Err(e) => {
                    c.check(
                        false,
                        format!("{name}: variable ${var}: unknown variable ${e} in {query:?}"),
                    );
                    continue;
                }
            };
            let params = [
                ("match[]", matcher),
                ("start", format!("{:.3}", at - 300.0)),
                ("end", format!("{at:.3}")),
            ];
            let data = prom
                .api(&format!("/api/v1/label/{}/values", &m[2]), &params, true)
                .await;
            let values: Vec<String> = match &data {
                Ok(Json::Array(values)) => values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => vec![],
            };
            c.check(
                !values.is_empty(),
                format!(
                    "{name}: variable ${var}: {}",
                    data.err().unwrap_or("no values".into())
                ),
            );
            vars.insert(var, regex_value(&values));
        }
        // Each variable set to every value it found (the labels exist), and
        // $instance = All (".*"), Grafana's default.
        let mut vars_all = vars.clone();
        vars_all.insert("instance".into(), ".*".into());
        for t in grafana::targets(&dash) {
            let place = format!("{:?} {}", t.panel, t.ref_id);
            let (q, q_all) = match (interpolate(&t.expr, &vars), interpolate(&t.expr, &vars_all)) {
                (Ok(q), Ok(q_all)) => (q, q_all),
                (Err(e), _) | (_, Err(e)) => {
                    c.check(false, format!("{place}: unknown variable ${e}"));
                    continue;
                }
            };
            let (mut errors, mut counts) = (vec![], vec![]);
            for query in [&q, &q_all] {
                let instant = prom.query(query, at).await;
                let range = prom
                    .query_range(query, at - RANGE_SECONDS, at, RANGE_STEP)
                    .await;
                counts.push((
                    instant.as_ref().map_or(0, count_instant),
                    range.as_ref().map_or(0, count_range),
                ));
                errors.extend(instant.err().map(|e| format!("instant: {e}")));
                errors.extend(range.err().map(|e| format!("range: {e}")));
            }
            let [(n_inst, n_range), (n_all, _)] = counts[..] else {
                unreachable!()
            };
            rows += 1;
            if let Some(e) = errors.first() {
                c.check(false, format!("{place}: {e}\n    query: {q}"));
                continue;
            }
            c.check(
                n_inst.min(n_range).min(n_all) > 0 || may_be_empty.contains(&t.panel.as_str()),
                format!("{place}: no data (instant {n_inst}, range {n_range}, instance=All {n_all})\n    query: {q}"),
            );
            if t.exemplar {
                // Grafana fetches exemplars separately for such targets.
                let params = [
                    ("query", q.clone()),
                    ("start", format!("{:.3}", at - RANGE_SECONDS)),
                    ("end", format!("{at:.3}")),
                ];
                let exemplars = prom.api("/api/v1/query_exemplars", &params, false).await;
                c.check(
                    exemplars.is_ok(),
                    format!("{place}: exemplars: {:?}\n    query: {q}", exemplars.err()),
                );
            }
        }
    }
    // The Jaeger data source's trace-to-metrics links.
    let builtins: BTreeMap<String, String> = BUILTINS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (name, query) in grafana::links() {
        let variants: &[&str] = if query.contains("$__tags") {
            &[r#"service_name="wsgate""#, ""]
        } else {
            &[""]
        };
        for tags in variants {
            let q = match interpolate(&query.replace("$__tags", tags), &builtins) {
                Ok(q) => q,
                Err(e) => {
                    c.check(
                        false,
                        format!("trace-to-metrics {name:?}: unknown variable ${e}"),
                    );
                    continue;
                }
            };
            rows += 1;
            match prom.query(&q, at).await {
                Err(e) => c.check(
                    false,
                    format!("trace-to-metrics {name:?}: {e}\n    query: {q}"),
                ),
                Ok(data) => c.check(
                    count_instant(&data) > 0 || q.contains(LINK_MAY_BE_EMPTY_METRIC),
                    format!("trace-to-metrics {name:?}: no data\n    query: {q}"),
                ),
            };
        }
    }
    for series in MIX_MOVES {
        let moved = format!("sum(increase({series}[1m]))");
        let value = prom.scalar(&moved).await.unwrap_or(0.0);
        c.check(
            value > 0.0,
            format!("the mix did not move {series}: {moved} = {value}"),
        );
    }
    rows += rules(c, prom, procs).await?;
    eprintln!("{rows} queries run");
    Ok(())
}

/// prometheus/alerts.yml: each rule evaluated by Prometheus without error,
/// and each expression also run on its own so every broken one is named.
async fn rules(c: &mut Checks, prom: &Prom, procs: &mut [Proc]) -> Result<usize, String> {
    let mut health = BTreeMap::new();
    wait_until(
        "alert rules evaluated",
        Duration::from_secs(10),
        procs,
        async || {
            let Ok(data) = prom.api("/api/v1/rules", &[], true).await else {
                return false;
            };
            let rules: Vec<&Json> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let evaluated = !rules.is_empty()
                && rules.iter().all(|r| {
                    !r["lastEvaluation"]
                        .as_str()
                        .unwrap_or("0001")
                        .starts_with("0001")
                });
            if evaluated {
                health = rules
                    .iter()
                    .map(|r| (r["name"].as_str().unwrap_or("?").to_owned(), (*r).clone()))
                    .collect();
            }
            evaluated
        },
    )
    .await?;
    let mut run = 0;
    let alerts = yaml("prometheus/alerts.yml");
    for rule in alerts["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
    {
        let name = rule["alert"]
            .as_str()
            .or(rule["record"].as_str())
            .unwrap_or("?");
        let expr = rule["expr"].as_str().unwrap_or_default();
        run += 1;
        if let Err(e) = prom.query(expr, now()).await {
            c.check(false, format!("rule {name}: {e}\n    query: {expr}"));
        }
        let h = &health.get(name).cloned().unwrap_or(Json::Null);
        c.check(
            h["health"] != "err" && h["lastError"].as_str().is_none_or(str::is_empty),
            format!("rule {name}: evaluation: {}", h["lastError"]),
        );
    }
    Ok(run)
}
