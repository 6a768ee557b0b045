//! The Signet target: setup as the admin through the SDK (optionally with
//! extra secrets and machines, [`populate`]), then signed
//! `GET /v1/secrets/{project}/{secret}` as enrolled machines, or
//! enrollments ([`SignedEnroll`]).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use rand::rngs::StdRng;
use rand::{RngCore as _, SeedableRng as _};

use signet_client::api::{CreateToken, TokenConstraints, TokenGrant, WriteSecret};
use signet_client::identity::Identity;
use signet_client::protocol::{self, IdentityKey};
use signet_client::sdk::{Client, Options};

use crate::cli::{AdminArgs, SignetArgs};
use crate::enroll::SignedEnroll;
use crate::load::{Endpoint, MakeRequest, Req};
use crate::populate;

/// An enrolled machine: the id the vault issued and its private key.
pub struct Machine {
    id: HeaderValue,
    key: IdentityKey,
}

impl Machine {
    /// The id the vault issued (the `Signet-Key` of its requests).
    pub fn id(&self) -> &HeaderValue {
        &self.id
    }
}

/// The admin's side of a run: its client and the project made for the run.
pub struct Admin {
    pub vault: String,
    pub endpoint: Endpoint,
    pub client: Arc<Client>,
    pub options: Options,
    pub project: String,
}

impl Admin {
    /// Connects as the admin and creates the project.
    pub async fn create_project(args: &AdminArgs) -> anyhow::Result<Self> {
        let AdminArgs {
            vault,
            identity,
            project,
        } = args;
        let endpoint = Endpoint::resolve(vault).await?;
        let options = Options::default();
        let client = Client::new(vault, Identity::load(identity)?, &options)?;
        let project = project.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("bench-{now}-{:04x}", rand::random::<u16>())
        });
        client.create_project(&project).await.with_context(|| {
            format!("cannot create project {project} (is the identity an admin?)")
        })?;
        Ok(Self {
            vault: vault.clone(),
            endpoint,
            client: Arc::new(client),
            options,
            project,
        })
    }

    /// A raw enrollment token of the project granting `secrets`, for
    /// `max_uses` machines (`None`: unlimited for its hour).
    pub async fn token(
        &self,
        name: &str,
        secrets: &[String],
        max_uses: Option<u32>,
    ) -> anyhow::Result<String> {
        self.client
            .create_token(&CreateToken {
                project: self.project.clone(),
                name: name.to_owned(),
                max_uses,
                ttl_seconds: 3600,
                machine_lifetime_seconds: 24 * 3600,
                grants: secrets
                    .iter()
                    .map(|secret| TokenGrant {
                        secret: secret.clone(),
                        fields: None,
                    })
                    .collect(),
                constraints: TokenConstraints::default(),
                kubernetes: None,
            })
            .await
            .with_context(|| format!("cannot create the enrollment token {name}"))?
            .token
            .with_context(|| format!("the vault issued no raw enrollment token for {name}"))
    }
}

/// What the measured requests go to.
pub enum Work {
    /// Signed reads of `target` by these machines.
    Reads {
        target: String,
        machines: Vec<Arc<Machine>>,
    },
    /// Enrollments with this raw token.
    Enrollments { token: String },
}

/// Everything the clients need.
pub struct Setup {
    /// `--vault`'s endpoint, the admin's.
    pub endpoint: Endpoint,
    /// Where the measured clients go, in turn: `--vault`'s endpoint, then
    /// the replicas'.
    pub endpoints: Vec<Endpoint>,
    pub work: Work,
    /// Extra data actually added before measuring.
    pub extra_secrets: u32,
    pub extra_machines: u32,
    /// How long the whole setup took.
    pub setup_time: std::time::Duration,
}

