//! The one file writer for everything atrest writes to disk outside the store: keys, tokens,
//! kubeconfigs, encryption configurations, certificates, backups and manifest edits.
//!
//! Every write is atomic: the bytes go to a hidden temporary file in the target's directory,
//! created with the final mode from the start (never briefly readable by others), synced,
//! then moved into place and the directory synced. A crash leaves the old file or the new
//! one, never half of either.
#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of key material, tokens, kubeconfigs and configurations.
pub const PRIVATE: u32 = 0o600;
/// The mode of public material such as certificates.
pub const PUBLIC: u32 = 0o644;

/// What a write does when the target already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail with [`FileError::Exists`] and leave the file as it is.
    Refuse,
    /// Replace the file atomically.
    Replace,
}

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The target exists and the write was told not to replace it.
    #[error("{} already exists", .path.display())]
    Exists { path: PathBuf },
    /// The path has no file name (`/`, `..`).
    #[error("{} is not a file path", .path.display())]
    NotAFile { path: PathBuf },
    /// An I/O step failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// The step: "creating", "writing", "syncing", "replacing", "setting the mode of".
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Exists { path } | FileError::NotAFile { path } => path,
            FileError::Io { path, .. } => path,
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` with mode 0600 (see the module documentation).
pub fn write_private(path: &Path, bytes: &[u8], existing: Existing) -> Result<(), FileError> {
    write_atomic(path, bytes, PRIVATE, existing)
}

/// Writes `bytes` to `path` atomically with exactly `mode` (the umask does not narrow it).
/// With [`Existing::Refuse`] the file is linked into place, which fails if the name exists,
/// so two writers never both succeed.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    existing: Existing,
) -> Result<(), FileError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| FileError::NotAFile {
        path: path.to_path_buf(),
    })?;
    if existing == Existing::Refuse && path.exists() {
        return Err(FileError::Exists {
            path: path.to_path_buf(),
        });
    }
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        random_suffix()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        // The umask may have narrowed the mode; make it exact.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("setting the mode of", &tmp))?;
        f.write_all(bytes).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        drop(f);
        match existing {
            Existing::Replace => fs::rename(&tmp, path).map_err(io("replacing", path)),
            Existing::Refuse => match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(FileError::Exists {
                    path: path.to_path_buf(),
                }),
                Err(e) => Err(io("creating", path)(e)),
            },
        }
    })();
    // After a rename the temporary name is gone; after a link (or a failure) it is removed.
    let _ = fs::remove_file(&tmp);
    result?;
    // Make the new name durable; a directory that cannot be opened for sync is no error.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `dir` (and its parents) with mode 0700, or tightens an existing one to 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), FileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating", dir))?;
    let meta = fs::metadata(dir).map_err(io("reading", dir))?;
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io("setting the mode of", dir))?;
    }
    Ok(())
}

/// The file's mode if group or others may read or write it (a key file should be 0600 or
/// stricter), `None` if only the owner may.
pub fn readable_by_others(path: &Path) -> std::io::Result<Option<u32>> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// Sixteen hex digits from the OS random source, or the process id and a clock reading if
/// it fails: the name only has to differ from concurrent writers' (creation is exclusive).
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes[..4].copy_from_slice(&std::process::id().to_le_bytes());
        bytes[4..].copy_from_slice(&nanos.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn private_file_is_0600_with_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_private(&path, b"secret", Existing::Refuse).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(mode(&path), 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn refuse_keeps_the_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_private(&path, b"first", Existing::Refuse).unwrap();
        let err = write_private(&path, b"second", Existing::Refuse).unwrap_err();
        assert!(matches!(err, FileError::Exists { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("{} already exists", path.display())
        );
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn replace_swaps_contents_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new", Existing::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        write_atomic(&path, b"cert", PUBLIC, Existing::Replace).unwrap();
        assert_eq!(mode(&path), 0o644);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn missing_directory_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("key");
        let err = write_private(&path, b"x", Existing::Replace).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::Io {
                    what: "creating",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn no_file_name_is_refused() {
        let err = write_private(Path::new("/"), b"x", Existing::Replace).unwrap_err();
        assert!(matches!(err, FileError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn private_dir_is_created_and_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a").join("b");
        ensure_private_dir(&sub).unwrap();
        assert_eq!(mode(&sub), 0o700);
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&sub).unwrap();
        assert_eq!(mode(&sub), 0o700);
    }

    #[test]
    fn readable_by_others_reports_loose_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_private(&path, b"x", Existing::Refuse).unwrap();
        assert_eq!(readable_by_others(&path).unwrap(), None);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(readable_by_others(&path).unwrap(), Some(0o640));
    }
}
