-- dayshift store, PostgreSQL flavour. Times are unix milliseconds (BIGINT), money is decimal text.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY NOT NULL,
    pool TEXT NOT NULL,
    state TEXT NOT NULL,
    provider_id TEXT,
    server_type TEXT,
    location TEXT,
    api_url TEXT,
    tls_cert_sha256 TEXT,
    join_token_hash TEXT,
    join_token_expires_at BIGINT,
    registered_at BIGINT,
    last_heartbeat_at BIGINT,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX nodes_state ON nodes (state);

CREATE TABLE node_events (
    id BIGSERIAL PRIMARY KEY,
    node_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX node_events_node ON node_events (node_id, id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    requests_per_minute BIGINT,
    tokens_per_day BIGINT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE usage (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    pool TEXT NOT NULL,
    node_id TEXT,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX usage_key_at ON usage (key_id, at);
CREATE INDEX usage_at ON usage (at);

CREATE TABLE ledger_intervals (
    id BIGSERIAL PRIMARY KEY,
    node_id TEXT NOT NULL,
    pool TEXT NOT NULL,
    provider TEXT NOT NULL,
    server_type TEXT NOT NULL,
    location TEXT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    hourly_price TEXT NOT NULL,
    monthly_price TEXT
);
CREATE INDEX ledger_node ON ledger_intervals (node_id);
CREATE INDEX ledger_started ON ledger_intervals (started_at);