/// Creates a project and a secret, adds the extra secrets and machines, then
/// either an enrollment token for the enrollment load (`--enroll`) or
/// `machines` reader machines enrolled with fresh keys, each checked to read
/// the secret.
pub async fn setup(args: &SignetArgs, machines: u32) -> anyhow::Result<Setup> {
    let SignetArgs {
        admin,
        secret,
        extra_secrets,
        extra_projects,
        extra_machines,
        setup_concurrency,
        enroll,
        replicas,
    } = args;
    let started = std::time::Instant::now();
    let admin = Admin::create_project(admin).await?;
    let mut endpoints = vec![admin.endpoint.clone()];
    for replica in replicas {
        let endpoint = Endpoint::resolve(replica).await?;
        // The signed target carries the path prefix: one for all.
        if endpoint.path_prefix != admin.endpoint.path_prefix {
            bail!(
                "replica {replica}: its path prefix {:?} is not --vault's {:?}",
                endpoint.path_prefix,
                admin.endpoint.path_prefix
            );
        }
        endpoints.push(endpoint);
    }
    let project = admin.project.clone();
    let value = format!(
        "bench-value-{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
    );
    admin
        .client
        .write_secret(
            &project,
            secret,
            &WriteSecret {
                value: Some(value.clone()),
                fields: None,
            },
        )
        .await
        .with_context(|| format!("cannot write secret {project}/{secret}"))?;
    let concurrency = *setup_concurrency as usize;
    populate::secrets(&admin, *extra_secrets, *extra_projects, concurrency).await?;
    populate::machines(&admin, secret, *extra_machines, concurrency).await?;
    let secrets = std::slice::from_ref(secret);
    let work = if *enroll {
        Work::Enrollments {
            token: admin.token("signet-bench-enroll", secrets, None).await?,
        }
    } else {
        let token = admin.token("signet-bench", secrets, Some(machines)).await?;
        Work::Reads {
            target: format!(
                "{}/v1/secrets/{project}/{secret}",
                admin.endpoint.path_prefix
            ),
            machines: readers(&admin, &token, secret, &value, machines).await?,
        }
    };
    Ok(Setup {
        endpoint: admin.endpoint.clone(),
        endpoints,
        work,
        extra_secrets: *extra_secrets,
        extra_machines: *extra_machines,
        setup_time: started.elapsed(),
    })
}

/// Enrolls `machines` machines through the SDK and checks each reads `value`.
async fn readers(
    admin: &Admin,
    token: &str,
    secret: &str,
    value: &str,
    machines: u32,
) -> anyhow::Result<Vec<Arc<Machine>>> {
    let mut enrolling = tokio::task::JoinSet::new();
    for index in 0..machines {
        let (vault, token, project, secret, value, options) = (
            admin.vault.clone(),
            token.to_owned(),
            admin.project.clone(),
            secret.to_owned(),
            value.to_owned(),
            admin.options.clone(),
        );
        enrolling.spawn(async move {
            let hostname = format!("signet-bench-{index}");
            let (client, _) = Client::enroll(&vault, &token, &hostname, BTreeMap::new(), &options)
                .await
                .with_context(|| format!("cannot enroll machine {index}"))?;
            let read = client
                .read_secret(&project, &secret, None)
                .await
                .with_context(|| format!("machine {index} cannot read {project}/{secret}"))?;
            if read.value.as_deref() != Some(value.as_str()) {
                bail!("machine {index} read another value than the one written");
            }
            let identity = client.into_identity();
            let id = identity.id.context("enrolled machine has no id")?;
            Ok(Arc::new(Machine {
                id: HeaderValue::from_str(&id)?,
                key: identity.key,
            }))
        });
    }
    let mut enrolled = Vec::with_capacity(machines as usize);
    while let Some(joined) = enrolling.join_next().await {
        enrolled.push(joined.context("an enrollment task failed")??);
    }
    Ok(enrolled)
}

/// The enrollment load's clients, one [`SignedEnroll`] each, client i
/// addressed to the (i mod N)th of `setup.endpoints`.
pub fn enrollers(setup: &Setup, token: &str, clients: u32) -> anyhow::Result<Vec<SignedEnroll>> {
    (0..clients)
        .map(|client| {
            let endpoint = spread(&setup.endpoints, client as usize);
            SignedEnroll::new(
                token,
                endpoint.host.clone(),
                &endpoint.path_prefix,
                format!("signet-bench-enroll-{client}"),
            )
        })
        .collect()
}

/// The readers' clients, client i reading as machine i mod M from the
/// (i mod N)th of `setup.endpoints`.
pub fn reads(
    setup: &Setup,
    target: &str,
    machines: &[Arc<Machine>],
    clients: u32,
) -> anyhow::Result<Vec<SignedRead>> {
    if machines.is_empty() {
        bail!("no machine to read as");
    }
    (0..clients as usize)
        .map(|i| {
            SignedRead::new(
                Arc::clone(&machines[i % machines.len()]),
                spread(&setup.endpoints, i).host.clone(),
                target,
            )
        })
        .collect()
}

/// The endpoint client `i` uses: the same round-robin as [`crate::load::run_spread`].
fn spread(endpoints: &[Endpoint], i: usize) -> &Endpoint {
    &endpoints[i % endpoints.len()]
}

/// One client's signed read. The canonical message's first four lines
/// (version, method, target, hash of the empty body) are built once; each
/// request appends timestamp, nonce and key id to the same buffer and signs it.
pub struct SignedRead {
    machine: Arc<Machine>,
    uri: Uri,
    host: HeaderValue,
    message: Vec<u8>,
    prefix_len: usize,
    rng: StdRng,
}

