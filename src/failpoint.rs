//! Named crash points for the fault tests (RELIABILITY.md).
//!
//! Compiled in only with the `failpoints` cargo feature (the test build turns it on; release
//! and image builds do not), and armed by `TOKENWARDEN_FAILPOINT=<name>[,<name>...]`. An
//! armed crash point aborts the process the first time it is reached: no unwinding, no
//! flushing, no cleanup, as an OOM kill or a node loss at exactly that step would. An armed
//! delay ([`SECRET_RELIST_LATE`]) makes a step as slow as a loaded API server can.

/// The platform (or the CSPRNG) handed out a token; nothing is recorded yet.
pub const AFTER_MINT: &str = "after-mint";
/// `S-vN` exists; the mounted Secret still holds the previous version.
pub const AFTER_VERSIONED_SECRET: &str = "after-versioned-secret";
/// `S` holds the new version; status still says the previous one is current.
pub const AFTER_CUTOVER: &str = "after-cutover";
/// The platform revoked the old version; its `S-vN` still exists.
pub const AFTER_ISSUER_REVOKE: &str = "after-issuer-revoke";
/// Every step of the pass is done; the status write is next.
pub const BEFORE_STATUS: &str = "before-status";

/// A delay, not a crash: a Secret watch started over after the cluster went back in time
/// waits 3 s before it lists (the Secret index keeps showing the cluster's future meanwhile).
pub const SECRET_RELIST_LATE: &str = "secret-relist-late";

/// The environment variable that arms failpoints.
pub const ENV: &str = "TOKENWARDEN_FAILPOINT";

/// Aborts the process here if `name` is armed (only with the `failpoints` feature).
pub(crate) fn hit(name: &str) {
    if armed(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Whether `name` is armed (only with the `failpoints` feature).
#[cfg(feature = "failpoints")]
pub(crate) fn armed(name: &str) -> bool {
    static ARMED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    armed.iter().any(|a| a == name)
}

/// Without the `failpoints` feature no failpoint is ever armed.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn armed(_name: &str) -> bool {
    false
}
