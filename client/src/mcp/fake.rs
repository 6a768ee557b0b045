//! A vault in memory for the MCP unit tests: canned answers with every
//! optional field filled, and a sentinel wherever the API types have room
//! for something the tools must not pass on (machine metadata).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use super::vault::AgentVault;
use crate::api::*;
use crate::sdk::{Error, Result};

/// Must never appear in anything the server writes.
pub const SENTINEL: &str = "sentinel-that-must-not-leave-the-vault";

/// The namespace the fake agent holds a delegation for.
pub const DELEGATED: &str = "payments";

pub struct Fake;

fn policy() -> AccessPolicy {
    AccessPolicy {
        timezone: Some("Europe/Paris".into()),
        window: Some(TimeWindow {
            days: vec!["mon".into()],
            start: "08:00".into(),
            end: "18:00".into(),
        }),
        ip_allowlist: vec!["10.0.0.0/8".into()],
        daily_read_cap: Some(5),
        cosign: true,
        canary: true,
        canary_cascade: true,
    }
}

fn meta(project: &str, secret: &str) -> SecretMeta {
    SecretMeta {
        project: project.into(),
        name: secret.into(),
        live_version: 2,
        versions: vec![VersionMeta {
            version: 2,
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: "ad_1".into(),
        }],
        fields: Some(vec!["user".into(), "password".into()]),
        policy: Some(policy()),
    }
}

fn token_view(body: &CreateToken) -> TokenView {
    TokenView {
        id: "et_01".into(),
        name: body.name.clone(),
        project: body.project.clone(),
        max_uses: body.max_uses,
        uses: 0,
        expires_at: "2026-01-01T01:00:00Z".into(),
        machine_lifetime_seconds: body.machine_lifetime_seconds,
        revoked: false,
        constraints: TokenConstraints {
            hostname_regex: Some(SENTINEL.into()),
            ..TokenConstraints::default()
        },
        kubernetes: body.kubernetes.clone(),
    }
}

fn refused(code: &str, message: &str) -> Error {
    Error::Api {
        status: 403,
        code: code.into(),
        message: message.into(),
    }
}

impl AgentVault for Fake {
    async fn projects(&self) -> Result<Vec<ProjectView>> {
        Ok(vec![ProjectView {
            id: "p_1".into(),
            name: "demo".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            locked: Some("canary read".into()),
        }])
    }

    async fn secrets(&self, project: &str) -> Result<Vec<SecretMeta>> {
        Ok(vec![meta(project, "db")])
    }

    async fn machines(&self) -> Result<Vec<MachineView>> {
        Ok(vec![MachineView {
            id: "m_1".into(),
            name: "api-1".into(),
            project: "demo".into(),
            token_id: Some("et_01".into()),
            hostname: "api-1".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: "2026-01-02T00:00:00Z".into(),
            disabled: false,
            metadata: BTreeMap::from([("note".into(), SENTINEL.into())]),
            kubernetes: Some(MachineKubernetes {
                cluster: "prod".into(),
                namespace: DELEGATED.into(),
                service_account: Some("api".into()),
                pod_name: Some("api-1".into()),
                pod_uid: Some("uid".into()),
                attested: true,
            }),
        }])
    }

    async fn tokens(&self) -> Result<Vec<TokenView>> {
        Ok(vec![token_view(&CreateToken {
            project: "demo".into(),
            name: "api".into(),
            max_uses: Some(3),
            ttl_seconds: 60,
            machine_lifetime_seconds: 60,
            grants: Vec::new(),
            constraints: TokenConstraints::default(),
            kubernetes: Some(KubernetesBinding {
                cluster: "prod".into(),
                namespace: DELEGATED.into(),
                policy: "api".into(),
                service_accounts: vec!["api".into()],
                raw_token: false,
            }),
        })])
    }

    async fn delegations(&self) -> Result<Vec<DelegationView>> {
        Ok(vec![DelegationView {
            id: "dg_1".into(),
            agent_id: "ag_1".into(),
            project: "demo".into(),
            secret: "db".into(),
            fields: Some(vec!["user".into()]),
            kubernetes: Some(NamespaceRef {
                cluster: "prod".into(),
                namespace: DELEGATED.into(),
            }),
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: "ad_1".into(),
        }])
    }

    async fn grants(
        &self,
        machine_id: Option<&str>,
        token_id: Option<&str>,
    ) -> Result<Vec<GrantRecord>> {
        Ok(vec![GrantRecord {
            id: "g_1".into(),
            machine_id: machine_id.map(str::to_owned),
            token_id: token_id.map(str::to_owned).or(Some("et_01".into())),
            project: "demo".into(),
            secret: "db".into(),
            fields: Some(vec!["user".into()]),
        }])
    }

    async fn create_token(&self, body: &CreateToken) -> Result<TokenView> {
        match &body.kubernetes {
            Some(k) if k.namespace == DELEGATED && !k.raw_token => Ok(token_view(body)),
            _ => Err(refused(
                "not_delegated",
                "this agent holds no delegation for that namespace",
            )),
        }
    }

    async fn create_grant(&self, body: &CreateGrant) -> Result<GrantRecord> {
        Ok(GrantRecord {
            id: "g_2".into(),
            machine_id: body.machine_id.clone(),
            token_id: body.token_id.clone(),
            project: body.project.clone(),
            secret: body.secret.clone(),
            fields: body.fields.clone(),
        })
    }

    async fn delete_grant(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    async fn set_policy(
        &self,
        project: &str,
        secret: &str,
        _policy: &AccessPolicy,
    ) -> Result<SecretMeta> {
        Ok(meta(project, secret))
    }

    async fn audit(&self, after: u64, limit: u32) -> Result<AuditPage> {
        let entries = (after + 1..=after + u64::from(limit).min(3))
            .map(|seq| AuditEntry {
                seq,
                at: 1_700_000_000,
                actor: "agent:ag_1".into(),
                action: "token.create".into(),
                target: "demo".into(),
                outcome: "deny".into(),
                reason: "not_delegated: no delegation for namespace prod/other".into(),
                source_ip: "127.0.0.1".into(),
                prev_hash: "0".repeat(64),
                hash: "1".repeat(64),
            })
            .collect();
        Ok(AuditPage {
            entries,
            anchor: None,
        })
    }

    async fn verify_audit(&self) -> Result<AuditVerification> {
        Ok(AuditVerification {
            entries: 3,
            keyed_from: 1,
            head: AuditAnchor {
                seq: 3,
                hash: "1".repeat(64),
            },
            broken: Some(AuditBreak {
                seq: 2,
                kind: AuditBreakKind::BrokenLink,
                message: "link".into(),
            }),
        })
    }
}
