//! The metrics of the query side (CONTRACT.md §6): their names, the HTTP
//! metrics of `serve`, and the domain metrics computed from the lake.
//!
//! The domain metrics are computed with aggregate SQL over the views of
//! each new snapshot (so their memory is bounded by their labels, never by
//! the lake), and read through typed columns. Counters and the time-to-patch
//! histogram *follow the lake upwards*: each series shows the largest value
//! the lake has had, so Prometheus sees counters that never go down even
//! when a late event takes an exposure out of breach; the exact current
//! figures are the views'.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::columns::{Columns, text_at};
use crate::error::QueryError;
use crate::session::LakeSession;

/// Metric names, fixed by CONTRACT.md §6 (and the server's own).
pub mod names {
    /// Release to verified remediation of each (asset, patch), a histogram.
    pub const TIME_TO_PATCH: &str = "patchtrail_time_to_patch_seconds";
    /// Open exposures, by severity and KEV.
    pub const OPEN_EXPOSURES: &str = "patchtrail_open_exposures";
    /// Exposures past their due date, by severity.
    pub const SLA_BREACHES: &str = "patchtrail_sla_breaches_total";
    /// Exposures counted for SLAs (all but suppressed), by severity: with
    /// the breaches, the `sla_compliance` view's compliance.
    pub const SLA_EXPOSURES: &str = "patchtrail_sla_exposures";
    /// Rollouts by canary gate.
    pub const CANARY_GATES: &str = "patchtrail_canary_gate_total";
    /// Alerts, by rule.
    pub const ALERTS: &str = "patchtrail_alerts_total";
    /// Drift ratio of the worst segment pairs.
    pub const DRIFT_RATIO: &str = "patchtrail_segmentation_drift_ratio";
    /// HTTP requests answered, by route and status.
    pub const HTTP_REQUESTS: &str = "patchtrail_http_requests_total";
    /// Time to run one query.
    pub const QUERY_DURATION: &str = "patchtrail_query_duration_seconds";
}

/// Segment pairs `patchtrail_segmentation_drift_ratio` reports (the worst).
pub const DRIFT_PAIRS: usize = 20;

/// Upper bounds of the time-to-patch buckets: an hour to half a year.
const TTP_BUCKETS: [f64; 10] = {
    const H: f64 = 3_600.0;
    const D: f64 = 86_400.0;
    [H, 6.0 * H, D, 3.0 * D, 7.0 * D, 15.0 * D, 30.0 * D, 60.0 * D, 90.0 * D, 180.0 * D]
};

