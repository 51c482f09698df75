//! Exposures: an (asset, CVE)'s findings folded into its status over
//! event time, its severity and due date, the breach checks, its row.

use super::*;

#[derive(Default, Serialize, Deserialize)]
pub(super) struct ExposureEntry {
    pub(super) findings: Vec<(Stamp, FindingStatus)>,
    /// The highest CVSS and severity the scanners reported in its findings
    /// as of each time (see [`Frontier`]): its severity where the catalog
    /// has no CVSS.
    pub(super) scanner_cvss: Frontier<f64>,
    pub(super) scanner_severity: Frontier<Severity>,
    /// The breach checks queued for it, so a change that keeps them queues nothing.
    pub(super) checks: Vec<Timestamp>,
    pub(super) committed: Option<u64>,
    pub(super) revision: i64,
}

/// The highest value reported as of any time, whatever the order of the
/// reports: the times at which the maximum rose, with the new maximum
/// (increasing in time order, so a report below the maximum of its time is
/// not kept, and one above it replaces the later entries it exceeds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Frontier<T>(Vec<(Timestamp, T)>);

impl<T> Default for Frontier<T> {
    fn default() -> Self {
        Frontier(Vec::new())
    }
}

impl<T: Copy + PartialOrd> Frontier<T> {
    pub(super) fn report(&mut self, at: Timestamp, value: T) {
        let idx = self.0.partition_point(|(time, _)| *time <= at);
        if idx > 0 && self.0[idx - 1].1 >= value {
            return;
        }
        let exceeded = self.0[idx..].iter().take_while(|(_, later)| *later <= value).count();
        self.0.splice(idx..idx + exceeded, [(at, value)]);
    }

    /// The highest value reported at or before `as_of` (`None`: ever).
    pub(super) fn max(&self, as_of: Option<Timestamp>) -> Option<T> {
        let end = as_of.map_or(self.0.len(), |at| self.0.partition_point(|(time, _)| *time <= at));
        end.checked_sub(1).map(|i| self.0[i].1)
    }

    pub(super) fn times(&self) -> impl Iterator<Item = Timestamp> + '_ {
        self.0.iter().map(|(time, _)| *time)
    }

    pub(super) fn trim(&mut self) {
        self.0.trim();
    }
}

impl ExposureEntry {
    /// Retention of `findings`: of those at or before `cutoff`, only the
    /// first and the last of each run of equal statuses are kept, a run
    /// being broken by any deployment success or rollback of the asset
    /// (`evidence`, sorted), the other evidence the exposure's timeline
    /// folds in. The middle of such a run changes nothing in the fold but
    /// `last_at`, which the run's last finding sets again; `cutoff` is at
    /// most the task's watermark minus the late-alert horizon, so no check
    /// asks about a time inside a dropped run. An open exposure scanned
    /// daily keeps the horizon's scans and two per run, not one per scan.
    pub(super) fn compact_findings(&mut self, cutoff: Timestamp, evidence: &[Timestamp]) {
        let split = self.findings.partition_point(|(stamp, _)| stamp.0 <= cutoff);
        if split < 3 {
            return;
        }
        let run_breaks = |from: Timestamp, to: Timestamp| {
            let at = evidence.partition_point(|t| *t < from);
            evidence.get(at).is_some_and(|t| *t <= to)
        };
        // A finding in the middle of a run: equal to both neighbours, no
        // other evidence between them.
        let middle: Vec<bool> = self.findings[..split]
            .windows(3)
            .map(|w| {
                let [(before, previous), (at, this), (after, next)] = [w[0], w[1], w[2]];
                previous == this && this == next && !run_breaks(before.0, at.0) && !run_breaks(at.0, after.0)
            })
            .collect();
        let mut idx = 0;
        self.findings.retain(|_| {
            let dropped = idx >= 1 && idx < split - 1 && middle[idx - 1];
            idx += 1;
            !dropped
        });
    }
}

/// The exposure state machine's result at some point in event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Open,
    Remediated,
    Suppressed,
}

impl Status {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Remediated => "remediated",
            Status::Suppressed => "suppressed",
        }
    }
}