impl SignedRead {
    pub fn new(machine: Arc<Machine>, host: HeaderValue, target: &str) -> anyhow::Result<Self> {
        let uri: Uri = target.parse()?;
        let mut message = Vec::with_capacity(256);
        for line in [
            protocol::VERSION_TAG,
            Method::GET.as_str(),
            target,
            &protocol::body_hash(b""),
        ] {
            message.extend_from_slice(line.as_bytes());
            message.push(b'\n');
        }
        Ok(Self {
            machine,
            uri,
            host,
            prefix_len: message.len(),
            message,
            rng: StdRng::from_entropy(),
        })
    }

    /// Leaves in `self.message` the canonical message of `docs/protocol.md`
    /// for this read.
    fn write_canonical(&mut self, timestamp: u64, nonce: &[u8]) {
        self.message.truncate(self.prefix_len);
        // Writing to a Vec cannot fail.
        let _ = writeln!(self.message, "{timestamp}");
        self.message.extend_from_slice(nonce);
        self.message.push(b'\n');
        self.message.extend_from_slice(self.machine.id.as_bytes());
    }
}

/// 16 random bytes in base64url without padding.
const NONCE_TEXT_LEN: usize = 22;

impl MakeRequest for SignedRead {
    fn request(&mut self) -> anyhow::Result<Req> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut raw = [0u8; 16];
        self.rng.fill_bytes(&mut raw);
        let mut nonce = [0u8; NONCE_TEXT_LEN];
        // 16 bytes always encode to 22 characters.
        let _ = URL_SAFE_NO_PAD.encode_slice(raw, &mut nonce);
        self.write_canonical(timestamp, &nonce);
        let signature = self.machine.key.sign(&self.message);

        let mut request = Request::new(Full::default());
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.reserve(5);
        headers.insert(HOST, self.host.clone());
        headers.insert(protocol::HEADER_KEY, self.machine.id.clone());
        headers.insert(protocol::HEADER_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(
            protocol::HEADER_NONCE,
            HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&nonce))?,
        );
        headers.insert(
            protocol::HEADER_SIGNATURE,
            HeaderValue::try_from(signature)?,
        );
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str = include_str!("../../docs/protocol-vectors.json");

    fn machine_of_the_vectors() -> (Value, Arc<Machine>) {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let seed: [u8; 32] = (0..32u8).collect::<Vec<_>>().try_into().unwrap();
        assert_eq!(
            v["seed_hex"],
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        );
        let vector = v["vectors"][0].clone();
        let machine = Arc::new(Machine {
            id: HeaderValue::from_str(vector["key_id"].as_str().unwrap()).unwrap(),
            key: IdentityKey::from_seed(&seed),
        });
        (vector, machine)
    }

    #[test]
    fn the_prebuilt_message_is_the_protocols_and_signs_the_vector() {
        let (vector, machine) = machine_of_the_vectors();
        assert_eq!(vector["method"], "GET");
        let target = vector["target"].as_str().unwrap();
        let nonce = vector["nonce"].as_str().unwrap();
        let timestamp: u64 = vector["timestamp"].as_str().unwrap().parse().unwrap();
        let mut read = SignedRead::new(
            Arc::clone(&machine),
            HeaderValue::from_static("127.0.0.1:8200"),
            target,
        )
        .unwrap();
        // Twice: the buffer is reused between requests.
        for _ in 0..2 {
            read.write_canonical(timestamp, nonce.as_bytes());
            let message = read.message.clone();
            assert_eq!(message, vector["canonical"].as_str().unwrap().as_bytes());
            assert_eq!(
                message,
                protocol::canonical_message(
                    "GET",
                    target,
                    b"",
                    &timestamp.to_string(),
                    nonce,
                    vector["key_id"].as_str().unwrap(),
                )
                .as_bytes()
            );
            assert_eq!(machine.key.sign(&message), vector["signature"]);
        }
    }

    #[test]
    fn each_request_verifies_with_a_fresh_nonce() {
        let (vector, machine) = machine_of_the_vectors();
        let target = vector["target"].as_str().unwrap();
        let public = protocol::PublicKey::parse(&machine.key.public_key()).unwrap();
        let mut read = SignedRead::new(
            Arc::clone(&machine),
            HeaderValue::from_static("127.0.0.1:8200"),
            target,
        )
        .unwrap();
        let mut nonces = Vec::new();
        for _ in 0..3 {
            let request = read.request().unwrap();
            assert_eq!(request.method(), Method::GET);
            assert_eq!(request.uri(), target);
            let h = request.headers();
            assert_eq!(h[HOST], "127.0.0.1:8200");
            let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap());
            let parsed = protocol::ParsedHeaders::parse(
                text(protocol::HEADER_KEY),
                text(protocol::HEADER_TIMESTAMP),
                text(protocol::HEADER_NONCE),
                text(protocol::HEADER_SIGNATURE),
            )
            .unwrap();
            parsed.verify(&public, "GET", target, b"").unwrap();
            nonces.push(parsed.nonce);
        }
        nonces.dedup();
        assert_eq!(nonces.len(), 3);
    }
}
