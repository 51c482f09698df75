//! Patch outcomes: an (asset, patch)'s deployment events, integrity,
//! post-patch posture and its regression, re-evaluation requests, its row.

use super::*;

#[derive(Serialize, Deserialize)]
pub(super) struct DeploymentEvent {
    pub(super) deployment: Sym,
    pub(super) phase: DeploymentPhase,
    pub(super) signature_verified: Option<bool>,
    pub(super) artifact_sha256: Option<Box<str>>,
}

#[derive(Default, Serialize, Deserialize)]
pub(super) struct OutcomeEntry {
    pub(super) events: Vec<(Stamp, DeploymentEvent)>,
    /// Remediation time of the last derived row, to find the rows a posture
    /// assessment may change without deriving them all.
    pub(super) remediated_at: Option<Timestamp>,
    pub(super) committed: Option<u64>,
    pub(super) revision: i64,
}

impl AssetsState {
    pub(super) fn deployment(
        &mut self,
        stamp: Stamp,
        event: &CloudEvent,
        deployment: &PatchDeployment,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let asset = self.names.intern(&deployment.asset_id);
        let patch = self.names.intern(&deployment.patch_id);
        let id = self.names.intern(&deployment.deployment_id);
        self.timers.push(Reverse((stamp.0, Timer::Inventoried { asset, at: stamp.0 })));
        let floor = self.revision_floor;
        let entry = self
            .outcomes
            .entry((asset, patch))
            .or_insert_with(|| OutcomeEntry { revision: floor, ..OutcomeEntry::default() });
        if entry.events.is_empty() {
            self.assets.entry(asset).or_default().patches.push(patch);
            self.by_patch.entry(patch).or_default().push(asset);
        }
        let record = DeploymentEvent {
            deployment: id,
            phase: deployment.phase,
            signature_verified: deployment.signature_verified,
            artifact_sha256: deployment.artifact_sha256.as_deref().map(Box::from),
        };
        insert_sorted(&mut entry.events, stamp, record);
        self.dirty_outcomes.insert((asset, patch));
        if deployment.phase == DeploymentPhase::Succeeded {
            // A success may make an outcome remediated whose assessment after
            // is already in: a regression then holds from the success on.
            self.timers.push(Reverse((stamp.0, Timer::Outcome { asset, patch, at: stamp.0 })));
            let successes = &mut self.assets.entry(asset).or_default().successes;
            let idx = successes.partition_point(|s| *s <= (stamp.0, patch));
            successes.insert(idx, (stamp.0, patch));
            let window_end = stamp.0.add_micros(config.posture_reeval_window_us);
            let timer = Timer::Reevaluation { asset, patch, deployment: id, succeeded_at: stamp.0 };
            self.timers.push(Reverse((window_end, timer)));
            self.pending_reevaluations.push(PendingReevaluation {
                asset,
                patch,
                deployment: id,
                remediated_at: event.time,
            });
        }
        self.mark_exposures_of_patch(asset, &deployment.patch_id, catalog);
        self.check_integrity(asset, patch, catalog);
        self.recheck_regressions(asset, patch);
        // A late success or rollback may change whether a KEV exposure was
        // open at a decision since.
        let fixes_kev = catalog.patch(&deployment.patch_id).is_some_and(|release| {
            release.fixes_cves.iter().any(|cve| catalog.cve(cve).is_some_and(CveInfo::ever_kev))
        });
        if fixes_kev {
            self.recheck_decisions(asset, stamp.0);
        }
    }

    /// Fires `PATCH_INTEGRITY` for each deployment of an outcome whose
    /// events report an unverified signature, or a digest other than the
    /// release's, as soon as both are known: at its first such event.
    pub(super) fn check_integrity(&mut self, asset: Sym, patch: Sym, catalog: &Catalog) {
        let Some(entry) = self.outcomes.get(&(asset, patch)) else { return };
        let (asset_id, patch_id) = (self.names.name(asset), self.names.name(patch));
        let released = catalog.patch(patch_id).and_then(|r| r.artifact_sha256.as_deref());
        let mut findings = Vec::new();
        let mut seen: Vec<Sym> = Vec::new();
        for (stamp, event) in &entry.events {
            let digest_differs = matches!((event.artifact_sha256.as_deref(), released), (Some(r), Some(d)) if r != d);
            if !(event.signature_verified == Some(false) || digest_differs) || seen.contains(&event.deployment) {
                continue;
            }
            seen.push(event.deployment);
            let deployment_id = self.names.name(event.deployment);
            let why =
                if digest_differs { "artifact digest differs from the release" } else { "signature not verified" };
            let title = format!("Patch {patch_id} on {asset_id} failed integrity checks: {why}");
            let finding = alerts::finding(Rule::PatchIntegrity, deployment_id, "", stamp.0, title)
                .with_device(self.device(asset_id, stamp.0))
                .with_resource(deployment_id, "patch_deployment", Some(patch_id))
                .with_unmapped(serde_json::json!({
                    "patch_id": patch_id,
                    "reported_sha256": event.artifact_sha256,
                    "released_sha256": released,
                    "signature_verified": event.signature_verified,
                }));
            findings.push((deployment_id.to_owned(), stamp.0, finding));
        }
        for (deployment_id, at, finding) in findings {
            self.fire(Rule::PatchIntegrity, &deployment_id, at, finding, FiredFor::Pair(asset, patch));
        }
    }

