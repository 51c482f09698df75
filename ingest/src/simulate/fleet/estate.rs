//! The estate's own actors: inventory, scans, posture assessments, policy
//! decisions (of managed and shadow assets) and the flow exports.

use super::*;

impl Fleet {
    pub(super) fn inventory(&mut self, at: i64, asset_idx: u32) {
        let asset = &self.assets[asset_idx as usize];
        let segment = &SEGMENTS[asset.segment as usize];
        let os_version = match segment.os {
            Os::Linux => "6.1.112",
            Os::Windows => "10.0.26100",
            Os::Appliance => "4.2.1",
        };
        let site = ["lyon", "austin", "osaka", "leeds", "porto"][asset_idx as usize % 5];
        let data = EventData::AssetInventory(AssetInventory {
            asset_id: asset.id.clone(),
            hostname: Some(format!("{}.{}.example", asset.id, segment.environment)),
            environment: segment.environment,
            criticality: asset.criticality,
            internet_exposed: asset.exposed,
            segment: segment.name.to_owned(),
            os_family: Some(segment.os.family().to_owned()),
            os_version: Some(os_version.to_owned()),
            managed: asset.managed,
            labels: [("site".to_owned(), site.to_owned())].into(),
        });
        self.emit_for_asset(asset_idx, "inv", "urn:cmdb:servicenow", at, data);
        self.schedule(at + 7 * DAY, Action::Inventory(asset_idx));
    }

    /// The daily scan reports changes (new, fixed, reopened) and, once a week,
    /// every finding that is still open or suppressed.
    pub(super) fn scan(&mut self, at: i64, asset_idx: u32) {
        let asset = &mut self.assets[asset_idx as usize];
        let full_report = (at - self.start) / DAY % 7 == asset.scan_weekday;
        let mut findings = Vec::new();
        for entry in &mut asset.cves {
            let status = match (entry.seen, entry.installed) {
                (Seen::Open | Seen::Suppressed, true) => Some(FindingStatus::Fixed),
                (Seen::NotReported | Seen::Fixed, false) => Some(FindingStatus::Open),
                (Seen::Open, false) if entry.suppress => Some(FindingStatus::Suppressed),
                (Seen::Open, false) if full_report => Some(FindingStatus::Open),
                (Seen::Suppressed, false) if full_report => Some(FindingStatus::Suppressed),
                _ => None,
            };
            if let Some(status) = status {
                entry.seen = match status {
                    FindingStatus::Open => Seen::Open,
                    FindingStatus::Fixed => Seen::Fixed,
                    FindingStatus::Suppressed => Seen::Suppressed,
                };
                findings.push((entry.cve, status));
            }
        }
        let source = if asset.managed { "urn:scanner:agent" } else { "urn:scanner:network" };
        for (cve_idx, status) in findings {
            let cve = &self.cves[cve_idx as usize];
            let product = &PRODUCTS[cve.product as usize];
            let data = EventData::VulnFinding(VulnFinding {
                asset_id: self.assets[asset_idx as usize].id.clone(),
                cve_id: cve.id.clone(),
                status,
                package: Some(product.package.to_owned()),
                installed_version: None,
                fixed_version: Some(cve.fixed_version.clone()),
                scanner_cvss: None,
                scanner_severity: None,
                scanner: None,
            });
            self.emit_for_asset(asset_idx, "scan", source, at, data);
        }
        let next = at + DAY + self.ms(-10 * MINUTE, 10 * MINUTE);
        self.schedule(next, Action::Scan(asset_idx));
    }

    pub(super) fn posture(&mut self, at: i64, asset_idx: u32, deployment: Option<u32>) {
        let regression = deployment.is_some() && self.uniform() < 0.04;
        let noise = self.between(-2.0, 2.0);
        let asset = &mut self.assets[asset_idx as usize];
        let cves = &self.cves;
        let open_severe = asset
            .cves
            .iter()
            .filter(|c| c.seen == Seen::Open && !c.installed && cves[c.cve as usize].cvss >= 7.0)
            .count()
            .min(8);
        asset.regressed = regression;
        let mut trust = asset.trust_base - 2.5 * open_severe as f64 + noise;
        if regression {
            trust -= 25.0;
        }
        let trust = round(trust.clamp(0.0, 100.0), 1);
        let compliant = trust >= 70.0 && !regression;
        let mut failed_checks = Vec::new();
        if !compliant && open_severe > 0 {
            failed_checks.push(POSTURE_CHECKS[0].to_owned());
        }
        if regression || trust < 60.0 {
            failed_checks.push(POSTURE_CHECKS[1].to_owned());
        }
        if regression {
            failed_checks.push(POSTURE_CHECKS[3].to_owned());
        }
        asset.trust = Some(trust);
        asset.compliant = compliant;
        let data = EventData::PostureAssessment(PostureAssessment {
            asset_id: asset.id.clone(),
            trust_score: trust,
            compliant,
            trigger: Some(if deployment.is_some() { PostureTrigger::PostPatch } else { PostureTrigger::Scheduled }),
            deployment_id: deployment.map(|n| self.deployment_id(n)),
            failed_checks,
        });
        self.emit_for_asset(asset_idx, "pst", "urn:posture:edr", at, data);
    }

