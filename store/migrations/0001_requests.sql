-- One row per request the gateway answered (or refused after auth). Bodies are JSON strings
-- so the schema runs on any ClickHouse the clients support; money is exact Decimal USD.
-- Ordered by route first: the distiller reads one workload at a time, finance filters by
-- app and time; request_id lookups (feedback, lineage) use the bloom filter.
CREATE TABLE IF NOT EXISTS requests
(
    request_id UUID,
    started_at DateTime64(3, 'UTC'),
    finished_at DateTime64(3, 'UTC'),
    endpoint LowCardinality(String),
    app LowCardinality(String),
    team LowCardinality(String),
    key_id LowCardinality(String),
    consent Bool,
    route LowCardinality(String),
    policy_version LowCardinality(String),
    route_reason String,
    requested_model LowCardinality(String),
    served_model LowCardinality(String),
    served_by LowCardinality(String),
    teacher_model LowCardinality(String),
    is_stream Bool,
    status LowCardinality(String),
    http_status UInt16,
    error String,
    latency_us UInt32,
    ttft_us UInt32,
    upstream_us UInt32,
    input_tokens UInt32,
    output_tokens UInt32,
    usage_estimated Bool,
    cost_usd Decimal(18, 9),
    baseline_cost_usd Decimal(18, 9),
    params String,
    messages String,
    response String,
    finish_reason LowCardinality(String),
    prompt_fingerprint String,
    guardrails String,
    metadata Map(String, String),
    tags Array(String),
    INDEX idx_request_id request_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (route, app, started_at)
SETTINGS non_replicated_deduplication_window = 10000;

-- Later judgements of a request: thumbs, scores, tags from the app.
CREATE TABLE IF NOT EXISTS feedback
(
    feedback_id UUID,
    request_id UUID,
    created_at DateTime64(3, 'UTC'),
    app LowCardinality(String),
    key_id LowCardinality(String),
    score Float64,
    tag String,
    comment String
)
ENGINE = MergeTree
ORDER BY (request_id, created_at)
SETTINGS non_replicated_deduplication_window = 10000;
