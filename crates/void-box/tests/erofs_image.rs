//! The erofs writer against erofs-utils' own checker: an image imported
//! from layers with every kind of entry (big, small, block-sized and empty
//! files, a directory spanning blocks, hard links, short and long
//! symlinks, devices, a fifo, xattrs, setuid bits, large ids) must pass
//! `fsck.erofs`, and what `fsck.erofs --extract` writes back must be what
//! the layers said. (The VM tests then mount such images in the guest.)

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use void_box::oci::{import, ImageConfig, Store};

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    h
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) {
    let mut h = header(tar::EntryType::Regular, mode, uid, gid);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = header(tar::EntryType::Directory, 0o755, 0, 0);
    b.append_data(&mut h, path, &[][..]).unwrap();
}

/// Bytes that differ from offset to offset, so misplaced blocks show.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 * 31 + u32::from(seed)) as u8)
        .collect()
}

fn build_layers(dir_path: &Path) -> Vec<std::path::PathBuf> {
    let mut one = tar::Builder::new(Vec::new());
    for d in ["etc", "big", "many", "links", "dev", "gone"] {
        dir(&mut one, d);
    }
    file(
        &mut one,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\napp:x:70000:70001::/home/app:/bin/sh\n",
        0o644,
        0,
        0,
    );
    file(&mut one, "big/ten-k", &pattern(10_000, 1), 0o644, 0, 0);
    file(&mut one, "big/block", &pattern(8192, 2), 0o600, 1234, 5678);
    file(&mut one, "big/three-mb", &pattern(3 << 20, 3), 0o644, 0, 0);
    file(&mut one, "big/empty", b"", 0o644, 0, 0);
    file(&mut one, "big/suid", b"#!/bin/sh\n", 0o4755, 0, 0);
    file(&mut one, "big/ids", b"x", 0o640, 70000, 70001);
    for i in 0..400 {
        file(
            &mut one,
            &format!("many/entry-{i:04}"),
            format!("{i}\n").as_bytes(),
            0o644,
            0,
            0,
        );
    }
    file(&mut one, "links/target", b"shared", 0o644, 0, 0);
    let mut h = header(tar::EntryType::Link, 0o644, 0, 0);
    one.append_link(&mut h, "links/hard", "links/target")
        .unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
    one.append_link(&mut h, "links/short", "target").unwrap();
    let long = "d/".repeat(2040) + "end";
    let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
    one.append_link(&mut h, "links/long", &long).unwrap();
    let mut h = header(tar::EntryType::Char, 0o666, 0, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    one.append_data(&mut h, "dev/null", &[][..]).unwrap();
    let mut h = header(tar::EntryType::Block, 0o660, 0, 6);
    h.set_device_major(8).unwrap();
    h.set_device_minor(300).unwrap();
    one.append_data(&mut h, "dev/disk", &[][..]).unwrap();
    let mut h = header(tar::EntryType::Fifo, 0o644, 0, 0);
    one.append_data(&mut h, "dev/fifo", &[][..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 0, 0);
    one.append_pax_extensions([("SCHILY.xattr.user.test", b"hello".as_slice())])
        .unwrap();
    h.set_size(5);
    one.append_data(&mut h, "etc/xattr", &b"value"[..]).unwrap();
    file(&mut one, "gone/file", b"deleted later", 0o644, 0, 0);
    let one = one.into_inner().unwrap();

    let mut two = tar::Builder::new(Vec::new());
    file(&mut two, "gone/.wh.file", b"", 0o644, 0, 0);
    file(&mut two, "big/ten-k", &pattern(5000, 9), 0o644, 0, 0);
    let two = two.into_inner().unwrap();

    let paths = [dir_path.join("one.tar"), dir_path.join("two.tar.gz")];
    std::fs::write(&paths[0], one).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &two).unwrap();
    std::fs::write(&paths[1], gz.finish().unwrap()).unwrap();
    paths.to_vec()
}

#[test]
fn fsck_erofs_accepts_the_image_and_extracts_what_the_layers_said() {
    let work = tempfile::tempdir().unwrap();
    let layers = build_layers(work.path());
    let store = Store::at(work.path().join("store"));
    let image = import(
        &store,
        "local/erofs-check:1",
        &layers,
        ImageConfig::default(),
    )
    .unwrap();
    assert_eq!(image.record.passwd.lines().count(), 2);
    assert_eq!(image.record.size_bytes % 4096, 0);

    let fsck = |args: &[&str]| {
        let out = Command::new("fsck.erofs")
            .args(args)
            .arg(&image.path)
            .output()
            .expect(
                "fsck.erofs runs (erofs-utils; scripts/setup.sh --with-test-tools installs it)",
            );
        assert!(
            out.status.success(),
            "fsck.erofs {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    fsck(&["-d3"]);
    let out = work.path().join("out");
    let extract = format!("--extract={}", out.display());
    fsck(&[extract.as_str(), "--preserve"]);

    let meta = |p: &str| std::fs::symlink_metadata(out.join(p)).unwrap();
    let read = |p: &str| std::fs::read(out.join(p)).unwrap();
    assert_eq!(
        read("big/ten-k"),
        pattern(5000, 9),
        "an upper layer replaces"
    );
    assert_eq!(read("big/block"), pattern(8192, 2));
    assert_eq!(read("big/three-mb"), pattern(3 << 20, 3));
    assert!(read("big/empty").is_empty());
    assert!(!out.join("gone/file").exists(), "a whiteout deletes");
    assert_eq!(std::fs::read_dir(out.join("many")).unwrap().count(), 400);
    assert_eq!(read("many/entry-0399"), b"399\n");
    // (The setuid bit of big/suid is stored, but fsck.erofs's chown after
    // its chmod clears it on extraction; the VM tests check it in a guest.)
    assert_eq!(meta("big/block").permissions().mode() & 0o7777, 0o600);
    if rustix::process::geteuid().is_root() {
        // Ownership survives extraction only when fsck runs as root.
        assert_eq!(
            (meta("big/block").uid(), meta("big/block").gid()),
            (1234, 5678)
        );
        assert_eq!(
            (meta("big/ids").uid(), meta("big/ids").gid()),
            (70000, 70001)
        );
        assert!(meta("dev/null").file_type().is_char_device());
        assert_eq!(meta("dev/null").rdev(), libc::makedev(1, 3));
        assert_eq!(meta("dev/disk").rdev(), libc::makedev(8, 300));
    }
    assert!(meta("dev/fifo").file_type().is_fifo());
    // fsck.erofs extracts hard links as copies; dump.erofs shows the inode.
    let dump = |path: &str| {
        let out = Command::new("dump.erofs")
            .arg(format!("--path={path}"))
            .arg(&image.path)
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find(|l| l.starts_with("NID:"))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(dump("/links/hard"), dump("/links/target"));
    assert!(
        dump("/links/hard").contains("Links: 2"),
        "{}",
        dump("/links/hard")
    );
    assert_eq!(read("links/hard"), b"shared");
    assert_eq!(
        std::fs::read_link(out.join("links/short")).unwrap(),
        Path::new("target")
    );
    let long = std::fs::read_link(out.join("links/long")).unwrap();
    assert_eq!(long.as_os_str().len(), 4083);
    assert_eq!(meta("big/three-mb").mtime(), 1_700_000_000);
}

#[test]
fn importing_the_same_layers_gives_the_same_digest() {
    let work = tempfile::tempdir().unwrap();
    let layers = build_layers(work.path());
    let store = Store::at(work.path().join("store"));
    let a = import(&store, "local/same:1", &layers, ImageConfig::default()).unwrap();
    let b = import(&store, "local/same:2", &layers, ImageConfig::default()).unwrap();
    assert_eq!(a.record.digest, b.record.digest);
    assert_eq!(store.references().len(), 2);
}
