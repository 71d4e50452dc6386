-- Each pool's load per UTC hour (times are unix milliseconds): the raw samples of
-- pool_load rolled up — the sum of the 5 s periods' loads (in thousandths) and the
-- number of periods — kept for good, while the raw samples are pruned after days.
CREATE TABLE pool_load_hourly (
    pool TEXT NOT NULL,
    hour BIGINT NOT NULL,
    load_milli_sum BIGINT NOT NULL,
    periods BIGINT NOT NULL,
    PRIMARY KEY (pool, hour)
);
