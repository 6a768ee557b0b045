//! What the webhook needs to know about EnrollmentTokens and SecretGrants.
//!
//! [`GrantLookup`] is a synchronous read of a snapshot, so the mutation stays
//! a plain function: [`InMemoryGrants`] backs the tests, [`KubeGrants`] (two
//! kube-runtime reflector stores) backs the real server. [`resolve`] merges
//! the grants of one token into the [`Injection`] a pod receives.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt as _;
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use crate::{
    crd::{EnrollmentToken, EnrollmentTokenSpec, SecretGrant, SecretGrantSpec},
    webhook::contract::FileSpec,
};

/// Why a pod's token and grants could not be turned into an injection. The
/// messages are shown to whoever created the pod.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caches have not completed their first list yet.
    #[error(
        "the signet operator is still loading EnrollmentTokens and SecretGrants; retry shortly"
    )]
    NotSynced,
    /// The pod names a token that does not exist (or is being deleted).
    #[error("EnrollmentToken {namespace}/{name} does not exist")]
    TokenNotFound {
        /// Namespace of the pod.
        namespace: String,
        /// Token named by the pod.
        name: String,
    },
    /// No SecretGrant references the token, so the pod would get no secrets.
    #[error("no SecretGrant in namespace {namespace} references EnrollmentToken {name}")]
    NoGrants {
        /// Namespace of the pod.
        namespace: String,
        /// Token named by the pod.
        name: String,
    },
    /// Two grants of the same token ask for different mount paths.
    #[error(
        "SecretGrants {first} and {second} of EnrollmentToken {token} disagree on mountPath ({first_path} vs {second_path})"
    )]
    MountPathConflict {
        /// Token the grants reference.
        token: String,
        /// First grant.
        first: String,
        /// Its mount path.
        first_path: String,
        /// Second grant.
        second: String,
        /// Its mount path.
        second_path: String,
    },
    /// Two grants of the same token write the same file.
    #[error("SecretGrants {first} and {second} both write the file {file}")]
    DuplicateFile {
        /// The file name.
        file: String,
        /// First grant.
        first: String,
        /// Second grant.
        second: String,
    },
    /// A grant's refresh period does not parse (the schema should have
    /// prevented it).
    #[error("SecretGrant {grant} has an invalid refresh: {source}")]
    InvalidRefresh {
        /// The grant.
        grant: String,
        /// The parse failure.
        #[source]
        source: crate::duration::Error,
    },
}

/// A SecretGrant and its name.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedGrant {
    /// `metadata.name` of the grant.
    pub name: String,
    /// Its spec.
    pub spec: SecretGrantSpec,
}

/// Read access to the EnrollmentTokens and SecretGrants of the cluster.
pub trait GrantLookup: Send + Sync {
    /// Whether lookups reflect the cluster yet; `/readyz` reports it.
    fn is_ready(&self) -> bool {
        true
    }

    /// The spec of EnrollmentToken `namespace/name`, if it exists and is not
    /// being deleted.
    fn token(&self, namespace: &str, name: &str) -> Result<Option<EnrollmentTokenSpec>, Error>;

    /// The SecretGrants in `namespace` whose `enrollmentToken` is `token`.
    fn grants(&self, namespace: &str, token: &str) -> Result<Vec<NamedGrant>, Error>;
}

/// Everything the webhook injects for one EnrollmentToken.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// The token's spec: the webhook checks the pod's service account, and
    /// `rawToken` chooses the credential `signet-init` gets.
    pub token: EnrollmentTokenSpec,
    /// Mount path shared by all the token's grants.
    pub mount_path: String,
    /// Shortest refresh period among the grants.
    pub refresh: Duration,
    /// Files to write, grants in name order, secrets in spec order.
    pub files: Vec<FileSpec>,
}

