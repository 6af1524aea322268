//! The node's only image, made here: no registry is reachable, so an OCI image layout is
//! written around Debian's static busybox and imported into containerd.
//!
//! One image serves both roles: the pod sandbox (its entrypoint sleeps forever, as `pause`
//! does) and every workload (which names its own `command`). Its layer is reproducible:
//! the same busybox gives the same digests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What pods name in `image:` (with `imagePullPolicy: Never`), and the CRI's sandbox image.
pub const IMAGE: &str = "tokenwarden.test/busybox:local";

/// Finds a statically linked busybox on `PATH` (a dynamic one cannot run in the image).
pub fn static_busybox() -> Result<PathBuf, BoxError> {
    let path = super::on_path("busybox")?;
    let elf = std::fs::read(&path)?;
    if has_interpreter(&elf) {
        return Err(format!(
            "{} is dynamically linked: the node's image needs Debian's busybox-static",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// Writes the image as an OCI layout tarball at `out`, for `ctr images import`.
pub fn write_image(busybox: &Path, out: &Path) -> Result<(), BoxError> {
    let layer = layer(busybox)?;
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/sleep", "2147483647"],
            "Env": ["PATH=/bin"],
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))?;
    let mut manifest_descriptor =
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_descriptor["annotations"] = serde_json::json!({ "io.containerd.image.name": IMAGE });
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [manifest_descriptor],
    }))?;

    let mut tar = tar::Builder::new(std::fs::File::create(out)?);
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append(&mut tar, "index.json", &index)?;
    for blob in [&layer, &config, &manifest] {
        let name = format!("blobs/sha256/{}", hex::encode(Sha256::digest(blob)));
        append(&mut tar, &name, blob)?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// `/bin/busybox`, a symlink per applet (`sh`, `cat`, `sleep`, ...) and the usual mount points.
fn layer(busybox: &Path) -> Result<Vec<u8>, BoxError> {
    let applets = Command::new(busybox).arg("--list").output()?;
    if !applets.status.success() {
        return Err(format!("{} --list failed", busybox.display()).into());
    }
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["bin", "dev", "etc", "proc", "sys", "tmp", "var"] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        header.set_size(0);
        header.set_mtime(0);
        tar.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    let mut header = tar::Header::new_ustar();
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_size(std::fs::metadata(busybox)?.len());
    tar.append_data(&mut header, "bin/busybox", std::fs::File::open(busybox)?)?;
    for applet in String::from_utf8(applets.stdout)?.split_whitespace() {
        if applet == "busybox" {
            continue;
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_mtime(0);
        header.set_size(0);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    Ok(tar.into_inner()?)
}

fn append(tar: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) -> Result<(), BoxError> {
    let mut header = tar::Header::new_ustar();
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    tar.append_data(&mut header, name, data)?;
    Ok(())
}

fn descriptor(media_type: &str, blob: &[u8]) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": sha256(blob), "size": blob.len() })
}

fn sha256(blob: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(blob)))
}

/// This machine's architecture as OCI names it.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Whether a file is anything but a little-endian ELF64 without a dynamic loader (a
/// `PT_INTERP` program header): true also for what is no such ELF file at all.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return true;
    }
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) == PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_told_apart_from_a_static_one() {
        let dynamic = std::fs::read("/bin/sh").expect("read /bin/sh");
        assert!(has_interpreter(&dynamic), "/bin/sh is dynamically linked");
        assert!(has_interpreter(b"not an elf file"));
        let not_elf = vec![0u8; 4096];
        assert!(
            has_interpreter(&not_elf),
            "no ELF magic: not a static executable"
        );
        let busybox = std::fs::read(static_busybox().expect("busybox-static")).unwrap();
        assert!(!has_interpreter(&busybox));
    }

    #[test]
    fn the_image_is_the_same_bytes_every_time() {
        let busybox = static_busybox().expect("the node needs busybox-static");
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        write_image(&busybox, &a).unwrap();
        write_image(&busybox, &b).unwrap();
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
}
