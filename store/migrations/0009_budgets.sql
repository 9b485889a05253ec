-- Soft budgets a request was past when it was answered (hard ones refuse it instead).
ALTER TABLE requests ADD COLUMN IF NOT EXISTS budgets_over Array(LowCardinality(String)) DEFAULT [];
