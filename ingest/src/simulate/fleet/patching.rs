//! Patching's actors: CVE intel and EPSS updates, patch planning and
//! releases, canary rollouts and their stages, deployments and rollbacks.

use super::*;

impl Fleet {
    pub(super) fn intel(&self, cve: &Cve) -> EventData {
        let percentile = epss_percentile(cve.epss);
        EventData::VulnIntel(VulnIntel {
            cve_id: cve.id.clone(),
            published_at: Timestamp::from_millis(cve.published),
            cvss_base: cve.cvss,
            cvss_version: Some(cve.cvss_version.to_owned()),
            epss: Some(cve.epss),
            epss_percentile: Some(percentile),
            kev: cve.kev,
            kev_date_added: cve.kev_added,
            kev_due_date: cve.kev_due,
            exploitation: Some(cve.exploitation),
            automatable: Some(cve.automatable),
            technical_impact: Some(if cve.cvss >= 8.0 { TechnicalImpact::Total } else { TechnicalImpact::Partial }),
        })
    }

    pub(super) fn publish_cve(&mut self, at: i64, cve_idx: u32) {
        let data = self.intel(&self.cves[cve_idx as usize]);
        self.emit("intel", "urn:feeds:nvd-kev-epss", at, data);
        let cve = &self.cves[cve_idx as usize];
        if let (true, Some(date_added)) = (cve.kev, cve.kev_added) {
            // The KEV catalog lists it too, as CISA's feed says it (the same dates).
            let data = EventData::VulnKev(VulnKev {
                cve_id: cve.id.clone(),
                date_added,
                due_date: cve.kev_due,
                vendor: None,
                product: None,
                ransomware_use: Some(RansomwareUse::Unknown),
            });
            self.emit("intel", "urn:feeds:cisa-kev", at, data);
        }
        let cve = &self.cves[cve_idx as usize];
        let (product, share, backlog) = (cve.product, cve.vulnerable_share, cve.backlog);
        for position in 0..self.product_assets[product as usize].len() {
            let asset_idx = self.product_assets[product as usize][position];
            if self.uniform() < share {
                let suppress = !self.assets[asset_idx as usize].managed && self.uniform() < 0.4;
                self.assets[asset_idx as usize].cves.push(AssetCve {
                    cve: cve_idx,
                    seen: Seen::NotReported,
                    installed: false,
                    suppress,
                });
            }
        }
        if !backlog {
            self.plan_patch(cve_idx);
        }
        let next = at + self.ms(DAY, 4 * DAY);
        self.schedule(next, Action::EpssUpdate(cve_idx));
    }

    /// Exploited criticals get an emergency patch; a few CVEs wait weeks for
    /// their vendor; the rest ship in the product's next regular release.
    pub(super) fn plan_patch(&mut self, cve_idx: u32) {
        let cve = &self.cves[cve_idx as usize];
        let (product, published) = (cve.product, cve.published);
        let emergency = cve.kev || (cve.cvss >= 9.0 && cve.exploitation != Exploitation::None);
        if emergency {
            let released = published + self.ms(6 * HOUR, 48 * HOUR);
            self.release_later(product, released, cve_idx, true);
        } else if self.uniform() < 0.08 {
            let released = published + self.ms(14 * DAY, 40 * DAY);
            self.release_later(product, released, cve_idx, false);
        } else {
            let slot = self.next_release_slot(product, published + DAY);
            match self.open_release[product as usize] {
                Some(patch) if self.patches[patch as usize].released == slot => {
                    self.patches[patch as usize].cves.push(cve_idx);
                }
                _ => {
                    let patch = self.new_patch(product, slot, vec![cve_idx], false);
                    self.open_release[product as usize] = Some(patch);
                    if slot < self.end {
                        self.schedule(slot, Action::ReleasePatch(patch));
                    }
                }
            }
        }
    }

    /// The product's first regular release at or after `after`.
    pub(super) fn next_release_slot(&self, product: u8, after: i64) -> i64 {
        let product = &PRODUCTS[product as usize];
        // 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
        let mut day = after.div_euclid(DAY);
        loop {
            let slot = day * DAY + i64::from(product.release_hour) * HOUR;
            if (day + 3).rem_euclid(7) == i64::from(product.release_weekday) && slot >= after {
                return slot;
            }
            day += 1;
        }
    }