    /// Queues a regression check at the first assessment after each success
    /// of an outcome: a late success (or rollback) changes which assessment
    /// follows the remediation.
    pub(super) fn recheck_regressions(&mut self, asset: Sym, patch: Sym) {
        let (Some(outcome), Some(entry)) = (self.outcomes.get(&(asset, patch)), self.assets.get(&asset)) else {
            return;
        };
        for (stamp, event) in &outcome.events {
            if event.phase != DeploymentPhase::Succeeded {
                continue;
            }
            let after = entry.postures.partition_point(|(p, _)| p.0 <= stamp.0);
            if let Some((p, _)) = entry.postures.get(after) {
                self.timers.push(Reverse((p.0, Timer::Posture { asset, at: p.0 })));
            }
        }
    }

    /// Whether deployment `id` of an outcome is unverified (any of its
    /// events, as known now).
    pub(super) fn unverified(&self, asset: Sym, patch: Sym, id: Sym, catalog: &Catalog) -> bool {
        let Some(entry) = self.outcomes.get(&(asset, patch)) else { return false };
        unverified_deployments(&entry.events, catalog.patch(self.names.name(patch))).contains(&id)
    }

    /// Fires `POSTURE_REGRESSION` for the outcomes whose first assessment
    /// after remediation, as of `at`, is the one at `at` and shows a regression.
    pub(super) fn check_regression(&mut self, asset: Sym, at: Timestamp, catalog: &Catalog, config: &ProcessorConfig) {
        let Some(entry) = self.assets.get(&asset) else { return };
        let previous = entry.postures.iter().rev().map(|(stamp, _)| stamp.0).find(|&time| time < at);
        let since = previous.unwrap_or(Timestamp(i64::MIN));
        let mut regressed = Vec::new();
        // Only a success in [previous assessment, this one) can have this one as "after".
        let first = entry.successes.partition_point(|&(time, _)| time < since);
        let mut candidates: Vec<Sym> =
            entry.successes[first..].iter().take_while(|&&(time, _)| time < at).map(|&(_, patch)| patch).collect();
        candidates.sort_unstable();
        candidates.dedup();
        for patch in candidates {
            if let Some((row, Some(after_at))) = self.outcome_row(asset, patch, catalog, config, Some(at))
                && after_at == at
                && row.posture_regressed == Some(true)
            {
                regressed.push((patch, row));
            }
        }
        for (patch, row) in regressed {
            self.fire_regression(asset, patch, &row, at);
        }
    }

    /// Fires `POSTURE_REGRESSION` if, as of a success at `at`, the outcome
    /// shows a regression: the success made it remediated, and the
    /// assessments on both sides of its remediation were already known.
    pub(super) fn check_outcome_regression(
        &mut self,
        asset: Sym,
        patch: Sym,
        at: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        if let Some((row, _)) = self.outcome_row(asset, patch, catalog, config, Some(at))
            && row.posture_regressed == Some(true)
        {
            self.fire_regression(asset, patch, &row, at);
        }
    }

    fn fire_regression(&mut self, asset: Sym, patch: Sym, row: &OutcomeRow, at: Timestamp) {
        let entity = format!("{}/{}", row.asset_id, row.patch_id);
        let title = format!("Posture of {} regressed after patch {}", row.asset_id, row.patch_id);
        let finding = alerts::finding(Rule::PostureRegression, &entity, "", at, title)
            .with_device(self.device(&row.asset_id, at))
            .with_resource(&row.patch_id, "patch", None)
            .with_unmapped(
                serde_json::json!({"posture_before": row.posture_before, "posture_after": row.posture_after}),
            );
        self.fire(Rule::PostureRegression, &entity, at, finding, FiredFor::Pair(asset, patch));
    }

