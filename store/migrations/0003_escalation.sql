-- The student's confidence on the answer (-1: not measured); low ones feed the review queue.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS confidence Float64 DEFAULT -1;

-- Which dataset a candidate version learned from (lineage; the router's novelty check
-- compares prompts with that dataset's training prompts).
ALTER TABLE candidate_states ADD COLUMN IF NOT EXISTS dataset_id String DEFAULT '';

-- A dataset version is a set of request ids with their split: any model traces back to the
-- exact requests it learned from, and a deleted request finds the models trained on it.
CREATE TABLE IF NOT EXISTS dataset_items
(
    dataset_id String,
    request_id UUID,
    split LowCardinality(String),
    added_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (dataset_id, split, request_id);
