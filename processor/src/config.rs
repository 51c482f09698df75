//! What the processor computes with: lateness, SLAs, gate limits, windows.

use schemas::severity::Severity;
use schemas::time::{MICROS_PER_DAY, MICROS_PER_HOUR};

/// Settings of the domain rules (DOMAIN.md); the defaults are the contract's.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessorConfig {
    /// How far behind the largest event time the watermark trails, in µs.
    pub allowed_lateness_us: i64,
    /// Days to remediate a non-KEV exposure, by severity: critical, high, medium, low.
    pub sla_days: [i64; 4],
    /// A rollout's gate is `rollback` above this many failed stages.
    pub canary_failure_limit: u64,
    /// A rollout's gate is `hold` above this many inconclusive stages.
    pub canary_inconclusive_limit: u64,
    /// A verified patch must be followed by a posture assessment within this window, in µs.
    pub posture_reeval_window_us: i64,
    /// A trust-score drop of more than this many points after a patch is a regression.
    pub posture_regression_points: f64,
    /// Size of the tumbling segmentation-drift windows, in µs.
    pub drift_window_us: i64,
    /// Event ids remembered per task to drop duplicates.
    pub dedupe_capacity: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            allowed_lateness_us: MICROS_PER_HOUR,
            sla_days: [15, 30, 90, 180],
            canary_failure_limit: 0,
            canary_inconclusive_limit: 0,
            posture_reeval_window_us: 4 * MICROS_PER_HOUR,
            posture_regression_points: 20.0,
            drift_window_us: MICROS_PER_HOUR,
            dedupe_capacity: 200_000,
        }
    }
}

impl ProcessorConfig {
    /// The remediation deadline after detection for a non-KEV CVE, in µs.
    pub fn sla_us(&self, severity: Severity) -> i64 {
        let days = match severity {
            Severity::Critical => self.sla_days[0],
            Severity::High => self.sla_days[1],
            Severity::Medium => self.sla_days[2],
            Severity::Low => self.sla_days[3],
        };
        days * MICROS_PER_DAY
    }
}
