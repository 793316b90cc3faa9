//! `/system/secrets`: one file per secret under `STATE/secrets/` (folder 0700, files 0600,
//! written to a temporary file and renamed). Values go in, names come out: nothing returns a
//! value in clear.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("name: `{0}` is not a valid secret name (letters, digits, `-`, `_`, `.`; at most 253)")]
    Name(String),
    #[error("secret `{0}` already exists")]
    Exists(String),
    #[error("secret `{0}` not found")]
    NotFound(String),
    #[error("secret store: {0}")]
    Io(String),
}

fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn path(dir: &Path, name: &str) -> Result<PathBuf, SecretError> {
    if !valid(name) {
        return Err(SecretError::Name(name.to_string()));
    }
    Ok(dir.join(name))
}

fn io(e: std::io::Error) -> SecretError {
    SecretError::Io(e.to_string())
}

pub fn list(dir: &Path) -> Result<Vec<String>, SecretError> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(io(e)),
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if valid(&n) {
            names.push(n);
        }
    }
    names.sort();
    Ok(names)
}

/// Creates (`create`) or replaces an existing secret.
pub fn write(dir: &Path, name: &str, value: &[u8], create: bool) -> Result<(), SecretError> {
    let target = path(dir, name)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    match (create, target.exists()) {
        (true, true) => return Err(SecretError::Exists(name.to_string())),
        (false, false) => return Err(SecretError::NotFound(name.to_string())),
        _ => {}
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(value).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &target).map_err(io)
}

pub fn delete(dir: &Path, name: &str) -> Result<(), SecretError> {
    let target = path(dir, name)?;
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(SecretError::NotFound(name.to_string()))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_files_and_names_are_checked() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("secrets");
        write(&dir, "db", b"pw", true).expect("create");
        assert!(matches!(
            write(&dir, "db", b"x", true),
            Err(SecretError::Exists(_))
        ));
        assert!(matches!(
            write(&dir, "nope", b"x", false),
            Err(SecretError::NotFound(_))
        ));
        assert!(matches!(
            write(&dir, "../x", b"x", true),
            Err(SecretError::Name(_))
        ));
        write(&dir, "db", b"pw2", false).expect("update");
        let mode = std::fs::metadata(dir.join("db"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(&dir).expect("meta").permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert_eq!(std::fs::read(dir.join("db")).expect("read"), b"pw2");
        assert_eq!(list(&dir).expect("list"), vec!["db".to_string()]);
        delete(&dir, "db").expect("delete");
        assert!(list(&dir).expect("list").is_empty());
    }
}
