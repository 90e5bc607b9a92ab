//! Crash-safe file writes for kiln: a temporary file in the same directory, fsync, rename,
//! fsync of the directory, so a reader sees the old file or the new one and never half of one.
//!
//! Every step passes through a [`failpoint`], which the `failpoints` feature lets tests turn
//! into an error (see [`failpoint`]); without the feature it compiles to nothing.

#![warn(missing_docs)]

use std::io::{self, Write};
use std::path::Path;

/// A step of writing a file, as named in `KILN_FAILPOINTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Creating or writing data.
    Write,
    /// `fsync` of a file or directory.
    Fsync,
    /// Renaming a temporary file or directory into place.
    Rename,
}

impl Op {
    /// The name used in `KILN_FAILPOINTS`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Fsync => "fsync",
            Self::Rename => "rename",
        }
    }
}

/// Writes `bytes` to `path` atomically.
///
/// # Errors
/// The I/O error of the step that failed; the old file, if any, is untouched and the
/// temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Writes a file atomically through a callback that fills the temporary file.
///
/// # Errors
/// The I/O error of the step that failed (see [`write_atomic`]).
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        failpoint(Op::Write, path)?;
        fill(&mut file)?;
        failpoint(Op::Fsync, path)?;
        file.sync_all()?;
        drop(file);
        rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Renames `from` to `to` (a file or a directory), through the `rename` failpoint of `to`.
///
/// # Errors
/// The I/O error of the rename.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    failpoint(Op::Rename, to)?;
    std::fs::rename(from, to)
}

/// Flushes a directory entry to disk (a no-op where directories cannot be opened).
///
/// # Errors
/// The I/O error of the fsync.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    failpoint(Op::Fsync, dir)?;
    match std::fs::File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(_) => Ok(()),
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Fails with "no space left on device" when the `failpoints` feature is on and
/// `KILN_FAILPOINTS` names this step for this path; succeeds otherwise.
///
/// `KILN_FAILPOINTS` is a comma-separated list of `OP:TEXT[:N]`: the `N`-th (default first)
/// `OP` (`write`, `fsync` or `rename`) on a path containing `TEXT` fails, once per process.
/// For example `write:model.bpk:3` fails the third write of a checkpoint's weights.
///
/// # Errors
/// The injected error.
#[inline]
pub fn failpoint(op: Op, path: &Path) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    {
        injected::check(op, path)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = (op, path);
        Ok(())
    }
}

#[cfg(feature = "failpoints")]
mod injected {
    use std::collections::HashMap;
    use std::io;
    use std::path::Path;
    use std::sync::{Mutex, OnceLock, PoisonError};

    use super::Op;

    struct Point {
        op: String,
        text: String,
        nth: usize,
    }

    fn points() -> &'static [Point] {
        static POINTS: OnceLock<Vec<Point>> = OnceLock::new();
        POINTS.get_or_init(|| {
            std::env::var("KILN_FAILPOINTS")
                .unwrap_or_default()
                .split(',')
                .filter_map(|spec| {
                    let mut parts = spec.trim().splitn(3, ':');
                    let op = parts.next()?.to_string();
                    let text = parts.next()?.to_string();
                    let nth = parts.next().map_or(Some(1), |n| n.parse().ok())?;
                    Some(Point { op, text, nth })
                })
                .collect()
        })
    }

    pub(super) fn check(op: Op, path: &Path) -> io::Result<()> {
        static HITS: OnceLock<Mutex<HashMap<usize, usize>>> = OnceLock::new();
        let path_text = path.to_string_lossy();
        for (i, point) in points().iter().enumerate() {
            if point.op != op.name() || !path_text.contains(point.text.as_str()) {
                continue;
            }
            let mut hits = HITS
                .get_or_init(Mutex::default)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = hits.entry(i).or_insert(0);
            *count += 1;
            if *count == point.nth {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "No space left on device (injected by KILN_FAILPOINTS {}:{}:{})",
                        point.op, point.text, point.nth
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.txt")]);
    }

    #[test]
    fn a_failing_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk gone"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk gone");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
