//! The manifest edit of `atrest cluster enable`: the `--encryption-provider-config` flag
//! (with automatic reload), a read-only volumeMount and a `DirectoryOrCreate` hostPath volume
//! for the configuration directory.
//!
//! The edit is made on the text, line by line, so that everything else in the file stays
//! byte for byte as it was (order, quoting, comments, other flags): new lines are inserted at
//! the end of the block sequences they belong to, with the indentation of their neighbours.
//! Then the result is checked the other way: parsed again, it must equal the original
//! document with exactly these additions. A layout the line editor does not understand
//! (flow sequences, anchors, ...) fails that check and is refused; nothing is guessed.

use std::path::Path;

use serde_json::json;

use crate::manifest::{yaml_value, ApiServerManifest, ManifestError};

/// The flag that points kube-apiserver at its EncryptionConfiguration.
pub const CONFIG_FLAG: &str = "encryption-provider-config";
/// The flag that makes kube-apiserver reload the file when it changes.
pub const RELOAD_FLAG: &str = "encryption-provider-config-automatic-reload";

/// What `enable` adds: the configuration directory (mounted at the same path inside the
/// container) and the file in it.
#[derive(Debug, Clone)]
pub struct EncryptionMount<'a> {
    /// The host directory, mounted read-only at the same path.
    pub dir: &'a Path,
    /// The configuration file, inside `dir`.
    pub config_file: &'a Path,
}

struct Lines<'t> {
    lines: Vec<&'t str>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// If `line` holds `key:` with nothing after it (but a comment), the column of the key,
/// looking past sequence dashes (`- key:`).
fn key_column(line: &str, key: &str) -> Option<usize> {
    let mut col = indent(line);
    let mut rest = &line[col..];
    while let Some(r) = rest.strip_prefix("- ") {
        let spaces = r.len() - r.trim_start_matches(' ').len();
        col += 2 + spaces;
        rest = &r[spaces..];
    }
    let after = rest.strip_prefix(key)?.strip_prefix(':')?;
    let after = after.trim();
    (after.is_empty() || after.starts_with('#')).then_some(col)
}

/// `key: value` on this line (past dashes), at column `col`: the value.
fn scalar_at<'l>(line: &'l str, key: &str, col: usize) -> Option<&'l str> {
    let mut c = indent(line);
    let mut rest = &line[c..];
    while let Some(r) = rest.strip_prefix("- ") {
        let spaces = r.len() - r.trim_start_matches(' ').len();
        c += 2 + spaces;
        rest = &r[spaces..];
    }
    if c != col {
        return None;
    }
    let v = rest.strip_prefix(key)?.strip_prefix(':')?.trim();
    Some(v.trim_matches(|ch| ch == '"' || ch == '\''))
}

/// A block sequence: the column of its dashes, the lines that start its items, and its last
/// non-blank line.
#[derive(Debug)]
struct SeqBlock {
    col: usize,
    items: Vec<usize>,
    last: usize,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Self {
        Lines {
            lines: text.split_inclusive('\n').collect(),
        }
    }

    /// The block sequence that is the value of the key on line `key_line` at `key_col`.
    fn seq_after(&self, key_line: usize, key_col: usize) -> Option<SeqBlock> {
        let mut i = key_line + 1;
        while i < self.lines.len() && blank_or_comment(self.lines[i]) {
            i += 1;
        }
        let first = self.lines.get(i)?;
        let col = indent(first);
        if col < key_col || !first[col..].starts_with('-') {
            return None;
        }
        let mut block = SeqBlock {
            col,
            items: vec![i],
            last: i,
        };
        for (j, line) in self.lines.iter().enumerate().skip(i + 1) {
            if blank_or_comment(line) {
                continue;
            }
            let c = indent(line);
            if c > col {
                block.last = j;
            } else if c == col && line[c..].starts_with('-') {
                block.items.push(j);
                block.last = j;
            } else {
                break;
            }
        }
        Some(block)
    }

