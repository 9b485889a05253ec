-- Finance rollup: one row per hour and (app, team, route, served model, who served, kind).
-- The dashboard reads this, never `requests`, so a page stays fast at 100M requests.
-- Money stays exact: sums of Decimal(18, 9) are Decimal(38, 9).
CREATE TABLE IF NOT EXISTS spend_hourly
(
    hour DateTime('UTC'),
    app LowCardinality(String),
    team LowCardinality(String),
    route LowCardinality(String),
    served_model LowCardinality(String),
    served_by LowCardinality(String),
    kind LowCardinality(String),
    requests UInt64,
    ok_requests UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cost_usd Decimal(38, 9),
    baseline_cost_usd Decimal(38, 9),
    latency_us UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, app, team, route, served_model, served_by, kind)
SETTINGS non_replicated_deduplication_window = 10000;

-- Rows logged before this migration, counted once: only while the rollup is still empty,
-- and before the view below starts feeding it (migrations run before the writer starts).
INSERT INTO spend_hourly
SELECT toStartOfHour(started_at) AS hour, app, team, route, served_model, served_by, kind,
       count() AS requests, countIf(status = 'ok') AS ok_requests,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd, sum(baseline_cost_usd) AS baseline_cost_usd,
       sum(latency_us) AS latency_us
FROM requests
WHERE (SELECT count() FROM spend_hourly) = 0
GROUP BY hour, app, team, route, served_model, served_by, kind;

-- A replayed spool batch is dropped here as in `requests`: the writer's inserts set
-- `deduplicate_blocks_in_dependent_materialized_views`, and this table keeps a dedup window.
CREATE MATERIALIZED VIEW IF NOT EXISTS spend_hourly_mv TO spend_hourly AS
SELECT toStartOfHour(started_at) AS hour, app, team, route, served_model, served_by, kind,
       count() AS requests, countIf(status = 'ok') AS ok_requests,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd, sum(baseline_cost_usd) AS baseline_cost_usd,
       sum(latency_us) AS latency_us
FROM requests
GROUP BY hour, app, team, route, served_model, served_by, kind;

-- Audit rollup: quality shown next to savings.
CREATE TABLE IF NOT EXISTS audits_hourly
(
    hour DateTime('UTC'),
    route LowCardinality(String),
    candidate LowCardinality(String),
    metric LowCardinality(String),
    audits UInt64,
    agreement_sum Float64,
    agreed UInt64
)
ENGINE = SummingMergeTree
ORDER BY (hour, route, candidate, metric)
SETTINGS non_replicated_deduplication_window = 10000;

INSERT INTO audits_hourly
SELECT toStartOfHour(at) AS hour, route, candidate, metric, count() AS audits,
       sum(agreement) AS agreement_sum, countIf(agreement >= 0.5) AS agreed
FROM audits
WHERE (SELECT count() FROM audits_hourly) = 0
GROUP BY hour, route, candidate, metric;

CREATE MATERIALIZED VIEW IF NOT EXISTS audits_hourly_mv TO audits_hourly AS
SELECT toStartOfHour(at) AS hour, route, candidate, metric, count() AS audits,
       sum(agreement) AS agreement_sum, countIf(agreement >= 0.5) AS agreed
FROM audits
GROUP BY hour, route, candidate, metric;

-- Human review: a reviewer's verdict on a request where the student was unsure or an audit
-- found it disagreeing with the teacher. The latest label per request wins, over the
-- teacher's answer too, in every later dataset and eval set.
CREATE TABLE IF NOT EXISTS review_labels
(
    label_id UUID,
    request_id UUID,
    at DateTime64(3, 'UTC'),
    route LowCardinality(String),
    reviewer LowCardinality(String),
    source LowCardinality(String),
    choice LowCardinality(String),
    answer String,
    note String
)
ENGINE = MergeTree
ORDER BY (route, request_id, at);

-- Lineage of each example's answer: the teacher's, or a reviewer's label.
ALTER TABLE dataset_items ADD COLUMN IF NOT EXISTS answer_source LowCardinality(String) DEFAULT 'teacher';
ALTER TABLE dataset_items ADD COLUMN IF NOT EXISTS label_id String DEFAULT '';
