-- Training runs while they run: a row per state change and per progress report (the
-- latest row of a run_id, by updated_at, is its state). Rows written before this migration
-- are finished runs: 'succeeded', attempt 1, on the local backend.
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS status LowCardinality(String) DEFAULT 'succeeded';
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS attempt UInt16 DEFAULT 1;
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS backend LowCardinality(String) DEFAULT 'local';
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS error String DEFAULT '';
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS stage LowCardinality(String) DEFAULT '';
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS step UInt32 DEFAULT 0;
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS total_steps UInt32 DEFAULT 0;
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS loss Nullable(Float64) DEFAULT NULL;
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS holder String DEFAULT '';
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS updated_at DateTime64(3, 'UTC') DEFAULT created_at;

-- Leases: which distiller process trains a route now. With Redis configured the lease is a
-- Redis key (SET NX PX); without, rows here: a claimant inserts, waits for the other
-- claimants' rows to be visible, and the earliest live claim wins (every reader agrees).
CREATE TABLE IF NOT EXISTS leases
(
    name String,
    holder String,
    token String,
    claimed_at DateTime64(6, 'UTC'),
    expires_at DateTime64(3, 'UTC'),
    released Bool DEFAULT false
)
ENGINE = MergeTree
ORDER BY (name, claimed_at, token)
TTL toDateTime(expires_at) + INTERVAL 1 DAY;

-- An operator's request to train a route now (admin API, `flywheel distill --url --force`):
-- the distiller honours a request newer than the route's latest training run.
CREATE TABLE IF NOT EXISTS distill_requests
(
    route LowCardinality(String),
    requested_at DateTime64(3, 'UTC'),
    requested_by String,
    force Bool
)
ENGINE = MergeTree
ORDER BY (route, requested_at);
