//! The files around service definitions: the service files themselves, and the runbooks,
//! Dockerfiles and build contexts they name.
//!
//! Two rules, both learned from hostile input. Only *regular* files are read: a named pipe
//! (FIFO) where a service file or runbook is expected used to block `services validate` forever,
//! and a directory or device was reported as "not found". And paths named in a service file stay
//! inside the repository: `runbook = "../../etc/passwd"` or an absolute Dockerfile path would
//! make a deploy read — and a build send to the Docker engine — files the repository does not
//! hold.

use std::{
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Component, Path, PathBuf},
};

/// Why a file could not be read as a regular file; [`std::fmt::Display`] says what it is.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// Nothing at that path.
    #[error("does not exist")]
    Missing,
    /// Something that is not a regular file (its kind: `a directory`, `a named pipe (FIFO)`).
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    /// A symlink that points, directly or not, back to itself.
    #[error("is a symlink loop")]
    SymlinkLoop,
    /// Any other failure (permissions, invalid UTF-8).
    #[error("cannot be read: {0}")]
    Unreadable(io::Error),
}

impl From<io::Error> for FileProblem {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::NotFound => FileProblem::Missing,
            _ if error.raw_os_error() == Some(libc::ELOOP) => FileProblem::SymlinkLoop,
            _ => FileProblem::Unreadable(error),
        }
    }
}

/// What kind of non-regular file `file_type` is, in words; `None` for a regular file.
pub fn kind_of(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else {
        Some("not a file")
    }
}

/// Reads `path` as UTF-8 text, only if it is a regular file (following symlinks).
///
/// The file is opened with `O_NONBLOCK` and its type checked on the open descriptor (`fstat`),
/// so that neither opening a FIFO nor a FIFO swapped in after a check can block.
pub fn read_regular_file(path: &Path) -> Result<String, FileProblem> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if let Some(kind) = kind_of(file.metadata()?.file_type()) {
        return Err(FileProblem::NotRegular(kind));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(FileProblem::Unreadable)?;
    Ok(text)
}

/// Why a path named in a service file is not inside the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Outside {
    /// Absolute, or climbing above the root with `..`.
    #[error("is outside the repository")]
    Lexically,
    /// Inside by its text, but a symlink on the way leads out.
    #[error("is outside the repository (through a symlink)")]
    ThroughSymlink,
}

/// `root/relative`, if `relative` stays inside `root`: not absolute, never climbing above the
/// root with `..`, and — when it exists — not leading out through a symlink.
pub fn inside_repository(root: &Path, relative: &str) -> Result<PathBuf, Outside> {
    let mut depth: usize = 0;
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth = depth.checked_sub(1).ok_or(Outside::Lexically)?,
            Component::RootDir | Component::Prefix(_) => return Err(Outside::Lexically),
        }
    }
    let joined = root.join(relative);
    // Only an existing path can be resolved; a missing one is reported as missing by the caller.
    if let (Ok(root), Ok(resolved)) = (root.canonicalize(), joined.canonicalize()) {
        if !resolved.starts_with(&root) {
            return Err(Outside::ThroughSymlink);
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_climbing_out_of_the_root_are_outside() {
        let root = Path::new("/nonexistent-root");
        for inside in [".", "Dockerfile", "a/../b", "./a/b/../../c"] {
            assert!(inside_repository(root, inside).is_ok(), "{inside}");
        }
        for outside in ["..", "../x", "a/../../x", "/etc/passwd", "a/../.."] {
            assert_eq!(
                inside_repository(root, outside),
                Err(Outside::Lexically),
                "{outside}"
            );
        }
    }

    #[test]
    fn special_files_are_named_by_kind() {
        let directory = tempfile::tempdir().unwrap();
        let problem = read_regular_file(directory.path()).unwrap_err();
        assert_eq!(problem.to_string(), "is a directory, not a regular file");
        let problem = read_regular_file(&directory.path().join("missing")).unwrap_err();
        assert_eq!(problem.to_string(), "does not exist");
        let problem = read_regular_file(Path::new("/dev/null")).unwrap_err();
        assert_eq!(
            problem.to_string(),
            "is a character device, not a regular file"
        );
    }
}