/// Merges the grants of EnrollmentToken `namespace/name` into an
/// [`Injection`], or explains why the pod cannot be admitted.
pub fn resolve(lookup: &dyn GrantLookup, namespace: &str, name: &str) -> Result<Injection, Error> {
    let token = lookup
        .token(namespace, name)?
        .ok_or_else(|| Error::TokenNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    let mut grants = lookup.grants(namespace, name)?;
    // Sorted so the same cluster state always yields the same patch.
    grants.sort_by(|a, b| a.name.cmp(&b.name));
    let Some(first) = grants.first() else {
        return Err(Error::NoGrants {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    };

    let mut refresh: Option<Duration> = None;
    let mut files = Vec::new();
    let mut writers: BTreeMap<String, &str> = BTreeMap::new();
    for grant in &grants {
        if grant.spec.mount_path != first.spec.mount_path {
            return Err(Error::MountPathConflict {
                token: name.to_owned(),
                first: first.name.clone(),
                first_path: first.spec.mount_path.clone(),
                second: grant.name.clone(),
                second_path: grant.spec.mount_path.clone(),
            });
        }
        let period = crate::duration::parse(&grant.spec.refresh).map_err(|source| {
            Error::InvalidRefresh {
                grant: grant.name.clone(),
                source,
            }
        })?;
        refresh = Some(refresh.map_or(period, |r| r.min(period)));
        for secret in &grant.spec.secrets {
            let file = secret.file_name().to_owned();
            if let Some(other) = writers.insert(file.clone(), &grant.name) {
                return Err(Error::DuplicateFile {
                    file,
                    first: other.to_owned(),
                    second: grant.name.clone(),
                });
            }
            files.push(FileSpec {
                secret: secret.secret.clone(),
                fields: secret.fields.clone(),
                file,
                format: secret.format,
            });
        }
    }
    Ok(Injection {
        token,
        mount_path: first.spec.mount_path.clone(),
        // At least one grant exists, so `refresh` is set; the fallback is
        // only there to avoid a panic path.
        refresh: refresh.unwrap_or(Duration::from_secs(300)),
        files,
    })
}

/// A fixed set of tokens and grants, for tests and tools.
#[derive(Debug, Default, Clone)]
pub struct InMemoryGrants {
    tokens: HashMap<(String, String), EnrollmentTokenSpec>,
    grants: Vec<(String, NamedGrant)>,
}

impl InMemoryGrants {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds EnrollmentToken `namespace/name`.
    #[must_use]
    pub fn with_token(mut self, namespace: &str, name: &str, spec: EnrollmentTokenSpec) -> Self {
        self.tokens
            .insert((namespace.to_owned(), name.to_owned()), spec);
        self
    }

    /// Adds SecretGrant `namespace/name`.
    #[must_use]
    pub fn with_grant(mut self, namespace: &str, name: &str, spec: SecretGrantSpec) -> Self {
        self.grants.push((
            namespace.to_owned(),
            NamedGrant {
                name: name.to_owned(),
                spec,
            },
        ));
        self
    }
}

impl GrantLookup for InMemoryGrants {
    fn token(&self, namespace: &str, name: &str) -> Result<Option<EnrollmentTokenSpec>, Error> {
        Ok(self
            .tokens
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned())
    }

    fn grants(&self, namespace: &str, token: &str) -> Result<Vec<NamedGrant>, Error> {
        Ok(self
            .grants
            .iter()
            .filter(|(ns, g)| ns == namespace && g.spec.enrollment_token == token)
            .map(|(_, g)| g.clone())
            .collect())
    }
}

/// Lookups served from reflector caches of the cluster's EnrollmentTokens and
/// SecretGrants (all namespaces).
#[derive(Clone)]
pub struct KubeGrants {
    tokens: Store<EnrollmentToken>,
    grants: Store<SecretGrant>,
    ready: Arc<AtomicBool>,
}

impl KubeGrants {
    /// Starts caching. The returned future drives the watches and must be
    /// polled for as long as the lookup is used; lookups fail with
    /// [`Error::NotSynced`] until both caches have been listed once.
    pub fn watch(client: Client) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tokens, token_writer) = reflector::store::<EnrollmentToken>();
        let (grants, grant_writer) = reflector::store::<SecretGrant>();
        let ready = Arc::new(AtomicBool::new(false));
        let lookup = Self {
            tokens: tokens.clone(),
            grants: grants.clone(),
            ready: ready.clone(),
        };

        let token_events = reflector::reflector(
            token_writer,
            watcher(
                Api::<EnrollmentToken>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        )
        .map(|event| event.map(|_| ()));
        let grant_events = reflector::reflector(
            grant_writer,
            watcher(Api::<SecretGrant>::all(client), watcher::Config::default()).default_backoff(),
        )
        .map(|event| event.map(|_| ()));
        let watches = futures::stream::select(token_events, grant_events).for_each(|event| async {
            if let Err(error) = event {
                // The watcher retries with backoff; the caches keep their
                // last state meanwhile.
                tracing::warn!(%error, "watch of signet.dev resources failed");
            }
        });
        let mark_ready = async move {
            if tokens.wait_until_ready().await.is_ok() && grants.wait_until_ready().await.is_ok() {
                ready.store(true, Ordering::Release);
                tracing::info!("EnrollmentToken and SecretGrant caches synced");
            }
        };
        let driver = async move {
            futures::future::join(watches, mark_ready).await;
        };
        (lookup, driver)
    }

    fn check_ready(&self) -> Result<(), Error> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(Error::NotSynced)
        }
    }
}

