-- Signet vault schema, version 3: attested enrollment of pods, registered
-- clusters, delegations to agents, renewals sharing their uses.

-- The Kubernetes binding of an enrollment token (NULL outside Kubernetes).
-- `k8s_raw = 0` makes it an attested policy: no raw token exists and pods
-- enroll with a projected service-account token.
ALTER TABLE enrollment_tokens ADD COLUMN k8s_cluster TEXT;
ALTER TABLE enrollment_tokens ADD COLUMN k8s_namespace TEXT;
ALTER TABLE enrollment_tokens ADD COLUMN k8s_policy TEXT;
-- JSON array of service-account names; empty allows any.
ALTER TABLE enrollment_tokens ADD COLUMN k8s_service_accounts TEXT;
ALTER TABLE enrollment_tokens ADD COLUMN k8s_raw INTEGER;
-- A token and its renewals share one use count: all rows of a lineage carry
-- the same `uses` and `max_uses`, and a use increments them together.
ALTER TABLE enrollment_tokens ADD COLUMN lineage TEXT;
UPDATE enrollment_tokens SET lineage = id;
CREATE INDEX tokens_by_policy ON enrollment_tokens (k8s_cluster, k8s_namespace, k8s_policy);
CREATE INDEX tokens_by_lineage ON enrollment_tokens (lineage);

-- Where a machine runs. With `k8s_attested = 1` every column came from a
-- projected service-account token the cluster's TokenReview verified.
ALTER TABLE machines ADD COLUMN k8s_cluster TEXT;
ALTER TABLE machines ADD COLUMN k8s_namespace TEXT;
ALTER TABLE machines ADD COLUMN k8s_service_account TEXT;
ALTER TABLE machines ADD COLUMN k8s_pod_name TEXT;
ALTER TABLE machines ADD COLUMN k8s_pod_uid TEXT;
ALTER TABLE machines ADD COLUMN k8s_attested INTEGER;
CREATE INDEX machines_by_pod ON machines (k8s_cluster, k8s_pod_uid);

CREATE TABLE clusters (
    name                  TEXT PRIMARY KEY,
    api_url               TEXT NOT NULL,
    ca_pem                TEXT NOT NULL,
    audience              TEXT NOT NULL,
    -- A TokenReview bearer token sealed under the root key; NULL: the
    -- vault's own service-account token file.
    sealed_reviewer_token BLOB,
    created_at            INTEGER NOT NULL,
    created_by            TEXT NOT NULL
);

-- What an agent may hand out: one secret (optionally some fields) for one
-- namespace of one cluster, or (both NULL) for machines outside Kubernetes.
CREATE TABLE delegations (
    id            TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    secret_id     TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    fields        TEXT,
    k8s_cluster   TEXT,
    k8s_namespace TEXT,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    CHECK ((k8s_cluster IS NULL) = (k8s_namespace IS NULL))
);
CREATE INDEX delegations_by_agent ON delegations (agent_id, secret_id);