    pub(super) fn epss_update(&mut self, at: i64, cve_idx: u32) {
        let factor = self.between(-0.5, 0.6).exp();
        let cve = &mut self.cves[cve_idx as usize];
        cve.epss = round((cve.epss * factor).clamp(0.0001, 0.99), 5);
        // A new score comes from the EPSS feed alone: it replaces only the EPSS fields.
        let data = EventData::VulnEpss(VulnEpss {
            cve_id: cve.id.clone(),
            epss: cve.epss,
            percentile: Some(epss_percentile(cve.epss)),
            score_date: Timestamp::from_millis(at).date(),
            model_version: Some(EPSS_MODEL.to_owned()),
        });
        self.emit("intel", "urn:feeds:first-epss", at, data);
        let next = at + self.ms(2 * DAY, 6 * DAY);
        self.schedule(next, Action::EpssUpdate(cve_idx));
    }

    pub(super) fn release_patch(&mut self, at: i64, patch_idx: u32) {
        let patch = &self.patches[patch_idx as usize];
        let product = &PRODUCTS[patch.product as usize];
        let data = EventData::PatchRelease(PatchRelease {
            patch_id: patch.id.clone(),
            vendor: product.vendor.to_owned(),
            product: product.name.to_owned(),
            released_at: Timestamp::from_millis(patch.released),
            fixes_cves: patch.cves.iter().map(|&c| self.cves[c as usize].id.clone()).collect(),
            artifact_sha256: Some(patch.sha.clone()),
            signed: Some(true),
        });
        let source = format!("urn:vendor:{}", product.vendor);
        let (emergency, released) = (patch.emergency, patch.released);
        self.emit("rel", &source, at, data);
        let lead = if emergency {
            self.ms(HOUR, 6 * HOUR)
        } else if released < self.start {
            self.ms(HOUR, 3 * DAY)
        } else {
            self.ms(12 * HOUR, 36 * HOUR)
        };
        self.new_rollout(at + lead, patch_idx, 0.07);
    }

    pub(super) fn new_rollout(&mut self, at: i64, patch_idx: u32, bad_chance: f64) {
        let bad_stage = (self.uniform() < bad_chance).then(|| match self.uniform() {
            x if x < 0.7 => 0,
            x if x < 0.95 => 1,
            _ => 2,
        });
        let patch = &mut self.patches[patch_idx as usize];
        patch.n_rollouts += 1;
        let rollout = Rollout {
            id: format!("ro-{}", 100 + self.rollouts.len()),
            patch: patch_idx,
            emergency: patch.emergency,
            bad_stage,
            aborted: false,
            pauses: 0,
            cohort: 0,
            installs: Vec::new(),
        };
        self.rollouts.push(rollout);
        self.schedule(at, Action::StartStage { rollout: (self.rollouts.len() - 1) as u32, stage: 0 });
    }

    pub(super) fn start_stage(&mut self, at: i64, rollout_idx: u32, stage: u8) {
        let rollout = &self.rollouts[rollout_idx as usize];
        let patch_idx = rollout.patch;
        let emergency = rollout.emergency;
        let ring = [Ring::Canary, Ring::Pilot, Ring::Broad][stage as usize];
        let (window, bake) = match ring {
            Ring::Canary => (HOUR, 4 * HOUR),
            Ring::Pilot => (4 * HOUR, 12 * HOUR),
            Ring::Broad => (24 * HOUR, 24 * HOUR),
        };
        let (window, bake) = if emergency { (window / 3, bake / 4) } else { (window, bake) };
        let product = self.patches[patch_idx as usize].product as usize;
        let mut cohort = 0;
        for position in 0..self.product_assets[product].len() {
            let asset_idx = self.product_assets[product][position];
            let asset = &self.assets[asset_idx as usize];
            let installed = asset.patches.iter().any(|&(p, state)| p == patch_idx && state == Install::Verified);
            if asset.ring != ring || !asset.managed || installed {
                continue;
            }
            cohort += 1;
            let environment = SEGMENTS[asset.segment as usize].environment;
            let mut delay = self.ms(0, window);
            // Edge devices are sometimes offline for days.
            if environment == Environment::Edge && self.uniform() < 0.12 {
                delay += self.ms(2 * DAY, 12 * DAY);
            }
            self.schedule(at + delay, Action::DeployQueue { asset: asset_idx, rollout: rollout_idx, attempt: 1 });
        }
        self.rollouts[rollout_idx as usize].cohort = cohort;
        self.schedule(at + bake, Action::StageVerdict { rollout: rollout_idx, stage });
    }

