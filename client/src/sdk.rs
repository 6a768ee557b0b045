//! An async client for the vault. Every request it sends is signed as
//! docs/protocol.md says; it never holds or sends a bearer token.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::*;
use crate::identity::{Identity, Kind};
use crate::protocol::{self, ENROLL_KEY_ID, IdentityKey};

/// Why a call to the vault failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the vault at {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("vault refused the request ({status}, {code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the vault ({status}): {reason}")]
    Decode { status: u16, reason: String },
    #[error("this identity has no id yet: enroll it first")]
    Unregistered,
    #[error("invalid vault address {0:?}")]
    BadAddress(String),
}

impl Error {
    /// The vault's error code, when the vault answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when the request never got an answer (worth retrying).
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Transport { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The longest `wait` of `GET /v1/machine/changes`, in seconds.
pub const CHANGES_WAIT_MAX: u64 = 60;
/// How much longer than its `wait` a change request may take to answer.
const CHANGES_MARGIN: Duration = Duration::from_secs(10);

/// A signed connection to one vault as one identity.
pub struct Client {
    base: String,
    http: reqwest::Client,
    identity: Identity,
}

/// Options for building the HTTP side of a [`Client`].
#[derive(Clone, Debug)]
pub struct Options {
    pub timeout: Duration,
    /// Extra PEM root certificate to trust (a private CA in front of the vault).
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            ca_pem: None,
        }
    }
}

fn http_client(options: &Options) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(options.timeout)
        .user_agent(concat!("signet-client/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &options.ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| Error::Decode {
            status: 0,
            reason: format!("invalid CA certificate: {e}"),
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|source| Error::Transport {
        url: String::new(),
        source,
    })
}

fn normalize_base(base: &str) -> Result<String> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Error::BadAddress(base.to_owned()));
    }
    Ok(base.to_owned())
}

impl Client {
    /// A client for `base` (for example `http://127.0.0.1:8200`) acting as `identity`.
    pub fn new(base: &str, identity: Identity, options: &Options) -> Result<Self> {
        Ok(Self {
            base: normalize_base(base)?,
            http: http_client(options)?,
            identity,
        })
    }

    /// The identity this client signs as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Gives the identity back (to save it after enrolling).
    pub fn into_identity(self) -> Identity {
        self.identity
    }

    /// Enrolls a fresh key pair as a machine with an enrollment token.
    /// The private key never leaves this process.
    pub async fn enroll(
        base: &str,
        token: &str,
        hostname: &str,
        metadata: BTreeMap<String, String>,
        options: &Options,
    ) -> Result<(Self, EnrollResponse)> {
        let mut client = Self::new(base, Identity::generate(), options)?;
        let request = EnrollRequest {
            token: token.to_owned(),
            public_key: client.identity.key.public_key(),
            hostname: hostname.to_owned(),
            metadata,
            attestation: None,
        };
        let answer = client.finish_enroll(&request).await?;
        Ok((client, answer))
    }

    /// Enrolls a fresh key pair as the machine of a pod, proving who the pod
    /// is with its projected service-account token (`attestation`). The
    /// private key never leaves this process.
    pub async fn enroll_attested(
        base: &str,
        attestation: Attestation,
        hostname: &str,
        metadata: BTreeMap<String, String>,
        options: &Options,
    ) -> Result<(Self, EnrollResponse)> {
        let mut client = Self::new(base, Identity::generate(), options)?;
        let request = EnrollRequest {
            token: String::new(),
            public_key: client.identity.key.public_key(),
            hostname: hostname.to_owned(),
            metadata,
            attestation: Some(attestation),
        };
        let answer = client.finish_enroll(&request).await?;
        Ok((client, answer))
    }

