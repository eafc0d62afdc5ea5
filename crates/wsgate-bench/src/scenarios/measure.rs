//! The bench's [`Observer`] during a scenario: it reads the server's CPU time
//! when publishing starts and when deliveries have settled (the CPU window),
//! its RSS after settling, and does the scenario's work while the connections
//! are held, after which the hold ends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::Observer;

use super::http;
use super::procfs::{self, CpuTime};

/// The scrapes of the scrape scenario come from 127.0.0.2: every bench
/// connection uses 127.0.0.1 → the gateway's port, and a 15,001st connect from
/// that same address spends a millisecond or two in the kernel just finding a
/// free ephemeral port, which is the test rig, not wsgate.
const SCRAPE_FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Scrapes per `/metrics` latency measurement.
const SCRAPES: usize = 20;

/// What to do while the connections are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHold {
    /// Nothing: end the hold at once.
    Release,
    /// Read the server's RSS.
    Rss,
    /// Read the server's RSS and time `/metrics`.
    Scrape,
    /// Wait for the exporter to drain (at least this many spans), then end the
    /// CPU window: the export is part of a traced setting's cost.
    ExportThenEndWindow { min_spans: u64 },
}

/// One bench run's measurements of the server.
#[derive(Debug)]
pub struct Measure {
    pid: u32,
    http: SocketAddr,
    on_hold: OnHold,
    start: Option<CpuTime>,
    /// Server CPU (user + kernel) from publishing to settled (or to the
    /// exporter drained), in nanoseconds; `None` without publishers.
    pub cpu_ns: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub held_rss_kib: Option<u64>,
    pub held_scrape: Option<String>,
    pub exported_spans: u64,
    /// A reading that failed (the server died?), reported after the run.
    pub error: Option<String>,
}

impl Measure {
    pub fn new(pid: u32, http: SocketAddr, on_hold: OnHold) -> Self {
        Self {
            pid,
            http,
            on_hold,
            start: None,
            cpu_ns: None,
            rss_after_kib: None,
            held_rss_kib: None,
            held_scrape: None,
            exported_spans: 0,
            error: None,
        }
    }

    fn cpu(&mut self) -> Option<CpuTime> {
        CpuTime::of(self.pid)
            .map_err(|e| self.error = Some(format!("reading the server's CPU time: {e}")))
            .ok()
    }

    fn rss(&mut self) -> Option<u64> {
        procfs::rss_kib(self.pid)
            .map_err(|e| self.error = Some(format!("reading the server's RSS: {e}")))
            .ok()
    }

    fn end_window(&mut self) {
        if let Some(start) = self.start
            && let Some(now) = self.cpu()
        {
            self.cpu_ns = Some(now.since(&start));
        }
    }
}

impl Observer for Measure {
    fn publishing(&mut self) {
        self.start = self.cpu();
    }

    fn settled(&mut self) {
        self.end_window();
        self.rss_after_kib = self.rss();
    }

    async fn holding(&mut self) {
        match self.on_hold {
            OnHold::Release => {}
            OnHold::Rss => self.held_rss_kib = self.rss(),
            OnHold::Scrape => {
                match scrape_ms(self.http).await {
                    Ok(s) => self.held_scrape = Some(s),
                    Err(e) => self.error = Some(format!("scraping /metrics: {e:#}")),
                }
                self.held_rss_kib = self.rss();
            }
            OnHold::ExportThenEndWindow { min_spans } => {
                if self.start.is_none() {
                    self.error = Some("no CPU reading from when publishing started".into());
                }
                self.exported_spans = wait_for_span_export(self.http, min_spans).await;
                self.end_window();
            }
        }
    }
}

/// Median of 20 `/metrics` scrapes from 127.0.0.2: "X ms total, Y ms server",
/// server being first byte minus connect, i.e. the gateway's own time.
pub async fn scrape_ms(addr: SocketAddr) -> anyhow::Result<String> {
    let mut total = Vec::with_capacity(SCRAPES);
    let mut server = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let r = http::get(addr, "/metrics", Some(SCRAPE_FROM)).await?;
        total.push(r.total.as_secs_f64() * 1000.0);
        server.push(r.server.as_secs_f64() * 1000.0);
    }
    Ok(format!(
        "{:.2} ms total, {:.2} ms server",
        super::table::median(&mut total),
        super::table::median(&mut server)
    ))
}

/// Waits (two minutes at most) until the server has exported at least `min`
/// spans and then stopped exporting, and returns how many it exported. Each
/// scrape is an HTTP request with a span of its own, so "stopped" means at
/// most two new spans in a second.
pub async fn wait_for_span_export(addr: SocketAddr, min: u64) -> u64 {
    // -1 before the first reading, as scripts/bench had it: a first reading
    // of at most one span that meets `min` counts as stopped.
    let mut last: i64 = -1;
    let mut now = 0;
    for _ in 0..120 {
        now = match http::get(addr, "/metrics", None).await {
            Ok(r) => http::exported_spans(&r.body),
            Err(_) => 0,
        };
        if now >= min && now as i64 - last <= 2 {
            break;
        }
        last = now as i64;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    now
}
