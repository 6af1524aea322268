//! Where the control plane's binaries come from: `$TOKENWARDEN_CONTROLPLANE_BIN`, else
//! `hack/controlplane/build.sh`, which builds them once and prints the cached bin dir.

use std::path::PathBuf;
use std::process::{Command, Stdio};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const BIN_DIR_ENV: &str = "TOKENWARDEN_CONTROLPLANE_BIN";

pub fn locate() -> Result<PathBuf, BoxError> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hack/controlplane/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed ({})", script.display(), output.status).into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let dir = stdout
        .lines()
        .last()
        .ok_or_else(|| format!("{} printed no bin dir", script.display()))?;
    Ok(PathBuf::from(dir))
}
