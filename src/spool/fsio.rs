//! The file operations the spool is built from: private files and directories, fsync of files
//! and directories, atomic replace, and the spool lock. (The renames that move a message
//! between `tmp/`, `queue/` and `failed/` are in `commit`, `mod`, `admin` and `recover`; each
//! is followed by an fsync of the directories involved before it is reported done.)
//!
//! Invariants: files are created 0600 and directories 0700 (the queue holds other people's
//! mail); a file is fsynced before it is renamed into place, and the directory is fsynced after
//! the rename, so a rename that has been reported durable survives a power cut.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates `dir` with mode 0700 if it does not exist.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` (which must not exist) with mode 0600, writes `parts` in order and fsyncs
/// the data. On error the partial file is removed.
pub fn write_new(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_data()
    })();
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Fsyncs a directory, making renames and unlinks in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dest` with `bytes` atomically: write `tmp`, fsync, rename over `dest`, fsync the
/// directory of `dest`. Readers see the old or the new content, never a mix.
pub fn replace(tmp: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    write_new(tmp, &[bytes])?;
    if let Err(e) = fs::rename(tmp, dest) {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Why the spool lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; its pid, if it wrote one.
    Held(Option<u32>),
    /// The lock file could not be opened or locked.
    Io(io::Error),
}

/// Takes the exclusive lock on `path` (created 0600 if missing) and writes our pid into it.
/// The lock lasts as long as the returned file is open, and the kernel drops it when the
/// process dies, however it dies.
pub fn lock(path: &Path) -> Result<File, LockError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(LockError::Io)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(LockError::Held(pid));
        }
        Err(fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
    }
    f.set_len(0).map_err(LockError::Io)?;
    writeln!(f, "{}", std::process::id()).map_err(LockError::Io)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_and_dirs_are_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("q");
        private_dir(&d).unwrap();
        private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = d.join("m");
        write_new(&f, &[b"a", b"b"]).unwrap();
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read(&f).unwrap(), b"ab");
        assert!(write_new(&f, &[b"c"]).is_err(), "never overwrites");
    }

    #[test]
    fn replace_swaps_content() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("s");
        let tmp = t.path().join("s.tmp");
        replace(&tmp, &dest, b"one").unwrap();
        replace(&tmp, &dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert!(!tmp.exists());
    }

    #[test]
    fn second_lock_is_refused_with_the_holders_pid() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lock");
        let held = lock(&p).unwrap();
        match lock(&p) {
            Err(LockError::Held(Some(pid))) => assert_eq!(pid, std::process::id()),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(held);
        lock(&p).unwrap();
    }
}