    /// The first line in `range` with `key:` (no value) at column `col` (any column: None).
    fn find_key(
        &self,
        key: &str,
        col: Option<usize>,
        range: std::ops::Range<usize>,
    ) -> Option<(usize, usize)> {
        range.into_iter().find_map(|i| {
            let c = key_column(self.lines.get(i)?, key)?;
            (col.is_none() || col == Some(c)).then_some((i, c))
        })
    }
}

fn newline_of(text: &str) -> &'static str {
    if text.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

/// A path written into the manifest as a plain YAML scalar: only characters that need no
/// quoting.
fn plain_path(path: &Path, what: &str, file: &Path) -> Result<String, ManifestError> {
    let s = path.to_str().unwrap_or("");
    let ok = path.is_absolute()
        && !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
    if !ok {
        return Err(ManifestError {
            file: file.to_path_buf(),
            flag: None,
            message: format!(
                "{what} {} must be an absolute path of letters, digits and / . _ -",
                path.display()
            ),
        });
    }
    Ok(s.to_string())
}

/// Where the kube-apiserver container is in the text.
struct Located {
    /// The `containers:` key: line and column.
    containers_line: usize,
    containers_col: usize,
    containers: SeqBlock,
    /// The column of the container's keys.
    key_col: usize,
    /// Its index in `containers`.
    chosen: usize,
    /// Its lines.
    container: std::ops::Range<usize>,
}

fn locate(
    lines: &Lines<'_>,
    manifest: &ApiServerManifest,
    unsupported: &dyn Fn(&str) -> ManifestError,
) -> Result<Located, ManifestError> {
    let all = 0..lines.lines.len();
    let (containers_line, containers_col) = lines
        .find_key("containers", None, all)
        .ok_or_else(|| unsupported("spec.containers"))?;
    let containers = lines
        .seq_after(containers_line, containers_col)
        .ok_or_else(|| unsupported("spec.containers"))?;
    let key_col = containers.col + 2;
    let item_range = |k: usize| {
        let start = containers.items[k];
        let end = containers
            .items
            .get(k + 1)
            .copied()
            .unwrap_or(containers.last + 1);
        start..end
    };
    let chosen = (0..containers.items.len())
        .find(|k| {
            item_range(*k)
                .any(|i| scalar_at(lines.lines[i], "name", key_col) == Some(manifest.container()))
        })
        .or((containers.items.len() == 1).then_some(0))
        .ok_or_else(|| unsupported("the kube-apiserver container"))?;
    let container = item_range(chosen);
    Ok(Located {
        containers_line,
        containers_col,
        containers,
        key_col,
        chosen,
        container,
    })
}

