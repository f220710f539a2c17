//! The build context: which files of the context directory are sent to the engine, packed as a
//! tar stream, exactly as the `docker build` CLI (classic builder) sends them.
//!
//! The walk follows moby's `archive.TarWithOptions`: entries in lexical order; an excluded file
//! is left out; an excluded directory is skipped whole unless some exception pattern (`!...`)
//! starts with its path, in which case it is walked (its own entry left out) so the exception can
//! re-include files below it. Like the CLI, `.dockerignore` and the Dockerfile are always sent
//! (the CLI appends `!.dockerignore` and `!DOCKERFILE` when the patterns would exclude them; the
//! engine itself then drops them from what `COPY` sees). A Dockerfile outside the context
//! directory is added as `.dockerfile.<hash of its content>`, as the CLI does with a random name;
//! a content hash keeps the engine's build cache warm across builds.
//!
//! Entries carry their permission bits and modification times, owner 0:0 (the CLI's
//! `ChownOpts`). Regular files, directories and symbolic links (not followed) are sent; sockets,
//! FIFOs and devices are left out. Packing runs on a blocking thread and streams chunks to the
//! HTTP request as they are produced, so reading files and uploading overlap.

use std::{
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    dockerignore::{IgnoreRules, ParentMatches},
    ImageError,
};

/// Size of the chunks handed to the HTTP body.
const CHUNK_SIZE: usize = 1 << 20;

/// A context directory with its ignore rules, ready to be packed.
#[derive(Debug, Clone)]
pub struct BuildContext {
    directory: PathBuf,
    rules: IgnoreRules,
    /// The Dockerfile's path inside the context, `/`-separated, as the engine's `dockerfile`
    /// parameter names it.
    dockerfile_name: String,
    /// The Dockerfile's content when it lies outside the context and must be added.
    outside_dockerfile: Option<Vec<u8>>,
}

/// What was packed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextSummary {
    /// Regular files and links sent.
    pub files: u64,
    /// Directories sent.
    pub directories: u64,
    /// Size of the tar stream in bytes.
    pub bytes: u64,
}

impl BuildContext {
    /// Prepares the context `directory` with `dockerfile` (both as paths the process can open).
    pub fn new(directory: &Path, dockerfile: &Path) -> Result<Self, ImageError> {
        if !directory.is_dir() {
            return Err(ImageError::ContextMissing(directory.to_path_buf()));
        }
        if !dockerfile.is_file() {
            return Err(ImageError::DockerfileMissing(dockerfile.to_path_buf()));
        }
        let ignore_path = directory.join(".dockerignore");
        let mut rules = match fs::read(&ignore_path) {
            Ok(bytes) => {
                IgnoreRules::parse(&String::from_utf8_lossy(&bytes)).map_err(|source| {
                    ImageError::IgnoreFile {
                        path: ignore_path.clone(),
                        source,
                    }
                })?
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => IgnoreRules::default(),
            Err(source) => {
                return Err(ImageError::ContextRead {
                    path: ignore_path,
                    source,
                })
            }
        };
        let read_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageError::ContextRead { path, source }
        };
        let absolute_directory = fs::canonicalize(directory).map_err(read_error(directory))?;
        let absolute_dockerfile = fs::canonicalize(dockerfile).map_err(read_error(dockerfile))?;
        let (dockerfile_name, outside_dockerfile) =
            match absolute_dockerfile.strip_prefix(&absolute_directory) {
                Ok(relative) => (slash_path(relative), None),
                Err(_) => {
                    let content = fs::read(dockerfile).map_err(read_error(dockerfile))?;
                    let digest = super::sha256_digest(&content);
                    (format!(".dockerfile.{}", &digest[7..27]), Some(content))
                }
            };
        // The CLI's TrimBuildFilesFromExcludes: never leave out the files the build needs.
        if rules.excludes(".dockerignore") {
            rules.push_exception(".dockerignore");
        }
        if outside_dockerfile.is_none() && rules.excludes(&dockerfile_name) {
            rules.push_exception(&dockerfile_name);
        }
        Ok(Self {
            directory: directory.to_path_buf(),
            rules,
            dockerfile_name,
            outside_dockerfile,
        })
    }

    /// The Dockerfile's name inside the context (the engine's `dockerfile` parameter).
    pub fn dockerfile_name(&self) -> &str {
        &self.dockerfile_name
    }

    /// Writes the context as a tar archive to `writer`.
    pub fn write_tar<W: Write>(&self, writer: W) -> Result<ContextSummary, ImageError> {
        let mut counter = CountingWriter {
            inner: writer,
            bytes: 0,
        };
        let mut summary = ContextSummary::default();
        {
            let mut builder = tar::Builder::new(&mut counter);
            builder.mode(tar::HeaderMode::Complete);
            self.walk(&self.directory, "", None, &mut builder, &mut summary)?;
            if let Some(content) = &self.outside_dockerfile {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(content.len() as u64);
                header.set_mtime(0);
                header.set_uid(0);
                header.set_gid(0);
                builder
                    .append_data(&mut header, &self.dockerfile_name, content.as_slice())
                    .map_err(self.write_error())?;
                summary.files += 1;
            }
            builder.finish().map_err(self.write_error())?;
        }
        counter.flush().map_err(self.write_error())?;
        summary.bytes = counter.bytes;
        Ok(summary)
    }

