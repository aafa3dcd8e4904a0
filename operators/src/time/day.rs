//! Budget days: a campaign's day runs from midnight to midnight in its own time zone.

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;

use crate::time::EventTime;

/// The local calendar date of `t` in `tz`: the budget day an event at `t` is charged to.
pub fn budget_day(t: EventTime, tz: Tz) -> NaiveDate {
    match chrono::DateTime::from_timestamp_millis(t.millis()) {
        Some(utc) => utc.with_timezone(&tz).date_naive(),
        None => NaiveDate::MIN,
    }
}

/// The instant the budget day `day` starts in `tz` (the first valid local time of that date,
/// so a DST gap at midnight moves the start forward rather than skipping the day).
pub fn day_start(day: NaiveDate, tz: Tz) -> EventTime {
    let mut t = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        if let Some(local) = tz.from_local_datetime(&t).earliest() {
            return EventTime(local.timestamp_millis());
        }
        t += chrono::Duration::minutes(30);
    }
    EventTime(t.and_utc().timestamp_millis())
}

/// Length of budget day `day` in `tz`, in milliseconds (23, 24 or 25 hours around DST changes).
pub fn day_length_ms(day: NaiveDate, tz: Tz) -> i64 {
    let next = day.succ_opt().unwrap_or(day);
    day_start(next, tz).millis() - day_start(day, tz).millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> EventTime {
        EventTime::parse(s).unwrap()
    }

    #[test]
    fn days_follow_the_local_midnight() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        let at = t("2026-03-10T03:30:00Z");
        assert_eq!(
            budget_day(at, ny),
            NaiveDate::from_ymd_opt(2026, 3, 9).unwrap()
        );
        assert_eq!(
            budget_day(at, tokyo),
            NaiveDate::from_ymd_opt(2026, 3, 10).unwrap()
        );
        let day = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
        assert_eq!(day_start(day, ny), t("2026-03-10T04:00:00Z"));
    }

    #[test]
    fn dst_days_are_23_or_25_hours() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let spring = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        let autumn = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        assert_eq!(day_length_ms(spring, ny), 23 * 3_600_000);
        assert_eq!(day_length_ms(autumn, ny), 25 * 3_600_000);
        // Chile's clocks jump at midnight: the day still starts, one hour later.
        let santiago: Tz = "America/Santiago".parse().unwrap();
        let gap = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
        assert_eq!(budget_day(day_start(gap, santiago), santiago), gap);
    }
}
