//! Container images on a host. An image's data (a `docker save` archive or an OCI image layout in a tar, as the
//! image service keeps it with `container_format=docker`) is fetched once into the base cache, and its layers are
//! unpacked once into read-only directories `_layers/<diff id>` that every image sharing a layer shares; the
//! image's run configuration (entry point, command, environment) and layer list go to `_images/<image id>.json`.
//! Instances' root filesystems are overlays of these layers (see the driver).
//!
//! Layers become overlayfs lower directories as they are unpacked: a whiteout file `.wh.<name>` becomes the
//! character device 0/0 `<name>`, and an opaque marker `.wh..wh..opq` the `trusted.overlay.opaque` attribute of its
//! directory. [`write_layer`] does the reverse, for snapshots. Every layer's content is checked against its diff
//! id: a corrupt image fails to unpack and leaves nothing behind.

use std::io::{BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::guest_dir::io_err;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What running an image needs: its layers (bottom first, by diff id) and process settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub layers: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
}

impl ImageRecord {
    /// The container's first process: the entry point followed by the command, as Docker runs an image.
    pub(crate) fn args(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

fn bad(image: &str, what: impl std::fmt::Display) -> Error {
    Error::Hypervisor(format!("image {image} is not a container image the driver can run: {what}"))
}

/// An I/O error with its causes (the tar reader wraps the reason in its own message).
fn chain(e: &std::io::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// A path inside an archive that stays inside it (no `..`, no absolute path).
fn inside(root: &Path, name: &str) -> Option<PathBuf> {
    let rel = Path::new(name);
    rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)).then(|| root.join(rel))
}

/// Unpacks the archive `archive` of image `image` (blocking): its layers into `layers_dir` unless there already,
/// its record into `images_dir/<image>.json`. Returns the record.
pub(crate) fn unpack_image(image: &str, archive: &Path, layers_dir: &Path, images_dir: &Path) -> Result<ImageRecord, Error> {
    let record_path = images_dir.join(format!("{image}.json"));
    if let Ok(text) = std::fs::read(&record_path)
        && let Ok(record) = serde_json::from_slice::<ImageRecord>(&text)
        && record.layers.iter().all(|l| layers_dir.join(l).is_dir())
    {
        return Ok(record);
    }
    std::fs::create_dir_all(layers_dir).map_err(io_err(format!("creating {}", layers_dir.display())))?;
    std::fs::create_dir_all(images_dir).map_err(io_err(format!("creating {}", images_dir.display())))?;
    // The archive's members (manifest, configuration, layer blobs) are read in the order the format needs, not
    // the order they are stored in: they are taken out into a scratch directory first.
    let scratch = tempfile::Builder::new().prefix(&format!("{image}.")).suffix(".unpack").tempdir_in(images_dir).map_err(io_err("creating a scratch directory"))?;
    extract_archive(image, archive, scratch.path())?;
    let (config, blobs) = read_manifest(image, scratch.path())?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != blobs.len() {
        return Err(bad(image, format!("its configuration lists {} layers, its manifest {}", diff_ids.len(), blobs.len())));
    }
    let mut layers = Vec::new();
    for (blob, diff_id) in blobs.iter().zip(&diff_ids) {
        let id = diff_id.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).ok_or_else(|| bad(image, format!("unsupported diff id {diff_id}")))?;
        let dest = layers_dir.join(id);
        if !dest.is_dir() {
            unpack_layer(image, blob, id, &dest)?;
        }
        layers.push(id.to_owned());
    }
    let process = config.config().clone().unwrap_or_default();
    let record = ImageRecord {
        layers,
        entrypoint: process.entrypoint().clone().unwrap_or_default(),
        cmd: process.cmd().clone().unwrap_or_default(),
        env: process.env().clone().unwrap_or_default(),
        working_dir: process.working_dir().clone().unwrap_or_default(),
        user: process.user().clone().unwrap_or_default(),
    };
    if record.args().is_empty() {
        return Err(bad(image, "it names no entry point or command"));
    }
    let tmp = images_dir.join(format!("{image}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&record).unwrap_or_default()).map_err(io_err(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &record_path).map_err(io_err(format!("writing {}", record_path.display())))?;
    Ok(record)
}

/// Opens a file that may be gzip-compressed (by its magic number).
fn maybe_gzip(path: &Path) -> Result<Box<dyn Read>, Error> {
    let file = std::fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let magic = reader.fill_buf().map_err(io_err(format!("reading {}", path.display())))?;
    let gzip = magic.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip { Box::new(flate2::read::MultiGzDecoder::new(reader)) } else { Box::new(reader) })
}

/// Takes the archive's regular files out into `dest`.
fn extract_archive(image: &str, archive: &Path, dest: &Path) -> Result<(), Error> {
    let mut tar = tar::Archive::new(maybe_gzip(archive)?);
    let entries = tar.entries().map_err(|e| bad(image, e))?;
    let mut any = false;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(image, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(|e| bad(image, e))?.to_string_lossy().into_owned();
        let path = inside(dest, &name).ok_or_else(|| bad(image, format!("member {name:?} leaves the archive")))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        }
        let mut out = std::fs::File::create(&path).map_err(io_err(format!("writing {}", path.display())))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| bad(image, e))?;
        any = true;
    }
    if !any {
        return Err(bad(image, "its data is not a tar archive of a docker or OCI image"));
    }
    Ok(())
}

