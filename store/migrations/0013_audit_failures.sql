-- An audit that could not judge (the `llm_judge` call failed or answered nothing usable):
-- kept with its error, so a judge that fails is seen and never silently shrinks the audits.
CREATE TABLE IF NOT EXISTS audit_failures
(
    request_id UUID,
    audit_request_id UUID,
    at DateTime64(3, 'UTC'),
    route LowCardinality(String),
    candidate LowCardinality(String),
    metric LowCardinality(String),
    error String
)
ENGINE = MergeTree
ORDER BY (route, candidate, at)
SETTINGS non_replicated_deduplication_window = 10000;