    /// Fires `POSTURE_REEVAL_OVERDUE` if no assessment followed a verified
    /// success within the window (an unverified deployment asks for none).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_reevaluation(
        &mut self,
        asset: Sym,
        patch: Sym,
        deployment: Sym,
        succeeded_at: Timestamp,
        window_end: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        if self.unverified(asset, patch, deployment, catalog) {
            return;
        }
        let postures = self.assets.get(&asset).map_or(&[][..], |a| a.postures.as_slice());
        let after = postures.partition_point(|(stamp, _)| stamp.0 <= succeeded_at);
        if postures.get(after).is_some_and(|(stamp, _)| stamp.0 <= window_end) {
            return;
        }
        let deployment_id = self.names.name(deployment).to_owned();
        let asset_id = self.names.name(asset).to_owned();
        let hours = config.posture_reeval_window_us as f64 / 3.6e9;
        let title =
            format!("No posture re-evaluation of {asset_id} within {hours} h of patch deployment {deployment_id}");
        let patch_id = self.names.name(patch);
        let finding = alerts::finding(Rule::PostureReevalOverdue, &deployment_id, "", window_end, title)
            .with_device(self.device(&asset_id, window_end))
            .with_resource(&deployment_id, "patch_deployment", Some(patch_id))
            .with_unmapped(serde_json::json!({ "succeeded_at": succeeded_at.to_string() }));
        self.fire(Rule::PostureReevalOverdue, &deployment_id, window_end, finding, FiredFor::Pair(asset, patch));
    }

    /// Derives an outcome row from its events and the asset's assessments up
    /// to `as_of` (all of them when `None`); also returns the time of the
    /// first assessment after remediation.
    pub(super) fn outcome_row(
        &self,
        asset: Sym,
        patch: Sym,
        catalog: &Catalog,
        config: &ProcessorConfig,
        as_of: Option<Timestamp>,
    ) -> Option<(OutcomeRow, Option<Timestamp>)> {
        let entry = self.outcomes.get(&(asset, patch))?;
        let patch_id = self.names.name(patch);
        let release = catalog.patch(patch_id);
        let limit = as_of.unwrap_or(Timestamp(i64::MAX));
        let events = &entry.events[..entry.events.partition_point(|(stamp, _)| stamp.0 <= limit)];
        let unverified = unverified_deployments(events, release);
        let attempted = |e: &DeploymentEvent| e.phase != DeploymentPhase::Scheduled;
        let first_attempt_at = events.iter().find(|(_, e)| attempted(e)).map(|(stamp, _)| stamp.0);
        let mut attempts: Vec<Sym> = events.iter().filter(|(_, e)| attempted(e)).map(|(_, e)| e.deployment).collect();
        attempts.sort_unstable();
        attempts.dedup();
        let latest_terminal = events.iter().rfind(|(_, e)| {
            matches!(e.phase, DeploymentPhase::Succeeded | DeploymentPhase::Failed | DeploymentPhase::RolledBack)
        });
        let outcome = match latest_terminal {
            None => "in_progress",
            Some((_, e)) if e.phase == DeploymentPhase::Succeeded && unverified.contains(&e.deployment) => "unverified",
            Some((_, e)) if e.phase == DeploymentPhase::Succeeded => "succeeded",
            Some((_, e)) if e.phase == DeploymentPhase::Failed => "failed",
            Some(_) => "rolled_back",
        };
        let remediated_at = if outcome == "succeeded" {
            let after = events.iter().rposition(|(_, e)| e.phase == DeploymentPhase::RolledBack).map_or(0, |i| i + 1);
            events[after..]
                .iter()
                .find(|(_, e)| e.phase == DeploymentPhase::Succeeded && !unverified.contains(&e.deployment))
                .map(|(stamp, _)| stamp.0)
        } else {
            None
        };
        let released_at = release.map(|r| r.released_at);
        let time_to_patch_s = match (remediated_at, released_at) {
            (Some(done), Some(released)) => Some((done.micros() - released.micros()) as f64 / 1e6),
            _ => None,
        };
        let postures = self.assets.get(&asset).map_or(&[][..], |a| a.postures.as_slice());
        let postures = &postures[..postures.partition_point(|(stamp, _)| stamp.0 <= limit)];
        let (before, after) = match remediated_at {
            Some(at) => {
                let split = postures.partition_point(|(stamp, ..)| stamp.0 <= at);
                (split.checked_sub(1).map(|i| &postures[i]), postures.get(split))
            }
            None => (None, None),
        };
        let posture_regressed = match (before, after) {
            (Some(&(_, (score_before, compliant_before))), Some(&(_, (score_after, compliant_after)))) => Some(
                score_after < score_before - config.posture_regression_points || (compliant_before && !compliant_after),
            ),
            _ => None,
        };
        let mut updated_at = events.last().map_or(Timestamp::default(), |(stamp, _)| stamp.0);
        if let Some((stamp, ..)) = after {
            updated_at = updated_at.max(stamp.0);
        }
        let row = OutcomeRow {
            asset_id: self.names.name(asset).to_owned(),
            patch_id: patch_id.to_owned(),
            released_at,
            first_attempt_at,
            remediated_at,
            time_to_patch_s,
            attempts: attempts.len() as i64,
            outcome,
            posture_before: before.map(|p| p.1.0),
            posture_after: after.map(|p| p.1.0),
            posture_reeval_latency_s: after
                .zip(remediated_at)
                .map(|((stamp, ..), at)| (stamp.0.micros() - at.micros()) as f64 / 1e6),
            posture_regressed,
            updated_at,
            revision: 0,
        };
        Some((row, after.map(|(stamp, ..)| stamp.0)))
    }

    /// The re-evaluation requests of the epoch's successes whose deployment
    /// is verified as far as the epoch knows (an event arriving in a later
    /// epoch cannot recall a request already published).
    pub(super) fn decide_reevaluations(&mut self, catalog: &Catalog) {
        for pending in std::mem::take(&mut self.pending_reevaluations) {
            let PendingReevaluation { asset, patch, deployment, remediated_at } = pending;
            if self.unverified(asset, patch, deployment, catalog) {
                continue;
            }
            let patch_id = self.names.name(patch);
            let asset_cves = self.assets.get(&asset).map_or(&[][..], |a| a.cves.as_slice());
            let cves = catalog.patch(patch_id).map_or_else(Vec::new, |r| {
                r.fixes_cves
                    .iter()
                    .filter(|c| self.names.get(c).is_some_and(|s| asset_cves.contains(&s)))
                    .cloned()
                    .collect()
            });
            self.reevaluations.push(Reevaluation {
                asset_id: self.names.name(asset).to_owned(),
                patch_id: patch_id.to_owned(),
                deployment_id: self.names.name(deployment).to_owned(),
                remediated_at,
                cves,
            });
        }
    }
}

