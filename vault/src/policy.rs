//! The pure access rules: time windows in IANA zones, CIDR allowlists, the
//! restrictions a bootstrap token puts on a machine, and the shape of a
//! policy. No storage and no request here, so the pipeline and the services
//! both use them without depending on each other.

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use signet_client::api::{AccessPolicy, ErrorCode, TimeWindow};

use crate::error::{Error, Result, invalid};
use crate::geoip::{Countries, is_country_code};
use crate::store::{Machine, MachineRestrictions};

/// Most CIDRs in one allowlist.
const MAX_CIDRS: usize = 64;

/// Most countries in one allowlist: every ISO 3166-1 code.
const MAX_COUNTRIES: usize = 249;

/// True for the codes that count as `policy.denied` webhook events.
pub fn is_policy_denial(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::PolicyTimeWindow
            | ErrorCode::PolicyIp
            | ErrorCode::PolicyCountry
            | ErrorCode::PolicyDailyCap
            | ErrorCode::CosignRequired
            | ErrorCode::HostnameNotAllowed
            | ErrorCode::SourceNotAllowed
    )
}

/// The IANA zone `name` (UTC when absent), from the bundled database so a
/// host without zoneinfo behaves the same.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(name) => {
            TimeZone::get(name).map_err(|_| invalid(format!("unknown IANA time zone {name:?}")))
        }
    }
}

fn minutes(text: &str) -> Result<i32> {
    let part = |p: &str| {
        // Digits only: `parse` alone takes "-1" and "+9".
        ((1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<i32>().ok())
            .flatten()
    };
    let parsed = text
        .split_once(':')
        .and_then(|(h, m)| Some((part(h)?, part(m)?)))
        .filter(|(h, m)| *m < 60 && h * 60 + m <= 24 * 60);
    parsed.map(|(h, m)| h * 60 + m).ok_or_else(|| {
        invalid(format!(
            "time {text:?} is not HH:MM between 00:00 and 24:00"
        ))
    })
}

fn weekday(name: &str) -> Result<Weekday> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => {
            return Err(invalid(format!(
                "day {name:?} is not one of mon, tue, wed, thu, fri, sat, sun"
            )));
        }
    })
}

/// Checks a window's shape.
pub fn validate_window(window: &TimeWindow) -> Result<()> {
    let (start, end) = (minutes(&window.start)?, minutes(&window.end)?);
    if start == end {
        return Err(invalid("a time window needs different start and end times"));
    }
    for day in &window.days {
        weekday(day)?;
    }
    Ok(())
}

/// True when `now` falls inside `window` in `zone`. A window whose end is
/// before its start spans midnight; its day list names the day it opens.
pub fn window_open(window: &TimeWindow, zone: &TimeZone, now: i64) -> Result<bool> {
    let start = minutes(&window.start)?;
    let end = minutes(&window.end)?;
    let local = jiff::Timestamp::from_second(now)
        .map_err(|_| invalid("time out of range"))?
        .to_zoned(zone.clone());
    let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
    let day_ok = |day: Weekday| -> Result<bool> {
        if window.days.is_empty() {
            return Ok(true);
        }
        for name in &window.days {
            if weekday(name)? == day {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let today = local.weekday();
    Ok(if start < end {
        minute >= start && minute < end && day_ok(today)?
    } else {
        // Spanning midnight: the evening part belongs to today, the morning
        // part to the window that opened yesterday.
        (minute >= start && day_ok(today)?) || (minute < end && day_ok(today.previous())?)
    })
}

/// Parses a CIDR list (a bare address is a /32 or /128).
pub fn parse_cidrs(list: &[String]) -> Result<Vec<IpNet>> {
    if list.len() > MAX_CIDRS {
        return Err(invalid(format!("at most {MAX_CIDRS} CIDRs")));
    }
    list.iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| invalid(format!("{text:?} is not a CIDR such as 10.0.0.0/8")))
        })
        .collect()
}

/// The request's source address, with IPv4-mapped IPv6 unwrapped.
pub fn source_addr(source_ip: &str) -> Option<IpAddr> {
    source_ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// True when `source_ip` is inside one of `cidrs`. An unknown source is
/// never inside.
pub fn ip_allowed(cidrs: &[String], source_ip: &str) -> Result<bool> {
    let nets = parse_cidrs(cidrs)?;
    Ok(source_addr(source_ip).is_some_and(|ip| nets.iter().any(|net| net.contains(&ip))))
}

/// Checks a country allowlist's shape, and that this vault can enforce it
/// (it has a country database).
pub fn validate_countries(list: &[String], countries: Option<&Countries>) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    if list.len() > MAX_COUNTRIES {
        return Err(invalid(format!("at most {MAX_COUNTRIES} countries")));
    }
    if let Some(at) = list.iter().position(|code| !is_country_code(code)) {
        return Err(invalid(format!(
            "machine_country_allowlist[{at}] is not an ISO 3166-1 alpha-2 code (two upper-case letters, like DE)"
        )));
    }
    if countries.is_none() {
        return Err(invalid(
            "this vault has no country database to enforce machine_country_allowlist: start it with --geoip-db FILE",
        ));
    }
    Ok(())
}

