//! Issue 16: the country allowlist of machines enrolled with a restricted
//! (bootstrap) token. The vault reads a MaxMind DB country database that
//! the operator supplies (`--geoip-db`); these tests build a small one of
//! their own with networks in Germany, in France and in no country.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use kit::{Harness, LOCAL_IP, Signer};
use serde::Serialize;
use serde_json::json;
use signet_vault::geoip::Countries;
use signet_vault::vault::Settings;

const GERMANY: &str = "203.0.113.7";
const GERMANY_V6: &str = "2001:db8:1::5";
const FRANCE: &str = "198.51.100.7";
const NO_COUNTRY: &str = "192.0.2.1";

#[derive(Serialize)]
struct Country {
    iso_code: &'static str,
}

#[derive(Serialize)]
struct Record {
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<Country>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continent: Option<Country>,
}

/// A country database in the GeoLite2-Country layout.
fn countries() -> Arc<Countries> {
    let mut db = mmdb_writer::Writer::new("Signet-Test-Country");
    let mut insert = |net: &str, record: Record| {
        db.insert(net.parse::<ipnet::IpNet>().unwrap(), &record)
            .unwrap();
    };
    let located = |iso_code| Record {
        country: Some(Country { iso_code }),
        continent: Some(Country { iso_code: "EU" }),
    };
    insert("203.0.113.0/24", located("DE"));
    insert("2001:db8:1::/48", located("DE"));
    insert("198.51.100.0/24", located("FR"));
    // A network the database knows without a country (anycast, say).
    insert(
        "192.0.2.0/24",
        Record {
            country: None,
            continent: Some(Country { iso_code: "EU" }),
        },
    );
    let bytes = db.to_bytes().unwrap();
    Arc::new(Countries::from_bytes(bytes, Path::new("test-country.mmdb")).unwrap())
}

fn with_countries() -> Settings {
    Settings {
        countries: Some(countries()),
        ..Settings::default()
    }
}

fn restricted_token(countries: &[&str]) -> serde_json::Value {
    json!({
        "project": "app", "ttl_seconds": 600, "machine_lifetime_seconds": 7200,
        "grants": [{"secret": "db"}],
        "constraints": {"bootstrap": true, "machine_country_allowlist": countries}
    })
}

async fn restricted_machine(h: &Harness, countries: &[&str]) -> Signer {
    let token = h.token(restricted_token(countries)).await;
    let (reply, machine) = h.enroll(&token, "boot", json!({}), LOCAL_IP).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    machine.unwrap()
}

#[test]
fn the_test_database_places_addresses_as_a_real_one_would() {
    let db = countries();
    let at = |ip: &str| db.country(ip.parse().unwrap());
    assert_eq!(at(GERMANY).as_deref(), Some("DE"));
    assert_eq!(at(GERMANY_V6).as_deref(), Some("DE"));
    assert_eq!(at("::ffff:203.0.113.7").as_deref(), Some("DE"));
    assert_eq!(at(FRANCE).as_deref(), Some("FR"));
    assert_eq!(at(NO_COUNTRY), None);
    assert_eq!(at(LOCAL_IP), None);
    assert_eq!(db.database_type(), "Signet-Test-Country");
}

#[tokio::test]
async fn a_machine_is_served_only_from_its_allowed_countries() {
    let h = Harness::with_settings(with_countries());
    h.project("app").await;
    h.write("app", "db", "s3cret").await;
    let machine = restricted_machine(&h, &["DE", "AT"]).await;

    for inside in [GERMANY, GERMANY_V6, "::ffff:203.0.113.9"] {
        let reply = h.read_from(&machine, "app", "db", inside).await;
        assert_eq!(reply.status, StatusCode::OK, "{inside}: {:?}", reply.body);
    }
    for (outside, why) in [
        (FRANCE, "is in FR"),
        (NO_COUNTRY, "in no country"),
        (LOCAL_IP, "in no country"),
    ] {
        let reply = h.read_from(&machine, "app", "db", outside).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::FORBIDDEN, "policy_country"),
            "{outside}"
        );
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{outside}: {message}");
        assert!(!reply.body.to_string().contains("s3cret"));
    }
    let denials = h.denials("policy_country");
    assert_eq!(denials.len(), 3, "every refusal is audited");
    assert!(denials.iter().all(|d| d.actor == machine.id));
    assert!(denials[0].reason.contains("FR"), "{}", denials[0].reason);
}

#[tokio::test]
async fn a_vault_restarted_without_its_database_refuses_restricted_machines() {
    let h = Harness::with_settings(with_countries());
    h.project("app").await;
    h.write("app", "db", "s3cret").await;
    let machine = restricted_machine(&h, &["DE"]).await;
    let unrestricted = h.machine("app", &["db"]).await;
    assert_eq!(
        h.read_from(&machine, "app", "db", GERMANY).await.status,
        StatusCode::OK
    );

    let h = h.reopen(Settings::default());
    let refused = h.read_from(&machine, "app", "db", GERMANY).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "policy_country"),
        "fails closed"
    );
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("--geoip-db"), "{message}");
    assert_eq!(
        h.read(&unrestricted, "app", "db").await.status,
        StatusCode::OK,
        "machines without a country list are not affected"
    );
}

#[tokio::test]
async fn a_country_allowlist_is_refused_at_creation_without_a_database() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "s3cret").await;
    let reply = h
        .admin(
            "POST",
            "/v1/enrollment-tokens",
            Some(restricted_token(&["DE"])),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("--geoip-db"), "{message}");
}

#[tokio::test]
async fn country_codes_are_checked_at_creation() {
    let h = Harness::with_settings(with_countries());
    h.project("app").await;
    h.write("app", "db", "s3cret").await;
    for bad in [vec!["de"], vec!["DEU"], vec!["DE", "F"], vec![""]] {
        let reply = h
            .admin(
                "POST",
                "/v1/enrollment-tokens",
                Some(restricted_token(&bad)),
            )
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad:?}"
        );
    }
    let too_many: Vec<String> = (0..250)
        .map(|i| format!("A{}", (b'A' + (i % 26) as u8) as char))
        .collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let reply = h
        .admin(
            "POST",
            "/v1/enrollment-tokens",
            Some(restricted_token(&too_many)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = h
        .admin(
            "POST",
            "/v1/enrollment-tokens",
            Some(restricted_token(&["DE", "FR"])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(
        reply.body["constraints"]["machine_country_allowlist"],
        json!(["DE", "FR"]),
        "the token shows its list"
    );
}