impl GrantLookup for KubeGrants {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn token(&self, namespace: &str, name: &str) -> Result<Option<EnrollmentTokenSpec>, Error> {
        self.check_ready()?;
        let key = ObjectRef::new(name).within(namespace);
        Ok(self
            .tokens
            .get(&key)
            .filter(|token| token.metadata.deletion_timestamp.is_none())
            .map(|token| token.spec.clone()))
    }

    fn grants(&self, namespace: &str, token: &str) -> Result<Vec<NamedGrant>, Error> {
        self.check_ready()?;
        Ok(self
            .grants
            .state()
            .iter()
            .filter(|grant| {
                grant.namespace().as_deref() == Some(namespace)
                    && grant.spec.enrollment_token == token
                    && grant.metadata.deletion_timestamp.is_none()
            })
            .map(|grant| NamedGrant {
                name: grant.name_any(),
                spec: grant.spec.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crd::{FileFormat, GrantedSecret};

    fn token() -> EnrollmentTokenSpec {
        EnrollmentTokenSpec {
            project: "p".into(),
            max_uses: None,
            token_ttl: "24h".into(),
            machine_lifetime: "24h".into(),
            name_template: None,
            allowed_service_accounts: vec![],
            hostname_regex: None,
            source_cidrs: vec![],
            raw_token: false,
        }
    }

    fn grant(mount_path: &str, refresh: &str, files: &[(&str, Option<&str>)]) -> SecretGrantSpec {
        SecretGrantSpec {
            enrollment_token: "t".into(),
            mount_path: mount_path.into(),
            refresh: refresh.into(),
            secrets: files
                .iter()
                .map(|(secret, file)| GrantedSecret {
                    secret: (*secret).into(),
                    fields: vec![],
                    file: file.map(str::to_owned),
                    format: FileFormat::Raw,
                })
                .collect(),
        }
    }

    #[test]
    fn grants_merge_in_name_order_with_the_shortest_refresh() {
        let lookup = InMemoryGrants::new()
            .with_token("ns", "t", token())
            .with_grant("ns", "b", grant("/s", "10m", &[("y", None)]))
            .with_grant("ns", "a", grant("/s", "90s", &[("x", Some("x.txt"))]))
            .with_grant("other", "c", grant("/s", "1s", &[("z", None)]));
        let injection = resolve(&lookup, "ns", "t").unwrap();
        assert_eq!(injection.mount_path, "/s");
        assert_eq!(injection.refresh, Duration::from_secs(90));
        let files: Vec<&str> = injection.files.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(files, ["x.txt", "y"]);
    }

    #[test]
    fn conflicting_grants_are_reported() {
        let base = InMemoryGrants::new().with_token("ns", "t", token());
        let mounts = base
            .clone()
            .with_grant("ns", "a", grant("/one", "5m", &[("x", None)]))
            .with_grant("ns", "b", grant("/two", "5m", &[("y", None)]));
        assert!(matches!(
            resolve(&mounts, "ns", "t"),
            Err(Error::MountPathConflict { .. })
        ));

        let files = base
            .clone()
            .with_grant("ns", "a", grant("/s", "5m", &[("x", Some("f"))]))
            .with_grant("ns", "b", grant("/s", "5m", &[("y", Some("f"))]));
        let error = resolve(&files, "ns", "t").unwrap_err();
        assert_eq!(
            error.to_string(),
            "SecretGrants a and b both write the file f"
        );

        let refresh = base.with_grant("ns", "a", grant("/s", "later", &[("x", None)]));
        assert!(matches!(
            resolve(&refresh, "ns", "t"),
            Err(Error::InvalidRefresh { .. })
        ));
    }
}