#[derive(Debug, PartialEq)]
pub(super) struct ExposureFacts {
    pub(super) status: Status,
    pub(super) detected_at: Timestamp,
    pub(super) remediated_at: Option<Timestamp>,
    pub(super) remediated_by: Option<Sym>,
    pub(super) last_at: Timestamp,
    /// Its states over time: from when, the status and the remediation time.
    pub(super) spans: Vec<(Timestamp, Status, Option<Timestamp>)>,
}

impl ExposureFacts {
    fn opened(at: Timestamp) -> Self {
        ExposureFacts {
            status: Status::Open,
            detected_at: at,
            remediated_at: None,
            remediated_by: None,
            last_at: at,
            spans: vec![(at, Status::Open, None)],
        }
    }

    /// Records the state after an evidence at `at`, if it changed.
    fn record(&mut self, at: Timestamp) {
        let state = (self.status, self.remediated_at);
        if self.spans.last().is_none_or(|&(_, status, remediated)| (status, remediated) != state) {
            self.spans.push((at, state.0, state.1));
        }
    }

    /// Whether it is breached at `at` against `due_at`: open past its due
    /// date, or remediated after it; never while suppressed or before it
    /// was detected.
    pub(super) fn breached_at(&self, at: Timestamp, due_at: Timestamp) -> bool {
        let idx = self.spans.partition_point(|(from, ..)| *from <= at);
        match idx.checked_sub(1).map(|i| self.spans[i]) {
            None | Some((_, Status::Suppressed, _)) => false,
            Some((_, Status::Open, _)) => at > due_at,
            Some((_, Status::Remediated, remediated_at)) => remediated_at.is_some_and(|r| r > due_at),
        }
    }
}

impl AssetsState {
    pub(super) fn mark_exposures_of_patch(&mut self, asset: Sym, patch_id: &str, catalog: &Catalog) {
        let Some(info) = catalog.patch(patch_id) else { return };
        for cve_id in &info.fixes_cves {
            if let Some(cve) = self.names.get(cve_id)
                && self.exposures.contains_key(&(asset, cve))
            {
                self.dirty_exposures.insert((asset, cve));
                self.unscheduled.push((asset, cve));
            }
        }
    }

    /// The instants at which an exposure turns breached (DOMAIN.md: "fires
    /// whenever an exposure becomes breached"), each judged with the
    /// catalog and the scanners' reports as of that instant: its deadline
    /// is a step function of time, changing when a feed or a scanner
    /// reports, and its state one changing with its evidence. It can only
    /// turn breached at a step of either, or just past a deadline.
    pub(super) fn breach_instants(
        &self,
        asset: Sym,
        cve: Sym,
        facts: &ExposureFacts,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) -> Vec<Timestamp> {
        let mut steps: Vec<Timestamp> = vec![facts.detected_at];
        if let Some(info) = catalog.cve(self.names.name(cve)) {
            steps.extend(info.deadline_changes());
        }
        if let Some(entry) = self.exposures.get(&(asset, cve)) {
            steps.extend(entry.scanner_cvss.times().chain(entry.scanner_severity.times()));
        }
        let due = |at: Timestamp| self.due_at(asset, cve, facts.detected_at, catalog, config, Some(at));
        let mut candidates: Vec<Timestamp> = facts.spans.iter().map(|(from, ..)| *from).collect();
        for &step in &steps {
            candidates.push(step);
            candidates.extend(due(step.max(facts.detected_at)).map(|due_at| due_at.add_micros(1)));
        }
        candidates.retain(|at| *at >= facts.detected_at);
        candidates.sort_unstable();
        candidates.dedup();
        let breached = |at: Timestamp| due(at).is_some_and(|due_at| facts.breached_at(at, due_at));
        candidates.into_iter().filter(|&at| breached(at) && !breached(at.add_micros(-1))).collect()
    }

    /// Queues the breach checks of an exposure at the instants it turns
    /// breached, from `from` on (the past too: a late event raises its
    /// alert when it is processed, dated by the breach).
    pub(super) fn schedule_breach_checks(
        &mut self,
        asset: Sym,
        cve: Sym,
        from: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let Some(facts) = self.exposure_facts(asset, cve, catalog, None) else { return };
        let instants = self.breach_instants(asset, cve, &facts, catalog, config);
        let Some(entry) = self.exposures.get_mut(&(asset, cve)) else { return };
        for at in instants.into_iter().filter(|at| *at >= from) {
            if !entry.checks.contains(&at) {
                entry.checks.push(at);
                self.deadlines.push(Reverse((at, Timer::Due { asset, cve })));
            }
        }
    }

