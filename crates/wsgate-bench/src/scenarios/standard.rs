//! The scenarios of docs/bench.md but the telemetry one: `fanout`, `rooms`
//! (with its half-rate run), `idle` and `scrape`. Each starts a fresh server
//! with its own environment, runs the bench, adds its row and stops the server.

use anyhow::bail;

use super::measure::{self, OnHold};
use super::runner::{Env, Runner};
use super::table::{Row, json_number};

/// Connections held by `idle` and `scrape`.
pub const IDLE_CONNECTIONS: usize = 15_000;

pub async fn fanout(r: &mut Runner) -> anyhow::Result<()> {
    let flags = if r.smoke {
        "--connections 50 --rooms 1 --publishers 1 --messages 200 --window 4 --payload 64"
    } else {
        "--connections 1000 --rooms 1 --publishers 1 --messages 1000 --window 4 --payload 64"
    };
    as_shipped("fanout", r, flags, |report| {
        format!(
            "{} subscribers, 1 publisher × {}, window 4",
            report.connections, report.messages_per_publisher
        )
    })
    .await?;
    Ok(())
}

pub async fn rooms(r: &mut Runner) -> anyhow::Result<()> {
    let flags = if r.smoke {
        "--connections 20 --rooms 4 --publishers 4 --messages 200 --window 8"
    } else {
        "--connections 100 --rooms 10 --publishers 10 --messages 2000 --window 8"
    };
    let (shipped, report) = as_shipped("rooms", r, flags, |report| {
        format!(
            "{} conns, {} rooms, {} publishers × {}, window 8",
            report.connections, report.rooms, report.publishers, report.messages_per_publisher
        )
    })
    .await?;
    if !r.smoke {
        half_rate(r, &shipped, report.deliveries_per_sec).await?;
    }
    Ok(())
}

/// One closed-loop run of `scenario` on a gateway as shipped: its row (with
/// `notes` made from the report) and the check that its sampled spans reached
/// the collector. Returns the environment and the report, for a follow-up run.
async fn as_shipped(
    scenario: &str,
    r: &mut Runner,
    flags: &str,
    notes: impl FnOnce(&crate::Report) -> String,
) -> anyhow::Result<(Env, crate::Report)> {
    let shipped = r.as_shipped().await?;
    let server = r.start_server(scenario, &shipped).await?;
    let (report, m) = r
        .run_bench(scenario, &server, flags, OnHold::Release)
        .await?;
    r.publishing_row(scenario, &report, &m, notes(&report));
    r.check_shipped_spans(scenario, &server, &report).await;
    server.stop().await;
    Ok((shipped, report))
}

/// The latency target is for half the maximum rate: the closed loop of
/// `rooms` runs at the maximum, so run again open loop at half its publish
/// rate (a message reaches the 10 members of its room).
async fn half_rate(r: &mut Runner, shipped: &Env, deliveries_per_sec: f64) -> anyhow::Result<()> {
    const SCENARIO: &str = "rooms_half_rate";
    let half = (deliveries_per_sec / 10.0 / 2.0) as u64;
    let server = r.start_server(SCENARIO, shipped).await?;
    let flags =
        format!("--connections 100 --rooms 10 --publishers 10 --messages 4000 --rate {half}");
    let (report, m) = r
        .run_bench(SCENARIO, &server, &flags, OnHold::Release)
        .await?;
    let notes = format!("rooms shape open loop at {half} msgs/s (half the maximum above)");
    r.publishing_row(SCENARIO, &report, &m, notes);
    server.stop().await;
    Ok(())
}

/// The bench flags that hold IDLE_CONNECTIONS subscribed, idle connections
/// over 100 rooms (until the hold's work is done).
fn idle_flags() -> String {
    format!(
        "--connections {IDLE_CONNECTIONS} --rooms 100 --publishers 0 --messages 0 \
         --connect-rate 2000 --hold 5m"
    )
}

fn check_all_connected(scenario: &str, report: &crate::Report) -> anyhow::Result<()> {
    if report.connected != IDLE_CONNECTIONS {
        bail!(
            "{scenario}: only {} of {IDLE_CONNECTIONS} connected: {}",
            report.connected,
            report.to_json()
        );
    }
    Ok(())
}

pub async fn idle(r: &mut Runner) -> anyhow::Result<()> {
    let shipped = r.as_shipped().await?;
    let server = r.start_server("idle", &shipped).await?;
    let before = super::procfs::rss_kib(server.pid())?;
    let (report, m) = r
        .run_bench("idle", &server, &idle_flags(), OnHold::Rss)
        .await?;
    check_all_connected("idle", &report)?;
    let held = m.held_rss_kib.unwrap_or(0);
    let per_conn = (held as f64 - before as f64) / IDLE_CONNECTIONS as f64;
    let connect_secs: String = json_number(report.connect_secs).chars().take(5).collect();
    let notes = format!(
        "{IDLE_CONNECTIONS} idle conns in 100 rooms: {per_conn:.1} KiB/conn (RSS {} → {} MiB), connected in {connect_secs} s",
        before / 1024,
        held / 1024
    );
    r.rows.push(Row::held("idle", held, notes));
    server.stop().await;
    Ok(())
}

pub async fn scrape(r: &mut Runner) -> anyhow::Result<()> {
    let server = r.start_server("scrape", &Env::new()).await?;
    let empty = measure::scrape_ms(server.addr).await?;
    let (report, m) = r
        .run_bench("scrape", &server, &idle_flags(), OnHold::Scrape)
        .await?;
    check_all_connected("scrape", &report)?;
    let notes = format!(
        "/metrics median of 20: {} with {IDLE_CONNECTIONS} conns; {empty} with 0",
        m.held_scrape.unwrap_or_default()
    );
    r.rows
        .push(Row::held("scrape", m.held_rss_kib.unwrap_or(0), notes));
    server.stop().await;
    Ok(())
}
