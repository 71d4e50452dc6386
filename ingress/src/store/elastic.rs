//! Elastic windows in the store: each replica's gateway load samples, each pool's scale
//! state (the scheduler's last decision) and the last wake request, so that a restarted
//! or follower replica sees the same history and decisions as the leader.

use chrono::{DateTime, TimeZone, Utc};
use dayshift_config::schedule::NodeRange;
use dayshift_scheduler::elastic::{HourLoad, hour_loads};
use dayshift_scheduler::{LoadSample, ScaleCause, ScaleState};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, StoreError};

fn at(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("time {ms} out of range")))
}

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn scale_from_row(r: &AnyRow) -> Result<ScaleState> {
    let cause: String = r.try_get("cause")?;
    let woken: Option<i64> = r.try_get("woken_until")?;
    let load_milli: i64 = r.try_get("load_milli")?;
    Ok(ScaleState {
        pool: r.try_get("pool")?,
        target: count(r.try_get("target")?),
        range: NodeRange {
            min: count(r.try_get("range_min")?),
            max: count(r.try_get("range_max")?),
        },
        decided_at: at(r.try_get("decided_at")?)?,
        cause: ScaleCause::parse(&cause)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown scale cause {cause:?}")))?,
        reason: r.try_get("reason")?,
        load: load_milli as f64 / 1000.0,
        woken_until: woken.map(at).transpose()?,
        refused: r.try_get("refused")?,
    })
}