/// The manifest text with encryption at rest enabled as `mount` says; the volume is named
/// `volume_name`. Errors if it is already enabled or the layout is not understood.
pub fn enable(
    text: &str,
    file: &Path,
    mount: &EncryptionMount<'_>,
    volume_name: &str,
) -> Result<String, ManifestError> {
    let err = |message: String| ManifestError {
        file: file.to_path_buf(),
        flag: None,
        message,
    };
    let manifest = ApiServerManifest::parse(text, file)?;
    if manifest.flag(CONFIG_FLAG).is_some() {
        return Err(ManifestError {
            file: file.to_path_buf(),
            flag: Some(CONFIG_FLAG.into()),
            message: "already set: encryption at rest is already enabled".into(),
        });
    }
    let dir = plain_path(mount.dir, "the configuration directory", file)?;
    let config = plain_path(mount.config_file, "the configuration file", file)?;
    if !mount.config_file.starts_with(mount.dir) {
        return Err(err(format!("{config} is not inside {dir}")));
    }
    if manifest.volumes().iter().any(|v| v.name == volume_name) {
        return Err(err(format!(
            "the pod already has a volume named {volume_name}"
        )));
    }
    if manifest.mounts().iter().any(|m| m.mount_path == mount.dir) {
        return Err(err(format!(
            "the container already mounts something at {dir}"
        )));
    }
    let nl = newline_of(text);
    let lines = Lines::new(text);
    let all = 0..lines.lines.len();
    let unsupported = |what: &str| {
        err(format!(
            "the layout of {what} is not one atrest edits (it writes block-style YAML as \
             kubeadm does); add the flag, volumeMount and volume by hand"
        ))
    };

    let Located {
        containers_line,
        containers_col,
        containers,
        key_col,
        chosen,
        container,
    } = locate(&lines, &manifest, &unsupported)?;

    // (line to insert after, text): collected, then applied bottom-up.
    let mut inserts: Vec<(usize, String)> = Vec::new();
    let flags_key = if lines
        .find_key("args", Some(key_col), container.clone())
        .is_some()
    {
        "args"
    } else {
        "command"
    };
    let (flags_line, _) = lines
        .find_key(flags_key, Some(key_col), container.clone())
        .ok_or_else(|| unsupported("the container's command"))?;
    let flags = lines
        .seq_after(flags_line, key_col)
        .ok_or_else(|| unsupported("the container's command"))?;
    let pad = " ".repeat(flags.col);
    inserts.push((
        flags.last,
        format!("{pad}- --{CONFIG_FLAG}={config}{nl}{pad}- --{RELOAD_FLAG}=true{nl}"),
    ));

    match lines.find_key("volumeMounts", Some(key_col), container.clone()) {
        Some((line, _)) => {
            let seq = lines
                .seq_after(line, key_col)
                .ok_or_else(|| unsupported("the container's volumeMounts"))?;
            let (p, q) = (" ".repeat(seq.col), " ".repeat(seq.col + 2));
            inserts.push((
                seq.last,
                format!("{p}- mountPath: {dir}{nl}{q}name: {volume_name}{nl}{q}readOnly: true{nl}"),
            ));
        }
        None => {
            let p = " ".repeat(key_col);
            let last = (container.start..container.end)
                .rev()
                .find(|i| !blank_or_comment(lines.lines[*i]))
                .unwrap_or(container.start);
            inserts.push((
                last,
                format!(
                    "{p}volumeMounts:{nl}{p}- mountPath: {dir}{nl}{p}  name: {volume_name}{nl}{p}  readOnly: true{nl}"
                ),
            ));
        }
    }

    let outside_containers = |i: &usize| *i < containers_line || *i > containers.last;
    let volumes_key = all
        .clone()
        .filter(outside_containers)
        .find_map(|i| (key_column(lines.lines[i], "volumes")? == containers_col).then_some(i));
    match volumes_key {
        Some(line) => {
            let seq = lines
                .seq_after(line, containers_col)
                .ok_or_else(|| unsupported("spec.volumes"))?;
            let (p, q, r) = (
                " ".repeat(seq.col),
                " ".repeat(seq.col + 2),
                " ".repeat(seq.col + 4),
            );
            inserts.push((
                seq.last,
                format!(
                    "{p}- hostPath:{nl}{r}path: {dir}{nl}{r}type: DirectoryOrCreate{nl}{q}name: {volume_name}{nl}"
                ),
            ));
        }
        None => {
            let p = " ".repeat(containers_col);
            inserts.push((
                containers.last,
                format!(
                    "{p}volumes:{nl}{p}- hostPath:{nl}{p}    path: {dir}{nl}{p}    type: DirectoryOrCreate{nl}{p}  name: {volume_name}{nl}"
                ),
            ));
        }
    }

    inserts.sort_by_key(|(line, _)| *line);
    let mut out = String::with_capacity(text.len() + 512);
    let mut next = inserts.iter().peekable();
    for (i, line) in lines.lines.iter().enumerate() {
        out.push_str(line);
        while let Some((_, insert)) = next.next_if(|(at, _)| *at == i) {
            if !out.ends_with('\n') {
                out.push_str(nl);
            }
            out.push_str(insert);
        }
    }

    // The check: the new document is the old one plus exactly these additions.
    let mut expected = yaml_value(text, file)?;
    let edited =
        yaml_value(&out, file).map_err(|e| err(format!("edit produced invalid YAML: {e}")))?;
    let added = (|| {
        let spec = expected.get_mut("spec")?;
        let c = spec
            .get_mut("containers")?
            .get_mut(chosen)?
            .as_object_mut()?;
        c.get_mut(flags_key)?.as_array_mut()?.extend([
            json!(format!("--{CONFIG_FLAG}={config}")),
            json!(format!("--{RELOAD_FLAG}=true")),
        ]);
        let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
        mounts.as_array_mut()?.push(json!({
            "mountPath": dir, "name": volume_name, "readOnly": true
        }));
        let volumes = spec
            .as_object_mut()?
            .entry("volumes")
            .or_insert_with(|| json!([]));
        volumes.as_array_mut()?.push(json!({
            "hostPath": {"path": dir, "type": "DirectoryOrCreate"}, "name": volume_name
        }));
        Some(())
    })();
    if added.is_none() || edited != expected {
        return Err(unsupported("this manifest"));
    }
    Ok(out)
}

