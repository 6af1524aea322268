//! The domain computes in `chrono` (cron and time zones); Kubernetes objects carry `jiff`
//! timestamps. These convert at the boundary, at the seconds precision the API server keeps.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub fn to_time(at: DateTime<Utc>) -> Time {
    // Beyond jiff's range (year 9999) clamp, rather than show a far-future time as 1970.
    let fallback = if at.timestamp() > 0 {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    };
    Time(Timestamp::from_second(at.timestamp()).unwrap_or(fallback))
}

pub fn from_time(time: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(time.0.as_second(), 0).unwrap_or_default()
}

/// `now` at the precision status round-trips, so an unchanged world compares equal.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default()
}

/// `t` cut to the whole second, as status keeps times.
pub fn floor_second(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    t.duration_trunc(chrono::TimeDelta::seconds(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_seconds() {
        let at = DateTime::parse_from_rfc3339("2026-11-24T01:02:03Z")
            .unwrap()
            .to_utc();
        assert_eq!(from_time(&to_time(at)), at);
    }
}
