//! Stable hex digests (SHA-256) for fingerprints and plan hashes.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// The SHA-256 of `bytes` as lowercase hex: identical on every machine and run.
///
/// ```
/// assert_eq!(contract_core::digest_hex(b"").len(), 64);
/// ```
#[must_use]
pub fn digest_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        let _ = write!(out, "{b:02x}");
    }
    out
}