/// What [`disable`] took out of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    /// The manifest text without them.
    pub text: String,
    /// The flags removed, as they were written.
    pub flags: Vec<String>,
    /// The volumeMount removed (its mountPath): the one the configuration was read through,
    /// if it mounted only the configuration's file or directory and no other flag uses it.
    pub mount: Option<String>,
    /// The volume removed with it, if nothing else mounts it.
    pub volume: Option<String>,
}

/// The value of a one-line block sequence item (`- value  # comment`) whose dash is at
/// `col`, unquoted.
fn item_scalar(line: &str, col: usize) -> Option<&str> {
    if indent(line) != col {
        return None;
    }
    let rest = line[col..].strip_prefix("- ")?;
    let rest = rest.split(" #").next().unwrap_or(rest).trim();
    Some(rest.trim_matches(|c| c == '"' || c == '\''))
}

/// The flags `enable` adds (and the seed adds by hand): `--encryption-provider-config=...`
/// and `--encryption-provider-config-automatic-reload[=...]`.
fn is_encryption_flag(arg: &str) -> bool {
    let Some(body) = arg.strip_prefix("--") else {
        return false;
    };
    match body.split_once('=') {
        Some((name, _)) => name == CONFIG_FLAG || name == RELOAD_FLAG,
        None => body == RELOAD_FLAG,
    }
}