impl Store {
    /// Writes load samples (one per pool, from one replica).
    pub async fn record_load(&self, samples: &[LoadSample]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for s in samples {
            sqlx::query(
                "INSERT INTO pool_load (pool, replica, at, in_flight, queued, nodes) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pool, replica, at) DO NOTHING",
            )
            .bind(&s.pool)
            .bind(&s.replica)
            .bind(s.at.timestamp_millis())
            .bind(i64::from(s.in_flight))
            .bind(i64::from(s.queued))
            .bind(i64::from(s.nodes))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes load samples older than `before`; returns how many.
    pub async fn prune_load(&self, before: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query("DELETE FROM pool_load WHERE at < $1")
            .bind(before.timestamp_millis())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// The pool's load samples (all replicas) taken at or after `since`, oldest first.
    pub async fn load_samples(&self, pool: &str, since: DateTime<Utc>) -> Result<Vec<LoadSample>> {
        let rows = sqlx::query(
            "SELECT pool, replica, at, in_flight, queued, nodes FROM pool_load \
             WHERE pool = $1 AND at >= $2 ORDER BY at, replica",
        )
        .bind(pool)
        .bind(since.timestamp_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LoadSample {
                    pool: r.try_get("pool")?,
                    replica: r.try_get("replica")?,
                    at: at(r.try_get("at")?)?,
                    in_flight: count(r.try_get("in_flight")?),
                    queued: count(r.try_get("queued")?),
                    nodes: count(r.try_get("nodes")?),
                })
            })
            .collect()
    }

    /// Rolls each pool's raw samples of whole hours before `until` (not rolled up yet)
    /// into `pool_load_hourly`, periods of `every`; returns the hours written. Idempotent:
    /// an hour already there is kept (several replicas may roll up at once).
    pub async fn roll_up_load(
        &self,
        pools: &[String],
        until: DateTime<Utc>,
        every: chrono::Duration,
    ) -> Result<usize> {
        let until_hour = until.timestamp().div_euclid(3600) * 3600;
        let mut written = 0;
        for pool in pools {
            let last: Option<i64> =
                sqlx::query_scalar("SELECT MAX(hour) FROM pool_load_hourly WHERE pool = $1")
                    .bind(pool)
                    .fetch_one(&self.pool)
                    .await?;
            let from = match last {
                Some(ms) => at(ms)? + chrono::Duration::hours(1),
                None => DateTime::<Utc>::UNIX_EPOCH,
            };
            let samples: Vec<LoadSample> = self
                .load_samples(pool, from)
                .await?
                .into_iter()
                .filter(|s| s.at.timestamp() < until_hour)
                .collect();
            let hours = hour_loads(&samples, every);
            self.record_hour_loads(&hours).await?;
            written += hours.len();
        }
        Ok(written)
    }

    /// Writes hourly loads (an hour already stored is kept).
    pub async fn record_hour_loads(&self, hours: &[HourLoad]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for h in hours {
            sqlx::query(
                "INSERT INTO pool_load_hourly (pool, hour, load_milli_sum, periods) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (pool, hour) DO NOTHING",
            )
            .bind(&h.pool)
            .bind(h.hour.timestamp_millis())
            .bind((h.load_sum * 1000.0).round() as i64)
            .bind(i64::from(h.periods))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The pool's rolled-up hourly loads, oldest first.
    pub async fn hour_loads(&self, pool: &str) -> Result<Vec<HourLoad>> {
        let rows = sqlx::query(
            "SELECT pool, hour, load_milli_sum, periods FROM pool_load_hourly \
             WHERE pool = $1 ORDER BY hour",
        )
        .bind(pool)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let milli: i64 = r.try_get("load_milli_sum")?;
                Ok(HourLoad {
                    pool: r.try_get("pool")?,
                    hour: at(r.try_get("hour")?)?,
                    load_sum: milli as f64 / 1000.0,
                    periods: count(r.try_get("periods")?),
                })
            })
            .collect()
    }

    /// The pool's scale state, if one was decided.
    pub async fn scale_state(&self, pool: &str) -> Result<Option<ScaleState>> {
        let row = sqlx::query("SELECT * FROM pool_scale WHERE pool = $1")
            .bind(pool)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(scale_from_row).transpose()
    }

    /// Every pool's scale state, by pool name.
    pub async fn scale_states(&self) -> Result<Vec<ScaleState>> {
        let rows = sqlx::query("SELECT * FROM pool_scale ORDER BY pool")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(scale_from_row).collect()
    }

    /// Writes the pool's scale state (replacing the last one).
    pub async fn save_scale_state(&self, s: &ScaleState) -> Result<()> {
        sqlx::query(
            "INSERT INTO pool_scale (pool, target, range_min, range_max, decided_at, cause, \
             reason, load_milli, woken_until, refused) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (pool) DO UPDATE SET target = excluded.target, \
             range_min = excluded.range_min, range_max = excluded.range_max, \
             decided_at = excluded.decided_at, cause = excluded.cause, \
             reason = excluded.reason, load_milli = excluded.load_milli, \
             woken_until = excluded.woken_until, refused = excluded.refused",
        )
        .bind(&s.pool)
        .bind(i64::from(s.target))
        .bind(i64::from(s.range.min))
        .bind(i64::from(s.range.max))
        .bind(s.decided_at.timestamp_millis())
        .bind(s.cause.as_str())
        .bind(&s.reason)
        .bind((s.load * 1000.0).round() as i64)
        .bind(s.woken_until.map(|t| t.timestamp_millis()))
        .bind(s.refused.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that a request found no node of `pool` at `at` and asks to wake it (a
    /// later request's time replaces an earlier one's, never the other way round).
    pub async fn request_wake(&self, pool: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO pool_wake (pool, requested_at) VALUES ($1, $2) \
             ON CONFLICT (pool) DO UPDATE SET requested_at = excluded.requested_at \
             WHERE excluded.requested_at > pool_wake.requested_at",
        )
        .bind(pool)
        .bind(at.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When a request last asked to wake `pool`, if ever.
    pub async fn last_wake_request(&self, pool: &str) -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT requested_at FROM pool_wake WHERE pool = $1")
                .bind(pool)
                .fetch_optional(&self.pool)
                .await?;
        v.map(at).transpose()
    }
}
