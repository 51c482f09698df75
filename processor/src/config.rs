//! What the processor computes with: lateness, SLAs, gate limits, windows;
//! and the `[processor]`, `[sla]` and `[lake]` sections of the configuration.

use schemas::InputTopic;
use schemas::Timestamp;
use schemas::severity::Severity;
use schemas::time::{MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_SECOND};

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
    /// How far behind its task's newest event, in µs of event time, an
    /// event of the assets topic may be and still be applied: the histories
    /// it may revise (inventories, findings, postures, policy decisions) are
    /// kept exactly for this long, and an older event is a dead letter
    /// ("beyond retention"). Unused when `settled_retention_us` is 0.
    pub late_alert_horizon_us: i64,
    /// `run` only: after this long (wall clock, µs) without an event, a
    /// task's watermark follows the wall clock minus the allowed lateness,
    /// so deadlines fire on quiet partitions; 0 never (event time only).
    pub idle_timeout_us: i64,
    /// How long, in µs of event time, a settled key (an exposure remediated
    /// or suppressed, an outcome, a rollout or a drift window with no event
    /// since) is kept before it is forgotten; a canary stage or flow that
    /// far behind its task's largest event time is a dead letter ("beyond
    /// retention"). 0 keeps everything forever and applies events of any age.
    pub settled_retention_us: i64,
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
            late_alert_horizon_us: 7 * MICROS_PER_DAY,
            idle_timeout_us: 5 * 60 * MICROS_PER_SECOND,
            settled_retention_us: 90 * MICROS_PER_DAY,
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

    /// How far behind its task's newest event an event of `topic` may be
    /// and still be applied (DOMAIN.md "Exact or refused"), in µs; `None`:
    /// any age (intel, or retention 0). The assets task compacts its
    /// histories at this limit, the others forget settled keys at it.
    pub fn lateness_limit_us(&self, topic: InputTopic) -> Option<i64> {
        match topic {
            _ if self.settled_retention_us == 0 => None,
            InputTopic::Intel => None,
            InputTopic::Assets => Some(self.late_alert_horizon_us),
            InputTopic::Rollouts | InputTopic::Network => Some(self.settled_retention_us),
        }
    }

    /// The time before which the assets task may compact a history whose
    /// newest entry is `newest`, `watermark` being the task's (every timer up
    /// to it has run): no event older than it is still applied, since it is
    /// at most the task's newest event time minus [`Self::lateness_limit_us`].
    /// The start of time (nothing compacted) when every age is applied.
    pub fn history_cutoff(&self, newest: Timestamp, watermark: Timestamp) -> Timestamp {
        match self.lateness_limit_us(InputTopic::Assets) {
            Some(limit) => newest.min(watermark).add_micros(-limit),
            None => Timestamp(i64::MIN),
        }
    }
}

/// The `[processor]` section of the configuration: the domain rules in the
/// units a person writes. Keep it fixed for the life of a lake: its state
/// and rows were computed with it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProcessorSection {
    /// How far the watermark trails the largest event time.
    pub allowed_lateness_secs: u64,
    /// A rollout's gate is `rollback` above this many failed stages.
    pub canary_failure_limit: u64,
    /// A rollout's gate is `hold` above this many inconclusive stages.
    pub canary_inconclusive_limit: u64,
    /// A verified patch must be followed by a posture assessment this soon.
    pub posture_reeval_window_secs: u64,
    /// A trust-score drop of more than this after a patch is a regression.
    pub posture_regression_points: f64,
    /// Size of the tumbling segmentation-drift windows.
    pub drift_window_secs: u64,
    /// Event ids remembered per task to drop duplicates.
    pub dedupe_capacity: usize,
    /// How late an asset event may be (behind the newest event of its
    /// task) and still be applied, every alert it makes hold raised; an
    /// older one is a dead letter. The asset histories are kept this long.
    pub late_alert_horizon_secs: u64,
    /// `run` only: a task without events this long has its watermark follow
    /// the wall clock (minus the allowed lateness); 0 turns that off.
    pub idle_timeout_secs: u64,
    /// Days a settled key is kept after its last event (an exposure
    /// remediated or suppressed, a deployment outcome, a rollout, a drift
    /// window); a canary stage or flow this far behind its task's newest is
    /// a dead letter. 0 keeps all state forever (and applies events of any age).
    pub settled_retention_days: u64,
}

