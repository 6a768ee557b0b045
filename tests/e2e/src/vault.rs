//! The vault under test as the tests see it: the admin's `signet` CLI, its
//! machine and audit lists, and an attested enrollment made the way
//! `signet-init` makes it (through the SDK), for tokens no pod presents.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, ensure};
use serde_json::Value;
use signet_client::{
    api::Attestation,
    sdk::{Client, Options},
};

use crate::{APP_NS, CLUSTER, run};

/// The `signet` CLI as the admin.
pub struct Cli {
    binary: PathBuf,
    vault: String,
    /// The vault's CA, when it serves HTTPS with a certificate of the test's.
    ca_file: Option<PathBuf>,
    identity: PathBuf,
}

impl Cli {
    /// `binary` talking to `vault` as the admin whose identity file is
    /// `identity`.
    pub fn new(binary: &Path, vault: &str, identity: &Path) -> Self {
        Self {
            binary: binary.to_owned(),
            vault: vault.to_owned(),
            ca_file: None,
            identity: identity.to_owned(),
        }
    }

    /// The same, trusting the vault's certificate through `ca_file`.
    pub fn with_ca(self, ca_file: &Path) -> Self {
        Self {
            ca_file: Some(ca_file.to_owned()),
            ..self
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("SIGNET_VAULT", &self.vault)
            .env("SIGNET_IDENTITY", &self.identity);
        if let Some(ca_file) = &self.ca_file {
            command.env("SIGNET_CA_CERT", ca_file);
        }
        command
    }

    /// `signet ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.command().args(args))
    }

