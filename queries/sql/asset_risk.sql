-- Residual risk per asset over its open exposures:
--   1 − Π (1 − min(1, epss × k)),  k = 2 for a KEV CVE, × 1.5 if the asset is internet exposed.
-- The product is taken as exp(Σ ln(1 − p)); p = 1 gives ln 0 = −∞, so risk 1.
WITH open AS (
    SELECT e.asset_id,
           e.kev,
           least(1.0, coalesce(c.epss, 0.0)
                      * (CASE WHEN e.kev THEN 2.0 ELSE 1.0 END)
                      * (CASE WHEN coalesce(a.internet_exposed, false) THEN 1.5 ELSE 1.0 END)) AS p
    FROM exposures e
    LEFT JOIN cves c ON c.cve_id = e.cve_id
    LEFT JOIN assets a ON a.asset_id = e.asset_id
    WHERE e.status = 'open'
)
SELECT o.asset_id,
       a.environment,
       a.criticality,
       a.internet_exposed,
       count(*) AS open_exposures,
       sum(CASE WHEN o.kev THEN 1 ELSE 0 END) AS open_kev,
       1.0 - exp(sum(ln(1.0 - o.p))) AS residual_risk
FROM open o
LEFT JOIN assets a ON a.asset_id = o.asset_id
GROUP BY 1, 2, 3, 4
