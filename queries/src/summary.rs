//! What a security lead asks first, as typed figures from the views of one
//! snapshot: `patchtrail demo` prints it, and nothing outside this crate
//! writes the SQL behind it.

use std::fmt;

use schemas::Timestamp;

use crate::columns::{Columns, float_at, int_at, text_at};
use crate::error::QueryError;
use crate::priorities::{Queue, QueueRow};
use crate::session::LakeSession;

/// Time-to-patch of one patch severity (the `outcome_severity` view).
#[derive(Clone, Debug, PartialEq)]
pub struct TimeToPatch {
    /// The patch's severity.
    pub severity: String,
    /// Remediated (asset, patch) pairs.
    pub patched: i64,
    /// Median time-to-patch, days.
    pub median_days: Option<f64>,
    /// 90th percentile, days (linear interpolation, as `ttp_matrix`).
    pub p90_days: Option<f64>,
}

/// SLA compliance of one severity (the `sla_compliance` view, over environments).
#[derive(Clone, Debug, PartialEq)]
pub struct Compliance {
    /// The exposures' severity.
    pub severity: String,
    /// Exposures counted for SLAs.
    pub exposures: i64,
    /// Of which open.
    pub open: i64,
    /// Of which breached.
    pub breached: i64,
    /// 1 − breached / exposures.
    pub compliance: Option<f64>,
}

/// Rollouts of one canary gate.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    /// `promote`, `hold` or `rollback`.
    pub gate: String,
    /// Rollouts with this gate.
    pub rollouts: i64,
    /// Their mean stage failure rate.
    pub mean_failure_rate: Option<f64>,
    /// The worst of them.
    pub worst_failure_rate: Option<f64>,
}

/// One segment pair with drift (the `drift_summary` view).
#[derive(Clone, Debug, PartialEq)]
pub struct Drift {
    /// Source segment.
    pub src_segment: String,
    /// Destination segment.
    pub dst_segment: String,
    /// Connections whose enforced action differed from the intended one.
    pub drift_connections: i64,
    /// All connections.
    pub connections: i64,
    /// Their ratio.
    pub drift_ratio: Option<f64>,
}

/// The summary of one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The lake's as-of time.
    pub as_of: Option<Timestamp>,
    /// Per patch severity, most severe first.
    pub time_to_patch: Vec<TimeToPatch>,
    /// Per severity, most severe first.
    pub compliance: Vec<Compliance>,
    /// Open KEV exposures past due.
    pub kev_past_due: i64,
    /// On how many assets.
    pub kev_past_due_assets: i64,
    /// Per gate.
    pub gates: Vec<Gate>,
    /// The worst segment pairs by drift (five).
    pub drift: Vec<Drift>,
    /// The top of the priority queue (ten).
    pub queue: Vec<QueueRow>,
    /// Alerts per rule, most first.
    pub alerts: Vec<(String, i64)>,
    /// Dead letters.
    pub dead_letters: i64,
}

const TIME_TO_PATCH_SQL: &str = "SELECT s.severity, count(*) AS patched, \
     median(o.time_to_patch_s) / 86400.0 AS median_d, \
     percentile_cont(o.time_to_patch_s, 0.9) / 86400.0 AS p90_d \
     FROM patch_outcomes o JOIN outcome_severity s ON s.asset_id = o.asset_id AND s.patch_id = o.patch_id \
     WHERE o.time_to_patch_s IS NOT NULL GROUP BY s.severity, s.level ORDER BY s.level DESC";
const COMPLIANCE_SQL: &str = "SELECT coalesce(severity, 'unknown') AS severity, sum(exposures) AS exposures, \
     sum(open) AS open, sum(breached) AS breached, \
     1.0 - CAST(sum(breached) AS DOUBLE) / sum(exposures) AS compliance FROM sla_compliance GROUP BY 1 \
     ORDER BY CASE severity WHEN 'critical' THEN 1 WHEN 'high' THEN 2 WHEN 'medium' THEN 3 WHEN 'low' THEN 4 ELSE 5 END";
