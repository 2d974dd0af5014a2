//! Secrets at rest: SigV4 secret access keys are encrypted with the server key
//! (ChaCha20-Poly1305, a fresh random nonce per secret), so a copy of the database alone
//! does not give them away. Random tokens come from the operating system's CSPRNG.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::StoreError;

/// Encrypts and decrypts secrets with the server key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// A new random server key.
    pub fn generate_key() -> Result<[u8; 32], StoreError> {
        let mut key = [0u8; 32];
        fill(&mut key)?;
        Ok(key)
    }

    /// `nonce || ciphertext`.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; 12];
        fill(&mut nonce)?;
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| StoreError::Backend("cannot encrypt a secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < 12 {
            return Err(StoreError::Backend("sealed secret too short".into()));
        }
        let (nonce, ct) = sealed.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| {
                StoreError::Backend(
                    "cannot decrypt a stored secret: is this the server key it was sealed with?"
                        .into(),
                )
            })
    }
}

fn fill(buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(buf).map_err(|e| StoreError::Backend(format!("no randomness: {e}")))
}

/// A random number, for ids that must not collide across processes.
pub fn random_u64() -> Result<u64, StoreError> {
    let mut buf = [0u8; 8];
    fill(&mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

/// `bytes` random bytes as base62 text, for keys and ids (no ambiguous punctuation).
pub fn random_token(chars: usize) -> Result<String, StoreError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(chars);
    let mut buf = [0u8; 64];
    while out.len() < chars {
        fill(&mut buf)?;
        // Rejection sampling keeps every character equally likely.
        for &b in &buf {
            if (b as usize) < 248 && out.len() < chars {
                out.push(ALPHABET[b as usize % 62] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_detects_tampering_and_wrong_keys() {
        let key = SecretBox::generate_key().unwrap();
        let b = SecretBox::new(&key);
        let sealed = b.seal(b"wJalrXUtnFEMI/K7MDENG").unwrap();
        assert_eq!(b.open(&sealed).unwrap(), b"wJalrXUtnFEMI/K7MDENG");
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(b.open(&bad).is_err());
        let other = SecretBox::new(&SecretBox::generate_key().unwrap());
        assert!(other.open(&sealed).is_err());
        // Same plaintext, different nonce: different ciphertext.
        assert_ne!(b.seal(b"x").unwrap(), b.seal(b"x").unwrap());
    }

    #[test]
    fn tokens_are_random_base62() {
        let a = random_token(40).unwrap();
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, random_token(40).unwrap());
    }
}
