-- The risk-ranked patch queue (DOMAIN.md "Prioritization").
-- One row per open, unsuppressed exposure. {now} is the lake's "as of": the
-- largest committed watermark, never the wall clock. Times are compared in
-- epoch seconds (to_unixtime): the literal and the columns differ in unit.
-- The {…_weight} and {max_urgency} placeholders are the [prioritization]
-- configuration; the defaults are DOMAIN.md's: epss 4, kev 2, internet
-- exposed 1.5, edge 1.2, criticality low 1 / moderate 1.5 / high 2, urgency 2.
WITH latest_patch AS (
    SELECT cve_id, patch_id FROM (
        SELECT cve_id, patch_id,
               row_number() OVER (PARTITION BY cve_id ORDER BY released_at DESC, patch_id DESC) AS rn
        FROM (SELECT unnest(fixes_cves) AS cve_id, patch_id, released_at FROM patches)
    ) WHERE rn = 1
),
latest_rollout AS (
    SELECT patch_id, gate FROM (
        SELECT patch_id, gate,
               row_number() OVER (PARTITION BY patch_id ORDER BY last_event_at DESC, rollout_id DESC) AS rn
        FROM canary_rollups
    ) WHERE rn = 1
),
scored AS (
    SELECT
        e.asset_id,
        e.cve_id,
        lp.patch_id,
        e.due_at,
        e.detected_at,
        e.severity,
        e.kev,
        c.epss,
        coalesce(lr.gate IN ('rollback', 'hold'), false) AS blocked_by_canary,
        -- The exposure's CVSS: the catalog's, else the highest its scanners
        -- reported (DOMAIN.md "One CVE, several feeds"), else the lower bound
        -- of the severity its scanners named. None: a null score, ranked
        -- after every scored row.
        coalesce(c.cvss_base, e.scanner_cvss,
                 CASE e.severity WHEN 'critical' THEN 9.0 WHEN 'high' THEN 7.0
                                 WHEN 'medium' THEN 4.0 WHEN 'low' THEN 0.1 END) / 10.0
          * (1 + {epss_weight} * coalesce(c.epss, 0))
          * CASE WHEN e.kev THEN {kev_weight} ELSE 1 END
          -- An asset without inventory has neutral weights: not exposed, not edge, criticality 1.
          * CASE WHEN a.internet_exposed THEN {internet_exposed_weight} ELSE 1 END
          * CASE WHEN a.environment = 'edge' THEN {edge_weight} ELSE 1 END
          * CASE a.criticality WHEN 'high' THEN {criticality_high_weight} WHEN 'moderate' THEN {criticality_moderate_weight}
                               WHEN 'low' THEN {criticality_low_weight} ELSE 1 END
          -- Urgency: 1 without a due date, the most when the due date is not after detection.
          * (1 + CASE
                    WHEN e.due_at IS NULL THEN 0
                    WHEN e.due_at <= e.detected_at THEN {max_urgency}
                    ELSE least(greatest(
                        CAST(to_unixtime(TIMESTAMP '{now}') - to_unixtime(e.detected_at) AS DOUBLE)
                          / CAST(to_unixtime(e.due_at) - to_unixtime(e.detected_at) AS DOUBLE),
                        0), {max_urgency})
                END) AS score
    FROM exposures e
    LEFT JOIN cves c ON c.cve_id = e.cve_id
    LEFT JOIN assets a ON a.asset_id = e.asset_id
    LEFT JOIN latest_patch lp ON lp.cve_id = e.cve_id
    LEFT JOIN latest_rollout lr ON lr.patch_id = lp.patch_id
    WHERE e.status = 'open'
)
SELECT
    row_number() OVER (ORDER BY blocked_by_canary ASC, score DESC NULLS LAST, due_at ASC NULLS LAST, asset_id ASC, cve_id ASC) AS rank,
    asset_id, cve_id, patch_id, score, due_at, blocked_by_canary, severity, kev, epss, detected_at
FROM scored
