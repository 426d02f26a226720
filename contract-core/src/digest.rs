//! Stable hex digests (SHA-256) for fingerprints and plan hashes.

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes` as lowercase hex: identical on every machine and run.
///
/// ```
/// assert_eq!(contract_core::digest_hex(b"").len(), 64);
/// ```
#[must_use]
pub fn digest_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex, two digits per byte (a fleet check digests every table: no `fmt` here).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// An incremental SHA-256 over length-prefixed fields: no field boundary is ambiguous, and
/// nothing is formatted into an intermediate string.
///
/// ```
/// use contract_core::FieldDigest;
/// let mut a = FieldDigest::new();
/// a.field("ab").field("c");
/// let mut b = FieldDigest::new();
/// b.field("a").field("bc");
/// assert_ne!(a.finish_hex(), b.finish_hex());
/// ```
#[derive(Debug, Clone, Default)]
pub struct FieldDigest(Sha256);

impl FieldDigest {
    /// An empty digest.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one field.
    pub fn field(&mut self, value: impl AsRef<[u8]>) -> &mut Self {
        let value = value.as_ref();
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    /// Adds an optional field (absent and empty differ).
    pub fn optional(&mut self, value: Option<impl AsRef<[u8]>>) -> &mut Self {
        match value {
            Some(v) => {
                self.0.update([1]);
                self.field(v)
            }
            None => {
                self.0.update([0]);
                self
            }
        }
    }

    /// The digest as lowercase hex.
    #[must_use]
    pub fn finish_hex(self) -> String {
        hex(&self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::{FieldDigest, digest_hex};

    #[test]
    fn hex_is_the_standard_sha256_spelling() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            digest_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let hex = FieldDigest::new().finish_hex();
        assert_eq!(hex, digest_hex(b""));
    }
}
