//! Fetching CIFAR-10: downloads the official binary archive, checks its MD5 and extracts it
//! atomically, the way `keras.datasets.cifar10.load_data()` does. Everything is staged in
//! `.simdnn-*` temporaries beside the destination and removed on any error: a new data directory
//! appears complete or not at all, and an existing one only gains whole files. Imports only
//! `error` from the crate.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use crate::{Error, Result};

/// Where the CIFAR-10 authors publish the binary version.
pub const OFFICIAL_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of the archive at [`OFFICIAL_URL`], as published there.
pub const OFFICIAL_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// Size of the archive at [`OFFICIAL_URL`].
pub const OFFICIAL_BYTES: u64 = 170_052_171;

/// The files a complete data directory holds.
pub const FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// The directory the official archive keeps its members in.
const ARCHIVE_DIR: &str = "cifar-10-batches-bin";

// Generous enough for slow links; they only bound how long a dead network can hang us.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Where to download from and what the archive must hash to.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub url: String,
    /// Expected MD5 of the archive, lowercase hex.
    pub md5: String,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl FetchOptions {
    /// URL from `SIMDNN_CIFAR10_URL`, checksum from `SIMDNN_CIFAR10_MD5`, else the official ones;
    /// progress on.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        FetchOptions {
            url: var("SIMDNN_CIFAR10_URL").unwrap_or_else(|| OFFICIAL_URL.into()),
            md5: var("SIMDNN_CIFAR10_MD5").map_or_else(|| OFFICIAL_MD5.into(), |m| m.trim().to_ascii_lowercase()),
            progress: true,
        }
    }
}

/// True when `dir` holds all of FILES.
pub fn is_complete(dir: &Path) -> bool {
    missing_files(dir).is_empty()
}

/// Downloads `opts.url`, checks its MD5 against `opts.md5`, and extracts the archive's
/// `cifar-10-batches-bin/` members into `dest` (created; its parent must exist or is created).
pub fn fetch_cifar10(dest: &Path, opts: &FetchOptions) -> Result<()> {
    // `Path::new("cifar").parent()` is `Some("")`, which names no directory.
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;

    let archive = download(parent, opts)?;
    let staging = extract(archive.path(), parent, &opts.url)?;
    let missing = missing_files(staging.path());
    if !missing.is_empty() {
        return Err(Error::Download(format!("the archive from {} lacks {}", opts.url, missing.join(", "))));
    }
    install(staging, dest)
}

/// The entries of FILES that `dir` lacks (or holds as something other than a file).
fn missing_files(dir: &Path) -> Vec<&'static str> {
    FILES.into_iter().filter(|f| !dir.join(f).is_file()).collect()
}

/// Streams `opts.url` into a temporary file in `parent`, hashing as the bytes arrive.
fn download(parent: &Path, opts: &FetchOptions) -> Result<Scratch> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        // ureq decodes gzip transfer encoding; a server applying it to a .tar.gz would hand us
        // different bytes than the checksum covers.
        .accept_encoding("identity")
        .build()
        .into();
    let response = agent.get(&opts.url).call().map_err(|e| request_error(&opts.url, e))?;
    let body = response.into_body();
    let progress = progress_bar(opts.progress, body.content_length());
    let mut reader = body.into_reader();

    let scratch = Scratch::create(parent, ".simdnn-download-", false)?;
    let mut file = File::create(scratch.path()).map_err(|e| Error::io(scratch.path(), e))?;
    let mut hasher = Md5::new();
    copy_chunks(
        &mut reader,
        |chunk| {
            hasher.update(chunk);
            progress.inc(chunk.len() as u64);
            file.write_all(chunk).map_err(|e| Error::io(scratch.path(), e))
        },
        |e, received| {
            progress.abandon();
            Error::Download(format!("the download of {} broke off after {received} bytes: {e}", opts.url))
        },
    )?;
    progress.finish();

    let actual = format!("{:x}", hasher.finalize());
    if !actual.eq_ignore_ascii_case(&opts.md5) {
        return Err(Error::Download(format!(
            "checksum mismatch for {}: expected MD5 {}, got {actual}; the download was discarded",
            opts.url, opts.md5
        )));
    }
    Ok(scratch)
}

