//! UTC calendar arithmetic on seconds since the Unix epoch, for the dates the APIs write
//! (SigV4's `x-amz-date`, ISO 8601 timestamps) and the periods quotas count in.

/// Days since 1970-01-01 in the proleptic Gregorian calendar (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The UTC calendar date (year, month, day) of seconds since the epoch.
pub fn civil_date(unix: i64) -> (i64, i64, i64) {
    // Inverse of days_from_civil.
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Seconds since the epoch as ISO 8601 in UTC (`2026-12-07T07:05:00Z`), as AWS's
/// `iso8601` timestamps are written.
pub fn iso8601(unix: i64) -> String {
    let (y, m, d) = civil_date(unix);
    let secs = unix.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_953_600), "2026-11-29T12:00:00Z");
        let (y, m, d) = civil_date(1_795_953_600);
        assert_eq!(days_from_civil(y, m, d) * 86_400 + 43_200, 1_795_953_600);
    }
}
