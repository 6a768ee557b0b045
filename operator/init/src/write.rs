//! Atomic file writes into the mount path.
//!
//! Each file is written to a hidden temporary file in the same directory,
//! flushed to storage, given its final permission bits, and renamed over the
//! old one; the directory is then synced. A reader therefore sees either the
//! old contents or the new, never a partial file, and never a file with
//! wider permissions than intended.
//!
//! Permission bits are `0440` by default: the pod's `fsGroup` owns the
//! volume, so an app container running as a different user in that group can
//! read the files, and nobody can modify them. `SIGNET_FILE_MODE=0400`
//! restricts them to the user `signet-init` runs as (when the app runs as
//! that same user).
//!
//! The temporary names start with a dot, which no file name from a
//! SecretGrant may, so they never clash with a real file.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rand::Rng as _;

use crate::contract;

/// A file that could not be written (or removed).
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}")]
pub struct Error {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `dir/name` atomically with permission bits `mode`.
/// `name` must be a bare file name (checked, so a bug elsewhere cannot
/// write outside `dir`), or the readiness marker.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), Error> {
    let target = dir.join(name);
    if !(contract::is_file_name(name) || name == contract::READY_MARKER) {
        return Err(Error {
            action: "write",
            path: target,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a bare file name"),
        });
    }
    let temp = dir.join(format!(
        ".{name}.{:016x}.tmp",
        rand::thread_rng().r#gen::<u64>()
    ));
    let result = write_temp(&temp, contents, mode)
        .and_then(|()| fs::rename(&temp, &target).map_err(error("rename into place", &target)));
    if result.is_err() {
        // Best effort: the temporary file holds secret bytes.
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

fn write_temp(temp: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        // Created with the final bits (minus the umask) so the secret is
        // never readable more widely, even before the chmod below.
        .mode(mode)
        .open(temp)
        .map_err(error("create", temp))?;
    file.write_all(contents).map_err(error("write", temp))?;
    // Explicit, because the umask may have removed bits we want (group read).
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(error("chmod", temp))?;
    file.sync_all().map_err(error("sync", temp))
}

/// Removes `dir/name` if it exists (a field that disappeared on rotation).
pub fn remove(dir: &Path, name: &str) -> Result<(), Error> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(error("remove", &path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(error("sync directory", dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically_with_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "a", b"one", 0o440).unwrap();
        write_atomic(dir.path(), "a", b"two", 0o400).unwrap();
        let path = dir.path().join("a");
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn refuses_paths() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/b", ".hidden", ""] {
            assert!(write_atomic(dir.path(), bad, b"x", 0o440).is_err(), "{bad}");
        }
        remove(dir.path(), "absent").unwrap();
    }

    #[test]
    fn a_field_that_disappeared_is_removed_and_a_failed_removal_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "old", b"value", 0o440).unwrap();
        remove(dir.path(), "old").unwrap();
        assert!(!dir.path().join("old").exists());
        // Only "already gone" counts as done: a path that cannot be
        // removed (here a directory) is an error the sidecar reports.
        fs::create_dir(dir.path().join("stuck")).unwrap();
        assert!(remove(dir.path(), "stuck").is_err());
        assert!(dir.path().join("stuck").exists());
    }
}
