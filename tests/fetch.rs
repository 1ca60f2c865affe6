//! `data::fetch` against a small CIFAR-format archive served over HTTP on 127.0.0.1: the good
//! path, checksum and transport failures, and unsafe or incomplete archives. No other network.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::thread;

use flate2::Compression;
use flate2::write::GzEncoder;
use md5::{Digest, Md5};
use simdnn::data::fetch::{FILES, FetchOptions, fetch_cifar10, is_complete};

const RECORD: usize = 3073;

/// A few CIFAR records per file, distinct per file so a mix-up shows.
fn batch(seed: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for record in 0..3 {
        bytes.push(((seed + record) % 10) as u8);
        bytes.extend((0..RECORD - 1).map(|i| (i * 7 + seed * 31 + record) as u8));
    }
    bytes
}

/// The six data files, as (name, contents).
fn cifar_files() -> Vec<(&'static str, Vec<u8>)> {
    FILES.iter().enumerate().map(|(i, &name)| (name, batch(i))).collect()
}

/// A .tar.gz holding each (path, contents) as a regular file.
fn tar_gz(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// The official layout: every file under `cifar-10-batches-bin/`.
fn cifar_archive(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let members: Vec<_> =
        files.iter().map(|(name, data)| (format!("cifar-10-batches-bin/{name}"), data.clone())).collect();
    tar_gz(&members)
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

/// An HTTP/1.1 response that announces `content_length` and sends `body`.
fn response(status: &str, content_length: usize, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/gzip\r\n\
         Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn ok(body: &[u8]) -> Vec<u8> {
    response("200 OK", body.len(), body)
}

/// Serves one canned response per connection, then stops accepting; returns the file URL.
fn serve(responses: Vec<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for reply in responses {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            // Read the request head so closing the socket does not reset it under the client.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
                head.push(byte[0]);
            }
            let _ = stream.write_all(&reply);
        }
    });
    format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz")
}

fn options(url: String, md5: String) -> FetchOptions {
    FetchOptions { url, md5, progress: false }
}

/// Serves `archive` once and fetches it (with its true checksum) into `parent/cifar`.
fn fetch_archive(parent: &Path, archive: &[u8]) -> simdnn::Result<()> {
    let url = serve(vec![ok(archive)]);
    fetch_cifar10(&parent.join("cifar"), &options(url, md5_hex(archive)))
}

/// Names in `dir` that a fetch should not leave behind.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".simdnn-"))
        .collect()
}

/// The fetch failed, created no `cifar` directory and left no temporaries; returns the message.
fn assert_failed_cleanly(parent: &Path, result: simdnn::Result<()>) -> String {
    let message = result.expect_err("fetch should fail").to_string();
    assert!(!parent.join("cifar").exists(), "dest created despite: {message}");
    assert_eq!(leftovers(parent), Vec::<String>::new(), "after: {message}");
    message
}

fn assert_holds(dest: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        assert_eq!(&fs::read(dest.join(name)).unwrap(), data, "{name}");
    }
}

#[test]
fn good_download_extracts_all_files() {
    let parent = tempfile::tempdir().unwrap();
    let files = cifar_files();
    fetch_archive(parent.path(), &cifar_archive(&files)).unwrap();

    let dest = parent.path().join("cifar");
    assert_holds(&dest, &files);
    assert!(is_complete(&dest));
    assert_eq!(leftovers(parent.path()), Vec::<String>::new());
}

#[test]
fn creates_missing_parent_directories() {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("a/b");
    let files = cifar_files();
    fetch_archive(&parent, &cifar_archive(&files)).unwrap();
    assert_holds(&parent.join("cifar"), &files);
}

