-- Prompt-cache tokens per row (`contracts/pricing.py` `Tokens`): of `input_tokens`, how many
-- the provider read from its prompt cache (billed at its cache-read rate) and wrote to it.
-- The hourly rollup sums the reads, so finance sees how much of the prompt was cached.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS cached_input_tokens UInt32 DEFAULT 0;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS cache_write_tokens UInt32 DEFAULT 0;
ALTER TABLE spend_hourly ADD COLUMN IF NOT EXISTS cached_input_tokens UInt64 DEFAULT 0;
-- The view is made again with the new sum (migrations run before the writer starts, so no
-- insert falls between the two statements).
DROP VIEW IF EXISTS spend_hourly_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS spend_hourly_mv TO spend_hourly AS
SELECT toStartOfHour(started_at) AS hour, app, team, route, served_model, served_by, kind,
       count() AS requests, countIf(status = 'ok') AS ok_requests,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd, sum(baseline_cost_usd) AS baseline_cost_usd,
       sum(latency_us) AS latency_us, sum(cached_input_tokens) AS cached_input_tokens
FROM requests
GROUP BY hour, app, team, route, served_model, served_by, kind;
