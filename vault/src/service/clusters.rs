//! Registered clusters: where the vault sends a pod's projected
//! service-account token for review (admins only).

use signet_client::api::{ClusterList, ClusterView, RegisterCluster};

use super::{attest, check_name};
use crate::clock::rfc3339;
use crate::error::{Result, invalid, not_found};
use crate::page::{NameKey, Page};
use crate::request::Ctx;
use crate::store::{Cluster, Read, Tx};

/// The audience projected tokens carry unless a cluster says otherwise.
pub const DEFAULT_AUDIENCE: &str = "signet";
const PEM_MAX: usize = 64 * 1024;
const URL_MAX: usize = 2048;
const TOKEN_MAX: usize = 16 * 1024;

fn view(c: &Cluster) -> ClusterView {
    ClusterView {
        name: c.name.clone(),
        api_url: c.api_url.clone(),
        audience: c.audience.clone(),
        reviewer: if c.sealed_reviewer_token.is_some() {
            "token".into()
        } else {
            "service-account".into()
        },
        created_at: rfc3339(c.created_at),
    }
}

/// `POST /v1/clusters`
pub fn register(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<ClusterView> {
    let body: RegisterCluster = ctx.json()?;
    check_name("cluster", &body.name)?;
    ctx.audit.target = format!("cluster:{}", body.name);
    if body.api_url.len() > URL_MAX
        || !reqwest::Url::parse(&body.api_url)
            .is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
    {
        return Err(invalid(
            "api_url must be an https:// URL of the kube-apiserver",
        ));
    }
    if body.ca_pem.len() > PEM_MAX
        || reqwest::Certificate::from_pem(body.ca_pem.as_bytes()).is_err()
        || !body.ca_pem.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(invalid(
            "ca_pem must be a PEM CA certificate (at most 64 KiB)",
        ));
    }
    if body.ca_pem.contains("PRIVATE KEY") {
        return Err(invalid(
            "ca_pem holds a private key: give the CA certificate only",
        ));
    }
    let audience = body
        .audience
        .clone()
        .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
    if audience.is_empty() || audience.len() > 256 || audience.chars().any(char::is_control) {
        return Err(invalid("audience must be 1 to 256 printable characters"));
    }
    let sealed_reviewer_token = match &body.reviewer_token {
        Some(token) if token.is_empty() || token.len() > TOKEN_MAX => {
            return Err(invalid("reviewer_token must be 1 to 16384 bytes"));
        }
        Some(token) => Some(
            ctx.root
                .key()
                .seal(token.trim().as_bytes(), &attest::reviewer_aad(&body.name))?,
        ),
        None => None,
    };
    let cluster = Cluster {
        name: body.name.clone(),
        api_url: body.api_url.trim_end_matches('/').to_owned(),
        ca_pem: body.ca_pem.clone(),
        audience,
        sealed_reviewer_token,
        created_at: ctx.now,
        created_by: ctx.caller.id(),
    };
    tx.insert_cluster(&cluster)?;
    Ok(view(&cluster))
}

/// `GET /v1/clusters`: one page, by name.
pub fn list(r: &mut dyn Read, page: &Page<NameKey>) -> Result<ClusterList> {
    let (rows, next_cursor) = page.finish(r.clusters_page(page)?, |c| c.name.clone());
    Ok(ClusterList {
        clusters: rows.iter().map(view).collect(),
        next_cursor,
    })
}

/// `DELETE /v1/clusters/{name}`: pods of it can no longer enroll; machines
/// already enrolled keep their lifetime (revoke them to end it).
pub fn remove(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, name: &str) -> Result<()> {
    ctx.audit.target = format!("cluster:{name}");
    if !tx.delete_cluster(name)? {
        return Err(not_found(format!("cluster {name:?}")));
    }
    Ok(())
}
