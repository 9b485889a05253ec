-- Routing: what kind of call a row is (a user's request, a shadow copy, a teacher audit),
-- the request it belongs to, and the candidate that served it.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT 'request';
ALTER TABLE requests ADD COLUMN IF NOT EXISTS parent_id String DEFAULT '';
ALTER TABLE requests ADD COLUMN IF NOT EXISTS candidate LowCardinality(String) DEFAULT '';

-- Candidate lifecycle, written by the distiller, read by the router. The latest row per
-- (route, candidate) is its state: trained, failed, shadow, canary, promoted, rolled_back.
CREATE TABLE IF NOT EXISTS candidate_states
(
    route LowCardinality(String),
    candidate LowCardinality(String),
    version String,
    state LowCardinality(String),
    updated_at DateTime64(3, 'UTC'),
    reason String
)
ENGINE = MergeTree
ORDER BY (route, candidate, updated_at);

-- Every state change with its evidence: what the router and the dashboards explain from.
CREATE TABLE IF NOT EXISTS events
(
    event_id UUID,
    at DateTime64(3, 'UTC'),
    route LowCardinality(String),
    candidate LowCardinality(String),
    kind LowCardinality(String),
    from_state LowCardinality(String),
    to_state LowCardinality(String),
    reason String,
    evidence String
)
ENGINE = MergeTree
ORDER BY (route, at);

-- Sampled student answers re-asked to the teacher, with their agreement.
CREATE TABLE IF NOT EXISTS audits
(
    request_id UUID,
    audit_request_id UUID,
    at DateTime64(3, 'UTC'),
    route LowCardinality(String),
    candidate LowCardinality(String),
    metric LowCardinality(String),
    agreement Float64,
    student_answer String,
    teacher_answer String
)
ENGINE = MergeTree
ORDER BY (route, candidate, at)
SETTINGS non_replicated_deduplication_window = 10000;
