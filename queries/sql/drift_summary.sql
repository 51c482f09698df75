-- Micro-segmentation drift per pair of segments over all hours: connections,
-- those whose enforced action differed from the intended one, and the
-- segmentation integrity that leaves (1 − drift ratio).
SELECT src_segment,
       dst_segment,
       count(*) AS hours,
       sum(CASE WHEN drift_connections > 0 THEN 1 ELSE 0 END) AS hours_with_drift,
       sum(connections) AS connections,
       sum(drift_connections) AS drift_connections,
       CAST(sum(drift_connections) AS DOUBLE) / sum(connections) AS drift_ratio,
       1.0 - CAST(sum(drift_connections) AS DOUBLE) / sum(connections) AS integrity
FROM segment_drift
WHERE connections > 0
GROUP BY 1, 2
