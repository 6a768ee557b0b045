//! Turning the SecretGrants of one EnrollmentToken into the token's
//! pre-baked grants in the vault.
//!
//! Both reconcilers use this: the EnrollmentToken reconciler seeds a new
//! vault token with the [`Resolution::desired`] grants (so a freshly issued
//! token is never live without its grants), and the SecretGrant reconciler
//! [`converge`]s the token's grants afterwards (adds, removals, field
//! changes). The desired state is always the union of every SecretGrant that
//! names the token, so the two never fight.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kube::ResourceExt as _;
use signet_client::api::{CreateGrant, GrantRecord};

use super::vault::{self, Grantee, VaultApi, is_not_found, not_delegated};
use crate::crd::{SecretGrant, UnresolvedSecret};

/// Fields granted on one secret: `None` is the whole secret.
pub type Fields = Option<BTreeSet<String>>;

/// Why a secret of a SecretGrant could not be granted.
pub mod reason {
    /// The secret does not exist in the token's project.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// Fields were asked of a plain (unstructured) secret.
    pub const NOT_STRUCTURED: &str = "SecretHasNoFields";
    /// A field was asked that the secret's live version does not have.
    pub const FIELD_NOT_FOUND: &str = "FieldNotFound";
    /// The vault refused the grant.
    pub const VAULT_REJECTED: &str = "VaultRejected";
    /// The vault's admin has not delegated the secret (or field) to the
    /// operator for this namespace.
    pub const NOT_DELEGATED: &str = "NotDelegated";
}

/// The SecretGrants of one token, checked against the vault's metadata.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resolution {
    /// Secret name to granted fields, merged over every SecretGrant.
    pub desired: BTreeMap<String, Fields>,
    /// Per SecretGrant name: the secrets that resolved, in spec order.
    pub resolved: BTreeMap<String, Vec<String>>,
    /// Per SecretGrant name: the secrets that did not, with the reason.
    pub unresolved: BTreeMap<String, Vec<UnresolvedSecret>>,
    /// Per secret the vault refused as not delegated: its message, which
    /// names the missing delegation.
    pub not_delegated: BTreeMap<String, String>,
}

/// Checks every secret (and field) the live SecretGrants in `grants` ask
/// for. Grants being deleted are ignored. A missing secret or field is an
/// [`Resolution::unresolved`] entry, not an error; only a failed vault call
/// is.
pub async fn resolve<V: VaultApi>(
    vault: &V,
    project: &str,
    grants: &[SecretGrant],
) -> Result<Resolution, vault::Error> {
    // Field names of each secret (`None`: plain), or the reason it is unusable.
    let mut metadata: HashMap<String, Result<Option<Vec<String>>, String>> = HashMap::new();
    let mut resolution = Resolution::default();
    for grant in grants
        .iter()
        .filter(|g| g.metadata.deletion_timestamp.is_none())
    {
        let name = grant.name_any();
        let resolved = resolution.resolved.entry(name.clone()).or_default();
        let unresolved = resolution.unresolved.entry(name).or_default();
        for wanted in &grant.spec.secrets {
            if !metadata.contains_key(&wanted.secret) {
                let meta = match vault.secret_meta(project, &wanted.secret).await {
                    Ok(meta) => Ok(meta.fields),
                    Err(error) if is_not_found(&error) => Err(reason::SECRET_NOT_FOUND.to_owned()),
                    Err(error) => match not_delegated(&error) {
                        Some(message) => {
                            resolution
                                .not_delegated
                                .insert(wanted.secret.clone(), message.to_owned());
                            Err(reason::NOT_DELEGATED.to_owned())
                        }
                        None => return Err(error),
                    },
                };
                metadata.insert(wanted.secret.clone(), meta);
            }
            let verdict = match metadata.get(&wanted.secret) {
                Some(Ok(fields)) => check_fields(fields.as_deref(), &wanted.fields),
                Some(Err(why)) => Err(why.clone()),
                None => Err(reason::SECRET_NOT_FOUND.to_owned()),
            };
            match verdict {
                Ok(fields) => {
                    merge(&mut resolution.desired, &wanted.secret, fields);
                    resolved.push(wanted.secret.clone());
                }
                Err(reason) => unresolved.push(UnresolvedSecret {
                    secret: wanted.secret.clone(),
                    reason,
                }),
            }
        }
    }
    Ok(resolution)
}

/// The fields to grant, or why the request cannot be met.
fn check_fields(available: Option<&[String]>, wanted: &[String]) -> Result<Fields, String> {
    if wanted.is_empty() {
        return Ok(None);
    }
    let Some(available) = available else {
        return Err(reason::NOT_STRUCTURED.to_owned());
    };
    if let Some(missing) = wanted.iter().find(|f| !available.contains(f)) {
        return Err(format!("{}: {missing}", reason::FIELD_NOT_FOUND));
    }
    Ok(Some(wanted.iter().cloned().collect()))
}

/// Adds a request for `secret` to the union: the whole secret wins over any
/// field list, field lists are merged.
fn merge(desired: &mut BTreeMap<String, Fields>, secret: &str, fields: Fields) {
    match desired.get_mut(secret) {
        None => {
            desired.insert(secret.to_owned(), fields);
        }
        Some(current) => match (current.as_mut(), fields) {
            (Some(have), Some(more)) => have.extend(more),
            (Some(_), None) => *current = None,
            (None, _) => {}
        },
    }
}

