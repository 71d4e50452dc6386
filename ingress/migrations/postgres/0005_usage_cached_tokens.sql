-- Prompt tokens each request took from the node's prefix cache (usage.prompt_tokens_details
-- .cached_tokens of its answer): the node did not compute them, so the cost ledger's
-- `--by key` split weighs a key by the tokens its requests made the GPU compute.
ALTER TABLE usage ADD COLUMN cached_tokens BIGINT NOT NULL DEFAULT 0;