/// Restrictions a bootstrap token put on a machine, checked on every
/// request the machine makes. `countries` is the vault's country database.
pub fn check_machine(
    machine: &Machine,
    now: i64,
    source_ip: &str,
    countries: Option<&Countries>,
) -> Result<()> {
    let Some(restrictions) = &machine.restrictions else {
        return Ok(());
    };
    check_restrictions(restrictions, now, source_ip, countries)
}

fn check_restrictions(
    r: &MachineRestrictions,
    now: i64,
    source_ip: &str,
    countries: Option<&Countries>,
) -> Result<()> {
    if !r.ip_allowlist.is_empty() && !ip_allowed(&r.ip_allowlist, source_ip)? {
        return Err(Error::denied(
            ErrorCode::PolicyIp,
            format!(
                "this machine may only make requests from its allowlist, not from {source_ip:?}"
            ),
        ));
    }
    if !r.country_allowlist.is_empty() {
        check_country(&r.country_allowlist, source_ip, countries)?;
    }
    if let Some(window) = &r.window {
        let zone = time_zone(r.timezone.as_deref())?;
        if !window_open(window, &zone, now)? {
            return Err(Error::denied(
                ErrorCode::PolicyTimeWindow,
                "this machine may not make requests at this time of day",
            ));
        }
    }
    Ok(())
}

/// Refuses a source address outside `allowed` countries. Fails closed: no
/// database, or an address the database places in no country, is refused.
fn check_country(allowed: &[String], source_ip: &str, countries: Option<&Countries>) -> Result<()> {
    let denied = |why: String| {
        Err(Error::denied(
            ErrorCode::PolicyCountry,
            format!("this machine may only make requests from its allowed countries: {why}"),
        ))
    };
    let Some(countries) = countries else {
        return denied("this vault has no country database to check them (--geoip-db)".into());
    };
    match source_addr(source_ip).and_then(|ip| countries.country(ip)) {
        Some(country) if allowed.contains(&country) => Ok(()),
        Some(country) => denied(format!("{source_ip:?} is in {country}")),
        None => denied(format!("{source_ip:?} is in no country of the database")),
    }
}

/// What `new` would loosen of `current`, if anything: agents may only
/// tighten a secret's policy (an admin's co-sign rule, allowlist, window or
/// cap never gives way to an agent), and never add or remove a canary,
/// which locks the whole project. Both policies are already validated.
pub fn loosened(current: &AccessPolicy, new: &AccessPolicy) -> Result<Option<&'static str>> {
    let rules_of_the_day = current.window.is_some() || current.daily_read_cap.is_some();
    Ok(
        if current.window.is_some() && new.window != current.window {
            Some("the time window")
        } else if rules_of_the_day && new.timezone != current.timezone {
            Some("the time zone")
        } else if !current.ip_allowlist.is_empty()
            && !nets_within(&new.ip_allowlist, &current.ip_allowlist)?
        {
            Some("the IP allowlist (every new CIDR must lie inside the current ones)")
        } else if current
            .daily_read_cap
            .is_some_and(|cap| new.daily_read_cap.is_none_or(|n| n > cap))
        {
            Some("the daily read cap")
        } else if current.cosign && !new.cosign {
            Some("the co-sign requirement")
        } else if new.canary != current.canary || new.canary_cascade != current.canary_cascade {
            Some("the canary setting (a canary locks the whole project: admins only)")
        } else {
            None
        },
    )
}

/// True when `inner` is not empty and each of its CIDRs lies inside one of
/// `outer`'s.
fn nets_within(inner: &[String], outer: &[String]) -> Result<bool> {
    let (inner, outer) = (parse_cidrs(inner)?, parse_cidrs(outer)?);
    Ok(!inner.is_empty()
        && inner
            .iter()
            .all(|net| outer.iter().any(|o| o.contains(net))))
}

