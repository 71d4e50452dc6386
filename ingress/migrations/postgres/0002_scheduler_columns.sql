-- Columns the reconcile loop keeps per node (times are unix milliseconds).
ALTER TABLE nodes ADD COLUMN address TEXT;
ALTER TABLE nodes ADD COLUMN server_created_at BIGINT;
ALTER TABLE nodes ADD COLUMN drain_started_at BIGINT;
ALTER TABLE nodes ADD COLUMN deleted_at BIGINT;
ALTER TABLE nodes ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN retry_at BIGINT;
ALTER TABLE nodes ADD COLUMN in_flight BIGINT NOT NULL DEFAULT 0;
-- The node's SSH host public key (OpenSSH format), installed by cloud-init and checked
-- by the bootstrap; public, so storing it is safe.
ALTER TABLE nodes ADD COLUMN host_key TEXT;
CREATE INDEX nodes_pool_registered ON nodes (pool, registered_at);