    /// The CVE's catalog facts as of `as_of` (`None`: the latest).
    pub(super) fn cve_facts<'c>(
        &self,
        cve: Sym,
        catalog: &'c Catalog,
        as_of: Option<Timestamp>,
    ) -> Option<CveFacts<'c>> {
        let info = catalog.cve(self.names.name(cve))?;
        Some(as_of.map_or_else(|| info.latest(), |at| info.at(at)))
    }

    /// The severity of an exposure as of `as_of` (`None`: the latest) and
    /// where it comes from: the catalog's CVSS, else the highest CVSS its
    /// scanners reported, else their highest severity (DOMAIN.md "One CVE,
    /// several feeds"); none if nobody knows.
    pub(super) fn severity_of(
        &self,
        asset: Sym,
        cve: Sym,
        catalog: &Catalog,
        as_of: Option<Timestamp>,
    ) -> Option<(Severity, &'static str)> {
        if let Some(severity) = self.cve_facts(cve, catalog, as_of).and_then(|facts| facts.severity()) {
            return Some((severity, "catalog"));
        }
        let entry = self.exposures.get(&(asset, cve))?;
        let scanned = entry.scanner_cvss.max(as_of).map(Severity::from_cvss);
        scanned.or(entry.scanner_severity.max(as_of)).map(|severity| (severity, "scanner"))
    }

    /// The deadline of an exposure detected at `detected_at`, as of `as_of`
    /// (`None`: the latest): the day after its CVE's KEV due date, else its
    /// severity's SLA; none when neither is known.
    pub(super) fn due_at(
        &self,
        asset: Sym,
        cve: Sym,
        detected_at: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
        as_of: Option<Timestamp>,
    ) -> Option<Timestamp> {
        if let Some(date) = self.cve_facts(cve, catalog, as_of).and_then(|facts| facts.kev_due()) {
            return Some(date.succ().start());
        }
        let (severity, _) = self.severity_of(asset, cve, catalog, as_of)?;
        Some(detected_at.add_micros(config.sla_us(severity)))
    }

    /// Fires `SLA_BREACH` if the exposure is breached at `at`, judged as of `at`.
    pub(super) fn check_breach(
        &mut self,
        asset: Sym,
        cve: Sym,
        at: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let Some(row) = self.exposure_row(asset, cve, catalog, config, at, Some(at)) else { return };
        if !row.breached {
            return;
        }
        let entity = format!("{}/{}", row.asset_id, row.cve_id);
        let finding = self.breach_finding(&row, &entity, at, catalog);
        self.fire(Rule::SlaBreach, &entity, at, finding, FiredFor::Pair(asset, cve));
    }

    /// Folds one exposure's evidence in stamp order, up to `as_of` if given.
    /// `None` when no `open` finding has been seen (no row exists).
    pub(super) fn exposure_facts(
        &self,
        asset: Sym,
        cve: Sym,
        catalog: &Catalog,
        as_of: Option<Timestamp>,
    ) -> Option<ExposureFacts> {
        enum Evidence {
            Finding(FindingStatus),
            Success(Sym),
            Rollback(Sym),
        }
        let entry = self.exposures.get(&(asset, cve))?;
        let mut timeline: Vec<(Stamp, Evidence)> =
            entry.findings.iter().map(|&(stamp, status)| (stamp, Evidence::Finding(status))).collect();
        for patch_id in catalog.fixed_by(self.names.name(cve)) {
            let Some(patch) = self.names.get(patch_id) else { continue };
            let Some(outcome) = self.outcomes.get(&(asset, patch)) else { continue };
            let unverified = unverified_deployments(&outcome.events, catalog.patch(patch_id));
            for (stamp, event) in &outcome.events {
                match event.phase {
                    DeploymentPhase::Succeeded if !unverified.contains(&event.deployment) => {
                        timeline.push((*stamp, Evidence::Success(patch)))
                    }
                    DeploymentPhase::RolledBack => timeline.push((*stamp, Evidence::Rollback(patch))),
                    _ => {}
                }
            }
        }
        timeline.sort_by_key(|(stamp, _)| *stamp);
        let mut facts: Option<ExposureFacts> = None;
        for (stamp, evidence) in timeline {
            if as_of.is_some_and(|limit| stamp.0 > limit) {
                break;
            }
            let at = stamp.0;
            match (&mut facts, evidence) {
                (None, Evidence::Finding(FindingStatus::Open)) => facts = Some(ExposureFacts::opened(at)),
                (None, _) => {}
                (Some(f), Evidence::Finding(FindingStatus::Open)) => {
                    f.status = Status::Open;
                    f.remediated_at = None;
                    f.remediated_by = None;
                    f.last_at = at;
                }
                (Some(f), Evidence::Finding(FindingStatus::Fixed)) => {
                    if f.status != Status::Remediated {
                        f.status = Status::Remediated;
                        f.remediated_at = Some(at);
                        f.remediated_by = None;
                    }
                    f.last_at = at;
                }
                (Some(f), Evidence::Finding(FindingStatus::Suppressed)) => {
                    // A suppressed finding takes an open row out of SLA
                    // counting; on a remediated row it changes nothing.
                    if f.status == Status::Open {
                        f.status = Status::Suppressed;
                    }
                    f.last_at = at;
                }
                (Some(f), Evidence::Success(patch)) => {
                    if f.status != Status::Remediated {
                        f.status = Status::Remediated;
                        f.remediated_at = Some(at);
                        f.remediated_by = Some(patch);
                        f.last_at = at;
                    }
                }
                (Some(f), Evidence::Rollback(patch)) => {
                    if f.status == Status::Remediated && f.remediated_by == Some(patch) {
                        f.status = Status::Open;
                        f.remediated_at = None;
                        f.remediated_by = None;
                        f.last_at = at;
                    }
                }
            }
            if let Some(f) = &mut facts {
                f.record(at);
            }
        }
        facts
    }

    /// The exposure's row as of `as_of` (`None`: from all its evidence and
    /// the latest catalog, what the table shows), `now` judging an open row's breach.
    pub(super) fn exposure_row(
        &self,
        asset: Sym,
        cve: Sym,
        catalog: &Catalog,
        config: &ProcessorConfig,
        now: Timestamp,
        as_of: Option<Timestamp>,
    ) -> Option<ExposureRow> {
        let facts = self.exposure_facts(asset, cve, catalog, as_of)?;
        let cve_id = self.names.name(cve);
        let due_at = self.due_at(asset, cve, facts.detected_at, catalog, config, as_of);
        let severity = self.severity_of(asset, cve, catalog, as_of);
        let breached = match (facts.status, due_at) {
            (Status::Suppressed, _) | (_, None) => false,
            (_, Some(due_at)) => facts.remediated_at.unwrap_or(now) > due_at,
        };
        let mut updated_at = facts.last_at;
        if breached && facts.status == Status::Open {
            updated_at = updated_at.max(due_at.unwrap_or(updated_at));
        }
        let entry = self.exposures.get(&(asset, cve));
        Some(ExposureRow {
            asset_id: self.names.name(asset).to_owned(),
            cve_id: cve_id.to_owned(),
            status: facts.status.as_str(),
            severity: severity.map(|(severity, _)| severity.as_str()),
            kev: self.cve_facts(cve, catalog, as_of).is_some_and(|facts| facts.kev()),
            detected_at: facts.detected_at,
            remediated_at: facts.remediated_at,
            due_at,
            breached,
            remediated_by_patch_id: facts.remediated_by.map(|p| self.names.name(p).to_owned()),
            scanner_cvss: entry.and_then(|entry| entry.scanner_cvss.max(as_of)),
            severity_source: severity.map(|(_, source)| source),
            updated_at,
            revision: 0,
        })
    }

    pub(super) fn breach_finding(
        &self,
        row: &ExposureRow,
        entity: &str,
        at: Timestamp,
        catalog: &Catalog,
    ) -> ocsf::Finding {
        let info = catalog.cve(&row.cve_id).map(|info| info.at(at));
        // Unknown severity breaches only with a KEV due date: known
        // exploited, so High; OCSF's Unknown otherwise (docs/truth.md).
        let severity_id = match row.severity {
            Some("critical") => 5,
            Some("high") => 4,
            Some("medium") => 3,
            Some(_) => 2,
            None if row.kev => 4,
            None => 0,
        };
        let title = format!("{} on {} is past its remediation deadline", row.cve_id, row.asset_id);
        let alert_id = ocsf::alert_id(Rule::SlaBreach.name(), entity, "");
        let vulnerability = ocsf::Vulnerability {
            cve: ocsf::Cve {
                uid: row.cve_id.clone(),
                cvss: info
                    .and_then(|i| {
                        Some(ocsf::Cvss {
                            base_score: i.cvss_base()?,
                            version: i.cvss_version().unwrap_or("3.1").to_owned(),
                        })
                    })
                    .into_iter()
                    .collect(),
                epss: info.map(|i| i.epss()).and_then(|(epss, percentile)| {
                    epss.map(|score| ocsf::Epss { score: score.to_string(), percentile })
                }),
            },
            is_exploit_available: row.kev,
            title: row.cve_id.clone(),
        };
        ocsf::Finding::new(
            FindingClass::Vulnerability,
            Activity::Update,
            severity_id,
            at.millis(),
            &alert_id,
            Rule::SlaBreach.name(),
            title,
        )
        .with_device(self.device(&row.asset_id, at))
        .with_vulnerability(vulnerability)
        .with_unmapped(serde_json::json!({"due_at": row.due_at.map(|d| d.to_string()), "status": row.status}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    fn at(hour: i64) -> Timestamp {
        Timestamp(hour * HOUR)
    }

    /// The facts of an exposure detected at hour 0 after `changes` (status, hour).
    fn facts(changes: &[(Status, i64)]) -> ExposureFacts {
        let mut facts = ExposureFacts::opened(at(0));
        for &(status, hour) in changes {
            facts.status = status;
            if status == Status::Remediated {
                facts.remediated_at = Some(at(hour));
            }
            facts.record(at(hour));
        }
        facts
    }

    #[test]
    fn breaches_follow_the_states_and_the_remediation() {
        let check = |changes: &[(Status, i64)], due: i64, hour: i64, breached: bool| {
            let facts = facts(changes);
            assert_eq!(facts.breached_at(at(hour), at(due)), breached, "at {hour} after {changes:?}, due {due}");
        };
        check(&[], 10, 9, false);
        check(&[], 10, 11, true);
        check(&[(Status::Remediated, 5)], 10, 20, false);
        check(&[(Status::Remediated, 12)], 10, 20, true);
        // Reopened after its due date: breached from the reopening.
        check(&[(Status::Remediated, 5), (Status::Open, 15)], 10, 14, false);
        check(&[(Status::Remediated, 5), (Status::Open, 15)], 10, 15, true);
        check(&[(Status::Suppressed, 8)], 10, 20, false);
        // Remediated from suppressed after its due date: breached from then.
        check(&[(Status::Suppressed, 8), (Status::Remediated, 12)], 10, 11, false);
        check(&[(Status::Suppressed, 8), (Status::Remediated, 12)], 10, 12, true);
        check(&[], 10, -1, false);
    }

    #[test]
    fn a_frontier_answers_the_highest_value_reported_by_then_whatever_the_order() {
        let reports = [(5, 3.0), (2, 5.0), (9, 4.0), (1, 1.0), (7, 9.0), (3, 5.0), (8, 2.0)];
        let mut frontier = Frontier::default();
        for (i, &(hour, value)) in reports.iter().enumerate() {
            frontier.report(at(hour), value);
            for t in 0..12 {
                let expected = reports[..=i]
                    .iter()
                    .filter(|(h, _)| *h <= t)
                    .map(|(_, v)| *v)
                    .fold(None, |max: Option<f64>, v| Some(max.map_or(v, |m| m.max(v))));
                assert_eq!(frontier.max(Some(at(t))), expected, "at {t} after {i} reports");
            }
        }
        assert_eq!(frontier.0, [(at(1), 1.0), (at(2), 5.0), (at(7), 9.0)]);
        assert_eq!(frontier.max(None), Some(9.0));
    }
}