#[test]
fn fills_an_existing_partial_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("cifar");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("data_batch_1.bin"), b"stale").unwrap();
    fs::write(dest.join("notes.txt"), b"mine").unwrap();

    let files = cifar_files();
    fetch_archive(parent.path(), &cifar_archive(&files)).unwrap();

    assert_holds(&dest, &files);
    assert_eq!(fs::read(dest.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(leftovers(parent.path()), Vec::<String>::new());
}

#[test]
fn accepts_members_at_the_top_level() {
    let parent = tempfile::tempdir().unwrap();
    let files = cifar_files();
    let members: Vec<_> = files.iter().map(|(n, d)| (n.to_string(), d.clone())).collect();
    fetch_archive(parent.path(), &tar_gz(&members)).unwrap();
    assert_holds(&parent.path().join("cifar"), &files);
}

#[test]
fn wrong_checksum_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let archive = cifar_archive(&cifar_files());
    let url = serve(vec![ok(&archive)]);
    let wrong = "0123456789abcdef0123456789abcdef".to_string();
    let result = fetch_cifar10(&parent.path().join("cifar"), &options(url, wrong.clone()));

    let message = assert_failed_cleanly(parent.path(), result);
    assert!(message.contains("checksum"), "{message}");
    assert!(message.contains(&wrong), "{message}");
    assert!(message.contains(&md5_hex(&archive)), "{message}");
}

#[test]
fn http_error_names_the_status() {
    let parent = tempfile::tempdir().unwrap();
    let url = serve(vec![response("404 Not Found", 9, b"not found")]);
    let result = fetch_cifar10(&parent.path().join("cifar"), &options(url.clone(), md5_hex(b"")));

    let message = assert_failed_cleanly(parent.path(), result);
    assert!(message.contains("404"), "{message}");
    assert!(message.contains(&url), "{message}");
}

#[test]
fn truncated_body_is_an_error() {
    let parent = tempfile::tempdir().unwrap();
    let archive = cifar_archive(&cifar_files());
    let half = &archive[..archive.len() / 2];
    let url = serve(vec![response("200 OK", archive.len(), half)]);
    let result = fetch_cifar10(&parent.path().join("cifar"), &options(url, md5_hex(&archive)));

    assert_failed_cleanly(parent.path(), result);
}

#[test]
fn unreachable_server_suggests_local_data() {
    let parent = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:1/x.tar.gz".to_string();
    let result = fetch_cifar10(&parent.path().join("cifar"), &options(url, md5_hex(b"")));

    let message = assert_failed_cleanly(parent.path(), result);
    assert!(message.contains("offline"), "{message}");
    assert!(message.contains("--data"), "{message}");
}

#[test]
fn archive_missing_a_file_names_it() {
    let parent = tempfile::tempdir().unwrap();
    let mut files = cifar_files();
    files.retain(|(name, _)| *name != "test_batch.bin");
    let result = fetch_archive(parent.path(), &cifar_archive(&files));

    let message = assert_failed_cleanly(parent.path(), result);
    assert!(message.contains("test_batch.bin"), "{message}");
}

/// A .tar.gz with one member whose raw name `tar::Builder` would refuse to write.
fn archive_with_raw_name(name: &str) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    builder.append(&header, &b"evil"[..]).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn escaping_member_paths_are_refused() {
    for name in ["../escaped.bin", "cifar-10-batches-bin/../../escaped.bin", "/tmp/escaped.bin"] {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("p");
        let result = fetch_archive(&parent, &archive_with_raw_name(name));

        let message = assert_failed_cleanly(&parent, result);
        assert!(message.contains("refused"), "{name}: {message}");
        assert!(!root.path().join("escaped.bin").exists(), "{name}");
    }
}

#[test]
fn is_complete_needs_every_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!is_complete(dir.path()));
    assert!(!is_complete(&dir.path().join("absent")));
    for name in &FILES[..5] {
        fs::write(dir.path().join(name), b"x").unwrap();
    }
    assert!(!is_complete(dir.path()));
    // A directory under a data file's name does not count.
    fs::create_dir(dir.path().join("test_batch.bin")).unwrap();
    assert!(!is_complete(dir.path()));
    fs::remove_dir(dir.path().join("test_batch.bin")).unwrap();
    fs::write(dir.path().join("test_batch.bin"), b"x").unwrap();
    assert!(is_complete(dir.path()));
}
