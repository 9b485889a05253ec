-- Signed-out dashboard sessions, for every worker and replica (without Redis): a cookie
-- whose nonce is here is refused until it would have expired anyway.
CREATE TABLE IF NOT EXISTS session_revocations
(
    nonce String,
    expires_at DateTime('UTC')
)
ENGINE = MergeTree
ORDER BY nonce
TTL expires_at;
