-- A patch outcome's severity (asset × patch): its patch's (patch_severity,
-- from the catalog, the same on every asset); where the catalog knows the
-- severity of none of the CVEs the patch fixes, the highest severity among
-- that asset's exposures to them, which falls back to its scanners' (DOMAIN.md
-- "One CVE, several feeds"). An outcome with neither has no row.
-- The one definition of this rule: ttp_matrix, the demo's summary and the
-- patchtrail_time_to_patch_seconds histogram all read it.
WITH fixes AS (SELECT patch_id, unnest(fixes_cves) AS cve_id FROM patches),
exposed AS (
    SELECT o.asset_id, o.patch_id,
           max(CASE e.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 END) AS level
    FROM patch_outcomes o
    JOIN fixes f ON f.patch_id = o.patch_id
    JOIN exposures e ON e.asset_id = o.asset_id AND e.cve_id = f.cve_id
    GROUP BY o.asset_id, o.patch_id
),
levels AS (
    SELECT o.asset_id, o.patch_id,
           coalesce(p.level, x.level) AS level,
           CASE WHEN p.level IS NOT NULL THEN 'catalog' ELSE 'exposures' END AS source
    FROM patch_outcomes o
    LEFT JOIN patch_severity p ON p.patch_id = o.patch_id
    LEFT JOIN exposed x ON x.asset_id = o.asset_id AND x.patch_id = o.patch_id
)
SELECT asset_id, patch_id,
       CASE level WHEN 4 THEN 'critical' WHEN 3 THEN 'high' WHEN 2 THEN 'medium' WHEN 1 THEN 'low' END AS severity,
       level, source
FROM levels
WHERE level IS NOT NULL