/// The image's configuration and its layer blobs (bottom first), from a `docker save` manifest or an OCI
/// image layout.
fn read_manifest(image: &str, root: &Path) -> Result<(ImageConfiguration, Vec<PathBuf>), Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct DockerManifest {
        config: String,
        layers: Vec<String>,
    }
    let member = |name: &str| inside(root, name).filter(|p| p.is_file()).ok_or_else(|| bad(image, format!("member {name:?} is missing")));
    let docker = root.join("manifest.json");
    if docker.is_file() {
        let text = std::fs::read(&docker).map_err(io_err("reading manifest.json"))?;
        let manifests: Vec<DockerManifest> = serde_json::from_slice(&text).map_err(|e| bad(image, format!("manifest.json: {e}")))?;
        let m = manifests.into_iter().next().ok_or_else(|| bad(image, "manifest.json lists no image"))?;
        let config = ImageConfiguration::from_file(member(&m.config)?).map_err(|e| bad(image, format!("{}: {e}", m.config)))?;
        let layers = m.layers.iter().map(|l| member(l)).collect::<Result<Vec<_>, _>>()?;
        return Ok((config, layers));
    }
    let index = root.join("index.json");
    if !index.is_file() {
        return Err(bad(image, "it has neither manifest.json (docker save) nor index.json (OCI layout)"));
    }
    let blob = |digest: &oci_spec::image::Digest| member(&format!("blobs/{}/{}", digest.algorithm(), digest.digest()));
    let index = ImageIndex::from_file(&index).map_err(|e| bad(image, format!("index.json: {e}")))?;
    let descriptor = index.manifests().first().ok_or_else(|| bad(image, "index.json lists no manifest"))?;
    let manifest = ImageManifest::from_file(blob(descriptor.digest())?).map_err(|e| bad(image, format!("manifest: {e}")))?;
    let config = ImageConfiguration::from_file(blob(manifest.config().digest())?).map_err(|e| bad(image, format!("configuration: {e}")))?;
    let layers = manifest.layers().iter().map(|l| blob(l.digest())).collect::<Result<Vec<_>, _>>()?;
    Ok((config, layers))
}

