//! Checks of an asset's other events: `allow` policy decisions against
//! its posture and exposures of their time, and whether an event names an
//! inventoried, managed asset.

use super::*;

impl AssetsState {
    /// Queues the `allow` decisions of `asset` at or after `from` for their
    /// check again: a late event before them may change their answer.
    pub(super) fn recheck_decisions(&mut self, asset: Sym, from: Timestamp) {
        let Some(entry) = self.assets.get(&asset) else { return };
        let first = entry.decisions.partition_point(|(time, _)| *time < from);
        for &(at, key) in &entry.decisions[first..] {
            if let Some(key) = key {
                self.timers.push(Reverse((at, Timer::Decision { asset, key, at })));
            }
        }
    }

    /// Queues the checks "was the asset inventoried and managed" of the
    /// events naming `asset` at or after `from`, once per asset at most.
    pub(super) fn recheck_inventoried(&mut self, asset: Sym, from: Timestamp) {
        let asset_id = self.names.name(asset);
        if self.fired.contains_key(&ocsf::alert_id(Rule::UnmanagedAsset.name(), asset_id, "")) {
            return;
        }
        let Some(entry) = self.assets.get(&asset) else { return };
        let mut times: Vec<Timestamp> = entry.postures.iter().map(|(stamp, _)| stamp.0).collect();
        times.extend(entry.decisions.iter().map(|(time, _)| *time));
        for patch in &entry.patches {
            if let Some(outcome) = self.outcomes.get(&(asset, *patch)) {
                times.extend(outcome.events.iter().map(|(stamp, _)| stamp.0));
            }
        }
        times.retain(|time| *time >= from);
        // The earliest suffices: the alert fires once per asset, at the first event it concerns.
        if let Some(at) = times.into_iter().min() {
            self.timers.push(Reverse((at, Timer::Inventoried { asset, at })));
        }
    }

    /// Fires `ZT_ALLOW_NONCOMPLIANT` if, as of `at`, the asset's latest
    /// posture is non-compliant or it has a KEV exposure open past its due
    /// date (the KEV date's, or the SLA's when KEV gives none).
    pub(super) fn check_decision(
        &mut self,
        asset: Sym,
        decision_id: &str,
        at: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let Some(entry) = self.assets.get(&asset) else { return };
        let posture = entry.postures.iter().rev().find(|(stamp, ..)| stamp.0 <= at);
        let noncompliant = posture.is_some_and(|&(_, (_, compliant))| !compliant);
        let mut overdue_kev: Vec<&str> = entry
            .cves
            .iter()
            .filter(|&&cve| {
                // In KEV, and past its due date, as the catalog stated them by the decision's time.
                if !self.cve_facts(cve, catalog, Some(at)).is_some_and(|facts| facts.kev()) {
                    return false;
                }
                let Some(facts) = self.exposure_facts(asset, cve, catalog, Some(at)) else { return false };
                let due_at = self.due_at(asset, cve, facts.detected_at, catalog, config, Some(at));
                facts.status == Status::Open && due_at.is_some_and(|due_at| at > due_at)
            })
            .map(|&cve| self.names.name(cve))
            .collect();
        if !noncompliant && overdue_kev.is_empty() {
            return;
        }
        // Sorted, so the text does not depend on the order the findings arrived in.
        overdue_kev.sort_unstable();
        let asset_id = self.names.name(asset).to_owned();
        let reason = if noncompliant {
            "its latest posture was non-compliant".to_owned()
        } else {
            format!("it had KEV {} open past its due date", overdue_kev.join(", "))
        };
        let title = format!("Access allowed to {asset_id} although {reason}");
        let finding = alerts::finding(Rule::ZtAllowNoncompliant, decision_id, "", at, title)
            .with_device(self.device(&asset_id, at))
            .with_resource(decision_id, "policy_decision", None)
            .with_unmapped(serde_json::json!({
                "decision_id": decision_id,
                "trust_score": posture.map(|p| p.1.0),
                "overdue_kev": overdue_kev,
            }));
        self.fire(Rule::ZtAllowNoncompliant, decision_id, at, finding, FiredFor::Decision(at));
    }

    pub(super) fn check_inventoried(&mut self, asset: Sym, at: Timestamp) {
        let entry = self.assets.get(&asset);
        let inventory = entry.and_then(|a| a.inventories.iter().rev().find(|(stamp, _)| stamp.0 <= at));
        let reason = match inventory {
            None => "has no inventory record",
            Some((_, inventory)) if !inventory.managed => "is marked unmanaged in the inventory",
            Some(_) => return,
        };
        let asset_id = self.names.name(asset).to_owned();
        let title = format!("Asset {asset_id} {reason} but takes part in patching or access decisions");
        let finding =
            alerts::finding(Rule::UnmanagedAsset, &asset_id, "", at, title).with_device(self.device(&asset_id, at));
        self.fire(Rule::UnmanagedAsset, &asset_id, at, finding, FiredFor::Asset);
    }
}