    async fn finish_enroll(&mut self, request: &EnrollRequest) -> Result<EnrollResponse> {
        let answer: EnrollResponse = self
            .call_as(ENROLL_KEY_ID, Method::POST, "/v1/enroll", Some(request))
            .await?;
        self.identity.kind = Kind::Machine;
        self.identity.id = Some(answer.machine_id.clone());
        self.identity.vault = Some(self.base.clone());
        Ok(answer)
    }

    /// Registers this client's (unregistered) key as an admin with a one-time
    /// admin bootstrap token.
    pub async fn enroll_admin(&mut self, token: &str, name: &str) -> Result<AdminEnrollResponse> {
        let request = EnrollRequest {
            token: token.to_owned(),
            public_key: self.identity.key.public_key(),
            hostname: name.to_owned(),
            metadata: BTreeMap::new(),
            attestation: None,
        };
        let answer: AdminEnrollResponse = self
            .call_as(
                ENROLL_KEY_ID,
                Method::POST,
                "/v1/admin/enroll",
                Some(&request),
            )
            .await?;
        self.identity.kind = Kind::Admin;
        self.identity.id = Some(answer.admin_id.clone());
        self.identity.vault = Some(self.base.clone());
        Ok(answer)
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        target: &str,
        body: Option<&B>,
    ) -> Result<R> {
        let key_id = self.identity.id.clone().ok_or(Error::Unregistered)?;
        self.call_as(&key_id, method, target, body).await
    }

