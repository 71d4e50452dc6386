-- Elastic windows (times are unix milliseconds).
-- Each ingress replica's gateway load per pool, sampled every few seconds; the scheduler
-- averages them over its scale-up and scale-down periods. Old rows are pruned.
CREATE TABLE pool_load (
    pool TEXT NOT NULL,
    replica TEXT NOT NULL,
    at BIGINT NOT NULL,
    in_flight BIGINT NOT NULL,
    queued BIGINT NOT NULL,
    nodes BIGINT NOT NULL,
    PRIMARY KEY (pool, replica, at)
);
CREATE INDEX pool_load_at ON pool_load (pool, at);
-- Each pool's scale state: the node count it wants and the decision that set it.
CREATE TABLE pool_scale (
    pool TEXT PRIMARY KEY,
    target BIGINT NOT NULL,
    range_min BIGINT NOT NULL,
    range_max BIGINT NOT NULL,
    decided_at BIGINT NOT NULL,
    cause TEXT NOT NULL,
    reason TEXT NOT NULL,
    load_milli BIGINT NOT NULL,
    woken_until BIGINT,
    refused TEXT
);
-- The last time a request found no node of a pool and asked to wake it.
CREATE TABLE pool_wake (
    pool TEXT PRIMARY KEY,
    requested_at BIGINT NOT NULL
);
