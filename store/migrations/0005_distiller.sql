-- Dataset versions: one row each, with what curation excluded and why.
CREATE TABLE IF NOT EXISTS datasets
(
    dataset_id String,
    route LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    train_size UInt32,
    eval_size UInt32,
    eval_set_id String,
    excluded String,
    source_rows UInt32
)
ENGINE = MergeTree
ORDER BY (route, created_at);

-- Frozen eval sets: a version never changes once written; reports name the one they used.
CREATE TABLE IF NOT EXISTS eval_sets
(
    eval_set_id String,
    route LowCardinality(String),
    version UInt32,
    created_at DateTime64(3, 'UTC'),
    size UInt32
)
ENGINE = MergeTree
ORDER BY (route, version);

CREATE TABLE IF NOT EXISTS eval_set_items
(
    eval_set_id String,
    request_id UUID
)
ENGINE = MergeTree
ORDER BY (eval_set_id, request_id);

CREATE TABLE IF NOT EXISTS training_runs
(
    run_id String,
    route LowCardinality(String),
    candidate LowCardinality(String),
    dataset_id String,
    base String,
    params String,
    losses Array(Float64),
    steps UInt32,
    seconds Float64,
    tokens UInt64,
    tokens_per_s Float64,
    device LowCardinality(String),
    artifact_path String,
    created_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (route, candidate, created_at);

-- Per-example evaluation: the student's answer against the teacher's, with its confidence.
CREATE TABLE IF NOT EXISTS eval_results
(
    run_id String,
    eval_set_id String,
    request_id UUID,
    metric LowCardinality(String),
    score Float64,
    agree Bool,
    confidence Float64,
    student_answer String,
    teacher_answer String
)
ENGINE = MergeTree
ORDER BY (run_id, request_id);

-- Gate decisions, one per evaluated run.
CREATE TABLE IF NOT EXISTS eval_reports
(
    run_id String,
    route LowCardinality(String),
    candidate LowCardinality(String),
    eval_set_id String,
    metric LowCardinality(String),
    examples UInt32,
    agreement Float64,
    wilson_lower Float64,
    threshold Float64,
    passed Bool,
    coverage_curve String,
    created_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (route, candidate, created_at);
