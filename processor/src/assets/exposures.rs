//! Exposures: an (asset, CVE)'s findings folded into its status over
//! event time, its severity and due date, the breach checks, its row.

use super::*;

#[derive(Default, Serialize, Deserialize)]
pub(super) struct ExposureEntry {
    pub(super) findings: Vec<(Stamp, FindingStatus)>,
    /// The highest CVSS and severity the scanners reported in its findings
    /// (whatever their order): its severity where the catalog has no CVSS.
    pub(super) scanner_cvss: Option<f64>,
    pub(super) scanner_severity: Option<Severity>,
    /// The breach checks queued for it, so a change that keeps them queues nothing.
    pub(super) checks: Vec<Timestamp>,
    pub(super) committed: Option<u64>,
    pub(super) revision: i64,
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
    /// The intervals it was open: from, and until (`None`: still open).
    pub(super) open: Vec<(Timestamp, Option<Timestamp>)>,
}

impl ExposureFacts {
    pub(super) fn set_status(&mut self, status: Status, at: Timestamp) {
        match (self.status == Status::Open, status == Status::Open) {
            (true, false) => {
                if let Some(last) = self.open.last_mut() {
                    last.1 = Some(at);
                }
            }
            (false, true) => self.open.push((at, None)),
            _ => {}
        }
        self.status = status;
    }

