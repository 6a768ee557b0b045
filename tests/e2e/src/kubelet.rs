//! The kubelet's part for one container of a stored pod, as far as the
//! end-to-end test needs it: the environment (literal values and
//! downward-API `fieldRef`s), the volumes (`emptyDir`, `secret`, and
//! `projected` service-account tokens, which the kubelet requests from the
//! TokenRequest API bound to the pod) as local folders, and the command and
//! startup probe with the image's binary replaced by a local one.
//!
//! Paths inside the container are rewritten to the local folders wherever
//! they appear in an env value or an argument, so the process sees the same
//! contract it would see in a pod, only rooted elsewhere.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::Value;

/// One container of a pod, ready to run locally.
#[derive(Debug)]
pub struct Container {
    /// The environment, resolved and with paths rewritten.
    pub env: BTreeMap<String, String>,
    /// `command` + `args`, with the image's binary as given in the spec.
    pub argv: Vec<String>,
    /// The exec startup probe, if any.
    pub startup_probe: Option<Vec<String>>,
    /// Mount path in the container → local folder.
    pub mounts: Vec<(String, PathBuf)>,
    image_binary: String,
    local_binary: PathBuf,
}

/// What the kubelet fetches from the API server for a pod's volumes.
pub trait Sources {
    /// A Secret of the pod's namespace as JSON (`kubectl get secret -o json`).
    fn secret(&self, name: &str) -> anyhow::Result<Value>;
    /// A service-account token for `pod` (its namespace and service
    /// account), with `audience` and `expiration_seconds`, bound to the pod
    /// by name and UID: what the kubelet asks TokenRequest for a projected
    /// `serviceAccountToken` source.
    fn pod_token(
        &self,
        pod: &Value,
        audience: &str,
        expiration_seconds: u64,
    ) -> anyhow::Result<String>;
}

impl Container {
    /// Prepares container `name` (an init or app container) of `pod` under
    /// `root`: one folder per mounted volume, filled from `sources`.
    /// `local_binary` stands in for the first word of the container's
    /// `command`.
    pub fn prepare(
        pod: &Value,
        name: &str,
        root: &Path,
        local_binary: &Path,
        sources: &impl Sources,
    ) -> anyhow::Result<Self> {
        let spec = &pod["spec"];
        let container = ["initContainers", "containers"]
            .iter()
            .filter_map(|list| spec[list].as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .with_context(|| format!("the pod has no container {name}"))?;

        let mut mounts = Vec::new();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume_name = str_at(mount, "name")?;
            let mount_path = str_at(mount, "mountPath")?;
            let volume = spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == volume_name)
                .with_context(|| format!("no volume {volume_name} for mount {mount_path}"))?;
            let local = root.join(volume_name);
            std::fs::create_dir_all(&local)?;
            if volume.get("emptyDir").is_some() {
                // Like a fresh emptyDir: writable by the container's user.
                std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o777))?;
            } else if let Some(source) = volume.get("secret") {
                project_secret(source, &local, sources)?;
            } else if let Some(projected) = volume.get("projected") {
                project_tokens(pod, projected, &local, sources)?;
            } else {
                bail!(
                    "volume {volume_name}: only emptyDir, secret and projected service-account token volumes are supported"
                );
            }
            mounts.push((mount_path.to_owned(), local));
        }

        let mut env = BTreeMap::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let var_name = str_at(var, "name")?;
            let value = if let Some(value) = var["value"].as_str() {
                value.to_owned()
            } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                field(pod, path)?
            } else if var.get("valueFrom").is_some() {
                bail!("env {var_name}: only fieldRef sources are supported");
            } else {
                String::new()
            };
            env.insert(var_name.to_owned(), rewrite(&value, &mounts));
        }

        let words = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|w| rewrite(w, &mounts))
                .collect()
        };
        let mut argv = words(&container["command"]);
        argv.extend(words(&container["args"]));
        let image_binary = argv
            .first()
            .cloned()
            .context("the container has no command (the image's entrypoint is not known here)")?;
        let startup_probe = container["startupProbe"]["exec"].get("command").map(&words);
        Ok(Self {
            env,
            argv,
            startup_probe,
            mounts,
            image_binary,
            local_binary: local_binary.to_owned(),
        })
    }

    /// The local folder of the volume mounted at `mount_path`.
    pub fn local_mount(&self, mount_path: &str) -> Option<&Path> {
        self.mounts
            .iter()
            .find(|(path, _)| path == mount_path)
            .map(|(_, local)| local.as_path())
    }

    /// The container's main process.
    pub fn command(&self) -> Command {
        self.exec(&self.argv)
    }

    /// `argv` (an exec probe, say) run like the kubelet would: the
    /// container's environment only, the image's binary swapped for the
    /// local one.
    pub fn exec(&self, argv: &[String]) -> Command {
        let program = match argv.first() {
            Some(first) if *first == self.image_binary => self.local_binary.clone(),
            Some(first) => PathBuf::from(first),
            None => self.local_binary.clone(),
        };
        let mut command = Command::new(program);
        command
            .args(argv.iter().skip(1))
            .env_clear()
            .envs(&self.env);
        command
    }
}

