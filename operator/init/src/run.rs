//! `signet-init run`: enroll, write every file, then exit or keep them fresh.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use signet_client::api::{Attestation, EnrollResponse, GrantView, SecretValue};
use signet_client::sdk::{self, Client, Options};
use signet_client::shutdown::Signals;

use crate::config::{self, Config, Credential};
use crate::contract::{FileSpec, META_NAMESPACE, META_POD_NAME, META_POD_UID, Mode, READY_MARKER};
use crate::error::{Error, chain, enrollment_hint};
use crate::retry::{ATTESTATION_UNAVAILABLE, Failed, Retry, Retryable, jitter};
use crate::{reload, render, write};

/// Per-request timeout: a vault that does not answer within this is treated
/// like an unreachable one (and retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long revocation may hold up the pod's shutdown.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Spread of the sidecar's refresh period (±10 %), so replicas started
/// together do not poll the vault in lockstep.
const REFRESH_JITTER: f64 = 0.1;

/// Runs until the files are written (`init`) or until SIGTERM/SIGINT
/// (`sidecar`).
pub async fn run(config: Config) -> Result<(), Error> {
    // Read once up front so a missing or empty file fails at once (exit 2)
    // rather than after the first vault call.
    drop(config.read_token()?);
    let options = Options {
        timeout: REQUEST_TIMEOUT,
        ca_pem: config.read_ca()?,
    };
    // Before the first await: a SIGTERM during enrollment must reach the
    // select below, not kill the process with its machine enrolled.
    let mut signals = Signals::register().map_err(Error::Runtime)?;

    let client = tokio::select! {
        enrolled = enroll(&config, &options) => enrolled?,
        signal = signals.recv() => {
            tracing::info!(%signal, "stopping before enrollment");
            return Err(Error::Interrupted);
        }
    };

    let mut files = Files::new(&config);
    let first = tokio::select! {
        written = files.write_all(&client) => written,
        signal = signals.recv() => {
            tracing::info!(%signal, "stopping before every file was written");
            Err(Error::Interrupted)
        }
    };
    let ready = first.and_then(|()| {
        write::write_atomic(&config.mount_path, READY_MARKER, b"", config.file_mode)
            .map_err(Error::from)
    });
    if let Err(error) = ready {
        // A machine that will never be used again: do not leave it behind.
        revoke(&client).await;
        return Err(error);
    }
    tracing::info!(
        files = config.files.len(),
        mount_path = %config.mount_path.display(),
        "all files written"
    );

    match config.mode {
        Mode::Init => {
            // The private key dies with this process, so the machine can
            // never sign again; revoke it now rather than at pod deletion.
            revoke(&client).await;
            Ok(())
        }
        Mode::Sidecar => {
            let mut watch = Watch::new(config.refresh);
            loop {
                tokio::select! {
                    refreshed = async {
                        match watch.next(&client).await {
                            Wake::Unchanged => Ok(()),
                            Wake::Changed(grants) => files.refresh(&client, Some(grants)).await,
                            Wake::Period => files.refresh(&client, None).await,
                        }
                    } => {
                        // After the whole pass, so the app never reloads
                        // between two files of one refresh.
                        if files.take_changed() {
                            signal_reload(&config);
                        }
                        match refreshed {
                        Ok(()) => {}
                        Err(error @ Error::IdentityRefused { .. }) => return Err(error),
                        Err(error @ Error::Write(_)) => {
                            revoke(&client).await;
                            return Err(error);
                        }
                        Err(error) => {
                            watch.failed();
                            tracing::warn!(
                                error = %chain(&error),
                                "refresh failed; keeping the current files and trying again next period"
                            );
                        }
                        }
                    },
                    signal = signals.recv() => {
                        tracing::info!(%signal, "shutting down");
                        revoke(&client).await;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// `signet.dev/reload: signal`: signals the target after files changed.
/// A failure is logged with its fix and does not stop the sidecar: the
/// files are right, and the next change tries again.
fn signal_reload(config: &Config) {
    let Some(target) = &config.reload else {
        return;
    };
    match reload::send(target) {
        Ok(pid) => tracing::info!(
            signal = target.signal.as_str(),
            container = %target.container,
            pid,
            "signalled the reload target"
        ),
        Err(error) => tracing::error!(error = %chain(&error), "cannot signal the reload target"),
    }
}

/// What woke the sidecar.
enum Wake {
    /// The change route's wait ran out with nothing new.
    Unchanged,
    /// The change route answered a new list of grants and live versions.
    Changed(Vec<GrantView>),
    /// A refresh period passed (the fallback): list the grants again.
    Period,
}

/// Waits for the next reason to refresh: the vault's change route
/// (`GET /v1/machine/changes`) when it has one, else the refresh period.
struct Watch {
    period: Duration,
    /// The token of the list the files were last refreshed from.
    since: Option<String>,
    /// False once the vault answered that it has no change route (an
    /// older vault): the period alone from then on.
    push: bool,
    /// Sleep one period before asking again (after a failure), so a
    /// failing vault is not asked in a tight loop.
    back_off: bool,
}

impl Watch {
    fn new(period: Duration) -> Self {
        Self {
            period,
            since: None,
            push: true,
            back_off: false,
        }
    }

    async fn next(&mut self, client: &Client) -> Wake {
        if self.push && !std::mem::take(&mut self.back_off) {
            // Never longer than the period, so a vault that loses the
            // notification (another replica wrote) is still caught in time.
            let wait = self.period.min(Duration::from_secs(sdk::CHANGES_WAIT_MAX));
            match client.changes(self.since.as_deref(), wait).await {
                Ok(list) if self.since.as_deref() == Some(list.token.as_str()) => {
                    return Wake::Unchanged;
                }
                Ok(list) => {
                    self.since = Some(list.token);
                    return Wake::Changed(list.grants);
                }
                Err(sdk::Error::Api { status: 404, .. }) => {
                    tracing::info!(
                        "the vault has no change route; refreshing every period instead"
                    );
                    self.push = false;
                }
                Err(error) => {
                    tracing::warn!(
                        error = %chain(&error),
                        "waiting for changes failed; refreshing after the period instead"
                    );
                    // The period's refresh lists the grants itself; the next
                    // wait starts from a fresh list.
                    self.since = None;
                }
            }
        }
        tokio::time::sleep(jitter(self.period, REFRESH_JITTER)).await;
        Wake::Period
    }

    /// A refresh failed: some file may be behind its list. Ask again from
    /// scratch, after a period.
    fn failed(&mut self) {
        self.since = None;
        self.back_off = true;
    }
}

/// One enrollment attempt's failure: the credential file could not be read
/// (never retried: the kubelet writes it before the container starts), or
/// the vault call failed.
enum Attempt {
    Read(config::Error),
    Vault(sdk::Error),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(error) => error.fmt(f),
            Self::Vault(error) => error.fmt(f),
        }
    }
}

impl Retryable for Attempt {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Read(_) => false,
            Self::Vault(error) => error.is_retryable(),
        }
    }
}

/// Enrolls a fresh in-memory key pair, retrying while the vault (or the
/// cluster's TokenReview API behind it) is unreachable.
///
/// With attestation the projected service-account token is read again at
/// every attempt: the kubelet rotates the file, and a retry must not send a
/// token that expired while the vault was away. The token lives in
/// `Zeroizing` memory and is never logged (the SDK's `Attestation` leaves it
/// out of `Debug`).
async fn enroll(config: &Config, options: &Options) -> Result<Client, Error> {
    // Self-reported, for people reading the machine list; the vault takes an
    // attested pod's identity from its verified token instead.
    let mut metadata = BTreeMap::new();
    metadata.insert(META_POD_NAME.to_owned(), config.pod_name.clone());
    if let Some(namespace) = &config.pod_namespace {
        metadata.insert(META_NAMESPACE.to_owned(), namespace.clone());
    }
    if let Some(uid) = &config.pod_uid {
        metadata.insert(META_POD_UID.to_owned(), uid.clone());
    }
    let enrolled: Result<(Client, EnrollResponse), Failed<Attempt>> = match &config.credential {
        Credential::RawToken { .. } => {
            // A Secret's content does not change under a running pod.
            let token = config.read_token()?;
            config
                .retry
                .run("enroll", || async {
                    Client::enroll(
                        &config.vault,
                        &token,
                        &config.pod_name,
                        metadata.clone(),
                        options,
                    )
                    .await
                    .map_err(Attempt::Vault)
                })
                .await
        }
        Credential::Attestation {
            cluster, policy, ..
        } => {
            config
                .retry
                .run("enroll", || async {
                    let token = config.read_token().map_err(Attempt::Read)?;
                    let attestation = Attestation {
                        cluster: cluster.clone(),
                        policy: policy.clone(),
                        service_account_token: token.as_str().to_owned(),
                    };
                    Client::enroll_attested(
                        &config.vault,
                        attestation,
                        &config.pod_name,
                        metadata.clone(),
                        options,
                    )
                    .await
                    .map_err(Attempt::Vault)
                })
                .await
        }
    };
    match enrolled {
        Ok((client, answer)) => {
            tracing::info!(
                machine_id = %answer.machine_id,
                expires_at = %answer.expires_at,
                vault = %config.vault,
                attested = matches!(config.credential, Credential::Attestation { .. }),
                "enrolled"
            );
            Ok(client)
        }
        Err(Failed {
            error: Attempt::Read(error),
            ..
        }) => Err(Error::Config(error)),
        Err(Failed {
            error: Attempt::Vault(error),
            attempts,
        }) => Err(classify(
            &config.vault,
            Call::Enroll,
            Failed { error, attempts },
        )),
    }
}

/// Which vault call failed, to name the failure.
enum Call<'a> {
    Enroll,
    Grants,
    Read { project: &'a str, secret: &'a str },
}

fn classify(url: &str, call: Call<'_>, Failed { error, attempts }: Failed) -> Error {
    let url = url.to_owned();
    if crate::retry::is_retryable(&error) {
        if error.code() == Some(ATTESTATION_UNAVAILABLE) {
            return Error::AttestationUnavailable {
                url,
                attempts,
                source: Box::new(error),
            };
        }
        return Error::Unreachable {
            url,
            attempts,
            source: Box::new(error),
        };
    }
    let unauthenticated = matches!(error, sdk::Error::Api { status: 401, .. });
    let hint = enrollment_hint(error.code());
    let error = Box::new(error);
    match call {
        Call::Enroll => Error::EnrollmentRefused {
            url,
            hint,
            source: error,
        },
        // Listing grants is the machine's own business: any refusal means
        // the vault no longer takes this identity.
        Call::Grants => Error::IdentityRefused { url, source: error },
        Call::Read { .. } if unauthenticated => Error::IdentityRefused { url, source: error },
        Call::Read { project, secret } => Error::SecretRefused {
            url,
            project: project.to_owned(),
            secret: secret.to_owned(),
            source: error,
        },
    }
}

/// Revokes this machine, bounded by [`REVOKE_TIMEOUT`]. A failure is only
/// logged: the operator revokes the machine when the pod is deleted, and
/// the machine's lifetime is the backstop.
async fn revoke(client: &Client) {
    match tokio::time::timeout(REVOKE_TIMEOUT, client.revoke_self()).await {
        Ok(Ok(())) => tracing::info!("machine revoked"),
        Ok(Err(error)) => tracing::warn!(
            error = %chain(&error),
            "could not revoke this machine; the operator revokes it when the pod is gone"
        ),
        Err(_) => tracing::warn!(
            timeout_s = REVOKE_TIMEOUT.as_secs(),
            "revoking this machine timed out; the operator revokes it when the pod is gone"
        ),
    }
}

/// One entry of `SIGNET_FILES` and what was last written for it.
struct Target {
    spec: FileSpec,
    project: Option<String>,
    version: Option<u32>,
    written: BTreeSet<String>,
}

/// The files of `SIGNET_FILES` and the state needed to refresh them.
struct Files<'a> {
    config: &'a Config,
    targets: Vec<Target>,
    /// A refresh rewrote (or removed) a file since the last
    /// [`Files::take_changed`].
    changed: bool,
}