/// The fields of a grant record in the form of [`Fields`].
fn record_fields(record: &GrantRecord) -> Fields {
    record
        .fields
        .as_ref()
        .map(|fields| fields.iter().cloned().collect())
}

/// Fields as the vault's API takes them.
pub fn api_fields(fields: &Fields) -> Option<Vec<String>> {
    fields.as_ref().map(|f| f.iter().cloned().collect())
}

/// What [`converge`] changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Convergence {
    /// Grants created on the token.
    pub created: Vec<String>,
    /// Token grants deleted because no SecretGrant wants them any more.
    pub removed: Vec<String>,
    /// Secrets the vault refused to grant, with the reason.
    pub refused: Vec<UnresolvedSecret>,
    /// Per refused secret that was not delegated: the vault's message.
    pub not_delegated: BTreeMap<String, String>,
}

/// Makes the grants of vault token `token_id` exactly `desired`.
///
/// Stale token grants are deleted first, together with the copies the vault
/// made of them on machines already enrolled through the token (the vault
/// copies a token grant to a machine only when the machine has no grant on
/// that secret yet, so a field change must remove the old copy before the
/// new grant propagates). Then missing grants are created; the vault
/// propagates each to the machines already enrolled.
pub async fn converge<V: VaultApi>(
    vault: &V,
    project: &str,
    token_id: &str,
    desired: &BTreeMap<String, Fields>,
) -> Result<Convergence, vault::Error> {
    let existing = vault.grants_of(Grantee::Token(token_id)).await?;
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    let mut stale: Vec<&GrantRecord> = Vec::new();
    for record in &existing {
        let wanted = record.project == project
            && desired.get(&record.secret) == Some(&record_fields(record))
            && !kept.contains(record.secret.as_str());
        if wanted {
            kept.insert(record.secret.as_str());
        } else {
            stale.push(record);
        }
    }

    let mut outcome = Convergence::default();
    for record in &stale {
        match vault.delete_grant(&record.id).await {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error),
        }
        outcome.removed.push(record.secret.clone());
    }
    if !stale.is_empty() {
        remove_machine_copies(vault, token_id, &stale).await?;
    }

    for (secret, fields) in desired {
        if kept.contains(secret.as_str()) {
            continue;
        }
        let body = CreateGrant {
            machine_id: None,
            token_id: Some(token_id.to_owned()),
            project: project.to_owned(),
            secret: secret.clone(),
            fields: api_fields(fields),
        };
        match vault.create_grant(&body).await {
            Ok(_) => outcome.created.push(secret.clone()),
            Err(error) if error.is_transport() => return Err(error),
            Err(error) => {
                let reason = match not_delegated(&error) {
                    Some(message) => {
                        outcome
                            .not_delegated
                            .insert(secret.clone(), message.to_owned());
                        reason::NOT_DELEGATED.to_owned()
                    }
                    None => format!(
                        "{}: {}",
                        reason::VAULT_REJECTED,
                        error.code().unwrap_or("unknown")
                    ),
                };
                outcome.refused.push(UnresolvedSecret {
                    secret: secret.clone(),
                    reason,
                });
            }
        }
    }
    Ok(outcome)
}

/// Deletes, on every live machine enrolled through `token_id`, the grants
/// that copy one of `stale`.
async fn remove_machine_copies<V: VaultApi>(
    vault: &V,
    token_id: &str,
    stale: &[&GrantRecord],
) -> Result<(), vault::Error> {
    let machines = vault.machines().await?;
    for machine in machines
        .iter()
        .filter(|m| m.token_id.as_deref() == Some(token_id) && !m.disabled)
    {
        for record in vault.grants_of(Grantee::Machine(&machine.id)).await? {
            let copies_stale = stale.iter().any(|s| {
                s.project == record.project
                    && s.secret == record.secret
                    && record_fields(s) == record_fields(&record)
            });
            if copies_stale {
                match vault.delete_grant(&record.id).await {
                    Ok(()) => {}
                    Err(error) if is_not_found(&error) => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(fields: &[&str]) -> Fields {
        Some(fields.iter().map(|f| (*f).to_owned()).collect())
    }

    #[test]
    fn merge_prefers_whole_secret_and_unions_fields() {
        let mut desired = BTreeMap::new();
        merge(&mut desired, "db", set(&["user"]));
        merge(&mut desired, "db", set(&["password"]));
        assert_eq!(desired["db"], set(&["password", "user"]));
        merge(&mut desired, "db", None);
        assert_eq!(desired["db"], None);
        merge(&mut desired, "db", set(&["user"]));
        assert_eq!(desired["db"], None);
    }

    #[test]
    fn field_checks_name_the_problem() {
        let fields = vec!["user".to_owned()];
        assert_eq!(check_fields(Some(&fields), &[]), Ok(None));
        assert_eq!(check_fields(None, &[]), Ok(None));
        assert_eq!(
            check_fields(None, &["user".to_owned()]),
            Err(reason::NOT_STRUCTURED.to_owned())
        );
        assert_eq!(
            check_fields(Some(&fields), &["password".to_owned()]),
            Err("FieldNotFound: password".to_owned())
        );
        assert_eq!(
            check_fields(Some(&fields), &["user".to_owned()]),
            Ok(set(&["user"]))
        );
    }
}