const KEV_PAST_DUE_SQL: &str = "SELECT count(*) AS n, count(DISTINCT asset_id) AS assets FROM exposures \
     WHERE status = 'open' AND kev AND breached";
const GATES_SQL: &str = "SELECT gate, count(*) AS rollouts, avg(failure_rate) AS mean_failure_rate, \
     max(failure_rate) AS worst FROM canary_rollups GROUP BY gate ORDER BY gate";
const DRIFT_SQL: &str = "SELECT src_segment, dst_segment, drift_connections, connections, drift_ratio \
     FROM drift_summary WHERE drift_connections > 0 ORDER BY drift_ratio DESC, connections DESC LIMIT 5";
const ALERTS_SQL: &str = "SELECT rule, count(*) AS n FROM alerts GROUP BY rule ORDER BY n DESC, rule";
const DEAD_LETTERS_SQL: &str = "SELECT count(*) AS n FROM dead_letters";

impl Summary {
    /// Computes the summary of `session`.
    pub async fn compute(session: &LakeSession) -> Result<Summary, QueryError> {
        let mut summary = Summary {
            as_of: session.as_of(),
            time_to_patch: Vec::new(),
            compliance: Vec::new(),
            kev_past_due: 0,
            kev_past_due_assets: 0,
            gates: Vec::new(),
            drift: Vec::new(),
            queue: Queue::top(session, 10).await?,
            alerts: Vec::new(),
            dead_letters: 0,
        };
        for batch in session.query(TIME_TO_PATCH_SQL).await?.1 {
            let c = Columns::new(&batch);
            let (severity, patched, median, p90) =
                (c.text("severity")?, c.int("patched")?, c.float("median_d")?, c.float("p90_d")?);
            for row in 0..c.len() {
                summary.time_to_patch.push(TimeToPatch {
                    severity: text_at(&severity, row).unwrap_or("unknown").to_owned(),
                    patched: patched.value(row),
                    median_days: float_at(&median, row),
                    p90_days: float_at(&p90, row),
                });
            }
        }
        for batch in session.query(COMPLIANCE_SQL).await?.1 {
            let c = Columns::new(&batch);
            let (severity, exposures, open) = (c.text("severity")?, c.int("exposures")?, c.int("open")?);
            let (breached, compliance) = (c.int("breached")?, c.float("compliance")?);
            for row in 0..c.len() {
                summary.compliance.push(Compliance {
                    severity: text_at(&severity, row).unwrap_or("unknown").to_owned(),
                    exposures: int_at(&exposures, row).unwrap_or(0),
                    open: int_at(&open, row).unwrap_or(0),
                    breached: int_at(&breached, row).unwrap_or(0),
                    compliance: float_at(&compliance, row),
                });
            }
        }
        for batch in session.query(KEV_PAST_DUE_SQL).await?.1 {
            let c = Columns::new(&batch);
            let (n, assets) = (c.int("n")?, c.int("assets")?);
            if !c.is_empty() {
                (summary.kev_past_due, summary.kev_past_due_assets) = (n.value(0), assets.value(0));
            }
        }
        for batch in session.query(GATES_SQL).await?.1 {
            let c = Columns::new(&batch);
            let (gate, rollouts, mean, worst) =
                (c.text("gate")?, c.int("rollouts")?, c.float("mean_failure_rate")?, c.float("worst")?);
            for row in 0..c.len() {
                summary.gates.push(Gate {
                    gate: text_at(&gate, row).unwrap_or("unknown").to_owned(),
                    rollouts: rollouts.value(row),
                    mean_failure_rate: float_at(&mean, row),
                    worst_failure_rate: float_at(&worst, row),
                });
            }
        }
        for batch in session.query(DRIFT_SQL).await?.1 {
            let c = Columns::new(&batch);
            let (src, dst) = (c.text("src_segment")?, c.text("dst_segment")?);
            let (drift, connections, ratio) =
                (c.int("drift_connections")?, c.int("connections")?, c.float("drift_ratio")?);
            for row in 0..c.len() {
                summary.drift.push(Drift {
                    src_segment: text_at(&src, row).unwrap_or("unknown").to_owned(),
                    dst_segment: text_at(&dst, row).unwrap_or("unknown").to_owned(),
                    drift_connections: int_at(&drift, row).unwrap_or(0),
                    connections: int_at(&connections, row).unwrap_or(0),
                    drift_ratio: float_at(&ratio, row),
                });
            }
        }
        for batch in session.query(ALERTS_SQL).await?.1 {
            let c = Columns::new(&batch);
            let (rule, n) = (c.text("rule")?, c.int("n")?);
            for row in 0..c.len() {
                summary.alerts.push((text_at(&rule, row).unwrap_or("unknown").to_owned(), n.value(row)));
            }
        }
        for batch in session.query(DEAD_LETTERS_SQL).await?.1 {
            let c = Columns::new(&batch);
            if !c.is_empty() {
                summary.dead_letters = c.int("n")?.value(0);
            }
        }
        Ok(summary)
    }
}

