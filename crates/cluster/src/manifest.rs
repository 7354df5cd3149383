//! kube-apiserver's static-pod manifest, parsed into what atrest needs from it: the
//! container's flags and the hostPath volumes its paths live on.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// A manifest that could not be read or does not say what is needed. The message names the
/// file and, where one is involved, the flag.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{message}", file.display(), flag.as_ref().map(|f| format!("--{f}: ")).unwrap_or_default())]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// The flag the problem is about, if any.
    pub flag: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// A `volumeMounts` entry of the kube-apiserver container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Where the container sees it.
    pub mount_path: PathBuf,
    /// `subPath`: the part of the volume mounted there.
    pub sub_path: Option<PathBuf>,
    /// `readOnly`.
    pub read_only: bool,
}

/// A `volumes` entry of the pod; `host_path` is `None` for other volume kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The volume's name.
    pub name: String,
    /// `hostPath.path`.
    pub host_path: Option<PathBuf>,
    /// `hostPath.type` (`DirectoryOrCreate`, `FileOrCreate`, ...).
    pub host_path_type: Option<String>,
}

/// How to reach the cluster's etcd, as the manifest's kube-apiserver does. File paths are
/// host paths (mapped through the hostPath volumes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdAccess {
    /// `--etcd-servers`.
    pub servers: Vec<String>,
    /// `--etcd-prefix` (default `/registry`).
    pub prefix: String,
    /// `--etcd-cafile`.
    pub ca_file: Option<PathBuf>,
    /// `--etcd-certfile`.
    pub cert_file: Option<PathBuf>,
    /// `--etcd-keyfile`.
    pub key_file: Option<PathBuf>,
}