/// The header of a regular file owned by root, dated at the epoch.
fn file_header(size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks one layer blob into `dest` (through a temporary sibling, renamed when complete and verified).
fn unpack_layer(image: &str, blob: &Path, diff_id: &str, dest: &Path) -> Result<(), Error> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(&format!("{diff_id}.")).suffix(".part").tempdir_in(parent).map_err(io_err("creating a layer directory"))?;
    let mut reader = Hashing { inner: maybe_gzip(blob)?, hash: Sha256::new() };
    {
        let mut tar = tar::Archive::new(&mut reader);
        tar.set_preserve_permissions(true);
        tar.set_preserve_ownerships(true);
        tar.set_preserve_mtime(true);
        tar.set_unpack_xattrs(true);
        tar.set_overwrite(true);
        let root = tmp.path();
        for entry in tar.entries().map_err(|e| bad(image, e))? {
            let mut entry = entry.map_err(|e| bad(image, e))?;
            let path = entry.path().map_err(|e| bad(image, e))?.into_owned();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                let dir = inside(root, &path.parent().unwrap_or(Path::new("")).to_string_lossy()).ok_or_else(|| bad(image, format!("layer member {path:?} leaves the layer")))?;
                std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
                if name == OPAQUE {
                    rustix::fs::setxattr(&dir, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
                        .map_err(|e| io_err(format!("marking {} opaque", dir.display()))(e.into()))?;
                } else if !hidden.is_empty() {
                    let target = dir.join(hidden);
                    rustix::fs::mknodat(rustix::fs::CWD, &target, rustix::fs::FileType::CharacterDevice, rustix::fs::Mode::empty(), rustix::fs::makedev(0, 0))
                        .map_err(|e| io_err(format!("making the whiteout {}", target.display()))(e.into()))?;
                }
                continue;
            }
            if !entry.unpack_in(root).map_err(|e| bad(image, format!("layer member {path:?}: {}", chain(&e))))? {
                return Err(bad(image, format!("layer member {path:?} leaves the layer")));
            }
        }
    }
    // Whatever follows the tar's end (padding) counts toward the digest too.
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| bad(image, e))?;
    let digest = hex::encode(reader.hash.finalize());
    if digest != diff_id {
        return Err(bad(image, format!("a layer's content has digest sha256:{digest}, not its diff id sha256:{diff_id} (the image is corrupt)")));
    }
    let tmp = tmp.keep();
    std::fs::rename(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        io_err(format!("storing {}", dest.display()))(e)
    })
}

/// Writes the directory `dir` (a layer or an overlay's upper directory) as a layer tar to `out`, turning overlay
/// whiteouts back into `.wh.` files; returns the tar's diff id (hex sha256).
pub(crate) fn write_layer(dir: &Path, out: &Path) -> Result<String, Error> {
    struct HashingWriter<W> {
        inner: W,
        hash: Sha256,
    }
    impl<W: Write> Write for HashingWriter<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hash.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let file = std::fs::File::create(out).map_err(io_err(format!("writing {}", out.display())))?;
    let mut tar = tar::Builder::new(HashingWriter { inner: std::io::BufWriter::new(file), hash: Sha256::new() });
    tar.follow_symlinks(false);
    let err = |e: std::io::Error| io_err(format!("writing the layer of {}", dir.display()))(e);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let mut children: Vec<_> = std::fs::read_dir(&abs).map_err(err)?.flatten().collect();
        children.sort_by_key(|e| e.file_name());
        if !rel.as_os_str().is_empty() && rustix::fs::getxattr(&abs, OPAQUE_XATTR, &mut [0u8; 4]).is_ok_and(|n| n == 1) {
            tar.append_data(&mut file_header(0, 0o644), rel.join(OPAQUE), std::io::empty()).map_err(err)?;
        }
        for child in children.iter().rev() {
            let name = child.file_name();
            let child_rel = rel.join(&name);
            let meta = std::fs::symlink_metadata(child.path()).map_err(err)?;
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                let whiteout = rel.join(format!("{WHITEOUT}{}", name.to_string_lossy()));
                tar.append_data(&mut file_header(0, 0o644), whiteout, std::io::empty()).map_err(err)?;
                continue;
            }
            tar.append_path_with_name(child.path(), &child_rel).map_err(err)?;
            if meta.is_dir() {
                stack.push(child_rel);
            }
        }
    }
    let mut writer = tar.into_inner().map_err(err)?;
    writer.flush().map_err(err)?;
    Ok(hex::encode(writer.hash.finalize()))
}