    pub(super) fn stage_verdict(&mut self, at: i64, rollout_idx: u32, stage: u8) {
        let roll = self.uniform();
        let rollout = &self.rollouts[rollout_idx as usize];
        if rollout.aborted {
            return;
        }
        let pause_chance = if rollout.pauses >= 3 { 0.0 } else { 0.05 / f64::from(1 + rollout.pauses) };
        let verdict = if rollout.bad_stage == Some(stage) || roll < 0.01 {
            Verdict::Failed
        } else if roll < 0.01 + pause_chance * 0.8 {
            Verdict::Inconclusive
        } else if roll < 0.01 + pause_chance {
            Verdict::Error
        } else {
            Verdict::Successful
        };
        let action = match verdict {
            Verdict::Successful => CanaryAction::Promote,
            Verdict::Failed => CanaryAction::Rollback,
            Verdict::Inconclusive | Verdict::Error => CanaryAction::Pause,
        };
        let failed_checks = if verdict == Verdict::Failed { self.rng.random_range(1..6) } else { 0 };
        let patch_id = self.patches[rollout.patch as usize].id.clone();
        let data = EventData::CanaryStage(CanaryStage {
            rollout_id: rollout.id.clone(),
            patch_id,
            stage: u32::from(stage),
            verdict,
            cohort_size: Some(rollout.cohort),
            failed_checks: Some(failed_checks),
            action: Some(action),
        });
        self.emit("canary", "urn:rollouts:argo", at, data);
        match action {
            CanaryAction::Promote if stage < 2 => {
                self.schedule(at + 15 * MINUTE, Action::StartStage { rollout: rollout_idx, stage: stage + 1 })
            }
            CanaryAction::Promote => {}
            CanaryAction::Pause => {
                self.rollouts[rollout_idx as usize].pauses += 1;
                // Usually re-analysed within hours; sometimes nobody looks for days.
                let next =
                    if self.uniform() < 0.7 { at + self.ms(2 * HOUR, 6 * HOUR) } else { at + self.ms(DAY, 5 * DAY) };
                self.schedule(next, Action::StageVerdict { rollout: rollout_idx, stage });
            }
            CanaryAction::Rollback => {
                let rollout = &mut self.rollouts[rollout_idx as usize];
                rollout.aborted = true;
                let installs = std::mem::take(&mut rollout.installs);
                let patch_idx = rollout.patch;
                for (asset, deployment) in installs {
                    let delay = self.ms(5 * MINUTE, 90 * MINUTE);
                    self.schedule(at + delay, Action::RollBack { asset, rollout: rollout_idx, deployment });
                }
                if self.patches[patch_idx as usize].n_rollouts < 3 {
                    let retry_at = at + self.ms(DAY, 4 * DAY);
                    self.new_rollout(retry_at, patch_idx, 0.03);
                }
            }
        }
    }

    pub(super) fn deployment_id(&self, deployment: u32) -> String {
        format!("dep-{:x}-{deployment}", self.seed)
    }

    pub(super) fn deployment(
        &self,
        asset: u32,
        rollout: u32,
        deployment: u32,
        phase: DeploymentPhase,
    ) -> PatchDeployment {
        let rollout = &self.rollouts[rollout as usize];
        PatchDeployment {
            deployment_id: self.deployment_id(deployment),
            asset_id: self.assets[asset as usize].id.clone(),
            patch_id: self.patches[rollout.patch as usize].id.clone(),
            phase,
            rollout_id: Some(rollout.id.clone()),
            ring: Some(self.assets[asset as usize].ring),
            error_class: None,
            artifact_sha256: None,
            signature_verified: None,
        }
    }