/// The Prometheus text exposition of `registry`.
pub fn exposition(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding gathered families into a Vec cannot fail.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The metrics of `serve`: its requests and queries, and the lake's figures.
pub struct ServerMetrics {
    /// Everything below, for `/metrics`.
    pub registry: Registry,
    /// Requests answered, by route and status.
    pub requests: IntCounterVec,
    /// Time to run one query, limits included.
    pub query_seconds: Histogram,
    /// The lake's figures.
    pub domain: DomainMetrics,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}

impl ServerMetrics {
    /// Every metric of the server, registered in a new registry.
    pub fn new() -> ServerMetrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(names::HTTP_REQUESTS, "HTTP requests answered, by route and status."),
            &["route", "status"],
        )
        .expect("valid metric");
        let query_seconds = Histogram::with_opts(
            HistogramOpts::new(names::QUERY_DURATION, "Time to run one query, limit included.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("registered once");
        registry.register(Box::new(query_seconds.clone())).expect("registered once");
        let domain = DomainMetrics::new(&registry);
        ServerMetrics { registry, requests, query_seconds, domain }
    }

    /// Counts one answered request.
    pub fn count(&self, route: &str, status: u16) {
        self.requests.with_label_values(&[route, &status.to_string()]).inc();
    }
}

/// The domain metrics of CONTRACT.md §6 that `serve` computes from the lake.
pub struct DomainMetrics {
    time_to_patch: Arc<LakeHistogram>,
    open_exposures: IntGaugeVec,
    sla_breaches: IntCounterVec,
    sla_exposures: IntGaugeVec,
    canary_gates: IntCounterVec,
    alerts: IntCounterVec,
    drift_ratio: GaugeVec,
}

/// Open exposures by severity and KEV (a gauge: the lake's count now).
const OPEN_EXPOSURES_SQL: &str = "SELECT coalesce(severity, 'unknown') AS severity, CAST(kev AS VARCHAR) AS kev, \
     count(*) AS n FROM exposures WHERE status = 'open' GROUP BY 1, 2";
/// Breached exposures by severity (a counter following the lake upwards).
const SLA_BREACHES_SQL: &str =
    "SELECT coalesce(severity, 'unknown') AS severity, count(*) AS n FROM exposures WHERE breached GROUP BY 1";
/// Exposures counted for SLAs by severity (a gauge: the `sla_compliance`
/// view's denominator).
const SLA_EXPOSURES_SQL: &str = "SELECT coalesce(severity, 'unknown') AS severity, count(*) AS n FROM exposures \
     WHERE status <> 'suppressed' GROUP BY 1";
/// Rollouts by gate.
const CANARY_GATES_SQL: &str = "SELECT gate, count(*) AS n FROM canary_rollups GROUP BY 1";
/// Alerts by rule.
const ALERTS_SQL: &str = "SELECT rule, count(*) AS n FROM alerts GROUP BY 1";

/// The time-to-patch distribution by the patch's severity (the
/// `outcome_severity` view) and the asset's environment: count, sum and the
/// cumulative count of each bucket.
fn time_to_patch_sql() -> String {
    let buckets: Vec<String> = TTP_BUCKETS
        .iter()
        .enumerate()
        .map(|(i, bound)| format!("sum(CASE WHEN o.time_to_patch_s <= {bound:?} THEN 1 ELSE 0 END) AS le_{i}"))
        .collect();
    format!(
        "SELECT s.severity, coalesce(a.environment, 'unknown') AS environment, count(*) AS n, \
         sum(o.time_to_patch_s) AS total, {} \
         FROM patch_outcomes o JOIN outcome_severity s ON s.asset_id = o.asset_id AND s.patch_id = o.patch_id \
         LEFT JOIN assets a ON a.asset_id = o.asset_id \
         WHERE o.time_to_patch_s IS NOT NULL GROUP BY 1, 2",
        buckets.join(", ")
    )
}

impl DomainMetrics {
    fn new(registry: &Registry) -> DomainMetrics {
        let time_to_patch = Arc::new(LakeHistogram::new(
            names::TIME_TO_PATCH,
            "Release to verified remediation of each (asset, patch), by the patch's highest CVE severity \
             and the asset's environment.",
            &["severity", "environment"],
            TTP_BUCKETS.to_vec(),
        ));
        let metrics = DomainMetrics {
            time_to_patch: Arc::clone(&time_to_patch),
            open_exposures: IntGaugeVec::new(
                Opts::new(names::OPEN_EXPOSURES, "Open exposures in the lake, by severity and KEV."),
                &["severity", "kev"],
            )
            .expect("valid metric"),
            sla_breaches: IntCounterVec::new(
                Opts::new(names::SLA_BREACHES, "Exposures past their due date, by severity."),
                &["severity"],
            )
            .expect("valid metric"),
            sla_exposures: IntGaugeVec::new(
                Opts::new(
                    names::SLA_EXPOSURES,
                    "Exposures counted for SLAs (all but suppressed), by severity; compliance is \
                     1 - sla_breaches_total / sla_exposures.",
                ),
                &["severity"],
            )
            .expect("valid metric"),
            canary_gates: IntCounterVec::new(
                Opts::new(names::CANARY_GATES, "Rollouts by their canary gate."),
                &["gate"],
            )
            .expect("valid metric"),
            alerts: IntCounterVec::new(Opts::new(names::ALERTS, "Alerts raised, by rule."), &["rule"])
                .expect("valid metric"),
            drift_ratio: GaugeVec::new(
                Opts::new(names::DRIFT_RATIO, "Drift connections over connections, the worst segment pairs only."),
                &["src_segment", "dst_segment"],
            )
            .expect("valid metric"),
        };
        registry.register(Box::new(ArcCollector(time_to_patch))).expect("registered once");
        registry.register(Box::new(metrics.open_exposures.clone())).expect("registered once");
        registry.register(Box::new(metrics.sla_breaches.clone())).expect("registered once");
        registry.register(Box::new(metrics.sla_exposures.clone())).expect("registered once");
        registry.register(Box::new(metrics.canary_gates.clone())).expect("registered once");
        registry.register(Box::new(metrics.alerts.clone())).expect("registered once");
        registry.register(Box::new(metrics.drift_ratio.clone())).expect("registered once");
        // Known label values start at zero, so a rate over them is defined from the first scrape.
        for severity in ["critical", "high", "medium", "low"] {
            metrics.sla_breaches.with_label_values(&[severity]);
        }
        for gate in ["promote", "hold", "rollback"] {
            metrics.canary_gates.with_label_values(&[gate]);
        }
        metrics
    }

    /// Recomputes every figure from `session` (a new snapshot of the lake).
    pub async fn update(&self, session: &LakeSession) -> Result<(), QueryError> {
        let (_, batches) = session.query(&time_to_patch_sql()).await?;
        for batch in &batches {
            let columns = Columns::new(batch);
            let (severity, environment) = (columns.text("severity")?, columns.text("environment")?);
            let (n, total) = (columns.int("n")?, columns.float("total")?);
            let buckets =
                (0..TTP_BUCKETS.len()).map(|i| columns.int(&format!("le_{i}"))).collect::<Result<Vec<_>, _>>()?;
            for row in 0..columns.len() {
                let labels = vec![label(&severity, row), label(&environment, row)];
                let series = Series {
                    cumulative: buckets.iter().map(|bucket| count_at(bucket.value(row))).collect(),
                    count: count_at(n.value(row)),
                    sum: total.value(row),
                };
                self.time_to_patch.follow(labels, series);
            }
        }
        let open = counts(session, OPEN_EXPOSURES_SQL, &["severity", "kev"]).await?;
        self.open_exposures.reset();
        for (labels, n) in open {
            self.open_exposures.with_label_values(&labels).set(n);
        }
        let counted = counts(session, SLA_EXPOSURES_SQL, &["severity"]).await?;
        self.sla_exposures.reset();
        for (labels, n) in counted {
            self.sla_exposures.with_label_values(&labels).set(n);
        }
        for (counter, sql, label) in [
            (&self.sla_breaches, SLA_BREACHES_SQL, "severity"),
            (&self.canary_gates, CANARY_GATES_SQL, "gate"),
            (&self.alerts, ALERTS_SQL, "rule"),
        ] {
            for (labels, n) in counts(session, sql, &[label]).await? {
                let counter = counter.with_label_values(&labels);
                counter.inc_by(count_at(n).saturating_sub(counter.get()));
            }
        }
        let worst = format!(
            "SELECT src_segment, dst_segment, drift_ratio FROM drift_summary \
             ORDER BY drift_ratio DESC, src_segment, dst_segment LIMIT {DRIFT_PAIRS}"
        );
        let (_, batches) = session.query(&worst).await?;
        self.drift_ratio.reset();
        for batch in &batches {
            let columns = Columns::new(batch);
            let (src, dst, ratio) =
                (columns.text("src_segment")?, columns.text("dst_segment")?, columns.float("drift_ratio")?);
            for row in 0..columns.len() {
                self.drift_ratio.with_label_values(&[label(&src, row), label(&dst, row)]).set(ratio.value(row));
            }
        }
        Ok(())
    }
}

/// A label value: null (a row the SQL could not name) is `unknown`.
fn label(array: &arrow::array::StringArray, row: usize) -> String {
    text_at(array, row).unwrap_or("unknown").to_owned()
}

fn count_at(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Rows of `sql`: the text columns `labels` and the count `n`.
async fn counts(session: &LakeSession, sql: &str, labels: &[&str]) -> Result<Vec<(Vec<String>, i64)>, QueryError> {
    let (_, batches) = session.query(sql).await?;
    let mut out = Vec::new();
    for batch in &batches {
        let columns = Columns::new(batch);
        let texts = labels.iter().map(|name| columns.text(name)).collect::<Result<Vec<_>, _>>()?;
        let n = columns.int("n")?;
        for row in 0..columns.len() {
            out.push((texts.iter().map(|text| label(text, row)).collect(), n.value(row)));
        }
    }
    Ok(out)
}

/// One labelled series of a [`LakeHistogram`].
#[derive(Clone, Debug, Default, PartialEq)]
struct Series {
    /// Cumulative count per bucket bound.
    cumulative: Vec<u64>,
    count: u64,
    sum: f64,
}

/// A Prometheus histogram whose series are set from the lake's
/// distribution rather than observed one value at a time: per bucket, the
/// count and the sum keep the largest value the lake has shown, so the
/// series only grow (a late event that moves a value between buckets adds
/// to the new one without taking from the old). Memory: one series per
/// label combination.
struct LakeHistogram {
    desc: Desc,
    bounds: Vec<f64>,
    series: Mutex<BTreeMap<Vec<String>, Series>>,
}

impl LakeHistogram {
    fn new(name: &str, help: &str, labels: &[&str], bounds: Vec<f64>) -> Self {
        let labels = labels.iter().map(|l| (*l).to_owned()).collect();
        let desc = Desc::new(name.to_owned(), help.to_owned(), labels, Default::default()).expect("valid metric");
        LakeHistogram { desc, bounds, series: Mutex::new(BTreeMap::new()) }
    }

    /// Raises the series of `labels` to what the lake shows now.
    fn follow(&self, labels: Vec<String>, lake: Series) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let shown = series
            .entry(labels)
            .or_insert_with(|| Series { cumulative: vec![0; lake.cumulative.len()], ..Series::default() });
        for (shown, lake) in shown.cumulative.iter_mut().zip(&lake.cumulative) {
            *shown = (*shown).max(*lake);
        }
        shown.count = shown.count.max(lake.count);
        shown.sum = shown.sum.max(lake.sum);
    }
}

impl Collector for LakeHistogram {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let metrics = series
            .iter()
            .map(|(labels, series)| {
                let pairs = self
                    .desc
                    .variable_labels
                    .iter()
                    .zip(labels)
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect();
                let buckets = self
                    .bounds
                    .iter()
                    .zip(&series.cumulative)
                    .map(|(bound, count)| {
                        let mut bucket = Bucket::default();
                        bucket.set_upper_bound(*bound);
                        bucket.set_cumulative_count(*count);
                        bucket
                    })
                    .collect();
                let mut histogram = prometheus::proto::Histogram::default();
                histogram.set_sample_count(series.count);
                histogram.set_sample_sum(series.sum);
                histogram.set_bucket(buckets);
                let mut metric = Metric::default();
                metric.set_label(pairs);
                metric.set_histogram(histogram);
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}

/// Registers a shared collector.
struct ArcCollector(Arc<LakeHistogram>);

impl Collector for ArcCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lake_histogram_follows_the_lake_upwards_and_exposes_cumulative_buckets() {
        let histogram = LakeHistogram::new("t_seconds", "help", &["severity"], vec![1.0, 10.0]);
        let series = |cumulative: Vec<u64>, count, sum| Series { cumulative, count, sum };
        histogram.follow(vec!["high".to_owned()], series(vec![1, 2], 3, 30.0));
        // A late event moved a value from the first bucket to the second.
        histogram.follow(vec!["high".to_owned()], series(vec![0, 2], 3, 31.0));
        let registry = Registry::new();
        registry.register(Box::new(histogram)).expect("registers");
        let text = exposition(&registry);
        assert!(text.contains("# TYPE t_seconds histogram"), "{text}");
        assert!(text.contains("t_seconds_bucket{severity=\"high\",le=\"1\"} 1"), "{text}");
        assert!(text.contains("t_seconds_bucket{severity=\"high\",le=\"10\"} 2"), "{text}");
        assert!(text.contains("t_seconds_bucket{severity=\"high\",le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("t_seconds_sum{severity=\"high\"} 31"), "{text}");
        assert!(text.contains("t_seconds_count{severity=\"high\"} 3"), "{text}");
    }
}
