-- SLA compliance per CVE severity and environment: of the exposures counted
-- for SLAs (not suppressed), how many are breached (remediated late, or open
-- past due), and the compliance that leaves.
SELECT e.severity,
       coalesce(a.environment, 'unknown') AS environment,
       count(*) AS exposures,
       sum(CASE WHEN e.status = 'open' THEN 1 ELSE 0 END) AS open,
       sum(CASE WHEN e.breached THEN 1 ELSE 0 END) AS breached,
       sum(CASE WHEN e.status = 'open' AND e.breached THEN 1 ELSE 0 END) AS open_past_due,
       1.0 - CAST(sum(CASE WHEN e.breached THEN 1 ELSE 0 END) AS DOUBLE) / count(*) AS compliance
FROM exposures e
LEFT JOIN assets a ON a.asset_id = e.asset_id
WHERE e.status <> 'suppressed'
GROUP BY 1, 2