impl<'a> Files<'a> {
    fn new(config: &'a Config) -> Self {
        let targets = config
            .files
            .iter()
            .map(|spec| Target {
                spec: spec.clone(),
                project: None,
                version: None,
                written: BTreeSet::new(),
            })
            .collect();
        Self {
            config,
            targets,
            changed: false,
        }
    }

    /// Whether a refresh changed any file since the last call.
    fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The first write: every file, or an error.
    async fn write_all(&mut self, client: &Client) -> Result<(), Error> {
        let retry = self.config.retry;
        let url = &self.config.vault;
        let grants = retry
            .run("list grants", || client.grants())
            .await
            .map_err(|failed| classify(url, Call::Grants, failed))?
            .grants;
        let mut cache = BTreeMap::new();
        for target in &mut self.targets {
            let project = project_of(&grants, &target.spec.secret)?;
            let value = fetch(
                &mut cache,
                client,
                &retry,
                url,
                &project,
                &target.spec.secret,
            )
            .await?;
            write_target(self.config, target, value)?;
            target.project = Some(project);
        }
        Ok(())
    }

    /// One refresh: rewrites the files whose secret has a new live version,
    /// after `grants` (as the change route answered them) or, without
    /// them, after listing the grants. Every target is tried; the first
    /// error is returned.
    async fn refresh(
        &mut self,
        client: &Client,
        grants: Option<Vec<GrantView>>,
    ) -> Result<(), Error> {
        let once = Retry {
            max_attempts: 1,
            ..self.config.retry
        };
        let url = &self.config.vault;
        let grants = match grants {
            Some(grants) => grants,
            None => {
                client
                    .grants()
                    .await
                    .map_err(|error| classify(url, Call::Grants, Failed { error, attempts: 1 }))?
                    .grants
            }
        };
        let mut cache = BTreeMap::new();
        let mut first_error = None;
        for target in &mut self.targets {
            let secret = target.spec.secret.clone();
            let Some(project) = target.project.clone() else {
                continue;
            };
            let live = grants
                .iter()
                .find(|g| g.project == project && g.secret == secret);
            let Some(live) = live else {
                tracing::warn!(
                    secret = %format!("{project}/{secret}"),
                    file = %target.spec.file,
                    "the grant on this secret is gone; keeping the last file written"
                );
                continue;
            };
            if live.version.is_some() && live.version == target.version {
                continue;
            }
            let outcome = match fetch(&mut cache, client, &once, url, &project, &secret).await {
                Ok(value) if Some(value.version) == target.version => Ok(()),
                Ok(value) => {
                    // Set before writing: a target that failed halfway may
                    // already have replaced some of its files.
                    self.changed = true;
                    write_target(self.config, target, value)
                }
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                if matches!(error, Error::IdentityRefused { .. } | Error::Write(_)) {
                    return Err(error);
                }
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The project of the machine's grant on `secret` (a `FileSpec` names only
/// the secret; the token's grants say which project it lives in).
fn project_of(grants: &[GrantView], secret: &str) -> Result<String, Error> {
    let projects: BTreeSet<&str> = grants
        .iter()
        .filter(|g| g.secret == secret)
        .map(|g| g.project.as_str())
        .collect();
    let mut iter = projects.iter();
    match (iter.next(), iter.next()) {
        (Some(project), None) => Ok((*project).to_owned()),
        (None, _) => Err(Error::NoGrant {
            secret: secret.to_owned(),
        }),
        (Some(_), Some(_)) => Err(Error::AmbiguousGrant {
            secret: secret.to_owned(),
            projects: projects.into_iter().collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Reads a secret once per pass even when several files use it.
async fn fetch<'c>(
    cache: &'c mut BTreeMap<(String, String), SecretValue>,
    client: &Client,
    retry: &Retry,
    url: &str,
    project: &str,
    secret: &str,
) -> Result<&'c SecretValue, Error> {
    let key = (project.to_owned(), secret.to_owned());
    if !cache.contains_key(&key) {
        let value = retry
            .run("read secret", || client.read_secret(project, secret, None))
            .await
            .map_err(|failed| classify(url, Call::Read { project, secret }, failed))?;
        cache.insert(key.clone(), value);
    }
    cache.get(&key).ok_or_else(|| Error::NoGrant {
        secret: secret.to_owned(),
    })
}

/// Renders and writes one target's files, removing files of fields that
/// are no longer there.
fn write_target(config: &Config, target: &mut Target, value: &SecretValue) -> Result<(), Error> {
    let outputs = render::render(&target.spec, value).map_err(|source| Error::Render {
        secret: format!("{}/{}", value.project, value.secret),
        source,
    })?;
    let mut written = BTreeSet::new();
    for output in &outputs {
        write::write_atomic(
            &config.mount_path,
            &output.name,
            &output.contents,
            config.file_mode,
        )?;
        written.insert(output.name.clone());
    }
    for stale in target.written.difference(&written) {
        write::remove(&config.mount_path, stale)?;
    }
    tracing::info!(
        secret = %format!("{}/{}", value.project, value.secret),
        version = value.version,
        files = ?written,
        "wrote"
    );
    target.written = written;
    target.version = Some(value.version);
    Ok(())
}