/// Writes a `docker save` archive to `out`: `layers` (layer tars, bottom first, with their diff ids) and the
/// configuration of `record`.
pub(crate) fn write_archive(out: &Path, layers: &[(PathBuf, String)], record: &ImageRecord, tag: &str) -> Result<(), Error> {
    let diff_ids: Vec<String> = layers.iter().map(|(_, id)| format!("sha256:{id}")).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": record.entrypoint,
            "Cmd": record.cmd,
            "Env": record.env,
            "WorkingDir": record.working_dir,
            "User": record.user,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    let layer_names: Vec<String> = layers.iter().map(|(_, id)| format!("{id}/layer.tar")).collect();
    let manifest = serde_json::to_vec(&serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}])).unwrap_or_default();
    let file = std::fs::File::create(out).map_err(io_err(format!("writing {}", out.display())))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let err = |e: std::io::Error| io_err(format!("writing {}", out.display()))(e);
    let mut add = |name: &str, data: &[u8]| {
        tar.append_data(&mut file_header(data.len() as u64, 0o644), name, data)
    };
    add(&config_name, &config).map_err(err)?;
    add("manifest.json", &manifest).map_err(err)?;
    for ((path, _), name) in layers.iter().zip(&layer_names) {
        tar.append_path_with_name(path, name).map_err(err)?;
    }
    tar.into_inner().map_err(err)?.flush().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer tar with `files` (path, content; a `None` content is a directory).
    fn layer(files: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            // The name is written raw: the builder itself would refuse the hostile ones the tests need.
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(if data.is_some() { tar::EntryType::Regular } else { tar::EntryType::Directory });
            header.set_size(data.map_or(0, |d| d.len() as u64));
            header.set_mode(0o755);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            tar.append(&header, data.unwrap_or_default()).unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn docker_archive(dir: &Path, layers: &[Vec<u8>], entrypoint: &[&str]) -> PathBuf {
        let mut files = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let p = dir.join(format!("l{i}.tar"));
            std::fs::write(&p, l).unwrap();
            files.push((p, hex::encode(Sha256::digest(l))));
        }
        let record = ImageRecord { entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(), env: vec!["PATH=/bin".into()], ..Default::default() };
        let out = dir.join("image.tar");
        write_archive(&out, &files, &record, "t:latest").unwrap();
        out
    }

    #[test]
    fn docker_archives_unpack_into_shared_verified_layers_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let base = layer(&[("bin", None), ("bin/sh", Some(b"shell")), ("etc", None), ("etc/old", Some(b"x")), ("opt", None), ("opt/a", Some(b"a"))]);
        let top = layer(&[("etc/.wh.old", Some(b"")), ("opt/.wh..wh..opq", Some(b"")), ("opt/b", Some(b"b"))]);
        let archive = docker_archive(dir.path(), &[base.clone(), top], &["/bin/sh", "-c"]);
        let (layers, images) = (dir.path().join("_layers"), dir.path().join("_images"));
        let record = unpack_image("img1", &archive, &layers, &images).unwrap();
        assert_eq!(record.layers.len(), 2);
        assert_eq!(record.args(), ["/bin/sh", "-c"]);
        assert_eq!(record.env, ["PATH=/bin"]);
        let (bottom, upper) = (layers.join(&record.layers[0]), layers.join(&record.layers[1]));
        assert_eq!(std::fs::read(bottom.join("bin/sh")).unwrap(), b"shell");
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let whiteout = std::fs::symlink_metadata(upper.join("etc/old")).unwrap();
        assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
        let mut v = [0u8; 4];
        assert_eq!(rustix::fs::getxattr(upper.join("opt"), OPAQUE_XATTR, &mut v).unwrap(), 1);
        assert_eq!(std::fs::read(upper.join("opt/b")).unwrap(), b"b");

        // A second image with the same base layer shares its directory; its record is cached.
        let again = unpack_image("img1", &archive, &layers, &images).unwrap();
        assert_eq!(again, record);
        let other = docker_archive(&dir.path().join("o").tap_mkdir(), &[base], &["/bin/sh"]);
        let record2 = unpack_image("img2", &other, &layers, &images).unwrap();
        assert_eq!(record2.layers, [record.layers[0].clone()]);
        assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 2);

        // Written back, the upper layer has its whiteouts as files again.
        let out = dir.path().join("upper.tar");
        write_layer(&upper, &out).unwrap();
        let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&out).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["etc", "etc/.wh.old", "opt", "opt/.wh..wh..opq", "opt/b"]);
    }

    #[test]
    fn corrupt_and_foreign_archives_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (layers, images) = (dir.path().join("_layers"), dir.path().join("_images"));
        // Not a tar at all.
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let err = unpack_image("j", &junk, &layers, &images).unwrap_err().to_string();
        assert!(err.contains("not a container image"), "{err}");
        // A layer whose content does not match its diff id.
        let l = layer(&[("f", Some(b"data"))]);
        let p = dir.path().join("l.tar");
        std::fs::write(&p, &l).unwrap();
        let record = ImageRecord { entrypoint: vec!["/f".into()], ..Default::default() };
        let archive = dir.path().join("bad.tar");
        write_archive(&archive, &[(p, "0".repeat(64))], &record, "t").unwrap();
        let err = unpack_image("bad", &archive, &layers, &images).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 0, "no half layer stays");
        assert!(!images.join("bad.json").exists());
        // A layer member escaping the root.
        let evil = layer(&[("../escape", Some(b"x"))]);
        let archive = docker_archive(&dir.path().join("e").tap_mkdir(), &[evil], &["/x"]);
        assert!(unpack_image("evil", &archive, &layers, &images).is_err());
        assert!(!dir.path().join("escape").exists() && !layers.join("escape").exists());
    }

    #[test]
    fn oci_layouts_with_gzip_layers_unpack_too() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let plain = layer(&[("etc", None), ("etc/motd", Some(b"hello"))]);
        let diff_id = hex::encode(Sha256::digest(&plain));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let blob = gz.finish().unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "WorkingDir": "/etc"},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        }))
        .unwrap();
        let digest = |b: &[u8]| hex::encode(Sha256::digest(b));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", digest(&config)), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", digest(&blob)), "size": blob.len()}],
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", digest(&manifest)), "size": manifest.len()}],
        }))
        .unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("oci-layout".to_owned(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("index.json".to_owned(), index),
            (format!("blobs/sha256/{}", digest(&manifest)), manifest.clone()),
            (format!("blobs/sha256/{}", digest(&config)), config.clone()),
            (format!("blobs/sha256/{}", digest(&blob)), blob.clone()),
        ] {
            tar.append_data(&mut file_header(data.len() as u64, 0o644), name, data.as_slice()).unwrap();
        }
        let archive = dir.path().join("oci.tar");
        std::fs::write(&archive, tar.into_inner().unwrap()).unwrap();
        let (layers, images) = (dir.path().join("_layers"), dir.path().join("_images"));
        let record = unpack_image("oci", &archive, &layers, &images).unwrap();
        assert_eq!(record.layers, std::slice::from_ref(&diff_id));
        assert_eq!((record.args(), record.working_dir.as_str()), (vec!["/bin/sh".to_owned()], "/etc"));
        assert_eq!(std::fs::read(layers.join(&diff_id).join("etc/motd")).unwrap(), b"hello");
    }

    trait TapMkdir {
        fn tap_mkdir(self) -> PathBuf;
    }
    impl TapMkdir for PathBuf {
        fn tap_mkdir(self) -> PathBuf {
            std::fs::create_dir_all(&self).unwrap();
            self
        }
    }
}
