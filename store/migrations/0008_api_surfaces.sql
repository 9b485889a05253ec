-- Which API a request came in on (chat.completions, completions, embeddings, responses,
-- messages); its stored messages and answer are always the chat form the distiller reads.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS api LowCardinality(String) DEFAULT '';
