//! The command-line face of `atrest-files`: messages that say how to go on.

use std::path::Path;

use atrest_files::{Existing, FileError};

/// Writes `contents` to a file readable only by its owner (0600), atomically. Refuses to
/// replace an existing file unless `overwrite`.
pub fn write_private(path: &Path, contents: &[u8], overwrite: bool) -> Result<(), String> {
    let existing = if overwrite {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    atrest_files::write_private(path, contents, existing).map_err(|e| match e {
        FileError::Exists { .. } => format!("{e} (use --force to replace it)"),
        other => other.to_string(),
    })
}

pub use atrest_files::readable_by_others;