    pub(super) fn decision(&mut self, at: i64, asset_idx: u32) {
        let stale_cache = self.uniform() < 0.015;
        let roll = self.uniform();
        let user = self.rng.random_range(0..5000);
        let app = self.rng.random_range(0..40);
        let asset = &self.assets[asset_idx as usize];
        let decision = match (asset.managed, asset.trust) {
            _ if stale_cache => Decision::Allow,
            (false, _) => {
                if roll < 0.3 {
                    Decision::Allow
                } else if roll < 0.8 {
                    Decision::StepUp
                } else {
                    Decision::Deny
                }
            }
            (true, None) => Decision::StepUp,
            (true, Some(_)) if asset.compliant => Decision::Allow,
            (true, Some(trust)) if trust >= 50.0 => Decision::StepUp,
            _ => Decision::Deny,
        };
        let segment = SEGMENTS[asset.segment as usize].name;
        let data = EventData::PolicyDecision(PolicyDecision {
            decision_id: format!("pdp-{:x}-{}", self.seed, self.n_events + 1),
            asset_id: asset.id.clone(),
            decision,
            policy_id: format!("{segment}-access"),
            policy_version: Some("17".to_owned()),
            subject_id: Some(format!("user-{user:04}")),
            resource: Some(format!("https://app-{app:02}.internal.example")),
            trust_score: asset.trust,
        });
        self.emit_for_asset(asset_idx, "pdp", "urn:pdp:opa", at, data);
        let next = at + self.exp(8.0 * HOUR as f64);
        self.schedule(next, Action::Decision(asset_idx));
    }

    /// Devices the CMDB has never seen (BYOD, rogue) still ask for access.
    pub(super) fn shadow_decision(&mut self, at: i64, shadow: u32) {
        let roll = self.uniform();
        let decision = if roll < 0.35 {
            Decision::Allow
        } else if roll < 0.8 {
            Decision::StepUp
        } else {
            Decision::Deny
        };
        let data = EventData::PolicyDecision(PolicyDecision {
            decision_id: format!("pdp-{:x}-{}", self.seed, self.n_events + 1),
            asset_id: format!("byod-{:04x}", 0x1000 + shadow),
            decision,
            policy_id: "byod-access".to_owned(),
            policy_version: Some("4".to_owned()),
            subject_id: Some(format!("user-{:04}", self.rng.random_range(0..5000))),
            resource: Some("https://mail.internal.example".to_owned()),
            trust_score: None,
        });
        self.emit("pdp", "urn:pdp:opa", at, data);
        let next = at + self.exp(12.0 * HOUR as f64);
        self.schedule(next, Action::ShadowDecision(shadow));
    }

    /// Ten-minute flow exports of the network policy engine. Drift comes in
    /// episodes of an hour: a misapplied or audit-mode policy on one kind of traffic.
    pub(super) fn flows(&mut self, at: i64) {
        if at % HOUR == 0 {
            for idx in 0..FLOWS.len() {
                self.drifting[idx] = self.uniform() < self.drift_ratio;
            }
        }
        let hour_of_day = at % DAY / HOUR;
        let daily = if (7..19).contains(&hour_of_day) { 1.0 } else { 0.45 };
        for (idx, rule) in FLOWS.iter().enumerate() {
            let population = self.segment_assets[rule.src].len().max(1) as f64;
            let connections = (rule.rate * population * daily * self.between(0.6, 1.4)).round() as u64;
            if connections == 0 {
                continue;
            }
            let (enforced, mode) = match (rule.intended, self.drifting[idx]) {
                (IntendedAction::Deny, false) => (FlowAction::Deny, EnforcementMode::Full),
                (IntendedAction::Deny, true) => {
                    let mode =
                        if self.uniform() < 0.5 { EnforcementMode::Audit } else { EnforcementMode::VisibilityOnly };
                    (FlowAction::Allow, mode)
                }
                (IntendedAction::Allow, true) => (FlowAction::Deny, EnforcementMode::Full),
                _ => (FlowAction::Allow, EnforcementMode::Full),
            };
            let members = &self.segment_assets[rule.src];
            let src_asset_id = if members.is_empty() {
                None
            } else {
                let pick = members[self.rng.random_range(0..members.len())];
                Some(self.assets[pick as usize].id.clone())
            };
            let data = EventData::FlowObservation(FlowObservation {
                src_segment: SEGMENTS[rule.src].name.to_owned(),
                dst_segment: SEGMENTS[rule.dst].name.to_owned(),
                dst_port: rule.port,
                protocol: Some("tcp".to_owned()),
                enforced_action: enforced,
                intended_action: rule.intended,
                enforcement_mode: Some(mode),
                connections,
                src_asset_id,
                dst_asset_id: None,
            });
            self.emit("flow", "urn:cni:cilium", at, data);
        }
        self.schedule(at + 10 * MINUTE, Action::FlowExport);
    }
}
