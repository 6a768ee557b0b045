//! Projects and secrets: envelope encryption on write, grant-checked
//! decryption on read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use signet_client::api::{
    ErrorCode, ProjectList, ProjectView, Rollback, SecretList, SecretMeta, SecretValue,
    VersionMeta, WriteSecret,
};
use zeroize::Zeroizing;

use super::{check_field_name, check_name};
use crate::clock::rfc3339;
use crate::crypto::RootKey;
use crate::crypto::{self, Key};
use crate::error::{Error, Result, invalid, not_found};
use crate::ids;
use crate::page::{NameKey, Page};
use crate::request::{Ahead, Ctx};
use crate::store::{Grant, Lookup, Project, Read, Secret, SecretVersion, Tx};

/// What a version's ciphertext holds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stored {
    Plain(String),
    Fields(BTreeMap<String, String>),
}

pub fn create_project(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, name: &str) -> Result<ProjectView> {
    check_name("project", name)?;
    ctx.audit.target = format!("project:{name}");
    let project = Project {
        id: ids::new(ids::PROJECT),
        name: name.to_owned(),
        wrapped_key: Vec::new(),
        created_at: ctx.now,
        locked_at: None,
        lock_reason: None,
    };
    let key = Key::generate();
    let project = Project {
        wrapped_key: ctx
            .root
            .key()
            .wrap(&key, &crypto::project_key_aad(&project.id))?,
        ..project
    };
    tx.insert_project(&project)?;
    Ok(project_view(&project))
}

/// One page of projects, by name.
pub fn list_projects(r: &mut dyn Read, page: &Page<NameKey>) -> Result<ProjectList> {
    let (rows, next_cursor) = page.finish(r.projects_page(page)?, |p| p.name.clone());
    Ok(ProjectList {
        projects: rows.iter().map(project_view).collect(),
        next_cursor,
    })
}

pub fn project_view(p: &Project) -> ProjectView {
    ProjectView {
        id: p.id.clone(),
        name: p.name.clone(),
        created_at: rfc3339(p.created_at),
        locked: p
            .locked_at
            .map(|_| p.lock_reason.clone().unwrap_or_else(|| "locked".to_owned())),
    }
}

/// The project named `name`, or `404`.
pub fn project(tx: &mut dyn Tx, name: &str) -> Result<Project> {
    tx.project_by_name(name)?
        .ok_or_else(|| not_found(format!("project {name:?}")))
}

/// The secret `project/name`, or `404`.
pub fn secret(tx: &mut dyn Tx, project: &Project, name: &str) -> Result<Secret> {
    tx.secret_by_name(&project.id, name)?
        .ok_or_else(|| not_found(format!("secret {}/{name}", project.name)))
}

fn project_key(root: &RootKey, project: &Project) -> Result<Key> {
    Ok(root
        .key()
        .unwrap_key(&project.wrapped_key, &crypto::project_key_aad(&project.id))?)
}

/// Writes a new version (creating the secret at version 1) and makes it live.
pub fn write(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    project_name: &str,
    name: &str,
) -> Result<SecretMeta> {
    ctx.audit.target = format!("secret:{project_name}/{name}");
    check_name("secret", name)?;
    let body: WriteSecret = ctx.json()?;
    let stored = match (body.value, body.fields) {
        (Some(value), None) => Stored::Plain(value),
        (None, Some(fields)) if !fields.is_empty() => {
            for field in fields.keys() {
                check_field_name(field)?;
            }
            Stored::Fields(fields)
        }
        _ => {
            return Err(invalid(
                "give exactly one of `value` (a plain secret) or a non-empty `fields` object",
            ));
        }
    };
    let project = project(tx, project_name)?;
    let secret = match tx.secret_by_name(&project.id, name)? {
        Some(secret) => secret,
        None => {
            let secret = Secret {
                id: ids::new(ids::SECRET),
                project_id: project.id.clone(),
                name: name.to_owned(),
                live_version: 0,
                created_at: ctx.now,
                policy: None,
            };
            tx.insert_secret(&secret)?;
            secret
        }
    };
    let version = add_live_version(
        tx,
        ctx.root,
        (&project, &secret),
        stored,
        (ctx.now, &ctx.caller.id()),
    )?;
    ctx.audit.target = format!("secret:{project_name}/{name}@{version}");
    meta(
        tx,
        &project,
        &Secret {
            live_version: version,
            ..secret
        },
    )
}