/// Turns a failed request into a message that says what to do about it.
fn request_error(url: &str, err: ureq::Error) -> Error {
    use ureq::Error as E;
    let message = match err {
        E::StatusCode(status) => format!("GET {url} returned HTTP status {status}"),
        // Failures before any response arrives: no route, no DNS, nobody answering.
        E::Io(_) | E::HostNotFound | E::ConnectionFailed | E::Timeout(_) => format!(
            "cannot reach {url} ({err}); this machine seems to be offline. Pass `--data DIR` \
             (or set SIMDNN_DATA) pointing at a directory that already holds {}",
            FILES.join(", ")
        ),
        other => format!("GET {url} failed: {other}"),
    };
    Error::Download(message)
}

fn progress_bar(enabled: bool, len: Option<u64>) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (ProgressBar::new(len), "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"),
        None => (ProgressBar::new_spinner(), "{msg} {spinner} {bytes} {bytes_per_sec}"),
    };
    // The templates are constants; falling back to the default style keeps a typo harmless.
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.with_style(style.progress_chars("=> ")).with_message("CIFAR-10")
}

/// Extracts the archive's data files into a fresh temporary directory in `parent`.
fn extract(archive: &Path, parent: &Path, url: &str) -> Result<Scratch> {
    let staging = Scratch::create(parent, ".simdnn-extract-", true)?;
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let bad_archive = |e: io::Error| Error::Download(format!("the archive from {url} is unreadable: {e}"));

    let mut tar = tar::Archive::new(GzDecoder::new(file));
    for entry in tar.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        let member = entry.path().map_err(bad_archive)?.into_owned();
        let Some(name) = member_name(&member).map_err(|reason| {
            Error::Download(format!("the archive from {url} holds {}: {reason}", member.display()))
        })?
        else {
            continue;
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let target = staging.path().join(name);
        let mut out = File::create(&target).map_err(|e| Error::io(&target, e))?;
        copy_chunks(
            &mut entry,
            |chunk| out.write_all(chunk).map_err(|e| Error::io(&target, e)),
            |e, _| bad_archive(e),
        )?;
    }
    Ok(staging)
}

/// The file name a member is extracted to: members sit in `cifar-10-batches-bin/` or at the
/// top level; others are skipped (`None`). Paths that could escape the staging directory are
/// refused rather than skipped, since only a malicious archive holds them.
fn member_name(path: &Path) -> std::result::Result<Option<&OsStr>, &'static str> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("a path with `..` is refused"),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path is refused"),
        }
    }
    Ok(match parts[..] {
        [name] => Some(name),
        [dir, name] if dir == ARCHIVE_DIR => Some(name),
        _ => None,
    })
}

/// Feeds `reader` to `sink` chunk by chunk. Read errors go through `read_error`, with the
/// bytes copied so far, so they are blamed on the source rather than on the file written.
fn copy_chunks(
    mut reader: impl Read,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
    read_error: impl FnOnce(io::Error, u64) -> Error,
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                sink(&buf[..n])?;
                copied += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e, copied)),
        }
    }
}

/// Moves the staged files to `dest`: one rename of the whole directory when `dest` is new,
/// else one rename per file into the existing directory.
fn install(staging: Scratch, dest: &Path) -> Result<()> {
    if !dest.exists() {
        fs::rename(staging.path(), dest).map_err(|e| Error::io(dest, e))?;
        staging.keep();
        return Ok(());
    }
    let entries = fs::read_dir(staging.path()).map_err(|e| Error::io(staging.path(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(staging.path(), e))?;
        let target = dest.join(entry.file_name());
        fs::rename(entry.path(), &target).map_err(|e| Error::io(&target, e))?;
    }
    Ok(())
}

/// A temporary file or directory, removed when dropped unless kept.
struct Scratch {
    path: PathBuf,
    dir: bool,
    keep: bool,
}

impl Scratch {
    /// Creates `parent/{prefix}{pid}-{n}` exclusively; a stale one left by an earlier process
    /// with the same id is skipped over.
    fn create(parent: &Path, prefix: &str, dir: bool) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        for _ in 0..100 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{prefix}{}-{n}", std::process::id()));
            let made = if dir { fs::create_dir(&path) } else { File::create_new(&path).map(drop) };
            match made {
                Ok(()) => {
                    return Ok(Scratch { path, dir, keep: false });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Err(Error::io(parent, io::Error::new(io::ErrorKind::AlreadyExists, format!("no free name for {prefix}*"))))
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the path in place: it has been renamed to its final name.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Best effort: a leftover `.simdnn-*` entry is harmless and named for what it is.
        let _ = if self.dir { fs::remove_dir_all(&self.path) } else { fs::remove_file(&self.path) };
    }
}
