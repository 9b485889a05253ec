-- The selective gate: the confidence threshold an evaluation chose for a candidate, the
-- share of eval traffic it keeps there, and the threshold the router then escalates below.
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS min_confidence Nullable(Float64);
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS coverage Float64 DEFAULT 1;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS min_coverage Nullable(Float64);
ALTER TABLE candidate_states ADD COLUMN IF NOT EXISTS min_confidence Nullable(Float64);