impl Default for ProcessorSection {
    fn default() -> Self {
        let defaults = ProcessorConfig::default();
        ProcessorSection {
            allowed_lateness_secs: (defaults.allowed_lateness_us / MICROS_PER_SECOND) as u64,
            canary_failure_limit: defaults.canary_failure_limit,
            canary_inconclusive_limit: defaults.canary_inconclusive_limit,
            posture_reeval_window_secs: (defaults.posture_reeval_window_us / MICROS_PER_SECOND) as u64,
            posture_regression_points: defaults.posture_regression_points,
            drift_window_secs: (defaults.drift_window_us / MICROS_PER_SECOND) as u64,
            dedupe_capacity: defaults.dedupe_capacity,
            late_alert_horizon_secs: (defaults.late_alert_horizon_us / MICROS_PER_SECOND) as u64,
            idle_timeout_secs: (defaults.idle_timeout_us / MICROS_PER_SECOND) as u64,
            settled_retention_days: (defaults.settled_retention_us / MICROS_PER_DAY) as u64,
        }
    }
}

impl ProcessorSection {
    /// Values out of range, every one.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = schemas::class::Problems::default();
        problems.check(self.allowed_lateness_secs <= 7 * 86_400, || {
            format!("processor.allowed_lateness_secs must be at most 7 days, got {}", self.allowed_lateness_secs)
        });
        problems.check(self.posture_reeval_window_secs >= 1, || {
            "processor.posture_reeval_window_secs must be at least 1".to_owned()
        });
        problems.check((0.0..=100.0).contains(&self.posture_regression_points), || {
            format!(
                "processor.posture_regression_points must be between 0 and 100, got {}",
                self.posture_regression_points
            )
        });
        problems.check((60..=86_400).contains(&self.drift_window_secs) && 86_400 % self.drift_window_secs == 0, || {
            format!("processor.drift_window_secs must divide a day and be at least 60, got {}", self.drift_window_secs)
        });
        problems.check((3_600..=90 * 86_400).contains(&self.late_alert_horizon_secs), || {
            format!(
                "processor.late_alert_horizon_secs must be between 1 hour and 90 days, got {}",
                self.late_alert_horizon_secs
            )
        });
        problems.check(self.idle_timeout_secs <= 7 * 86_400, || {
            format!("processor.idle_timeout_secs must be at most 7 days (0: never), got {}", self.idle_timeout_secs)
        });
        // Retention must outlast the late-alert horizon: the re-checks
        // within it read the state of its keys.
        let horizon_days = self.late_alert_horizon_secs.div_ceil(86_400);
        problems.check(
            self.settled_retention_days == 0 || (horizon_days.max(1)..=36_500).contains(&self.settled_retention_days),
            || {
                format!(
                    "processor.settled_retention_days must be 0 (keep forever) or between the late-alert horizon \
                     ({horizon_days} days) and 36500, got {}",
                    self.settled_retention_days
                )
            },
        );
        problems.check(self.dedupe_capacity >= 1_000, || {
            format!("processor.dedupe_capacity must be at least 1000, got {}", self.dedupe_capacity)
        });
        problems.0
    }
}

/// The `[sla]` section: days to remediate an exposure whose CVE has no KEV due date.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct SlaSection {
    pub critical_days: u32,
    pub high_days: u32,
    pub medium_days: u32,
    pub low_days: u32,
}

impl Default for SlaSection {
    fn default() -> Self {
        let [critical, high, medium, low] = ProcessorConfig::default().sla_days;
        SlaSection {
            critical_days: critical as u32,
            high_days: high as u32,
            medium_days: medium as u32,
            low_days: low as u32,
        }
    }
}

