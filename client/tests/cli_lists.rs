//! `signet ... list` follows `next_cursor` through every page of a list
//! route (the SDK asks for the largest page, 1000 items), against a real
//! `signet-vault dev`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{ADMIN, Setup};

#[test]
fn project_list_shows_every_page() {
    let s = Setup::new();
    s.ok(Some(ADMIN), &["project", "create", "app"]);
    // More projects than one page holds, written behind the vault's back
    // (listing never opens their keys).
    let count = 1_234;
    let mut db = rusqlite::Connection::open(s.data.join("signet.db")).unwrap();
    let tx = db.transaction().unwrap();
    for i in 0..count {
        tx.execute(
            "INSERT INTO projects (id, name, wrapped_key, created_at) VALUES (?1, ?2, x'00', 0)",
            (format!("p_bulk{i:04}"), format!("bulk-{i:04}")),
        )
        .unwrap();
    }
    tx.commit().unwrap();

    let list = s.json(ADMIN, &["project", "list"]);
    let names: Vec<&str> = list["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut expected = vec!["app".to_owned()];
    expected.extend((0..count).map(|i| format!("bulk-{i:04}")));
    assert_eq!(names, expected);
    assert!(list["next_cursor"].is_null());

    // The text form lists them all too, one line each.
    let text = s.ok(Some(ADMIN), &["project", "list"]);
    assert_eq!(text.lines().count(), count + 1);
}