/// As `patchtrail demo` prints it.
fn or_nan(value: Option<f64>) -> f64 {
    value.unwrap_or(f64::NAN)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = self;
        let as_of = summary.as_of.map(|t| t.to_string()).unwrap_or_else(|| "-".to_owned());
        writeln!(f, "\nWhat the lake says, as of {as_of} (event time)")?;

        writeln!(f, "\n  Time to patch (release → verified install), per CVE severity of the patch")?;
        for line in &summary.time_to_patch {
            writeln!(
                f,
                "    {:<9} median {:>5.1} d   p90 {:>5.1} d   over {:>6} patched asset × patch",
                line.severity,
                or_nan(line.median_days),
                or_nan(line.p90_days),
                line.patched
            )?;
        }

        writeln!(f, "\n  SLA compliance (exposures remediated in time or still within their deadline)")?;
        for line in &summary.compliance {
            writeln!(
                f,
                "    {:<9} {:>6.1} %   of {:>6} exposures; {:>5} open, {:>5} breached",
                line.severity,
                100.0 * or_nan(line.compliance),
                line.exposures,
                line.open,
                line.breached
            )?;
        }
        writeln!(
            f,
            "    open KEV exposures past due: {} on {} assets",
            summary.kev_past_due, summary.kev_past_due_assets
        )?;

        writeln!(f, "\n  Canary gates")?;
        for line in &summary.gates {
            writeln!(
                f,
                "    {:<9} {:>4} rollouts, stage failure rate mean {:>5.1} %, worst {:>5.1} %",
                line.gate,
                line.rollouts,
                100.0 * or_nan(line.mean_failure_rate),
                100.0 * or_nan(line.worst_failure_rate)
            )?;
        }

        writeln!(f, "\n  Micro-segmentation: worst segment pairs by drift (allowed against intent, or the reverse)")?;
        for line in &summary.drift {
            writeln!(
                f,
                "    {:>14} → {:<14} {:>5.1} %  ({} of {} connections)",
                line.src_segment,
                line.dst_segment,
                100.0 * or_nan(line.drift_ratio),
                line.drift_connections,
                line.connections
            )?;
        }

        writeln!(f, "\n  Priority queue, top 10 (what to patch next)")?;
        for row in &summary.queue {
            writeln!(
                f,
                "    {:>2}. {:<12} {:<16} {:<9} {:<18} score {:>6.2}  due {}{}{}",
                row.rank,
                row.asset_id,
                row.cve_id,
                row.severity.as_deref().unwrap_or("-"),
                row.patch_id.as_deref().unwrap_or("-"),
                or_nan(row.score),
                row.due_at.map(|t| t.to_string()).unwrap_or_else(|| "-".to_owned()),
                if row.kev { "  KEV" } else { "" },
                if row.blocked_by_canary { "  blocked by canary" } else { "" },
            )?;
        }

        writeln!(f, "\n  Alerts (OCSF 1.8.0 on patchtrail.alerts)")?;
        for (rule, n) in &summary.alerts {
            writeln!(f, "    {rule:<24} {n:>6}")?;
        }
        writeln!(f, "    dead letters (patchtrail.dlq): {}", summary.dead_letters)?;
        Ok(())
    }
}
