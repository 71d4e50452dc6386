//! Reading `schedule.toml` into a [`Schedule`], reporting every problem with its place.

use chrono::NaiveDate;
use chrono_tz::Tz;

use super::{DaySet, HolidayRule, Override, OverrideAction, Schedule, WallTime, Window};
use crate::diag::{Diag, Problems, closest, shown};
use crate::toml_read::{Table, parse_document};

const TOP_KEYS: &[&str] = &["timezone", "window", "holidays", "override"];
const WINDOW_KEYS: &[&str] = &["pool", "days", "start", "end", "nodes"];
const HOLIDAY_KEYS: &[&str] = &["dates"];
const OVERRIDE_KEYS: &[&str] = &["date", "pool", "start", "end", "nodes", "closed"];
const MAX_NODES: i64 = 1000;

/// The pools of `dayshift.toml` a schedule may name, with each pool's `max_nodes` (a
/// window's lower bound above it is refused).
pub(super) type PoolCaps<'a> = Option<&'a std::collections::BTreeMap<String, u32>>;

pub(super) fn parse(
    file: &str,
    src: &str,
    known_pools: Option<&[String]>,
    caps: PoolCaps<'_>,
) -> Result<Schedule, Problems> {
    let mut d = Diag::new(file, src);
    let Some(doc) = parse_document(&mut d, src) else {
        return Err(d.into_problems());
    };
    let root = Table::root(&doc);
    root.check_keys(&mut d, TOP_KEYS);

    let timezone = match root.string(
        &mut d,
        "timezone",
        true,
        "an IANA time zone such as \"Europe/Berlin\"",
    ) {
        Some((name, span)) => match name.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                let hint = tz_hint(&name);
                d.push(
                    span,
                    "timezone",
                    format!(
                        "unknown time zone \"{}\": expected an IANA name such as \"Europe/Berlin\"{hint}",
                        shown(&name)
                    ),
                );
                None
            }
        },
        None => None,
    };

    let mut windows = Vec::new();
    for w in root.array_of_tables(&mut d, "window") {
        w.check_keys(&mut d, WINDOW_KEYS);
        let pool = pool_name(&mut d, &w, true, known_pools);
        let days = match w.string(&mut d, "days", true, "days such as \"mon-fri\"") {
            Some((text, span)) => match DaySet::parse(&text) {
                Ok(s) => Some(s),
                Err(e) => {
                    d.push(span, w.field("days"), e);
                    None
                }
            },
            None => None,
        };
        let start = wall_time(&mut d, &w, "start", true);
        let end = wall_time(&mut d, &w, "end", true);
        let nodes = node_count(&mut d, &w);
        if let (Some(pool), Some(nodes)) = (&pool, &nodes) {
            check_cap(&mut d, &w, pool, nodes, caps);
        }
        if let (Some(pool), Some(days), Some(start), Some(end), Some(nodes)) =
            (pool, days, start, end, nodes)
        {
            windows.push(Window {
                pool,
                days,
                start,
                end,
                nodes: nodes.max,
                min_nodes: nodes.min,
            });
        }
    }

    let mut holidays = Vec::new();
    if let Some(h) = root.table(&mut d, "holidays") {
        h.check_keys(&mut d, HOLIDAY_KEYS);
        for (text, span) in h
            .strings(&mut d, "dates", "a date string such as \"12-24\"")
            .unwrap_or_default()
        {
            match HolidayRule::parse(&text) {
                Ok(r) => holidays.push(r),
                Err(e) => d.push(span, h.field("dates"), e),
            }
        }
    }

    let mut overrides: Vec<Override> = Vec::new();
    for o in root.array_of_tables(&mut d, "override") {
        o.check_keys(&mut d, OVERRIDE_KEYS);
        let date = match o.string(&mut d, "date", true, "a date \"YYYY-MM-DD\"") {
            Some((text, span)) => match NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
                Ok(date) => Some(date),
                Err(_) => {
                    d.push(
                        span,
                        o.field("date"),
                        format!("expected a date \"YYYY-MM-DD\", found \"{text}\""),
                    );
                    None
                }
            },
            None => None,
        };
        let pool = pool_name(&mut d, &o, false, known_pools);
        let closed = o.boolean(&mut d, "closed").map(|(b, _)| b).unwrap_or(false);
        let action = if closed {
            for key in ["start", "end", "nodes"] {
                if let Some(n) = o.get(key) {
                    d.push(
                        n.span.clone(),
                        o.field(key),
                        "an override with `closed = true` takes no start, end or nodes; remove one or the other",
                    );
                }
            }
            Some(OverrideAction::Closed)
        } else {
            let start = wall_time(&mut d, &o, "start", true);
            let end = wall_time(&mut d, &o, "end", true);
            let nodes = node_count(&mut d, &o);
            if let (Some(nodes), Some(p)) = (&nodes, &pool) {
                check_cap(&mut d, &o, p, nodes, caps);
            }
            match (start, end, nodes) {
                (Some(start), Some(end), Some(nodes)) => Some(OverrideAction::Open {
                    start,
                    end,
                    nodes: nodes.max,
                    min_nodes: nodes.min,
                }),
                _ => None,
            }
        };
        if let (Some(date), Some(action)) = (date, action) {
            if overrides.iter().any(|x| x.date == date && x.pool == pool) {
                d.push(
                    o.span(),
                    o.path().to_string(),
                    format!(
                        "a second override for {date} and {}; merge them into one",
                        pool.as_deref()
                            .map(|p| format!("pool \"{p}\""))
                            .unwrap_or_else(|| "all pools".into())
                    ),
                );
            } else {
                overrides.push(Override { date, pool, action });
            }
        }
    }

    match timezone {
        Some(timezone) if d.is_empty() => Ok(Schedule {
            timezone,
            windows,
            holidays,
            overrides,
        }),
        _ => Err(d.into_problems()),
    }
}

