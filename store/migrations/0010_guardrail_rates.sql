-- Guardrail rollup: per hour, route and rail, how many requests each rail checked and how
-- many it fired on (by the rule or detector that fired), so the dashboard shows block and
-- flag rates over time and an admin sees a rail going noisy. Verdicts live in
-- `requests.guardrails` (a JSON array); the view below unpacks them once, on insert.
CREATE TABLE IF NOT EXISTS guardrails_hourly
(
    hour DateTime('UTC'),
    route LowCardinality(String),
    rail LowCardinality(String),
    direction LowCardinality(String),
    action LowCardinality(String),
    rule LowCardinality(String),
    checks UInt64,
    hits UInt64
)
ENGINE = SummingMergeTree
ORDER BY (hour, route, rail, direction, action, rule)
SETTINGS non_replicated_deduplication_window = 10000;

-- Rows logged before this migration, counted once (only while the rollup is still empty).
INSERT INTO guardrails_hourly
SELECT toStartOfHour(started_at) AS hour, route,
       JSONExtractString(v, 'rail') AS rail, JSONExtractString(v, 'direction') AS direction,
       JSONExtractString(v, 'action') AS action,
       if(JSONExtractBool(v, 'hit'), JSONExtractString(v, 'rule'), '') AS rule,
       count() AS checks, countIf(JSONExtractBool(v, 'hit')) AS hits
FROM requests
ARRAY JOIN JSONExtractArrayRaw(guardrails) AS v
WHERE kind = 'request' AND (SELECT count() FROM guardrails_hourly) = 0
GROUP BY hour, route, rail, direction, action, rule;

CREATE MATERIALIZED VIEW IF NOT EXISTS guardrails_hourly_mv TO guardrails_hourly AS
SELECT toStartOfHour(started_at) AS hour, route,
       JSONExtractString(v, 'rail') AS rail, JSONExtractString(v, 'direction') AS direction,
       JSONExtractString(v, 'action') AS action,
       if(JSONExtractBool(v, 'hit'), JSONExtractString(v, 'rule'), '') AS rule,
       count() AS checks, countIf(JSONExtractBool(v, 'hit')) AS hits
FROM requests
ARRAY JOIN JSONExtractArrayRaw(guardrails) AS v
WHERE kind = 'request'
GROUP BY hour, route, rail, direction, action, rule;
