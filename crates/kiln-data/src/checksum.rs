//! SHA-256 checksums and `SHA256SUMS` files (the `sha256sum` format: `<hex>  <name>`).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// Name of the checksum list kept beside a dataset's files.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// Hex SHA-256 of a byte slice.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 of a file's contents, streamed.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses a `SHA256SUMS` file into `(file name, hex digest)` pairs.
///
/// # Errors
/// [`DataError::Io`] or [`DataError::BadChecksumList`].
pub fn read_sums(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut sums = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: &str| DataError::BadChecksumList {
            path: path.to_path_buf(),
            line: i + 1,
            message: message.to_string(),
        };
        let (digest, name) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `<sha256>  <file>`"))?;
        let name = name.trim_start().trim_start_matches('*');
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the checksum is not 64 hex digits"));
        }
        if name.contains('/') || name.contains('\\') || name.is_empty() {
            return Err(bad(
                "the file name must be a plain name in the same directory",
            ));
        }
        sums.push((name.to_string(), digest.to_ascii_lowercase()));
    }
    Ok(sums)
}

/// Writes a `SHA256SUMS` file for `names` in `dir`, atomically.
///
/// # Errors
/// [`DataError::Io`] when a file cannot be read or the list cannot be written.
pub fn write_sums(dir: &Path, names: &[String]) -> Result<PathBuf> {
    let mut text = String::new();
    for name in names {
        let digest = sha256_file(&dir.join(name))?;
        text.push_str(&format!("{digest}  {name}\n"));
    }
    let path = dir.join(SUMS_FILE);
    kiln_fs::write_atomic(&path, text.as_bytes()).map_err(|e| DataError::io(&path, e))?;
    Ok(path)
}

/// Verifies every file listed in `dir/SHA256SUMS`. Returns the files checked, or `None` when
/// the directory has no checksum list.
///
/// # Errors
/// [`DataError::ChecksumMismatch`] for the first file that differs, [`DataError::MissingFile`]
/// for a listed file that is absent.
pub fn verify_dir(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let sums_path = dir.join(SUMS_FILE);
    if !sums_path.exists() {
        return Ok(None);
    }
    let mut checked = Vec::new();
    for (name, expected) in read_sums(&sums_path)? {
        let path = dir.join(&name);
        if !path.exists() {
            return Err(DataError::MissingFile {
                dir: dir.to_path_buf(),
                name,
            });
        }
        verify_file(&path, &expected)?;
        checked.push(path);
    }
    Ok(Some(checked))
}

/// Checks one file against an expected hex digest.
///
/// # Errors
/// [`DataError::ChecksumMismatch`] when it differs.
pub fn verify_file(path: &Path, expected: &str) -> Result<()> {
    let found = sha256_file(path)?;
    if found == expected {
        Ok(())
    } else {
        Err(DataError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_changed_file_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), b"hello").unwrap();
        write_sums(dir.path(), &["a.bin".to_string()]).unwrap();
        assert_eq!(verify_dir(dir.path()).unwrap().unwrap().len(), 1);
        std::fs::write(dir.path().join("a.bin"), b"hellO").unwrap();
        let err = verify_dir(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    }
}