/// The deployments that are unverified: any of their events reports an
/// unverified signature or a digest other than the release's.
pub(super) fn unverified_deployments(events: &[(Stamp, DeploymentEvent)], release: Option<&PatchInfo>) -> Vec<Sym> {
    let released = release.and_then(|r| r.artifact_sha256.as_deref());
    let mut out: Vec<Sym> = events
        .iter()
        .filter(|(_, e)| {
            e.signature_verified == Some(false)
                || matches!((e.artifact_sha256.as_deref(), released), (Some(reported), Some(released)) if reported != released)
        })
        .map(|(_, e)| e.deployment)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(sha: Option<&str>) -> PatchInfo {
        PatchInfo {
            stamp: (Timestamp(0), 0),
            patch_id: "p".to_owned(),
            vendor: "v".to_owned(),
            product: "x".to_owned(),
            released_at: Timestamp(0),
            fixes_cves: Vec::new(),
            artifact_sha256: sha.map(str::to_owned),
            signed: Some(true),
            revision: 0,
        }
    }

    /// The deployments (by name) `unverified_deployments` reports among
    /// events (name, signature verified, digest) against a release digest.
    fn check(events: &[(&str, Option<bool>, Option<&str>)], released: Option<&str>, expected: &[&str]) {
        let mut names = Interner::default();
        let events: Vec<(Stamp, DeploymentEvent)> = events
            .iter()
            .enumerate()
            .map(|(n, &(name, signature_verified, sha))| {
                let event = DeploymentEvent {
                    deployment: names.intern(name),
                    phase: DeploymentPhase::Succeeded,
                    signature_verified,
                    artifact_sha256: sha.map(Into::into),
                };
                ((Timestamp(n as i64), n as u64), event)
            })
            .collect();
        let release = release(released);
        let found = unverified_deployments(&events, Some(&release));
        let expected: Vec<Sym> = expected.iter().map(|name| names.intern(name)).collect();
        assert_eq!(found, expected, "{} events", events.len());
    }

    #[test]
    fn a_deployment_is_unverified_by_its_signature_or_a_digest_other_than_the_release() {
        check(&[("d1", Some(true), Some("aa"))], Some("aa"), &[]);
        check(&[("d1", Some(false), Some("aa"))], Some("aa"), &["d1"]);
        check(&[("d1", Some(true), Some("bb"))], Some("aa"), &["d1"]);
        // No digest on either side is no evidence against it.
        check(&[("d1", None, None)], Some("aa"), &[]);
        check(&[("d1", Some(true), Some("bb"))], None, &[]);
        // Once per deployment, whichever of its events says so.
        check(
            &[("d1", Some(false), None), ("d1", Some(true), Some("bb")), ("d2", Some(true), Some("aa"))],
            Some("aa"),
            &["d1"],
        );
    }
}
