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

pub(super) fn parse(
    file: &str,
    src: &str,
    known_pools: Option<&[String]>,
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
        if let (Some(pool), Some(days), Some(start), Some(end), Some(nodes)) =
            (pool, days, start, end, nodes)
        {
            windows.push(Window {
                pool,
                days,
                start,
                end,
                nodes,
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
            match (start, end, nodes) {
                (Some(start), Some(end), Some(nodes)) => {
                    Some(OverrideAction::Open { start, end, nodes })
                }
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
    let (text, span) = t.string(d, key, required, "a time \"HH:MM\"")?;
    match WallTime::parse(&text) {
        Ok(w) => Some(w),
        Err(e) => {
            d.push(span, t.field(key), e);
            None
        }
    }
}

fn node_count(d: &mut Diag<'_>, t: &Table<'_, '_>) -> Option<u32> {
    let Some(n) = t.get("nodes") else {
        return Some(1);
    };
    if let toml::de::DeValue::Integer(i) = n.value
        && i.as_str().trim_start_matches('+') == "0"
    {
        d.push(
            n.span.clone(),
            t.field("nodes"),
            "nodes must be at least 1 (to close a day, use an override with `closed = true`)",
        );
        return None;
    }
    t.integer(d, "nodes", 1, MAX_NODES).map(|(v, _)| v as u32)
}
