-- The NIST SP 800-40 matrix: time-to-patch and the share patched by the
-- deadline, per CVE severity × asset criticality.
-- A patch outcome's severity is the outcome_severity view's (the patch's,
-- the highest among the CVEs it fixes; else that of the asset's exposures);
-- time-to-patch is release → verified remediation (patch_outcomes).
-- The share patched by the deadline counts exposures whose result is known
-- (remediated, or past due while open; suppressed ones are out of SLA counting).
WITH ttp AS (
    SELECT s.severity,
           coalesce(a.criticality, 'unknown') AS criticality,
           count(*) AS remediated_patches,
           avg(o.time_to_patch_s) AS mean_ttp_s,
           median(o.time_to_patch_s) AS median_ttp_s,
           percentile_cont(o.time_to_patch_s, 0.9) AS p90_ttp_s
    FROM patch_outcomes o
    JOIN outcome_severity s ON s.asset_id = o.asset_id AND s.patch_id = o.patch_id
    LEFT JOIN assets a ON a.asset_id = o.asset_id
    WHERE o.time_to_patch_s IS NOT NULL
    GROUP BY 1, 2
),
deadline AS (
    SELECT e.severity,
           coalesce(a.criticality, 'unknown') AS criticality,
           count(*) AS decided_exposures,
           sum(CASE WHEN e.remediated_at IS NOT NULL AND NOT e.breached THEN 1 ELSE 0 END) AS patched_by_deadline
    FROM exposures e
    LEFT JOIN assets a ON a.asset_id = e.asset_id
    WHERE e.status <> 'suppressed' AND (e.remediated_at IS NOT NULL OR e.breached)
    GROUP BY 1, 2
)
SELECT coalesce(t.severity, d.severity) AS severity,
       coalesce(t.criticality, d.criticality) AS criticality,
       coalesce(t.remediated_patches, 0) AS remediated_patches,
       t.mean_ttp_s, t.median_ttp_s, t.p90_ttp_s,
       coalesce(d.decided_exposures, 0) AS decided_exposures,
       coalesce(d.patched_by_deadline, 0) AS patched_by_deadline,
       CAST(d.patched_by_deadline AS DOUBLE) / d.decided_exposures AS share_patched_by_deadline
FROM ttp t
FULL OUTER JOIN deadline d ON d.severity = t.severity AND d.criticality = t.criticality
