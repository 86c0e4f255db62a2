//! When a run ends: a job count, a duration (`--for 8h`), a wall-clock time (`--until 06:30`),
//! whichever comes first; with none, the run goes on until it is stopped.

use std::time::Duration;

use chrono::{DateTime, Local, NaiveTime, TimeDelta};

/// Parses `90s`, `45m`, `8h`, `1h30m`, `2d` (units s, m, h, d; a bare number is seconds).
///
/// # Errors
/// Text that is not such a duration, or zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let bad = || format!("{text:?} is not a duration like 90s, 45m, 8h or 1h30m");
    if trimmed.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = trimmed.parse::<u64>() {
        return positive(Duration::from_secs(seconds), text);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?} is too long"))?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    positive(Duration::from_secs(total), text)
}

fn positive(duration: Duration, text: &str) -> Result<Duration, String> {
    if duration.is_zero() {
        Err(format!("{text:?} is zero; give a positive duration"))
    } else {
        Ok(duration)
    }
}

/// The next time the clock shows `HH:MM` (today if still ahead, else tomorrow), from `now`.
///
/// # Errors
/// Text that is not `HH:MM` (24-hour).
pub fn parse_until(text: &str, now: DateTime<Local>) -> Result<DateTime<Local>, String> {
    let time = NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| format!("{text:?} is not a time like 06:30 (24-hour HH:MM)"))?;
    let mut date = now.date_naive();
    for _ in 0..3 {
        // `earliest` skips a time that a daylight-saving jump leaves out.
        if let Some(at) = date.and_time(time).and_local_timezone(Local).earliest()
            && at > now
        {
            return Ok(at);
        }
        date = date.checked_add_signed(TimeDelta::days(1)).unwrap_or(date);
    }
    Err(format!("{text:?} does not occur in the next days in this time zone"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("8h"), Ok(Duration::from_hours(8)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_mins(90)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2D"), Ok(Duration::from_hours(48)));
        for bad in ["", "h", "8x", "1.5h", "0s", "-3s", "3s4"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn until_is_the_next_such_time() {
        let now = Local.with_ymd_and_hms(2026, 11, 23, 22, 15, 0).single().expect("time");
        let at = parse_until("06:30", now).expect("valid");
        assert_eq!(at, Local.with_ymd_and_hms(2026, 11, 24, 6, 30, 0).single().expect("time"));
        let later = parse_until("23:00", now).expect("valid");
        assert_eq!(later, Local.with_ymd_and_hms(2026, 11, 23, 23, 0, 0).single().expect("time"));
        assert!(parse_until("25:00", now).is_err());
        assert!(parse_until("6.30", now).is_err());
    }
}