    /// The instants at which it turns breached while open: in each open
    /// interval, the later of its start and just past `due_at`.
    pub(super) fn breach_instants(&self, due_at: Timestamp) -> impl Iterator<Item = Timestamp> + '_ {
        let past_due = due_at.add_micros(1);
        self.open.iter().filter_map(move |&(from, until)| {
            let at = from.max(past_due);
            until.is_none_or(|until| at < until).then_some(at)
        })
    }

    /// Whether it is breached as of `now`: open past its due date, or
    /// remediated after it.
    pub(super) fn breached(&self, due_at: Timestamp, now: Timestamp) -> bool {
        match self.status {
            Status::Suppressed => false,
            Status::Open => now > due_at,
            Status::Remediated => self.remediated_at.is_some_and(|at| at > due_at),
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

    /// Queues the breach checks of an exposure at the instants its evidence
    /// makes it breached while open, from `from` on (the past too: a late
    /// event raises its alert when it is processed, dated by the breach).
    pub(super) fn schedule_breach_checks(
        &mut self,
        asset: Sym,
        cve: Sym,
        from: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let Some(facts) = self.exposure_facts(asset, cve, catalog, None) else { return };
        let Some(due_at) = self.due_at(asset, cve, facts.detected_at, catalog, config) else { return };
        let Some(entry) = self.exposures.get_mut(&(asset, cve)) else { return };
        for at in facts.breach_instants(due_at).filter(|at| *at >= from) {
            if !entry.checks.contains(&at) {
                entry.checks.push(at);
                self.deadlines.push(Reverse((at, Timer::Due { asset, cve })));
            }
        }
    }

    /// After a change of its CVE's intel: fires `SLA_BREACH` if the exposure
    /// is breached as of the watermark (dated at the instant it first was,
    /// with the new deadline), and queues the checks still ahead. A new
    /// deadline never reaches back into states the exposure has left: one
    /// suppressed since is not breached, whatever the new date says.
    pub(super) fn recheck_catalog(
        &mut self,
        asset: Sym,
        cve: Sym,
        watermark: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        if let Some(facts) = self.exposure_facts(asset, cve, catalog, Some(watermark))
            && let Some(due_at) = self.due_at(asset, cve, facts.detected_at, catalog, config)
            && facts.breached(due_at, watermark)
            && let Some(at) = facts.breach_instants(due_at).next()
        {
            self.fire_breach(asset, cve, at, due_at, facts.status, catalog, config);
        }
        self.schedule_breach_checks(asset, cve, watermark.add_micros(1), catalog, config);
    }

    /// The severity of an exposure and where it comes from: the catalog's
    /// CVSS, else the highest CVSS its scanners reported, else their highest
    /// severity (DOMAIN.md "One CVE, several feeds"); none if nobody knows.
    pub(super) fn severity_of(&self, asset: Sym, cve: Sym, catalog: &Catalog) -> Option<(Severity, &'static str)> {
        if let Some(severity) = catalog.cve(self.names.name(cve)).and_then(CveInfo::severity) {
            return Some((severity, "catalog"));
        }
        let entry = self.exposures.get(&(asset, cve))?;
        entry.scanner_cvss.map(Severity::from_cvss).or(entry.scanner_severity).map(|severity| (severity, "scanner"))
    }

    /// The deadline of an exposure detected at `detected_at`: the day after
    /// its CVE's KEV due date, else its severity's SLA; none when neither is known.
    pub(super) fn due_at(
        &self,
        asset: Sym,
        cve: Sym,
        detected_at: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) -> Option<Timestamp> {
        if let Some(date) = catalog.cve(self.names.name(cve)).and_then(CveInfo::kev_due) {
            return Some(date.succ().start());
        }
        let (severity, _) = self.severity_of(asset, cve, catalog)?;
        Some(detected_at.add_micros(config.sla_us(severity)))
    }

    /// Fires `SLA_BREACH` if, as of `at`, the exposure is open past its deadline.
    pub(super) fn check_breach(
        &mut self,
        asset: Sym,
        cve: Sym,
        at: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let Some(facts) = self.exposure_facts(asset, cve, catalog, Some(at)) else { return };
        let Some(due_at) = self.due_at(asset, cve, facts.detected_at, catalog, config) else { return };
        if facts.status != Status::Open || at <= due_at {
            return;
        }
        self.fire_breach(asset, cve, at, due_at, facts.status, catalog, config);
    }

    /// Fires `SLA_BREACH` for an exposure breached at `at`, described as of then.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fire_breach(
        &mut self,
        asset: Sym,
        cve: Sym,
        at: Timestamp,
        due_at: Timestamp,
        status: Status,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let Some(mut row) = self.exposure_row(asset, cve, catalog, config, at) else { return };
        row.status = status.as_str();
        row.due_at = Some(due_at);
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
                (None, Evidence::Finding(FindingStatus::Open)) => {
                    facts = Some(ExposureFacts {
                        status: Status::Open,
                        detected_at: at,
                        remediated_at: None,
                        remediated_by: None,
                        last_at: at,
                        open: vec![(at, None)],
                    });
                }
                (None, _) => {}
                (Some(f), Evidence::Finding(FindingStatus::Open)) => {
                    f.set_status(Status::Open, at);
                    f.remediated_at = None;
                    f.remediated_by = None;
                    f.last_at = at;
                }
                (Some(f), Evidence::Finding(FindingStatus::Fixed)) => {
                    if f.status != Status::Remediated {
                        f.set_status(Status::Remediated, at);
                        f.remediated_at = Some(at);
                        f.remediated_by = None;
                    }
                    f.last_at = at;
                }
                (Some(f), Evidence::Finding(FindingStatus::Suppressed)) => {
                    // A suppressed finding takes an open row out of SLA
                    // counting; on a remediated row it changes nothing.
                    if f.status == Status::Open {
                        f.set_status(Status::Suppressed, at);
                    }
                    f.last_at = at;
                }
                (Some(f), Evidence::Success(patch)) => {
                    if f.status != Status::Remediated {
                        f.set_status(Status::Remediated, at);
                        f.remediated_at = Some(at);
                        f.remediated_by = Some(patch);
                        f.last_at = at;
                    }
                }
                (Some(f), Evidence::Rollback(patch)) => {
                    if f.status == Status::Remediated && f.remediated_by == Some(patch) {
                        f.set_status(Status::Open, at);
                        f.remediated_at = None;
                        f.remediated_by = None;
                        f.last_at = at;
                    }
                }
            }
        }
        facts
    }

    pub(super) fn exposure_row(
        &self,
        asset: Sym,
        cve: Sym,
        catalog: &Catalog,
        config: &ProcessorConfig,
        now: Timestamp,
    ) -> Option<ExposureRow> {
        let facts = self.exposure_facts(asset, cve, catalog, None)?;
        let cve_id = self.names.name(cve);
        let info = catalog.cve(cve_id);
        let due_at = self.due_at(asset, cve, facts.detected_at, catalog, config);
        let severity = self.severity_of(asset, cve, catalog);
        let breached = match (facts.status, due_at) {
            (Status::Suppressed, _) | (_, None) => false,
            (_, Some(due_at)) => facts.remediated_at.unwrap_or(now) > due_at,
        };
        let mut updated_at = facts.last_at;
        if breached && facts.status == Status::Open {
            updated_at = updated_at.max(due_at.unwrap_or(updated_at));
        }
        Some(ExposureRow {
            asset_id: self.names.name(asset).to_owned(),
            cve_id: cve_id.to_owned(),
            status: facts.status.as_str(),
            severity: severity.map(|(severity, _)| severity.as_str()),
            kev: info.is_some_and(CveInfo::kev),
            detected_at: facts.detected_at,
            remediated_at: facts.remediated_at,
            due_at,
            breached,
            remediated_by_patch_id: facts.remediated_by.map(|p| self.names.name(p).to_owned()),
            scanner_cvss: self.exposures.get(&(asset, cve)).and_then(|entry| entry.scanner_cvss),
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
        let info = catalog.cve(&row.cve_id);
        let severity_id = match row.severity {
            Some("critical") => 5,
            Some("high") => 4,
            Some("medium") => 3,
            _ => 2,
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
                epss: info.map(|i| i.epss_at(at)).and_then(|(epss, percentile)| {
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
        let mut facts = ExposureFacts {
            status: Status::Open,
            detected_at: at(0),
            remediated_at: None,
            remediated_by: None,
            last_at: at(0),
            open: vec![(at(0), None)],
        };
        for &(status, hour) in changes {
            facts.set_status(status, at(hour));
            if status == Status::Remediated {
                facts.remediated_at = Some(at(hour));
            }
        }
        facts
    }

    fn check_open(changes: &[(Status, i64)], expected: &[(i64, Option<i64>)]) {
        let expected: Vec<_> = expected.iter().map(|&(from, until)| (at(from), until.map(at))).collect();
        assert_eq!(facts(changes).open, expected, "open intervals after {changes:?}");
    }

    fn check_breach(changes: &[(Status, i64)], due: i64, now: i64, breached: bool, instants: &[Timestamp]) {
        let facts = facts(changes);
        assert_eq!(facts.breached(at(due), at(now)), breached, "breached after {changes:?}, due {due}, now {now}");
        assert_eq!(facts.breach_instants(at(due)).collect::<Vec<_>>(), instants, "instants after {changes:?}");
    }

    #[test]
    fn status_changes_open_and_close_intervals() {
        check_open(&[], &[(0, None)]);
        check_open(&[(Status::Remediated, 5)], &[(0, Some(5))]);
        check_open(&[(Status::Remediated, 5), (Status::Open, 8)], &[(0, Some(5)), (8, None)]);
        check_open(&[(Status::Suppressed, 2), (Status::Remediated, 4)], &[(0, Some(2))]);
        check_open(&[(Status::Open, 3)], &[(0, None)]);
    }

    #[test]
    fn breaches_follow_the_open_intervals_and_the_remediation() {
        let past = |hour: i64| at(hour).add_micros(1);
        check_breach(&[], 10, 9, false, &[past(10)]);
        check_breach(&[], 10, 11, true, &[past(10)]);
        check_breach(&[(Status::Remediated, 5)], 10, 20, false, &[]);
        check_breach(&[(Status::Remediated, 12)], 10, 20, true, &[past(10)]);
        // Reopened after its due date: breached from the reopening.
        check_breach(&[(Status::Remediated, 5), (Status::Open, 15)], 10, 20, true, &[at(15)]);
        check_breach(&[(Status::Suppressed, 12)], 10, 20, false, &[past(10)]);
        assert_eq!(Status::Suppressed.as_str(), "suppressed");
    }
}