    async fn call_as<B: Serialize, R: DeserializeOwned>(
        &self,
        key_id: &str,
        method: Method,
        target: &str,
        body: Option<&B>,
    ) -> Result<R> {
        let (status, bytes) = self.raw(key_id, method, target, body, None).await?;
        let bytes = if bytes.is_empty() {
            b"null".to_vec()
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            status,
            reason: e.to_string(),
        })
    }

    async fn raw<B: Serialize>(
        &self,
        key_id: &str,
        method: Method,
        target: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<(u16, Vec<u8>)> {
        let body = match body {
            Some(body) => serde_json::to_vec(body).map_err(|e| Error::Decode {
                status: 0,
                reason: e.to_string(),
            })?,
            None => Vec::new(),
        };
        let url = format!("{}{}", self.base, target);
        let signed = protocol::sign_now(&self.identity.key, key_id, method.as_str(), target, &body);
        let mut request = self.http.request(method, &url);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let transport = |source| Error::Transport {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?.to_vec();
        if status.is_success() {
            return Ok((status.as_u16(), bytes));
        }
        Err(api_error(status, &bytes))
    }

    /// `GET /v1/machine/grants`
    pub async fn grants(&self) -> Result<GrantList> {
        self.call::<(), _>(Method::GET, "/v1/machine/grants", None)
            .await
    }

    /// `GET /v1/machine/changes?since=&wait=`: answers at once when the
    /// machine's grants or their live versions differ from what `since`
    /// names (or without `since`), else once they change or after `wait`
    /// (at most 60 s) with the same list and token. This one request may
    /// take `wait` plus a margin, whatever the client's own timeout.
    pub async fn changes(&self, since: Option<&str>, wait: Duration) -> Result<ChangeList> {
        let key_id = self.identity.id.clone().ok_or(Error::Unregistered)?;
        let wait = wait.as_secs().min(CHANGES_WAIT_MAX);
        // The token is hex: nothing to escape.
        let target = match since {
            Some(since) => format!("/v1/machine/changes?since={since}&wait={wait}"),
            None => format!("/v1/machine/changes?wait={wait}"),
        };
        let timeout = Duration::from_secs(wait) + CHANGES_MARGIN;
        let (status, bytes) = self
            .raw::<()>(&key_id, Method::GET, &target, None, Some(timeout))
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            status,
            reason: e.to_string(),
        })
    }

    /// `GET /v1/secrets/{project}/{secret}`
    pub async fn read_secret(
        &self,
        project: &str,
        secret: &str,
        version: Option<u32>,
    ) -> Result<SecretValue> {
        let mut target = format!("/v1/secrets/{project}/{secret}");
        if let Some(version) = version {
            target.push_str(&format!("?version={version}"));
        }
        self.call::<(), _>(Method::GET, &target, None).await
    }

    /// `DELETE /v1/machine/self`
    pub async fn revoke_self(&self) -> Result<()> {
        self.call::<(), serde_json::Value>(Method::DELETE, "/v1/machine/self", None)
            .await
            .map(drop)
    }

    pub async fn create_project(&self, name: &str) -> Result<ProjectView> {
        let body = CreateProject {
            name: name.to_owned(),
        };
        self.call(Method::POST, "/v1/projects", Some(&body)).await
    }

    /// `GET /v1/projects`, every page.
    pub async fn projects(&self) -> Result<ProjectList> {
        self.all("/v1/projects").await
    }

    pub async fn write_secret(
        &self,
        project: &str,
        secret: &str,
        body: &WriteSecret,
    ) -> Result<SecretMeta> {
        let target = format!("/v1/projects/{project}/secrets/{secret}");
        self.call(Method::PUT, &target, Some(body)).await
    }

    /// `GET /v1/projects/{project}/secrets`, every page.
    pub async fn secrets(&self, project: &str) -> Result<SecretList> {
        self.all(&format!("/v1/projects/{project}/secrets")).await
    }

    pub async fn secret_meta(&self, project: &str, secret: &str) -> Result<SecretMeta> {
        let target = format!("/v1/projects/{project}/secrets/{secret}");
        self.call::<(), _>(Method::GET, &target, None).await
    }

    pub async fn delete_secret(&self, project: &str, secret: &str) -> Result<()> {
        let target = format!("/v1/projects/{project}/secrets/{secret}");
        self.call::<(), serde_json::Value>(Method::DELETE, &target, None)
            .await
            .map(drop)
    }

    pub async fn create_grant(&self, body: &CreateGrant) -> Result<GrantRecord> {
        self.call(Method::POST, "/v1/grants", Some(body)).await
    }

    /// Grants, optionally only those of one machine or one token; every page.
    pub async fn list_grants(
        &self,
        machine_id: Option<&str>,
        token_id: Option<&str>,
    ) -> Result<GrantRecordList> {
        let target = match (machine_id, token_id) {
            (Some(m), _) => format!("/v1/grants?machine_id={m}"),
            (None, Some(t)) => format!("/v1/grants?token_id={t}"),
            (None, None) => "/v1/grants".to_owned(),
        };
        self.all(&target).await
    }

    pub async fn delete_grant(&self, id: &str) -> Result<()> {
        let target = format!("/v1/grants/{id}");
        self.call::<(), serde_json::Value>(Method::DELETE, &target, None)
            .await
            .map(drop)
    }

    pub async fn create_token(&self, body: &CreateToken) -> Result<CreatedToken> {
        self.call(Method::POST, "/v1/enrollment-tokens", Some(body))
            .await
    }

    /// `GET /v1/enrollment-tokens`, every page.
    pub async fn tokens(&self) -> Result<TokenList> {
        self.all("/v1/enrollment-tokens").await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        let target = format!("/v1/enrollment-tokens/{id}");
        self.call::<(), serde_json::Value>(Method::DELETE, &target, None)
            .await
            .map(drop)
    }

    /// `POST /v1/enrollment-tokens/{id}/renew`: a raw token's successor,
    /// sharing its remaining uses; the old one stays valid for the grace.
    pub async fn renew_token(&self, id: &str, body: &RenewToken) -> Result<CreatedToken> {
        let target = format!("/v1/enrollment-tokens/{id}/renew");
        self.call(Method::POST, &target, Some(body)).await
    }

    /// `POST /v1/clusters` (admins only).
    pub async fn register_cluster(&self, body: &RegisterCluster) -> Result<ClusterView> {
        self.call(Method::POST, "/v1/clusters", Some(body)).await
    }

    /// `GET /v1/clusters`, every page.
    pub async fn clusters(&self) -> Result<ClusterList> {
        self.all("/v1/clusters").await
    }

    /// `DELETE /v1/clusters/{name}`
    pub async fn remove_cluster(&self, name: &str) -> Result<()> {
        let target = format!("/v1/clusters/{name}");
        self.call::<(), serde_json::Value>(Method::DELETE, &target, None)
            .await
            .map(drop)
    }

    /// `POST /v1/delegations` (admins only).
    pub async fn create_delegation(&self, body: &CreateDelegation) -> Result<DelegationView> {
        self.call(Method::POST, "/v1/delegations", Some(body)).await
    }

    /// `GET /v1/delegations`: every delegation for an admin (optionally one
    /// agent's), an agent's own for an agent; every page.
    pub async fn delegations(&self, agent_id: Option<&str>) -> Result<DelegationList> {
        let target = match agent_id {
            Some(agent) => format!("/v1/delegations?agent_id={agent}"),
            None => "/v1/delegations".to_owned(),
        };
        self.all(&target).await
    }

    /// `DELETE /v1/delegations/{id}` (admins only).
    pub async fn delete_delegation(&self, id: &str) -> Result<()> {
        let target = format!("/v1/delegations/{id}");
        self.call::<(), serde_json::Value>(Method::DELETE, &target, None)
            .await
            .map(drop)
    }

    /// `GET /v1/machines`, every page.
    pub async fn machines(&self) -> Result<MachineList> {
        self.all("/v1/machines").await
    }

    pub async fn revoke_machine(&self, id: &str) -> Result<()> {
        let target = format!("/v1/machines/{id}");
        self.call::<(), serde_json::Value>(Method::DELETE, &target, None)
            .await
            .map(drop)
    }

    pub async fn create_agent(&self, body: &CreateIdentity) -> Result<IdentityView> {
        self.call(Method::POST, "/v1/agents", Some(body)).await
    }

    pub async fn create_admin(&self, body: &CreateIdentity) -> Result<IdentityView> {
        self.call(Method::POST, "/v1/admins", Some(body)).await
    }

    /// Audit entries with `seq > after`, oldest first, at most `limit`.
    pub async fn audit(&self, after: u64, limit: u32) -> Result<AuditPage> {
        let target = format!("/v1/audit?after={after}&limit={limit}");
        self.call::<(), _>(Method::GET, &target, None).await
    }

    /// `GET /v1/audit/checkpoint`: a signed checkpoint of the chain's head.
    pub async fn audit_checkpoint(&self) -> Result<AuditCheckpoint> {
        self.call::<(), _>(Method::GET, "/v1/audit/checkpoint", None)
            .await
    }

    /// `GET /v1/audit/checkpoint-key`: the key that signs checkpoints.
    pub async fn audit_checkpoint_key(&self) -> Result<CheckpointKey> {
        self.call::<(), _>(Method::GET, "/v1/audit/checkpoint-key", None)
            .await
    }

    /// `POST /v1/audit/verify`: the vault checks every entry's HMAC and link.
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        self.call::<(), _>(Method::POST, "/v1/audit/verify", None)
            .await
    }

    /// `POST /v1/machines/{id}/disable`
    pub async fn disable_machine(&self, id: &str) -> Result<MachineView> {
        let target = format!("/v1/machines/{id}/disable");
        self.call::<(), _>(Method::POST, &target, None).await
    }

    /// `POST /v1/machines/{id}/enable`
    pub async fn enable_machine(&self, id: &str) -> Result<MachineView> {
        let target = format!("/v1/machines/{id}/enable");
        self.call::<(), _>(Method::POST, &target, None).await
    }

    /// `POST /v1/machines/{id}/extend`: expires `lifetime_seconds` from now.
    pub async fn extend_machine(&self, id: &str, lifetime_seconds: u64) -> Result<MachineView> {
        let target = format!("/v1/machines/{id}/extend");
        self.call(
            Method::POST,
            &target,
            Some(&ExtendMachine { lifetime_seconds }),
        )
        .await
    }

    /// `PUT /v1/projects/{project}/secrets/{secret}/policy` (an empty policy removes it).
    pub async fn set_policy(
        &self,
        project: &str,
        secret: &str,
        policy: &AccessPolicy,
    ) -> Result<SecretMeta> {
        let target = format!("/v1/projects/{project}/secrets/{secret}/policy");
        self.call(Method::PUT, &target, Some(policy)).await
    }

    /// `POST /v1/projects/{project}/secrets/{secret}/rollback`
    pub async fn rollback_secret(
        &self,
        project: &str,
        secret: &str,
        version: u32,
    ) -> Result<SecretMeta> {
        let target = format!("/v1/projects/{project}/secrets/{secret}/rollback");
        self.call(Method::POST, &target, Some(&Rollback { version }))
            .await
    }

    /// `POST /v1/projects/{project}/unlock`
    pub async fn unlock_project(&self, project: &str) -> Result<ProjectView> {
        let target = format!("/v1/projects/{project}/unlock");
        self.call::<(), _>(Method::POST, &target, None).await
    }

    /// `POST /v1/cosign`: an admin requests a co-signed read for a machine.
    pub async fn create_cosign(&self, body: &CreateCosign) -> Result<CosignView> {
        self.call(Method::POST, "/v1/cosign", Some(body)).await
    }

    /// `POST /v1/machine/cosign`: a machine requests a co-signed read for itself.
    pub async fn request_cosign(&self, body: &CreateCosign) -> Result<CosignView> {
        self.call(Method::POST, "/v1/machine/cosign", Some(body))
            .await
    }

    /// `POST /v1/cosign/{id}/approve`
    pub async fn approve_cosign(&self, id: &str) -> Result<CosignView> {
        let target = format!("/v1/cosign/{id}/approve");
        self.call::<(), _>(Method::POST, &target, None).await
    }

    /// `GET /v1/cosign`, every page.
    pub async fn cosigns(&self) -> Result<CosignList> {
        self.all("/v1/cosign").await
    }

    /// `POST /v1/webhooks`
    pub async fn create_webhook(&self, body: &CreateWebhook) -> Result<WebhookView> {
        self.call(Method::POST, "/v1/webhooks", Some(body)).await
    }

    /// `GET /v1/webhooks`, every page.
    pub async fn webhooks(&self) -> Result<WebhookList> {
        self.all("/v1/webhooks").await
    }

    /// `POST /v1/rotations`
    pub async fn create_rotation(&self, body: &CreateRotation) -> Result<RotationView> {
        self.call(Method::POST, "/v1/rotations", Some(body)).await
    }

    /// `GET /v1/rotations`, every page.
    pub async fn rotations(&self) -> Result<RotationList> {
        self.all("/v1/rotations").await
    }

    /// `POST /v1/rotations/{id}/trigger`
    pub async fn trigger_rotation(&self, id: &str) -> Result<RotationJobView> {
        let target = format!("/v1/rotations/{id}/trigger");
        self.call::<(), _>(Method::POST, &target, None).await
    }

    /// `GET /v1/rotations/{id}/jobs`: newest first.
    pub async fn rotation_jobs(&self, id: &str) -> Result<RotationJobList> {
        let target = format!("/v1/rotations/{id}/jobs");
        self.call::<(), _>(Method::GET, &target, None).await
    }

    /// `POST /v1/machine/rotations/claim`: a job for this rotation agent,
    /// or `None` when there is nothing to do.
    pub async fn claim_rotation(&self) -> Result<Option<RotationClaim>> {
        self.call::<(), _>(Method::POST, "/v1/machine/rotations/claim", None)
            .await
    }

    /// `POST /v1/machine/rotations/{job}/report`
    pub async fn report_rotation(
        &self,
        job: &str,
        report: &RotationReport,
    ) -> Result<RotationJobView> {
        let target = format!("/v1/machine/rotations/{job}/report");
        self.call(Method::POST, &target, Some(report)).await
    }

    /// One page of the list route at `path` (which may carry its own
    /// filters): at most `limit` items after `cursor` (the `next_cursor` of
    /// the page before; `None` for the first page).
    pub async fn page<L: Paged>(
        &self,
        path: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<L> {
        let mut query = Vec::new();
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(cursor) = cursor {
            // Cursors are base64url: nothing to escape.
            query.push(format!("cursor={cursor}"));
        }
        let target = match (query.is_empty(), path.contains('?')) {
            (true, _) => path.to_owned(),
            (false, true) => format!("{path}&{}", query.join("&")),
            (false, false) => format!("{path}?{}", query.join("&")),
        };
        self.call::<(), _>(Method::GET, &target, None).await
    }

    /// Every page of the list route at `path`, following `next_cursor`,
    /// as one list whose `next_cursor` is `None`.
    pub async fn all<L: Paged>(&self, path: &str) -> Result<L> {
        let mut list: L = self.page(path, Some(LIST_LIMIT_MAX), None).await?;
        while let Some(cursor) = list.take_cursor() {
            let next: L = self.page(path, Some(LIST_LIMIT_MAX), Some(&cursor)).await?;
            if next.cursor() == Some(cursor.as_str()) {
                // A vault that hands back the cursor it was given would
                // keep this loop going for ever.
                return Err(Error::Decode {
                    status: 200,
                    reason: format!("{path} answered the same cursor twice"),
                });
            }
            list.extend(next);
        }
        Ok(list)
    }

    /// `DELETE /v1/webhooks/{id}`
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        let target = format!("/v1/webhooks/{id}");
        self.call::<(), serde_json::Value>(Method::DELETE, &target, None)
            .await
            .map(drop)
    }
}