fn str_at<'a>(value: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    value[key]
        .as_str()
        .with_context(|| format!("{key} missing in {value}"))
}

/// The downward-API value of `path` for `pod`.
fn field(pod: &Value, path: &str) -> anyhow::Result<String> {
    let meta = &pod["metadata"];
    let value = match path {
        "metadata.name" => &meta["name"],
        "metadata.namespace" => &meta["namespace"],
        "metadata.uid" => &meta["uid"],
        "spec.serviceAccountName" => &pod["spec"]["serviceAccountName"],
        _ => {
            let keyed = |prefix: &str| {
                path.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix("']"))
                    .map(str::to_owned)
            };
            if let Some(key) = keyed("metadata.labels['") {
                &meta["labels"][key]
            } else if let Some(key) = keyed("metadata.annotations['") {
                &meta["annotations"][key]
            } else {
                bail!("fieldRef {path} is not supported here");
            }
        }
    };
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("fieldRef {path}: the stored pod has no such value"))
}

/// Writes a projected volume's service-account tokens into `dir`.
fn project_tokens(
    pod: &Value,
    projected: &Value,
    dir: &Path,
    sources: &impl Sources,
) -> anyhow::Result<()> {
    let default_mode = projected["defaultMode"].as_u64().unwrap_or(0o644);
    for source in projected["sources"].as_array().into_iter().flatten() {
        let Some(token) = source.get("serviceAccountToken") else {
            bail!("projected source {source}: only serviceAccountToken is supported");
        };
        // The API server's defaults: its own audience, one hour.
        let audience = token["audience"].as_str().unwrap_or("");
        let expiration = token["expirationSeconds"].as_u64().unwrap_or(3600);
        let jwt = sources.pod_token(pod, audience, expiration)?;
        let file = dir.join(str_at(token, "path")?);
        std::fs::write(&file, jwt)?;
        let mode = u32::try_from(default_mode).context("file mode out of range")?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Writes a secret volume's files into `dir`, with the volume's modes.
fn project_secret(source: &Value, dir: &Path, sources: &impl Sources) -> anyhow::Result<()> {
    let name = str_at(source, "secretName")?;
    let object = sources.secret(name)?;
    let data = object["data"]
        .as_object()
        .with_context(|| format!("Secret {name} has no data"))?;
    let default_mode = source["defaultMode"].as_u64().unwrap_or(0o644);
    let items: Vec<(String, String, u64)> = match source["items"].as_array() {
        Some(items) => items
            .iter()
            .map(|item| {
                Ok((
                    str_at(item, "key")?.to_owned(),
                    str_at(item, "path")?.to_owned(),
                    item["mode"].as_u64().unwrap_or(default_mode),
                ))
            })
            .collect::<anyhow::Result<_>>()?,
        None => data
            .keys()
            .map(|key| (key.clone(), key.clone(), default_mode))
            .collect(),
    };
    for (key, path, mode) in items {
        let encoded = data[&key]
            .as_str()
            .with_context(|| format!("Secret {name} has no key {key}"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .with_context(|| format!("Secret {name} key {key} is not base64"))?;
        let file = dir.join(&path);
        std::fs::write(&file, bytes)?;
        let mode = u32::try_from(mode).context("file mode out of range")?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// `value` with a leading container mount path replaced by its local folder.
fn rewrite(value: &str, mounts: &[(String, PathBuf)]) -> String {
    for (path, local) in mounts {
        if value == path {
            return local.display().to_string();
        }
        if let Some(rest) = value.strip_prefix(path.as_str())
            && rest.starts_with('/')
        {
            return format!("{}{rest}", local.display());
        }
    }
    value.to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "app", "namespace": "apps", "uid": "u-1",
                         "labels": {"team": "a"}},
            "spec": {
                "serviceAccountName": "default",
                "volumes": [
                    {"name": "mem", "emptyDir": {"medium": "Memory"}},
                    {"name": "tok", "secret": {"secretName": "s", "defaultMode": 0o444,
                        "items": [{"key": "token", "path": "token"}]}}
                ],
                "initContainers": [{
                    "name": "side",
                    "command": ["/bin/side"],
                    "args": ["run", "/mnt/mem/x"],
                    "env": [
                        {"name": "DIR", "value": "/mnt/mem"},
                        {"name": "TOKEN", "value": "/var/tok/token"},
                        {"name": "OTHER", "value": "/mnt/memory"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}}
                    ],
                    "volumeMounts": [
                        {"name": "mem", "mountPath": "/mnt/mem"},
                        {"name": "tok", "mountPath": "/var/tok", "readOnly": true}
                    ],
                    "startupProbe": {"exec": {"command": ["/bin/side", "probe"]}}
                }],
                "containers": [{"name": "app"}]
            }
        })
    }

    /// Sources for the unit tests: one Secret `s`, and tokens that name
    /// what they were asked for.
    struct Fixed;

    impl Sources for Fixed {
        fn secret(&self, name: &str) -> anyhow::Result<Value> {
            assert_eq!(name, "s");
            Ok(json!({"data": {"token": "c2VjcmV0", "unused": "eA=="}}))
        }

        fn pod_token(&self, pod: &Value, audience: &str, seconds: u64) -> anyhow::Result<String> {
            Ok(format!(
                "{}/{audience}/{seconds}",
                pod["metadata"]["uid"].as_str().unwrap()
            ))
        }
    }

    #[test]
    fn env_mounts_and_commands_follow_the_pod() {
        let root = tempfile::tempdir().unwrap();
        let mut pod = pod();
        pod["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "id", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "signet", "expirationSeconds": 600, "path": "token"}}
            ]}}));
        pod["spec"]["initContainers"][0]["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "id", "mountPath": "/var/id", "readOnly": true}));
        let c = Container::prepare(&pod, "side", root.path(), Path::new("/local/side"), &Fixed)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("id/token")).unwrap(),
            "u-1/signet/600",
            "a token bound to the pod, with the volume's audience and expiry"
        );
        let mem = root.path().join("mem");
        let tok = root.path().join("tok");
        assert_eq!(c.env["DIR"], mem.display().to_string());
        assert_eq!(c.env["TOKEN"], tok.join("token").display().to_string());
        assert_eq!(
            c.env["OTHER"], "/mnt/memory",
            "a prefix that is not a path is kept"
        );
        assert_eq!(c.env["POD"], "app");
        assert_eq!(c.env["UID"], "u-1");
        assert_eq!(c.env["TEAM"], "a");
        assert_eq!(std::fs::read(tok.join("token")).unwrap(), b"secret");
        assert!(!tok.join("unused").exists(), "only the listed items");
        let mode = std::fs::metadata(tok.join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        assert_eq!(c.local_mount("/mnt/mem"), Some(mem.as_path()));

        let command = c.command();
        assert_eq!(command.get_program(), "/local/side");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(
            args,
            [std::ffi::OsStr::new("run"), mem.join("x").as_os_str()]
        );
        let probe = c.exec(c.startup_probe.as_ref().unwrap());
        assert_eq!(probe.get_program(), "/local/side");
        assert_eq!(probe.get_args().collect::<Vec<_>>(), ["probe"]);
    }

    #[test]
    fn unsupported_sources_are_errors_not_guesses() {
        let mut pod = pod();
        pod["spec"]["initContainers"][0]["env"] =
            json!([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]);
        let root = tempfile::tempdir().unwrap();
        let error = Container::prepare(&pod, "side", root.path(), Path::new("/x"), &Fixed)
            .unwrap_err()
            .to_string();
        assert!(error.contains("status.podIP"), "{error}");
    }
}
