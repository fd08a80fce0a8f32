//! Timestamps in Frappe's form (`YYYY-MM-DD HH:MM:SS.ffffff`) in the site's time zone.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// Frappe's timestamp format.
pub const DATETIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// A site's clock in its configured time zone.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    tz: chrono_tz::Tz,
}

impl Clock {
    /// A clock for the named IANA zone; unknown names are refused.
    pub fn new(zone: &str) -> Option<Clock> {
        zone.parse::<chrono_tz::Tz>().ok().map(|tz| Clock { tz })
    }

    /// Now as a naive local datetime.
    pub fn now_naive(&self) -> NaiveDateTime {
        Utc::now().with_timezone(&self.tz).naive_local()
    }

    /// Now in Frappe's form.
    pub fn now(&self) -> String {
        format_datetime(self.now_naive())
    }

    /// Seconds since the epoch of a timestamp in Frappe's form, read in this clock's zone.
    pub fn epoch_seconds(&self, s: &str) -> Option<f64> {
        use chrono::TimeZone;
        let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok()?;
        let at = self.tz.from_local_datetime(&t).earliest()?;
        Some(at.timestamp_micros() as f64 / 1e6)
    }

    /// Today as `YYYY-MM-DD`.
    pub fn today(&self) -> String {
        self.now_naive().format("%Y-%m-%d").to_string()
    }
}

/// `t` in Frappe's form.
pub fn format_datetime(t: NaiveDateTime) -> String {
    // Written out by hand: every write stamps several timestamps, and chrono's formatter
    // parses its format string each time.
    use chrono::{Datelike, Timelike};
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() % 1_000_000_000 / 1_000
    )
}

/// Accepts a date and returns it as `YYYY-MM-DD`.
pub fn normalize_date(s: &str) -> Option<String> {
    let s = s.trim();
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().or_else(|| {
        normalize_datetime(s).and_then(|dt| NaiveDate::parse_from_str(&dt[..10], "%Y-%m-%d").ok())
    })?;
    Some(d.format("%Y-%m-%d").to_string())
}

/// Accepts a datetime (date alone, seconds or fraction optional, `T` allowed) in Frappe's form.
pub fn normalize_datetime(s: &str) -> Option<String> {
    let s = s.trim().replace('T', " ");
    let s = s.trim_end_matches('Z');
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return Some(dt.format(DATETIME_FORMAT).to_string());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(|d| {
        d.and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .format(DATETIME_FORMAT)
            .to_string()
    })
}

/// Accepts a time and returns `HH:MM:SS[.ffffff]`.
pub fn normalize_time(s: &str) -> Option<String> {
    let s = s.trim();
    for f in ["%H:%M:%S%.f", "%H:%M:%S", "%H:%M"] {
        if let Ok(t) = NaiveTime::parse_from_str(s, f) {
            return Some(if t.format("%.f").to_string().is_empty() {
                t.format("%H:%M:%S").to_string()
            } else {
                t.format("%H:%M:%S%.6f").to_string()
            });
        }
    }
    None
}