impl SlaSection {
    /// Values out of range, every one.
    pub fn problems(&self) -> Vec<String> {
        [
            ("critical_days", self.critical_days),
            ("high_days", self.high_days),
            ("medium_days", self.medium_days),
            ("low_days", self.low_days),
        ]
        .into_iter()
        .filter(|(_, days)| !(1..=3_650).contains(days))
        .map(|(key, days)| format!("sla.{key} must be between 1 and 3650, got {days}"))
        .collect()
    }
}

impl ProcessorConfig {
    /// The rules the `[processor]` and `[sla]` sections say.
    pub fn from_sections(p: &ProcessorSection, sla: &SlaSection) -> ProcessorConfig {
        let secs = |s: u64| s as i64 * MICROS_PER_SECOND;
        ProcessorConfig {
            allowed_lateness_us: secs(p.allowed_lateness_secs),
            sla_days: [
                i64::from(sla.critical_days),
                i64::from(sla.high_days),
                i64::from(sla.medium_days),
                i64::from(sla.low_days),
            ],
            canary_failure_limit: p.canary_failure_limit,
            canary_inconclusive_limit: p.canary_inconclusive_limit,
            posture_reeval_window_us: secs(p.posture_reeval_window_secs),
            posture_regression_points: p.posture_regression_points,
            drift_window_us: secs(p.drift_window_secs).max(MICROS_PER_HOUR / 60),
            dedupe_capacity: p.dedupe_capacity,
            late_alert_horizon_us: secs(p.late_alert_horizon_secs),
            idle_timeout_us: secs(p.idle_timeout_secs),
            settled_retention_us: (p.settled_retention_days as i64).saturating_mul(MICROS_PER_DAY),
        }
    }
}

/// `[lake]`: where the lake is.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LakeConfig {
    /// A local directory, a `file://` URL, or `s3://BUCKET[/PREFIX]`.
    pub location: String,
    /// How often `run` publishes committed epochs to the Delta tables readers see.
    pub publish_interval_secs: u64,
    /// How often `run` merges the tables' small files (0: never).
    pub optimize_interval_secs: u64,
    /// How long files merged away stay before `run` (after each merge) or
    /// `lake vacuum` deletes them.
    pub vacuum_retain_hours: u64,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            location: "lake".to_owned(),
            publish_interval_secs: 10,
            optimize_interval_secs: 600,
            vacuum_retain_hours: 1,
        }
    }
}

impl LakeConfig {
    /// The problem with a location that must already hold a lake (`sql`,
    /// `serve`, `lake`), if any: a local path must be a directory.
    pub fn missing_lake(&self) -> Option<String> {
        let location = &self.location;
        let local = location.trim_start_matches("file://");
        (!location.starts_with("s3://") && !std::path::Path::new(local).is_dir()).then(|| {
            format!(
                "the lake {location:?} (--lake, lake.location) is not a directory (build one with `patchtrail replay` or `run`)"
            )
        })
    }

    /// Values out of range, every one.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=3600).contains(&self.publish_interval_secs) {
            problems.push("lake.publish_interval_secs must be between 1 and 3600".to_owned());
        }
        if self.optimize_interval_secs != 0 && self.optimize_interval_secs < 60 {
            problems.push("lake.optimize_interval_secs must be 0 (never) or at least 60".to_owned());
        }
        let tombstones = crate::delta::TOMBSTONE_RETENTION_HOURS;
        if self.vacuum_retain_hours >= tombstones {
            problems.push(format!(
                "lake.vacuum_retain_hours must be below {tombstones} (the tables remember files merged away for \
                 {tombstones} h), got {}",
                self.vacuum_retain_hours
            ));
        }
        if self.location.trim().is_empty() {
            problems.push("lake.location (--lake) must not be empty".to_owned());
        }
        problems
    }
}