/// Seals `stored` as the next version of `secret` under a fresh data key
/// and makes it live; returns its number.
fn add_live_version(
    tx: &mut dyn Tx,
    root: &RootKey,
    (project, secret): (&Project, &Secret),
    stored: Stored,
    (now, by): (i64, &str),
) -> Result<u32> {
    let version = tx.versions(&secret.id)?.last().map_or(1, |v| v.version + 1);
    let field_names = match &stored {
        Stored::Plain(_) => None,
        Stored::Fields(fields) => Some(fields.keys().cloned().collect()),
    };
    let plaintext = Zeroizing::new(
        serde_json::to_vec(&stored).map_err(|_| invalid("value cannot be encoded"))?,
    );
    zeroize_stored(stored);
    let data_key = Key::generate();
    let ciphertext = data_key.seal(
        &plaintext,
        &crypto::value_aad(&project.id, &secret.id, version),
    )?;
    let wrapped_data_key = project_key(root, project)?.wrap(
        &data_key,
        &crypto::data_key_aad(&project.id, &secret.id, version),
    )?;
    tx.insert_version(&SecretVersion {
        secret_id: secret.id.clone(),
        version,
        wrapped_data_key,
        ciphertext,
        field_names,
        created_at: now,
        created_by: by.to_owned(),
    })?;
    tx.set_live_version(&secret.id, version)?;
    Ok(version)
}

fn zeroize_stored(stored: Stored) {
    use zeroize::Zeroize as _;
    match stored {
        Stored::Plain(mut value) => value.zeroize(),
        Stored::Fields(mut fields) => fields.values_mut().for_each(|v| v.zeroize()),
    }
}

/// A structured secret's fields, their values zeroized on drop.
pub(crate) struct Fields(pub BTreeMap<String, String>);

impl Drop for Fields {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.0.values_mut().for_each(|v| v.zeroize());
    }
}

/// The fields of version `version` of a structured secret (rotation's
/// credentials); `None` for a plain value or a missing version.
pub(crate) fn version_fields(
    tx: &mut dyn Tx,
    root: &RootKey,
    project: &Project,
    secret_id: &str,
    version: u32,
) -> Result<Option<Fields>> {
    let Some(version) = tx.version(secret_id, version)? else {
        return Ok(None);
    };
    Ok(match decrypt(root, project, &version)? {
        Stored::Fields(fields) => Some(Fields(fields)),
        plain @ Stored::Plain(_) => {
            zeroize_stored(plain);
            None
        }
    })
}

/// Makes `fields` the next, live version of `secret` (a confirmed
/// rotation); returns its number.
pub(crate) fn promote_fields(
    tx: &mut dyn Tx,
    root: &RootKey,
    (project, secret): (&Project, &Secret),
    mut fields: Fields,
    (now, by): (i64, &str),
) -> Result<u32> {
    let fields = std::mem::take(&mut fields.0);
    add_live_version(
        tx,
        root,
        (project, secret),
        Stored::Fields(fields),
        (now, by),
    )
}

/// Names, versions and field names; never values.
pub fn meta(tx: &mut dyn Tx, project: &Project, secret: &Secret) -> Result<SecretMeta> {
    Ok(meta_of(project, secret, &tx.versions(&secret.id)?))
}

/// The metadata of `secret` from its `versions`, oldest first.
fn meta_of(project: &Project, secret: &Secret, versions: &[SecretVersion]) -> SecretMeta {
    let fields = versions
        .iter()
        .find(|v| v.version == secret.live_version)
        .and_then(|v| v.field_names.clone());
    SecretMeta {
        project: project.name.clone(),
        name: secret.name.clone(),
        live_version: secret.live_version,
        fields,
        policy: secret.policy.clone(),
        versions: versions
            .iter()
            .map(|v| VersionMeta {
                version: v.version,
                created_at: rfc3339(v.created_at),
                created_by: v.created_by.clone(),
            })
            .collect(),
    }
}

