-- Canary rollouts per patch: how many were promoted, held or rolled back, and
-- their stage failure rates.
SELECT patch_id,
       count(*) AS rollouts,
       sum(CASE WHEN gate = 'promote' THEN 1 ELSE 0 END) AS promoted,
       sum(CASE WHEN gate = 'hold' THEN 1 ELSE 0 END) AS held,
       sum(CASE WHEN gate = 'rollback' THEN 1 ELSE 0 END) AS rolled_back,
       sum(stages) AS stages,
       sum(failed) AS failed_stages,
       CAST(sum(failed) AS DOUBLE) / sum(stages) AS failure_rate,
       max(failure_rate) AS worst_rollout_failure_rate
FROM canary_rollups
GROUP BY patch_id