    /// `signet --json ARGS`, parsed.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let stdout = run(self.command().arg("--json").args(args))?;
        serde_json::from_str(&stdout).with_context(|| format!("signet {args:?}: {stdout}"))
    }

    /// Live (not disabled) machines attested as running in pod `uid`.
    pub fn live_machines_of_pod(&self, uid: &str) -> anyhow::Result<Vec<Value>> {
        let list = self.json(&["machine", "list"])?;
        Ok(list["machines"]
            .as_array()
            .context("machine list has no machines")?
            .iter()
            .filter(|m| {
                m["kubernetes"]["pod_uid"] == uid
                    && m["kubernetes"]["attested"] == true
                    && m["disabled"] != true
            })
            .cloned()
            .collect())
    }

    /// The audit entries that `keep` keeps.
    fn audit(&self, keep: impl Fn(&Value) -> bool) -> anyhow::Result<Vec<Value>> {
        let list = self.json(&["audit", "list", "--limit", "5000"])?;
        Ok(list["entries"]
            .as_array()
            .context("audit list has no entries")?
            .iter()
            .filter(|e| keep(e))
            .cloned()
            .collect())
    }

    /// Allowed audit entries of `action`.
    pub fn audited(&self, action: &str) -> anyhow::Result<Vec<Value>> {
        self.audit(|e| e["action"] == action && e["outcome"] != "deny")
    }

    /// Pod `uid`'s one live machine once it is another than `old`: the pod
    /// enrolled again (a restarted sidecar) and `old` is no longer live.
    /// `None` until then, for [`crate::eventually`].
    pub fn machine_replacing(&self, uid: &str, old: &str) -> anyhow::Result<Option<String>> {
        Ok(match self.live_machines_of_pod(uid)?.as_slice() {
            [one] if one["id"] != old => one["id"].as_str().map(str::to_owned),
            _ => None,
        })
    }

    /// An error unless the vault audited the enrollment of machine `new`
    /// as replacing machine `old` (it revoked `old` in that enrollment).
    pub fn ensure_replacement_audited(&self, old: &str, new: &str) -> anyhow::Result<()> {
        let replaces = format!("replaces machine:{old}");
        let enrollments = self.audited("enroll")?;
        ensure!(
            enrollments.iter().any(|e| e["actor"] == new
                && e["target"].as_str().is_some_and(|t| t.contains(&replaces))),
            "no enrollment of machine {new} audited as replacing {old}: {enrollments:?}"
        );
        Ok(())
    }

    /// What both end-to-end tests put in a fresh vault: the cluster
    /// [`CLUSTER`] (its API server at `api_url`, with the CA in
    /// `ca_file`, and no reviewer token: the vault reviews with its own),
    /// project `shop` with secrets `api-key` (`key-v1`) and `db` (fields
    /// `user` and `password`), and the operator's agent (scopes metadata,
    /// tokens, grants and machines; its identity written to `agent_file`),
    /// to which the admin delegates `api-key` and the two fields of `db`
    /// for pods of namespace [`APP_NS`], and nothing else. The agent's id.
    pub fn seed(&self, api_url: &str, ca_file: &str, agent_file: &Path) -> anyhow::Result<String> {
        self.ok(&[
            "cluster",
            "add",
            CLUSTER,
            "--api-url",
            api_url,
            "--ca-file",
            ca_file,
        ])?;
        self.ok(&["project", "create", "shop"])?;
        self.ok(&["secret", "set", "shop/api-key", "--value", "key-v1"])?;
        self.ok(&[
            "secret",
            "set",
            "shop/db",
            "--field",
            "user=shop",
            "--field",
            "password=it's-a-secret",
        ])?;
        let agent_file = agent_file.to_string_lossy();
        self.ok(&["keygen", "--out", &agent_file])?;
        self.ok(&[
            "agent",
            "create",
            "--name",
            "signet-operator",
            "--key-file",
            &agent_file,
            "--scope",
            "metadata",
            "--scope",
            "tokens",
            "--scope",
            "grants",
            "--scope",
            "machines",
        ])?;
        let agent: Value = serde_json::from_str(&std::fs::read_to_string(&*agent_file)?)?;
        let agent_id = agent["id"]
            .as_str()
            .context("the agent file has no id")?
            .to_owned();
        for secret in [
            vec!["--secret", "api-key"],
            vec!["--secret", "db", "--field", "user", "--field", "password"],
        ] {
            let mut args = vec![
                "delegation",
                "add",
                "--agent",
                &agent_id,
                "--project",
                "shop",
                "--cluster",
                CLUSTER,
                "--namespace",
                APP_NS,
            ];
            args.extend(secret);
            self.ok(&args)?;
        }
        Ok(agent_id)
    }

    /// Denied audit entries whose reason is `code: ...` (the vault's error
    /// code, then its message).
    pub fn denials(&self, code: &str) -> anyhow::Result<Vec<Value>> {
        let prefix = format!("{code}:");
        self.audit(|e| {
            e["outcome"] == "deny" && e["reason"].as_str().is_some_and(|r| r.starts_with(&prefix))
        })
    }

    /// Enrolls a fresh key with `token` as an attestation for policy
    /// `policy` of the vault's cluster `cluster`, the way `signet-init`
    /// does: the machine's id, or the vault's error code when it refuses.
    /// An error when the vault does not answer.
    pub fn enroll_attested(
        &self,
        cluster: &str,
        policy: &str,
        token: String,
    ) -> anyhow::Result<Result<String, String>> {
        let options = Options {
            ca_pem: match &self.ca_file {
                Some(file) => Some(std::fs::read(file)?),
                None => None,
            },
            ..Options::default()
        };
        let attestation = Attestation {
            cluster: cluster.into(),
            policy: policy.into(),
            service_account_token: token,
        };
        let enrolled = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(Client::enroll_attested(
                &self.vault,
                attestation,
                "probe",
                Default::default(),
                &options,
            ));
        match enrolled {
            Ok((_, answer)) => Ok(Ok(answer.machine_id)),
            Err(error) => match error.code() {
                Some(code) => Ok(Err(code.to_owned())),
                None => Err(anyhow::Error::new(error).context("enrolling with an attestation")),
            },
        }
    }
}