fn tz_hint(name: &str) -> String {
    let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
    match closest(name, &names) {
        Some(s) => format!("; did you mean \"{s}\"?"),
        None => String::new(),
    }
}

fn pool_name(
    d: &mut Diag<'_>,
    t: &Table<'_, '_>,
    required: bool,
    known: Option<&[String]>,
) -> Option<String> {
    let (name, span) = t.string(d, "pool", required, "a pool name of dayshift.toml")?;
    if name.trim().is_empty() {
        d.push(
            span,
            t.field("pool"),
            "expected a pool name, found an empty string",
        );
        return None;
    }
    if let Some(known) = known
        && !known.contains(&name)
    {
        let refs: Vec<&str> = known.iter().map(String::as_str).collect();
        let hint = match closest(&name, &refs) {
            Some(s) => format!("; did you mean \"{s}\"?"),
            None if refs.is_empty() => "; dayshift.toml defines no pools".to_string(),
            None => format!("; the pools are: {}", refs.join(", ")),
        };
        d.push(
            span,
            t.field("pool"),
            format!("unknown pool \"{name}\"{hint}"),
        );
        return None;
    }
    Some(name)
}

fn wall_time(d: &mut Diag<'_>, t: &Table<'_, '_>, key: &str, required: bool) -> Option<WallTime> {
    let (text, span) = t.string(d, key, required, "a time \"HH:MM\" (or \"HH:MM:SS\")")?;
    match WallTime::parse(&text) {
        Ok(w) => Some(w),
        Err(e) => {
            d.push(span, t.field(key), e);
            None
        }
    }
}

/// A window's node count as parsed: `nodes = 2` (fixed, `min == max`) or
/// `nodes = "1-3"` (a range the scheduler scales within by load).
struct Count {
    min: u32,
    max: u32,
    /// Written as a range (`"1-3"`), not a count.
    range: bool,
    span: crate::toml_read::Span,
}

fn node_count(d: &mut Diag<'_>, t: &Table<'_, '_>) -> Option<Count> {
    let Some(n) = t.get("nodes") else {
        return Some(Count {
            min: 1,
            max: 1,
            range: false,
            span: t.span(),
        });
    };
    if let toml::de::DeValue::String(text) = &n.value {
        return match parse_range(text) {
            Ok((min, max)) => Some(Count {
                min,
                max,
                range: true,
                span: n.span.clone(),
            }),
            Err(why) => {
                d.push(n.span.clone(), t.field("nodes"), why);
                None
            }
        };
    }
    if let toml::de::DeValue::Integer(i) = n.value
        && i.as_str().trim_start_matches('+') == "0"
    {
        d.push(
            n.span.clone(),
            t.field("nodes"),
            "nodes must be at least 1 (to close a day, use an override with `closed = true`; \
             to let the pool go to zero when idle, a range such as \"0-2\")",
        );
        return None;
    }
    t.integer(d, "nodes", 1, MAX_NODES).map(|(v, span)| Count {
        min: v as u32,
        max: v as u32,
        range: false,
        span,
    })
}

/// `"MIN-MAX"` → (min, max): `0 <= min <= max`, `1 <= max <= 1000`.
fn parse_range(text: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!(
            "expected a node count such as 2 or a range \"MIN-MAX\" such as \"1-3\", found \"{}\"",
            shown(text)
        )
    };
    let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
    let min: i64 = a.trim().parse().map_err(|_| bad())?;
    let max: i64 = b.trim().parse().map_err(|_| bad())?;
    if !(1..=MAX_NODES).contains(&max) {
        return Err(format!(
            "the range's upper bound must be from 1 to {MAX_NODES}, found {max}"
        ));
    }
    if min < 0 {
        return Err(bad());
    }
    if min > max {
        return Err(format!(
            "the range \"{}\" has its lower bound {min} above its upper bound {max}; write \"{max}-{min}\"",
            shown(text)
        ));
    }
    Ok((min as u32, max as u32))
}

/// Refuses a range whose lower bound is above its pool's `max_nodes` (the scheduler
/// could never reach it). A fixed count above it is capped, as it always was.
fn check_cap(d: &mut Diag<'_>, t: &Table<'_, '_>, pool: &str, n: &Count, caps: PoolCaps<'_>) {
    if let Some(cap) = caps.and_then(|c| c.get(pool))
        && n.range
        && n.min > *cap
    {
        d.push(
            n.span.clone(),
            t.field("nodes"),
            format!(
                "wants at least {} node(s) of pool \"{pool}\", whose max_nodes in dayshift.toml is {cap}; \
                 lower the window's count or raise max_nodes",
                n.min
            ),
        );
    }
}