/// The manifest text with encryption at rest disabled: the `--encryption-provider-config`
/// and automatic-reload flags removed, and the volumeMount and hostPath volume the
/// configuration was read through, when they were there for it alone (mounting the file or
/// its directory, used by no other flag or container). Every other line stays as it was; the
/// result is checked by parsing as [`enable`]'s is. Errors if encryption is not enabled or
/// the layout is not understood.
pub fn disable(text: &str, file: &Path) -> Result<Disabled, ManifestError> {
    use std::collections::BTreeSet;
    let err = |message: String| ManifestError {
        file: file.to_path_buf(),
        flag: None,
        message,
    };
    let unsupported = |what: &str| {
        err(format!(
            "the layout of {what} is not one atrest edits (it writes block-style YAML as \
             kubeadm does); remove the flags, volumeMount and volume by hand"
        ))
    };
    let manifest = ApiServerManifest::parse(text, file)?;
    let Some(config) = manifest.flag(CONFIG_FLAG).map(std::path::PathBuf::from) else {
        return Err(ManifestError {
            file: file.to_path_buf(),
            flag: Some(CONFIG_FLAG.into()),
            message: "not set: encryption at rest is not enabled".into(),
        });
    };
    let lines = Lines::new(text);
    let loc = locate(&lines, &manifest, &unsupported)?;
    let item_end = |seq: &SeqBlock, k: usize| seq.items.get(k + 1).copied().unwrap_or(seq.last + 1);
    let mut drop_lines: BTreeSet<usize> = BTreeSet::new();
    let mut flags = Vec::new();
    for key in ["command", "args"] {
        let Some((line, _)) = lines.find_key(key, Some(loc.key_col), loc.container.clone()) else {
            continue;
        };
        let seq = lines
            .seq_after(line, loc.key_col)
            .ok_or_else(|| unsupported("the container's command"))?;
        for (k, &start) in seq.items.iter().enumerate() {
            let Some(value) = item_scalar(lines.lines[start], seq.col) else {
                continue;
            };
            if !is_encryption_flag(value) {
                continue;
            }
            if (start + 1..item_end(&seq, k)).any(|i| !blank_or_comment(lines.lines[i])) {
                return Err(unsupported("the container's command"));
            }
            drop_lines.insert(start);
            flags.push(value.to_string());
        }
    }

    // The mount the configuration came through, if it is there for the configuration alone.
    let others_use = |dir: &Path| {
        manifest
            .args()
            .iter()
            .filter(|a| !is_encryption_flag(a))
            .any(|a| {
                a.split_once('=')
                    .is_some_and(|(_, v)| v.split(',').any(|p| Path::new(p).starts_with(dir)))
            })
    };
    let mount = manifest
        .mounts()
        .iter()
        .filter(|m| config.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.components().count())
        .filter(|m| {
            (m.mount_path == config || Some(m.mount_path.as_path()) == config.parent())
                && !others_use(&m.mount_path)
        })
        .cloned();
    let mut expected = yaml_value(text, file)?;
    let mut volume = None;
    let mut mount_path = None;
    if let Some(m) = &mount {
        let path = m.mount_path.to_string_lossy().into_owned();
        let (line, _) = lines
            .find_key("volumeMounts", Some(loc.key_col), loc.container.clone())
            .ok_or_else(|| unsupported("the container's volumeMounts"))?;
        let seq = lines
            .seq_after(line, loc.key_col)
            .ok_or_else(|| unsupported("the container's volumeMounts"))?;
        let col = seq.col + 2;
        let k = (0..seq.items.len())
            .find(|&k| {
                let range = seq.items[k]..item_end(&seq, k);
                range
                    .clone()
                    .any(|i| scalar_at(lines.lines[i], "mountPath", col) == Some(&path))
                    && range
                        .into_iter()
                        .any(|i| scalar_at(lines.lines[i], "name", col) == Some(&m.name))
            })
            .ok_or_else(|| unsupported("the container's volumeMounts"))?;
        if seq.items.len() == 1 {
            drop_lines.extend(line..item_end(&seq, k));
        } else {
            drop_lines.extend(seq.items[k]..item_end(&seq, k));
        }
        mount_path = Some(path.clone());
        // Does anything else (another mount, another container) use the volume?
        let spec = &expected["spec"];
        let uses = ["containers", "initContainers"]
            .iter()
            .flat_map(|c| spec[c].as_array().into_iter().flatten())
            .flat_map(|c| c["volumeMounts"].as_array().into_iter().flatten())
            .filter(|vm| vm["name"] == m.name.as_str())
            .count();
        if uses == 1 {
            let outside = |i: &usize| *i < loc.containers_line || *i > loc.containers.last;
            let key = (0..lines.lines.len())
                .filter(outside)
                .find(|&i| key_column(lines.lines[i], "volumes") == Some(loc.containers_col));
            if let Some(key) = key {
                let seq = lines
                    .seq_after(key, loc.containers_col)
                    .ok_or_else(|| unsupported("spec.volumes"))?;
                let col = seq.col + 2;
                let found = (0..seq.items.len()).find(|&k| {
                    (seq.items[k]..item_end(&seq, k))
                        .any(|i| scalar_at(lines.lines[i], "name", col) == Some(&m.name))
                });
                if let Some(k) = found {
                    if seq.items.len() == 1 {
                        drop_lines.extend(key..item_end(&seq, k));
                    } else {
                        drop_lines.extend(seq.items[k]..item_end(&seq, k));
                    }
                    volume = Some(m.name.clone());
                }
            }
        }
    }

    // The check: the new document is the old one without exactly these.
    let removed = (|| {
        let spec = expected.get_mut("spec")?.as_object_mut()?;
        let c = spec
            .get_mut("containers")?
            .get_mut(loc.chosen)?
            .as_object_mut()?;
        for key in ["command", "args"] {
            if let Some(list) = c.get_mut(key).and_then(|v| v.as_array_mut()) {
                list.retain(|a| !a.as_str().is_some_and(is_encryption_flag));
            }
        }
        if let (Some(m), Some(path)) = (&mount, &mount_path) {
            let list = c.get_mut("volumeMounts")?.as_array_mut()?;
            let at = list
                .iter()
                .position(|vm| vm["mountPath"] == path.as_str() && vm["name"] == m.name.as_str())?;
            list.remove(at);
            if list.is_empty() {
                c.remove("volumeMounts");
            }
        }
        if let Some(name) = &volume {
            let list = spec.get_mut("volumes")?.as_array_mut()?;
            let at = list.iter().position(|v| v["name"] == name.as_str())?;
            list.remove(at);
            if list.is_empty() {
                spec.remove("volumes");
            }
        }
        Some(())
    })();
    let out: String = lines
        .lines
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop_lines.contains(i))
        .map(|(_, l)| *l)
        .collect();
    let edited =
        yaml_value(&out, file).map_err(|e| err(format!("edit produced invalid YAML: {e}")))?;
    let after = ApiServerManifest::parse(&out, file)?;
    if removed.is_none()
        || edited != expected
        || after.flag(CONFIG_FLAG).is_some()
        || after.flag(RELOAD_FLAG).is_some()
    {
        return Err(unsupported("this manifest"));
    }
    Ok(Disabled {
        text: out,
        flags,
        mount: mount_path,
        volume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn mount() -> (PathBuf, PathBuf) {
        (
            PathBuf::from("/etc/kubernetes/enc"),
            PathBuf::from("/etc/kubernetes/enc/encryption-config.yaml"),
        )
    }

    fn enable_text(text: &str) -> Result<String, ManifestError> {
        let (dir, file) = mount();
        enable(
            text,
            Path::new("m.yaml"),
            &EncryptionMount {
                dir: &dir,
                config_file: &file,
            },
            "encryption-config",
        )
    }

    #[test]
    fn adds_flag_mount_and_volume_and_keeps_every_other_line() {
        let text = "\
# kept comment
apiVersion: v1
kind: Pod
spec:
  containers:
  - command:
    - kube-apiserver
    - --etcd-servers=https://127.0.0.1:2379   # inline comment kept
    image: \"registry.k8s.io/kube-apiserver:v1.32.0\"
    name: kube-apiserver
    volumeMounts:
    - mountPath: /etc/kubernetes/pki
      name: k8s-certs
      readOnly: true
  - name: sidecar
    image: busybox
  hostNetwork: true
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki
      type: DirectoryOrCreate
    name: k8s-certs
status: {}";
        let out = enable_text(text).unwrap();
        let added: Vec<&str> = diff_added(text, &out);
        assert_eq!(
            added,
            [
                "    - --encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml",
                "    - --encryption-provider-config-automatic-reload=true",
                "    - mountPath: /etc/kubernetes/enc",
                "      name: encryption-config",
                "      readOnly: true",
                "  - hostPath:",
                "      path: /etc/kubernetes/enc",
                "      type: DirectoryOrCreate",
                "    name: encryption-config",
            ]
        );
        let m = ApiServerManifest::parse(&out, Path::new("m.yaml")).unwrap();
        assert_eq!(
            m.encryption_provider_config().unwrap(),
            Some(PathBuf::from("/etc/kubernetes/enc/encryption-config.yaml"))
        );
        assert_eq!(m.flag(RELOAD_FLAG), Some("true"));
        // Twice: refused, it is enabled.
        let e = enable_text(&out).unwrap_err().to_string();
        assert!(e.contains("already enabled"), "{e}");
    }

    /// The lines of `new` that are not in `old`, in order (old's lines must all be kept, in
    /// order).
    fn diff_added<'a>(old: &str, new: &'a str) -> Vec<&'a str> {
        let mut old_lines = old.lines().peekable();
        let mut added = Vec::new();
        for line in new.lines() {
            if old_lines.peek() == Some(&line) {
                old_lines.next();
            } else {
                added.push(line);
            }
        }
        assert_eq!(old_lines.next(), None, "an original line was lost");
        added
    }

    #[test]
    fn disable_takes_out_exactly_what_enable_put_in() {
        let text = "\
# kept comment
apiVersion: v1
kind: Pod
spec:
  containers:
  - command:
    - kube-apiserver
    - --etcd-servers=https://127.0.0.1:2379   # inline comment kept
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    name: kube-apiserver
    volumeMounts:
    - mountPath: /etc/kubernetes/pki
      name: k8s-certs
      readOnly: true
  hostNetwork: true
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki
      type: DirectoryOrCreate
    name: k8s-certs
status: {}
";
        let enabled = enable_text(text).unwrap();
        let d = disable(&enabled, Path::new("m.yaml")).unwrap();
        assert_eq!(d.text, text);
        assert_eq!(
            d.flags,
            [
                "--encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml",
                "--encryption-provider-config-automatic-reload=true"
            ]
        );
        assert_eq!(d.mount.as_deref(), Some("/etc/kubernetes/enc"));
        assert_eq!(d.volume.as_deref(), Some("encryption-config"));
        let e = disable(text, Path::new("m.yaml")).unwrap_err().to_string();
        assert!(e.contains("not enabled"), "{e}");

        // Lists enable created are removed whole.
        let bare = "spec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --etcd-servers=http://e:2379\n";
        let d = disable(&enable_text(bare).unwrap(), Path::new("m.yaml")).unwrap();
        assert_eq!(d.text, bare);
    }

    #[test]
    fn disable_keeps_a_mount_something_else_uses() {
        // The configuration lives in the certificates' directory: only the flags go.
        let text = "spec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --encryption-provider-config=/etc/kubernetes/pki/enc.yaml\n    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt\n    volumeMounts:\n    - mountPath: /etc/kubernetes/pki\n      name: k8s-certs\n  volumes:\n  - hostPath:\n      path: /etc/kubernetes/pki\n    name: k8s-certs\n";
        let d = disable(text, Path::new("m.yaml")).unwrap();
        assert_eq!(
            d.text,
            text.replace(
                "    - --encryption-provider-config=/etc/kubernetes/pki/enc.yaml\n",
                ""
            )
        );
        assert_eq!((d.mount, d.volume), (None, None));
        // `--flag value` in two items is not edited.
        let split = "spec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --encryption-provider-config\n    - /enc.yaml\n";
        let e = disable(split, Path::new("m.yaml")).unwrap_err().to_string();
        assert!(e.contains("by hand"), "{e}");
    }

    #[test]
    fn missing_volume_lists_are_created() {
        let text = "spec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --etcd-servers=http://e:2379\n";
        let out = enable_text(text).unwrap();
        let m = ApiServerManifest::parse(&out, Path::new("m.yaml")).unwrap();
        assert_eq!(m.mounts().len(), 1);
        assert_eq!(m.volumes().len(), 1);
        assert_eq!(
            m.host_path(Path::new("/etc/kubernetes/enc/encryption-config.yaml"), "x")
                .unwrap(),
            PathBuf::from("/etc/kubernetes/enc/encryption-config.yaml")
        );
    }

    #[test]
    fn unknown_layouts_are_refused_not_guessed() {
        for text in [
            "spec:\n  containers:\n  - name: kube-apiserver\n    command: [kube-apiserver, --etcd-servers=x]\n",
            "spec:\n  containers: [{name: kube-apiserver, command: [kube-apiserver]}]\n",
        ] {
            let e = enable_text(text).unwrap_err().to_string();
            assert!(e.contains("by hand"), "{text}: {e}");
        }
        let (dir, _) = mount();
        let bad = PathBuf::from("/etc/kubernetes/enc/a b.yaml");
        let e = enable(
            "spec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n",
            Path::new("m.yaml"),
            &EncryptionMount {
                dir: &dir,
                config_file: &bad,
            },
            "v",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("absolute path of letters"), "{e}");
    }
}