    /// Packs the context on a blocking thread, streaming the tar in chunks. The returned task
    /// ends with the summary, or the error that cut the stream short.
    pub fn into_stream(
        self,
    ) -> (
        impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
        tokio::task::JoinHandle<Result<ContextSummary, ImageError>>,
    ) {
        let (sender, receiver) = mpsc::channel::<Result<Bytes, io::Error>>(8);
        let task = tokio::task::spawn_blocking(move || {
            let writer = ChunkWriter {
                sender: sender.clone(),
                buffer: Vec::with_capacity(CHUNK_SIZE),
            };
            let result = self.write_tar(io::BufWriter::with_capacity(CHUNK_SIZE, writer));
            if let Err(error) = &result {
                // Fail the upload too, so the engine does not build a truncated context.
                let _ = sender.blocking_send(Err(io::Error::other(error.to_string())));
            }
            result
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        (stream, task)
    }

    fn write_error(&self) -> impl Fn(io::Error) -> ImageError + '_ {
        move |source| ImageError::ContextRead {
            path: self.directory.clone(),
            source,
        }
    }

    fn walk<W: Write>(
        &self,
        directory: &Path,
        prefix: &str,
        parent: Option<&ParentMatches>,
        builder: &mut tar::Builder<W>,
        summary: &mut ContextSummary,
    ) -> Result<(), ImageError> {
        let read_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageError::ContextRead { path, source }
        };
        let mut entries = fs::read_dir(directory)
            .map_err(read_error(directory))?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_error(directory))?;
        // Go's WalkDir order: by name, bytewise.
        entries.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in entries {
            let path = directory.join(&name);
            let relative = format!("{prefix}{}", name.to_string_lossy());
            let metadata = fs::symlink_metadata(&path).map_err(read_error(&path))?;
            let (excluded, matches) = if self.rules.is_empty() {
                (false, ParentMatches::default())
            } else {
                self.rules.matches(&relative, parent)
            };
            let file_type = metadata.file_type();
            if excluded {
                if file_type.is_dir()
                    && self.rules.has_exceptions()
                    && self.rules.exception_may_reach_into(&relative)
                {
                    let prefix = format!("{relative}/");
                    self.walk(&path, &prefix, Some(&matches), builder, summary)?;
                }
                continue;
            }
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&metadata, tar::HeaderMode::Complete);
            header.set_uid(0);
            header.set_gid(0);
            // Owner names would leak the build machine's user names into the context.
            let _ = header.set_username("");
            let _ = header.set_groupname("");
            if file_type.is_dir() {
                builder
                    .append_data(&mut header, format!("{relative}/"), io::empty())
                    .map_err(read_error(&path))?;
                summary.directories += 1;
                let prefix = format!("{relative}/");
                self.walk(&path, &prefix, Some(&matches), builder, summary)?;
            } else if file_type.is_symlink() {
                let target = fs::read_link(&path).map_err(read_error(&path))?;
                builder
                    .append_link(&mut header, &relative, &target)
                    .map_err(read_error(&path))?;
                summary.files += 1;
            } else if file_type.is_file() {
                let file = fs::File::open(&path).map_err(read_error(&path))?;
                let expected = metadata.len();
                let reader = ExactReader {
                    inner: file.take(expected),
                    remaining: expected,
                };
                builder
                    .append_data(&mut header, &relative, reader)
                    .map_err(read_error(&path))?;
                summary.files += 1;
            }
        }
        Ok(())
    }
}

/// A path relative to the context as the engine names it: `/`-separated.
fn slash_path(path: &Path) -> String {
    path.components()
        .map(|component| component.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads exactly the size the tar header announced; a file that shrank while being packed is an
/// error (a short entry would corrupt every entry after it).
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let read = self.inner.read(buffer)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while the build context was being packed",
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hands written bytes to the async side in chunks.
struct ChunkWriter {
    sender: mpsc::Sender<Result<Bytes, io::Error>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_SIZE),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buffer);
        if self.buffer.len() >= CHUNK_SIZE {
            self.send_buffer()?;
        }
        Ok(buffer.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(context: &BuildContext) -> Vec<String> {
        let mut bytes = Vec::new();
        context.write_tar(&mut bytes).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                assert_eq!(entry.header().uid().unwrap(), 0);
                path
            })
            .collect()
    }

    #[test]
    fn packs_with_rules_and_keeps_build_files() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        for file in [
            "Dockerfile",
            "a.txt",
            "logs/x.log",
            "src/main.rs",
            "src/keep.md",
        ] {
            let path = root.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, file).unwrap();
        }
        fs::write(
            root.join(".dockerignore"),
            "*\n!src\nsrc/*.md\n!src/keep.md\n",
        )
        .unwrap();
        let context = BuildContext::new(root, &root.join("Dockerfile")).unwrap();
        assert_eq!(context.dockerfile_name(), "Dockerfile");
        assert_eq!(
            listing(&context),
            [
                ".dockerignore",
                "Dockerfile",
                "src/",
                "src/keep.md",
                "src/main.rs"
            ]
        );
    }

    #[test]
    fn dockerfile_outside_the_context_is_added_under_a_content_name() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        fs::create_dir_all(root.join("context")).unwrap();
        fs::write(root.join("context/app"), "x").unwrap();
        fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        let context = BuildContext::new(&root.join("context"), &root.join("Dockerfile")).unwrap();
        assert!(context.dockerfile_name().starts_with(".dockerfile."));
        assert_eq!(listing(&context), ["app", context.dockerfile_name()]);
    }

    #[test]
    fn missing_paths_are_errors() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        assert!(matches!(
            BuildContext::new(&root.join("nope"), &root.join("Dockerfile")),
            Err(ImageError::ContextMissing(_))
        ));
        assert!(matches!(
            BuildContext::new(root, &root.join("Dockerfile")),
            Err(ImageError::DockerfileMissing(_))
        ));
    }
}
