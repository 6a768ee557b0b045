//! Cursor pagination of the list routes: `?limit=` (1 to
//! [`LIST_LIMIT_MAX`], default [`LIST_LIMIT_DEFAULT`]) and `?cursor=`, the
//! `next_cursor` of the page before.
//!
//! A cursor is the base64url (no padding) of the JSON of the last item's
//! sort key, opaque to clients. Each list sorts on a key that is unique
//! (it ends with an id or a unique name), and the store reads the rows
//! strictly after the cursor's key in that order (keyset pagination, never
//! an offset), so an item is listed once even while others are added or
//! removed between pages.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use signet_client::api::{LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};

use crate::error::{Result, invalid};

/// Sort key of machines, enrollment tokens, co-sign requests and webhooks:
/// `(created_at, id)`.
pub type CreatedKey = (i64, String);
/// Sort key of projects, a project's secrets and clusters: the unique name.
pub type NameKey = String;
/// Sort key of grants: `(project, secret, grant id)`.
pub type GrantKey = (String, String, String);
/// Sort key of delegations: `(agent id, project, secret, delegation id)`.
pub type DelegationKey = (String, String, String, String);

/// The `limit` and `cursor` of a list route's query, for routes that take
/// nothing else.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn page<K: DeserializeOwned>(self) -> Result<Page<K>> {
        Page::parse(self.limit, self.cursor.as_deref())
    }
}

/// One page to read: at most `limit` items after the key `after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<K> {
    pub after: Option<K>,
    pub limit: u32,
}

impl<K: DeserializeOwned> Page<K> {
    /// Checks a route's `limit` and `cursor`, or `400 invalid_request`.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self> {
        let limit = limit.unwrap_or(LIST_LIMIT_DEFAULT);
        if !(1..=LIST_LIMIT_MAX).contains(&limit) {
            return Err(invalid(format!("limit must be 1 to {LIST_LIMIT_MAX}")));
        }
        let after = cursor
            .map(|cursor| {
                URL_SAFE_NO_PAD
                    .decode(cursor)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .ok_or_else(|| {
                        invalid("cursor is not one this list handed out: pass next_cursor as given")
                    })
            })
            .transpose()?;
        Ok(Self { after, limit })
    }
}

impl<K> Page<K> {
    /// How many rows the store reads: one more than the page holds, to
    /// tell whether another page follows without a second query.
    pub fn fetch(&self) -> u32 {
        self.limit.saturating_add(1)
    }

    /// Cuts the store's `rows` (read with [`Page::fetch`]) to the page and
    /// returns them with the cursor of the next page, `None` when these are
    /// the last.
    pub fn finish<T, S: Serialize>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> S,
    ) -> (Vec<T>, Option<String>) {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if rows.len() <= limit {
            return (rows, None);
        }
        rows.truncate(limit);
        let next = rows.last().map(|last| cursor(&key(last)));
        (rows, next)
    }
}

/// The cursor naming `key`.
pub fn cursor<S: Serialize>(key: &S) -> String {
    // A tuple of strings and integers always serializes.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_a_foreign_one_is_refused() {
        let key: CreatedKey = (1_700_000_000, "m_01".into());
        let page = Page::<CreatedKey>::parse(Some(5), Some(&cursor(&key))).unwrap();
        assert_eq!(page.after, Some(key));
        assert_eq!(page.limit, 5);
        for bad in ["%%%", "bm90IGpzb24", &cursor(&"a name")] {
            assert!(Page::<CreatedKey>::parse(None, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_outside_one_to_the_maximum_are_refused() {
        assert_eq!(
            Page::<NameKey>::parse(None, None).unwrap().limit,
            LIST_LIMIT_DEFAULT
        );
        assert!(Page::<NameKey>::parse(Some(LIST_LIMIT_MAX), None).is_ok());
        assert!(Page::<NameKey>::parse(Some(0), None).is_err());
        assert!(Page::<NameKey>::parse(Some(LIST_LIMIT_MAX + 1), None).is_err());
    }

    #[test]
    fn the_next_cursor_is_the_last_key_of_a_full_page_only() {
        let page = Page::<NameKey> {
            after: None,
            limit: 2,
        };
        assert_eq!(page.fetch(), 3);
        let (rows, next) = page.finish(vec!["a", "b", "c"], |r| r.to_string());
        assert_eq!(rows, ["a", "b"]);
        assert_eq!(next, Some(cursor(&"b")));
        let (rows, next) = page.finish(vec!["a", "b"], |r| r.to_string());
        assert_eq!((rows.len(), next), (2, None));
    }
}