/// Checks a policy's shape before it is stored.
pub fn validate_policy(policy: &AccessPolicy) -> Result<()> {
    time_zone(policy.timezone.as_deref())?;
    if let Some(window) = &policy.window {
        validate_window(window)?;
    }
    parse_cidrs(&policy.ip_allowlist)?;
    if policy.daily_read_cap == Some(0) {
        return Err(invalid(
            "daily_read_cap must be at least 1 (omit it for no cap)",
        ));
    }
    if policy.canary_cascade && !policy.canary {
        return Err(invalid("canary_cascade needs canary"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn window(days: &[&str], start: &str, end: &str) -> TimeWindow {
        TimeWindow {
            days: days.iter().map(|d| (*d).to_owned()).collect(),
            start: start.into(),
            end: end.into(),
        }
    }

    fn at(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn window_in_a_zone() {
        let paris = time_zone(Some("Europe/Paris")).unwrap();
        let office = window(&["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00");
        // 2024-06-03 is a Monday; Paris is UTC+2 in June.
        assert!(window_open(&office, &paris, at("2024-06-03T07:30:00Z")).unwrap());
        assert!(!window_open(&office, &paris, at("2024-06-03T06:59:00Z")).unwrap());
        assert!(!window_open(&office, &paris, at("2024-06-03T15:00:00Z")).unwrap());
        // Saturday.
        assert!(!window_open(&office, &paris, at("2024-06-08T08:00:00Z")).unwrap());
    }

    #[test]
    fn window_across_midnight() {
        let night = window(&["fri"], "22:00", "02:00");
        let utc = TimeZone::UTC;
        assert!(window_open(&night, &utc, at("2024-06-07T23:00:00Z")).unwrap());
        assert!(window_open(&night, &utc, at("2024-06-08T01:00:00Z")).unwrap());
        assert!(!window_open(&night, &utc, at("2024-06-08T23:00:00Z")).unwrap());
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(validate_window(&window(&[], "25:00", "01:00")).is_err());
        assert!(validate_window(&window(&["funday"], "01:00", "02:00")).is_err());
        assert!(time_zone(Some("Mars/Olympus")).is_err());
        assert!(parse_cidrs(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn a_window_closes_at_its_end_minute() {
        let utc = TimeZone::UTC;
        let office = window(&[], "09:30", "17:15");
        assert!(!window_open(&office, &utc, at("2024-06-03T09:29:59Z")).unwrap());
        assert!(window_open(&office, &utc, at("2024-06-03T09:30:00Z")).unwrap());
        assert!(window_open(&office, &utc, at("2024-06-03T17:14:59Z")).unwrap());
        assert!(!window_open(&office, &utc, at("2024-06-03T17:15:00Z")).unwrap());
        let night = window(&[], "22:00", "02:30");
        assert!(window_open(&night, &utc, at("2024-06-04T02:29:00Z")).unwrap());
        assert!(!window_open(&night, &utc, at("2024-06-04T02:30:00Z")).unwrap());
    }

    #[test]
    fn times_are_hh_mm_up_to_24_00() {
        for good in ["00:00", "9:05", "23:59", "24:00"] {
            assert!(minutes(good).is_ok(), "{good}");
        }
        for bad in [
            "09:60", "24:01", "25:00", "123:00", "9", "09:5x", "-1:00", "+9:00",
        ] {
            assert!(minutes(bad).is_err(), "{bad}");
        }
        assert_eq!(minutes("09:30").unwrap(), 570);
    }

    #[test]
    fn every_day_name_is_understood() {
        let names = [
            ("mon", "monday", Weekday::Monday),
            ("tue", "tuesday", Weekday::Tuesday),
            ("wed", "wednesday", Weekday::Wednesday),
            ("thu", "thursday", Weekday::Thursday),
            ("fri", "friday", Weekday::Friday),
            ("sat", "saturday", Weekday::Saturday),
            ("sun", "sunday", Weekday::Sunday),
        ];
        for (short, long, day) in names {
            assert_eq!(weekday(short).unwrap(), day);
            assert_eq!(weekday(&long.to_uppercase()).unwrap(), day);
        }
        // A weekend-only window opens on Saturday and Sunday (2024-06-08/09).
        let weekend = window(&["sat", "sunday"], "10:00", "12:00");
        let utc = TimeZone::UTC;
        assert!(window_open(&weekend, &utc, at("2024-06-08T11:00:00Z")).unwrap());
        assert!(window_open(&weekend, &utc, at("2024-06-09T11:00:00Z")).unwrap());
        assert!(!window_open(&weekend, &utc, at("2024-06-10T11:00:00Z")).unwrap());
    }

    #[test]
    fn an_allowlist_holds_at_most_its_cap() {
        let list = |n: usize| (0..n).map(|i| format!("10.0.{i}.0/24")).collect::<Vec<_>>();
        assert_eq!(parse_cidrs(&list(MAX_CIDRS)).unwrap().len(), MAX_CIDRS);
        assert!(parse_cidrs(&list(MAX_CIDRS + 1)).is_err());
        assert!(parse_cidrs(&list(MAX_CIDRS - 1)).is_ok());
    }

    #[test]
    fn ip_allowlist_matches_mapped_addresses() {
        let list = vec!["10.1.0.0/16".to_owned()];
        assert!(ip_allowed(&list, "10.1.2.3").unwrap());
        assert!(ip_allowed(&list, "::ffff:10.1.2.3").unwrap());
        assert!(!ip_allowed(&list, "10.2.0.1").unwrap());
        assert!(!ip_allowed(&list, "").unwrap());
    }
}