/// A page of a list route: its items and where the next page starts.
pub trait Paged: DeserializeOwned {
    /// The `next_cursor` of this page.
    fn cursor(&self) -> Option<&str>;
    /// Takes the `next_cursor` out, leaving `None`.
    fn take_cursor(&mut self) -> Option<String>;
    /// Appends the items of `next` and takes its `next_cursor`.
    fn extend(&mut self, next: Self);
}

macro_rules! paged {
    ($($list:ty => $items:ident),* $(,)?) => {$(
        impl Paged for $list {
            fn cursor(&self) -> Option<&str> {
                self.next_cursor.as_deref()
            }
            fn take_cursor(&mut self) -> Option<String> {
                self.next_cursor.take()
            }
            fn extend(&mut self, next: Self) {
                self.$items.extend(next.$items);
                self.next_cursor = next.next_cursor;
            }
        }
    )*};
}

paged! {
    MachineList => machines,
    TokenList => tokens,
    GrantRecordList => grants,
    DelegationList => delegations,
    ClusterList => clusters,
    WebhookList => webhooks,
    RotationList => rotations,
    CosignList => requests,
    ProjectList => projects,
    SecretList => secrets,
}

fn api_error(status: StatusCode, bytes: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => Error::Api {
            status: status.as_u16(),
            code: body.error.code.as_str().to_owned(),
            message: body.error.message,
        },
        Err(_) => Error::Api {
            status: status.as_u16(),
            code: "unknown".to_owned(),
            message: String::from_utf8_lossy(bytes).chars().take(200).collect(),
        },
    }
}

/// Signs with a key that has no identity file yet (used by tests and tools
/// that hold a raw key).
pub fn identity_from_key(key: IdentityKey, kind: Kind, id: Option<String>) -> Identity {
    Identity {
        kind,
        id,
        vault: None,
        key,
    }
}