/// kube-apiserver's static pod: the container running kube-apiserver, its command line,
/// and the pod's volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerManifest {
    file: PathBuf,
    container: String,
    /// `command` after the binary, then `args`.
    args: Vec<String>,
    mounts: Vec<VolumeMount>,
    volumes: Vec<Volume>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPod {
    kind: Option<String>,
    spec: Option<RawSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    containers: Vec<RawContainer>,
    #[serde(default)]
    volumes: Vec<RawVolume>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContainer {
    name: Option<String>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    volume_mounts: Vec<RawMount>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMount {
    name: String,
    mount_path: String,
    sub_path: Option<String>,
    #[serde(default)]
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawVolume {
    name: String,
    host_path: Option<RawHostPath>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHostPath {
    path: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// The manifest's YAML as a JSON value (duplicate keys refused, no file lines quoted in
/// errors: a line may hold a secret).
pub(crate) fn yaml_value(text: &str, file: &Path) -> Result<serde_json::Value, ManifestError> {
    let mut options = serde_saphyr::options::Options::default();
    options.with_snippet = false;
    options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::Error;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| ManifestError {
        file: file.to_path_buf(),
        flag: None,
        message: format!("not valid YAML: {e}"),
    })
}

impl ApiServerManifest {
    /// Reads and parses the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            file: path.to_path_buf(),
            flag: None,
            message: format!("cannot read the manifest: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses manifest text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ManifestError> {
        let err = |message: String| ManifestError {
            file: file.to_path_buf(),
            flag: None,
            message,
        };
        let value = yaml_value(text, file)?;
        if !value.is_object() {
            return Err(err(
                "no spec: not a static-pod manifest (the document is not a mapping)".into(),
            ));
        }
        let raw: RawPod = serde_path_to_error::deserialize(value)
            .map_err(|e| err(format!("{}: {}", e.path(), e.inner())))?;
        if let Some(kind) = raw.kind.as_deref() {
            if kind != "Pod" {
                return Err(err(format!(
                    "kind is {kind:?}; a static-pod manifest is a Pod"
                )));
            }
        }
        let spec = raw
            .spec
            .ok_or_else(|| err("no spec: not a static-pod manifest".into()))?;
        let is_apiserver = |c: &RawContainer| {
            c.name.as_deref() == Some("kube-apiserver")
                || c.command
                    .first()
                    .is_some_and(|b| b.rsplit('/').next() == Some("kube-apiserver"))
        };
        let count = spec.containers.iter().filter(|c| is_apiserver(c)).count();
        if count > 1 {
            return Err(err(
                "more than one container runs kube-apiserver; atrest reads exactly one".into(),
            ));
        }
        let container = spec
            .containers
            .into_iter()
            .find(is_apiserver)
            .ok_or_else(|| {
                err(
                    "no container named kube-apiserver (or running the kube-apiserver binary)"
                        .into(),
                )
            })?;
        let mut args: Vec<String> = container.command.into_iter().skip(1).collect();
        args.extend(container.args);
        let absolute = |what: &str, p: String| -> Result<PathBuf, ManifestError> {
            let path = PathBuf::from(&p);
            if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
                return Err(err(format!(
                    "{what} {p:?} is not an absolute path without `..`"
                )));
            }
            Ok(path)
        };
        let mounts = container
            .volume_mounts
            .into_iter()
            .map(|m| {
                let sub_path = match m.sub_path.filter(|s| !s.is_empty()) {
                    Some(s)
                        if Path::new(&s).is_absolute()
                            || Path::new(&s)
                                .components()
                                .any(|c| c == Component::ParentDir) =>
                    {
                        return Err(err(format!(
                            "volumeMount {}: subPath {s:?} must be relative, without `..`",
                            m.name
                        )))
                    }
                    other => other.map(PathBuf::from),
                };
                Ok(VolumeMount {
                    mount_path: absolute(
                        &format!("volumeMount {}: mountPath", m.name),
                        m.mount_path,
                    )?,
                    name: m.name,
                    sub_path,
                    read_only: m.read_only,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let volumes = spec
            .volumes
            .into_iter()
            .map(|v| {
                let (host_path, host_path_type) = match v.host_path {
                    Some(h) => (
                        Some(absolute(
                            &format!("volume {}: hostPath.path", v.name),
                            h.path,
                        )?),
                        h.kind,
                    ),
                    None => (None, None),
                };
                Ok(Volume {
                    name: v.name,
                    host_path,
                    host_path_type,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ApiServerManifest {
            file: file.to_path_buf(),
            container: container.name.unwrap_or_else(|| "kube-apiserver".into()),
            args,
            mounts,
            volumes,
        })
    }

    /// The manifest file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The kube-apiserver container's name.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// kube-apiserver's arguments (the command after the binary, then `args`).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The container's volume mounts.
    pub fn mounts(&self) -> &[VolumeMount] {
        &self.mounts
    }

    /// The pod's volumes.
    pub fn volumes(&self) -> &[Volume] {
        &self.volumes
    }

    fn error(&self, flag: Option<&str>, message: String) -> ManifestError {
        ManifestError {
            file: self.file.clone(),
            flag: flag.map(str::to_string),
            message,
        }
    }

    /// The value of `--name` (given without the dashes) as kube-apiserver would see it: the
    /// last occurrence wins; `--name=value` or `--name value`; a bare `--name` is `true`.
    pub fn flag(&self, name: &str) -> Option<&str> {
        let mut found = None;
        let mut i = 0;
        while i < self.args.len() {
            let arg = &self.args[i];
            i += 1;
            let Some(body) = arg.strip_prefix("--") else {
                continue;
            };
            match body.split_once('=') {
                Some((n, v)) if n == name => found = Some(v),
                Some(_) => {}
                None if body == name => match self.args.get(i) {
                    Some(next) if !next.starts_with('-') => {
                        found = Some(next.as_str());
                        i += 1;
                    }
                    _ => found = Some("true"),
                },
                None => {
                    // `--other value`: skip the value so it is not read as a flag.
                    if self.args.get(i).is_some_and(|n| !n.starts_with('-')) {
                        i += 1;
                    }
                }
            }
        }
        found
    }

    /// Where the host keeps the file the container sees at `container_path`: the deepest
    /// volumeMount containing it, through its hostPath volume. `flag` names the flag the
    /// path came from, for the error.
    pub fn host_path(&self, container_path: &Path, flag: &str) -> Result<PathBuf, ManifestError> {
        if !container_path.is_absolute()
            || container_path
                .components()
                .any(|c| c == Component::ParentDir)
        {
            return Err(self.error(
                Some(flag),
                format!(
                    "{} is not an absolute path without `..` (kube-apiserver's working \
                     directory in its container is unknown)",
                    container_path.display()
                ),
            ));
        }
        let mount = self
            .mounts
            .iter()
            .filter(|m| container_path.starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.components().count())
            .ok_or_else(|| {
                self.error(
                    Some(flag),
                    format!(
                        "{} is under no volumeMount of container {}: the file is inside the \
                         container image, not on this host",
                        container_path.display(),
                        self.container
                    ),
                )
            })?;
        let volume = self
            .volumes
            .iter()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| {
                self.error(
                    Some(flag),
                    format!(
                        "{} is mounted from volume {:?}, which the pod does not define",
                        container_path.display(),
                        mount.name
                    ),
                )
            })?;
        let host = volume.host_path.as_ref().ok_or_else(|| {
            self.error(
                Some(flag),
                format!(
                    "{} is on volume {:?}, which is not a hostPath volume",
                    container_path.display(),
                    volume.name
                ),
            )
        })?;
        // starts_with held above, so the prefix strips.
        let rest = container_path
            .strip_prefix(&mount.mount_path)
            .unwrap_or(Path::new(""));
        let mut out = host.clone();
        if let Some(sub) = &mount.sub_path {
            out.push(sub);
        }
        if !rest.as_os_str().is_empty() {
            out.push(rest);
        }
        Ok(out)
    }

    /// The host path of a file flag's value, if the flag is set (and not empty).
    pub fn file_flag(&self, name: &str) -> Result<Option<PathBuf>, ManifestError> {
        match self.flag(name).filter(|v| !v.is_empty()) {
            Some(v) => self.host_path(Path::new(v), name).map(Some),
            None => Ok(None),
        }
    }

    /// How kube-apiserver reaches etcd (file paths mapped to the host).
    pub fn etcd(&self) -> Result<EtcdAccess, ManifestError> {
        let servers: Vec<String> = self
            .flag("etcd-servers")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if servers.is_empty() {
            return Err(self.error(
                Some("etcd-servers"),
                format!(
                    "not set on container {}: kube-apiserver needs it to reach etcd",
                    self.container
                ),
            ));
        }
        Ok(EtcdAccess {
            servers,
            prefix: self
                .flag("etcd-prefix")
                .filter(|p| !p.is_empty())
                .unwrap_or("/registry")
                .to_string(),
            ca_file: self.file_flag("etcd-cafile")?,
            cert_file: self.file_flag("etcd-certfile")?,
            key_file: self.file_flag("etcd-keyfile")?,
        })
    }

    /// The host path of `--encryption-provider-config`, if the flag is set.
    pub fn encryption_provider_config(&self) -> Result<Option<PathBuf>, ManifestError> {
        self.file_flag("encryption-provider-config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --etcd-servers=https://127.0.0.1:2379,https://10.0.0.2:2379
    - --etcd-cafile
    - /pki/etcd/ca.crt
    - --allow-privileged
    - --etcd-certfile=/pki/client.crt
    - --etcd-keyfile=/image/only.key
    - --etcd-prefix=/registry
    - --etcd-prefix=/other
    volumeMounts:
    - mountPath: /pki
      name: pki
    - mountPath: /pki/etcd
      name: etcd-pki
      subPath: certs
    - mountPath: /cache
      name: cache
  volumes:
  - name: pki
    hostPath:
      path: /etc/kubernetes/pki
  - name: etcd-pki
    hostPath:
      path: /var/lib/etcd-pki
  - name: cache
    emptyDir: {}
";

    fn minimal() -> ApiServerManifest {
        ApiServerManifest::parse(MINIMAL, Path::new("m.yaml")).unwrap()
    }

    #[test]
    fn flags_both_spellings_last_wins() {
        let m = minimal();
        assert_eq!(m.flag("etcd-cafile"), Some("/pki/etcd/ca.crt"));
        assert_eq!(m.flag("allow-privileged"), Some("true"));
        assert_eq!(m.flag("etcd-prefix"), Some("/other"));
        assert_eq!(m.flag("etcd"), None);
        assert_eq!(m.flag("/pki/etcd/ca.crt"), None);
    }

    #[test]
    fn paths_map_through_the_deepest_mount_and_sub_path() {
        let m = minimal();
        assert_eq!(
            m.host_path(Path::new("/pki/etcd/ca.crt"), "f").unwrap(),
            PathBuf::from("/var/lib/etcd-pki/certs/ca.crt")
        );
        assert_eq!(
            m.host_path(Path::new("/pki/client.crt"), "f").unwrap(),
            PathBuf::from("/etc/kubernetes/pki/client.crt")
        );
        // Component-wise: /pkix is not under /pki.
        assert!(m.host_path(Path::new("/pkix/a"), "f").is_err());
    }

    #[test]
    fn errors_name_file_flag_and_reason() {
        let m = minimal();
        let e = m.etcd().unwrap_err().to_string();
        assert!(
            e.starts_with("m.yaml: --etcd-keyfile: /image/only.key is under no volumeMount"),
            "{e}"
        );
        let e = m
            .host_path(Path::new("/cache/x"), "etcd-cafile")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a hostPath volume"), "{e}");
        let e = m
            .host_path(Path::new("rel/x"), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an absolute path"), "{e}");
    }

    #[test]
    fn etcd_access_from_flags() {
        let text = MINIMAL.replace("/image/only.key", "/pki/client.key");
        let m = ApiServerManifest::parse(&text, Path::new("m.yaml")).unwrap();
        let etcd = m.etcd().unwrap();
        assert_eq!(
            etcd.servers,
            vec!["https://127.0.0.1:2379", "https://10.0.0.2:2379"]
        );
        assert_eq!(etcd.prefix, "/other");
        assert_eq!(
            etcd.key_file,
            Some(PathBuf::from("/etc/kubernetes/pki/client.key"))
        );
        assert_eq!(m.encryption_provider_config().unwrap(), None);
    }

    #[test]
    fn not_a_manifest_is_an_error_not_a_panic() {
        for (text, want) in [
            ("", "no spec"),
            ("kind: Deployment\nspec: {}\n", "kind is \"Deployment\""),
            ("spec:\n  containers:\n  - name: etcd\n", "no container"),
            ("spec: [1, 2]\n", "spec"),
            ("spec:\n  containers:\n  - name: kube-apiserver\n    command: 3\n", "command"),
            ("a: 1\na: 2\n", "YAML"),
            (": : :\n\t- [", "YAML"),
            (
                "spec:\n  containers:\n  - name: kube-apiserver\n    volumeMounts:\n    - {name: a, mountPath: x}\n",
                "not an absolute path",
            ),
        ] {
            let e = ApiServerManifest::parse(text, Path::new("bad.yaml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("bad.yaml: "), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn missing_etcd_servers_is_named() {
        let m = ApiServerManifest::parse(
            "spec:\n  containers:\n  - command: [/usr/local/bin/kube-apiserver, --secure-port=6443]\n",
            Path::new("k.yaml"),
        )
        .unwrap();
        assert_eq!(m.container(), "kube-apiserver");
        let e = m.etcd().unwrap_err().to_string();
        assert!(e.starts_with("k.yaml: --etcd-servers: not set"), "{e}");
    }
}
