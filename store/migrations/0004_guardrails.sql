-- True when a guardrail that flags or blocks fired on the request: the distiller leaves
-- such rows out of training data. Verdicts themselves are in `guardrails` (JSON).
ALTER TABLE requests ADD COLUMN IF NOT EXISTS guardrail_flagged Bool DEFAULT false;
