-- A patch's severity: the highest among the CVEs it fixes whose severity the
-- catalog knows. A patch that fixes no CVE of known severity has no row.
-- outcome_severity reads it, and falls back to the exposures where it has no row.
WITH fixes AS (SELECT patch_id, unnest(fixes_cves) AS cve_id FROM patches),
levels AS (
    SELECT f.patch_id,
           max(CASE c.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 END) AS level
    FROM fixes f JOIN cves c ON c.cve_id = f.cve_id
    GROUP BY f.patch_id
)
SELECT patch_id,
       CASE level WHEN 4 THEN 'critical' WHEN 3 THEN 'high' WHEN 2 THEN 'medium' WHEN 1 THEN 'low' END AS severity,
       level
FROM levels
WHERE level IS NOT NULL