/// One page of `project`'s secrets by name, their versions read in one
/// query for the whole page.
pub fn list(r: &mut dyn Read, project: &Project, page: &Page<NameKey>) -> Result<SecretList> {
    let (rows, next_cursor) = page.finish(r.secrets_page(&project.id, page)?, |s| s.name.clone());
    let ids: Vec<&str> = rows.iter().map(|s| s.id.as_str()).collect();
    let mut versions: BTreeMap<&str, Vec<SecretVersion>> = BTreeMap::new();
    let all = r.versions_of(&ids)?;
    for version in all {
        if let Some(id) = ids.iter().find(|id| **id == version.secret_id) {
            versions.entry(id).or_default().push(version);
        }
    }
    let secrets = rows
        .iter()
        .map(|s| {
            meta_of(
                project,
                s,
                versions.get(s.id.as_str()).map_or(&[], Vec::as_slice),
            )
        })
        .collect();
    Ok(SecretList {
        secrets,
        next_cursor,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    pub version: Option<u32>,
    pub field: Option<String>,
}

fn not_granted(project: &str, secret: &str) -> Error {
    Error::denied(
        ErrorCode::NotGranted,
        format!("this machine has no grant on {project}/{secret}"),
    )
}

/// A machine reads a secret it is granted, holding only its granted fields.
pub fn read(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    project_name: &str,
    name: &str,
) -> Result<SecretValue> {
    let query: ReadQuery = ctx.query()?;
    let machine = ctx.caller.machine()?.clone();
    // A missing project or secret answers exactly like an ungranted one, so
    // a machine cannot probe what exists.
    let project = tx
        .project_by_name(project_name)?
        .ok_or_else(|| not_granted(project_name, name))?;
    let secret = tx
        .secret_by_name(&project.id, name)?
        .ok_or_else(|| not_granted(project_name, name))?;
    let grant = tx
        .machine_grant(&machine.id, &secret.id)?
        .ok_or_else(|| not_granted(project_name, name))?;
    super::access::enforce_read(ctx, tx, &project, &secret, &machine)?;
    let version_number = query.version.unwrap_or(secret.live_version);
    ctx.audit.target = format!("secret:{project_name}/{name}@{version_number}");
    let version = tx
        .version(&secret.id, version_number)?
        .ok_or_else(|| not_found(format!("version {version_number} of {project_name}/{name}")))?;
    answer(
        ctx.root,
        &project,
        &version,
        &grant,
        &query,
        (project_name, name),
        &mut ctx.audit.target,
    )
}

/// A machine's read of `project_name/name` decided on a snapshot, before
/// the writer, for the pipeline to commit with only its nonce and audit row
/// ([`crate::vault::Vault::handle_read`]): the answer, decrypted here, when
/// the read is allowed and depends on nothing the writer must count (no
/// lock, no policy). `None` sends the read through [`read`] in the writer's
/// transaction, which decides it, refusals included.
pub fn read_ahead(
    r: &mut dyn Lookup,
    root: &RootKey,
    machine_id: &str,
    (project_name, name): (&str, &str),
    request_target: &str,
) -> Result<Option<Ahead<SecretValue>>> {
    let query = request_target.split_once('?').map_or("", |(_, q)| q);
    let Ok(query) = serde_urlencoded::from_str::<ReadQuery>(query) else {
        return Ok(None);
    };
    let Some(view) = r.read_view(machine_id, project_name, name, query.version)? else {
        return Ok(None);
    };
    if view.project.locked_at.is_some() || view.secret.policy.is_some() {
        return Ok(None);
    }
    let mut target = format!("secret:{project_name}/{name}@{}", view.version.version);
    let Ok(value) = answer(
        root,
        &view.project,
        &view.version,
        &view.grant,
        &query,
        (project_name, name),
        &mut target,
    ) else {
        return Ok(None);
    };
    Ok(Some(Ahead {
        machine: view.machine.clone(),
        value,
        audit_target: target,
    }))
}

/// The value of `version` that `grant` and `query` allow; a refusal names
/// a field in `target` when it is about one.
fn answer(
    root: &RootKey,
    project: &Project,
    version: &SecretVersion,
    grant: &Grant,
    query: &ReadQuery,
    (project_name, name): (&str, &str),
    target: &mut String,
) -> Result<SecretValue> {
    let version_number = version.version;
    let stored = decrypt(root, project, version)?;
    let mut answer = SecretValue {
        project: project_name.to_owned(),
        secret: name.to_owned(),
        version: version_number,
        value: None,
        fields: None,
    };
    match stored {
        Stored::Plain(value) => {
            // A grant narrowed to fields never yields a whole value, whatever
            // version is asked for (a history may mix plain and structured).
            if grant.fields.is_some() {
                return Err(Error::denied(
                    ErrorCode::FieldNotGranted,
                    format!(
                        "this machine is granted only some fields of {project_name}/{name}, and version {version_number} is a plain value"
                    ),
                ));
            }
            if query.field.is_some() {
                return Err(invalid(format!(
                    "{project_name}/{name} is a plain secret with no fields"
                )));
            }
            answer.value = Some(value);
        }
        Stored::Fields(mut fields) => {
            let allowed = |field: &str| {
                grant
                    .fields
                    .as_ref()
                    .is_none_or(|g| g.iter().any(|f| f == field))
            };
            if let Some(field) = &query.field {
                if !allowed(field) {
                    target.push_str(&format!("#{field}"));
                    return Err(Error::denied(
                        ErrorCode::FieldNotGranted,
                        format!(
                            "this machine has no grant on field {field:?} of {project_name}/{name}"
                        ),
                    ));
                }
                fields.retain(|k, _| k == field);
                if fields.is_empty() {
                    return Err(not_found(format!(
                        "field {field:?} of {project_name}/{name}@{version_number}"
                    )));
                }
            } else {
                fields.retain(|k, _| allowed(k));
            }
            answer.fields = Some(fields);
        }
    }
    Ok(answer)
}

fn decrypt(root: &RootKey, project: &Project, version: &SecretVersion) -> Result<Stored> {
    let data_key = project_key(root, project)?.unwrap_key(
        &version.wrapped_data_key,
        &crypto::data_key_aad(&project.id, &version.secret_id, version.version),
    )?;
    let plaintext = data_key.open(
        &version.ciphertext,
        &crypto::value_aad(&project.id, &version.secret_id, version.version),
    )?;
    serde_json::from_slice(&plaintext)
        .map_err(|_| crate::store::Error::Corrupt("secret plaintext".into()).into())
}

pub fn delete(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, project_name: &str, name: &str) -> Result<()> {
    ctx.audit.target = format!("secret:{project_name}/{name}");
    let project = project(tx, project_name)?;
    let secret = secret(tx, &project, name)?;
    tx.delete_secret(&secret.id)?;
    Ok(())
}

/// `POST /v1/projects/{p}/secrets/{s}/rollback`: an older version becomes
/// live again (its own data key still opens it).
pub fn rollback(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    project_name: &str,
    name: &str,
) -> Result<SecretMeta> {
    ctx.audit.target = format!("secret:{project_name}/{name}");
    let body: Rollback = ctx.json()?;
    let project = project(tx, project_name)?;
    let secret = secret(tx, &project, name)?;
    if tx.version(&secret.id, body.version)?.is_none() {
        return Err(not_found(format!(
            "version {} of {project_name}/{name}",
            body.version
        )));
    }
    tx.set_live_version(&secret.id, body.version)?;
    ctx.audit.target = format!(
        "secret:{project_name}/{name} live version {} -> {}",
        secret.live_version, body.version
    );
    meta(
        tx,
        &project,
        &Secret {
            live_version: body.version,
            ..secret
        },
    )
}