    pub(super) fn orchestrator(&self, asset: u32) -> &'static str {
        match SEGMENTS[self.assets[asset as usize].segment as usize].os {
            Os::Windows => "urn:orchestrator:intune",
            _ => "urn:orchestrator:ansible",
        }
    }

    pub(super) fn deploy_queue(&mut self, at: i64, asset: u32, rollout: u32, attempt: u8) {
        let patch = self.rollouts[rollout as usize].patch;
        let installed =
            self.assets[asset as usize].patches.iter().any(|&(p, state)| p == patch && state == Install::Verified);
        if self.rollouts[rollout as usize].aborted || installed {
            return;
        }
        self.n_deployments += 1;
        let deployment = self.n_deployments;
        if self.uniform() < 0.5 {
            let data = self.deployment(asset, rollout, deployment, DeploymentPhase::Scheduled);
            let source = self.orchestrator(asset);
            self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
        }
        let next = at + self.ms(MINUTE, 20 * MINUTE);
        self.schedule(next, Action::DeployRun { asset, rollout, attempt, deployment });
    }

    pub(super) fn deploy_run(&mut self, at: i64, asset: u32, rollout: u32, attempt: u8, deployment: u32) {
        if self.rollouts[rollout as usize].aborted {
            return;
        }
        let data = self.deployment(asset, rollout, deployment, DeploymentPhase::Started);
        let source = self.orchestrator(asset);
        self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
        let next = at + self.ms(4 * MINUTE, 45 * MINUTE);
        self.schedule(next, Action::DeployFinish { asset, rollout, attempt, deployment });
    }

    pub(super) fn deploy_finish(&mut self, at: i64, asset: u32, rollout: u32, attempt: u8, deployment: u32) {
        let source = self.orchestrator(asset);
        let mut data = self.deployment(asset, rollout, deployment, DeploymentPhase::Failed);
        if self.rollouts[rollout as usize].aborted {
            data.error_class = Some("rollout_aborted".to_owned());
            self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
            return;
        }
        let roll = self.uniform();
        let patch = self.rollouts[rollout as usize].patch;
        let fail_chance = if self.assets[asset as usize].flaky { 0.6 } else { 0.025 };
        if roll < fail_chance {
            data.error_class = Some(DEPLOY_ERRORS[self.rng.random_range(0..DEPLOY_ERRORS.len())].to_owned());
            self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
            if attempt < 3 {
                let retry_at = at + self.ms(HOUR, 8 * HOUR);
                self.schedule(retry_at, Action::DeployQueue { asset, rollout, attempt: attempt + 1 });
            }
            return;
        }
        data.phase = DeploymentPhase::Succeeded;
        let sha = self.patches[patch as usize].sha.clone();
        let verified = roll >= fail_chance + 0.003;
        if verified {
            data.artifact_sha256 = Some(sha);
            data.signature_verified = Some(true);
        } else if self.uniform() < 0.5 {
            data.artifact_sha256 = Some(sha);
            data.signature_verified = Some(false);
        } else {
            // A tampered or mirrored artifact: its digest differs from the release's.
            data.artifact_sha256 = Some(format!("{:064x}", self.rng.random::<u128>()));
            data.signature_verified = Some(true);
        }
        self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
        self.install(asset, patch, if verified { Install::Verified } else { Install::Unverified });
        self.rollouts[rollout as usize].installs.push((asset, deployment));
        if verified {
            let roll = self.uniform();
            let delay = if roll < 0.90 {
                Some(self.ms(2 * MINUTE, 45 * MINUTE))
            } else if roll < 0.96 {
                Some(self.ms(4 * HOUR + 30 * MINUTE, 12 * HOUR))
            } else {
                None
            };
            if let Some(delay) = delay {
                self.schedule(at + delay, Action::PostPatchPosture { asset, deployment });
            }
        } else if attempt < 3 && self.uniform() < 0.6 {
            let retry_at = at + self.ms(2 * HOUR, 12 * HOUR);
            self.schedule(retry_at, Action::DeployQueue { asset, rollout, attempt: attempt + 1 });
        }
    }

    pub(super) fn install(&mut self, asset_idx: u32, patch_idx: u32, state: Install) {
        let asset = &mut self.assets[asset_idx as usize];
        asset.patches.retain(|&(p, _)| p != patch_idx);
        asset.patches.push((patch_idx, state));
        let fixes = &self.patches[patch_idx as usize].cves;
        for entry in asset.cves.iter_mut().filter(|c| fixes.contains(&c.cve)) {
            entry.installed = true;
        }
    }

    pub(super) fn roll_back(&mut self, at: i64, asset_idx: u32, rollout: u32, deployment: u32) {
        let data = self.deployment(asset_idx, rollout, deployment, DeploymentPhase::RolledBack);
        let source = self.orchestrator(asset_idx);
        self.emit_for_asset(asset_idx, "dep", source, at, EventData::PatchDeployment(data));
        let patch_idx = self.rollouts[rollout as usize].patch;
        let asset = &mut self.assets[asset_idx as usize];
        asset.patches.retain(|&(p, _)| p != patch_idx);
        let fixes = &self.patches[patch_idx as usize].cves;
        for entry in asset.cves.iter_mut().filter(|c| fixes.contains(&c.cve)) {
            entry.installed = false;
        }
    }
}
