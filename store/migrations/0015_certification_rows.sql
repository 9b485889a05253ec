-- Which eval rows chose a selective gate's threshold and which certified it
-- (`distiller/evaluation.py`): 'calibrate' rows pick the confidence threshold, 'certify' rows
-- (never used to fit or to choose) measure what it keeps. '' in rows written before, and in
-- a plain gate's rows, where every row does both.
ALTER TABLE eval_results ADD COLUMN IF NOT EXISTS role LowCardinality(String) DEFAULT '';
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS certified_examples UInt32 DEFAULT 0;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS certified_kept UInt32 DEFAULT 0;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS certified_agreement Float64 DEFAULT 0;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS certified_lower Float64 DEFAULT 0;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS certified_upper Float64 DEFAULT 0;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS certified_coverage Float64 DEFAULT 0;
