//! Console sessions: who signed in to the web console, carried in a signed cookie.
//!
//! A session is stateless: the cookie holds who signed in and until when, with an
//! HMAC-SHA256 tag under a key every replica derives alike (from the server key they
//! share, bound to the admin token's hash, so rotating the admin token ends every session).
//! A tenant's session names the API key it was opened with (by its SHA-256, never the key),
//! and that key is looked up again on every request: revoking the key ends the session.
//!
//! Every state change made with a session needs its CSRF token too, derived from the
//! session's nonce: a page embeds it, a cross-site form cannot read it.
//!
//! This module never sees a request: the server reads the cookie and headers and asks.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::generic_array::GenericArray;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::constant_time_eq;

/// The cookie a console session travels in.
pub const SESSION_COOKIE: &str = "basalt_session";
/// The header a console page sends its CSRF token in (forms send a field instead).
pub const CSRF_HEADER: &str = "x-basalt-csrf";

/// The first field of every session cookie: a format change makes old cookies unreadable
/// rather than misread.
const FORMAT: &str = "s1";

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionUser {
    /// Signed in with the admin token: the operator's view of every tenant.
    Operator,
    /// Signed in with an API key, by its SHA-256: that key's tenant only.
    Tenant { key_sha256: [u8; 32] },
    /// Local mode (no tenants, no keys): the local user, who needs no sign-in.
    Local,
}

/// An open session, as read back from its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: SessionUser,
    /// Seconds since the epoch after which the cookie is refused.
    pub expires_at: i64,
    nonce: [u8; 16],
}

/// Signs and opens session cookies.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// The key every replica sharing `server_key` derives alike; a new admin token gives a
    /// new key, so signing in again is needed after the token changes.
    pub fn derive(server_key: &[u8; 32], admin_token_sha256: &[u8; 32]) -> Self {
        Self(tag(
            server_key,
            &[b"basalt console session key", admin_token_sha256],
        ))
    }

    /// A new session for `user`, valid for `ttl_secs` from `now`; `nonce` must be random.
    /// Returns the cookie's value and the session it opens to.
    pub fn issue(
        &self,
        user: SessionUser,
        now: i64,
        ttl_secs: i64,
        nonce: [u8; 16],
    ) -> (String, Session) {
        let session = Session {
            user,
            expires_at: now.saturating_add(ttl_secs),
            nonce,
        };
        let (kind, key) = match &session.user {
            SessionUser::Operator => ("operator", String::new()),
            SessionUser::Tenant { key_sha256 } => ("tenant", URL_SAFE_NO_PAD.encode(key_sha256)),
            SessionUser::Local => ("local", String::new()),
        };
        let body = format!(
            "{FORMAT}.{kind}.{key}.{}.{}",
            session.expires_at,
            URL_SAFE_NO_PAD.encode(session.nonce)
        );
        let mac = URL_SAFE_NO_PAD.encode(tag(&self.0, &[body.as_bytes()]));
        (format!("{body}.{mac}"), session)
    }

    /// The session a cookie value carries, if its tag is ours and it has not expired.
    pub fn open(&self, cookie: &str, now: i64) -> Option<Session> {
        let (body, mac) = cookie.rsplit_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        if !constant_time_eq(&tag(&self.0, &[body.as_bytes()]), &mac) {
            return None;
        }
        let mut fields = body.split('.');
        let (format, kind, key, expires, nonce) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if format != FORMAT || fields.next().is_some() {
            return None;
        }
        let expires_at: i64 = expires.parse().ok()?;
        if expires_at <= now {
            return None;
        }
        let nonce: [u8; 16] = URL_SAFE_NO_PAD.decode(nonce).ok()?.try_into().ok()?;
        let user = match kind {
            "operator" => SessionUser::Operator,
            "local" => SessionUser::Local,
            "tenant" => SessionUser::Tenant {
                key_sha256: URL_SAFE_NO_PAD.decode(key).ok()?.try_into().ok()?,
            },
            _ => return None,
        };
        Some(Session {
            user,
            expires_at,
            nonce,
        })
    }

    /// The CSRF token of a session: what its pages embed and its state changes must send.
    pub fn csrf_token(&self, session: &Session) -> String {
        URL_SAFE_NO_PAD.encode(tag(&self.0, &[b"csrf", &session.nonce]))
    }

    /// Whether `token` is the session's CSRF token.
    pub fn csrf_matches(&self, session: &Session, token: &str) -> bool {
        constant_time_eq(self.csrf_token(session).as_bytes(), token.as_bytes())
    }
}

/// The value of the session cookie among a `Cookie` header's pairs.
pub fn session_cookie(cookie_header: &str) -> Option<&str> {
    cookie_header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == SESSION_COOKIE).then_some(value)
    })
}

fn tag(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC pads a key shorter than the hash's 64-byte block with zeros; padding it here
    // makes construction infallible (no key-length error to handle) and changes nothing.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&GenericArray::clone_from_slice(&block));
    // Each part is length-prefixed, so no two sequences of parts tag alike.
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey::derive(&[7; 32], &[9; 32])
    }

    #[test]
    fn a_session_opens_until_it_expires() {
        let user = SessionUser::Tenant {
            key_sha256: [3; 32],
        };
        let (cookie, session) = key().issue(user.clone(), 1000, 60, [1; 16]);
        assert_eq!(key().open(&cookie, 1059), Some(session.clone()));
        assert_eq!(key().open(&cookie, 1060), None);
        assert_eq!(session.user, user);
    }

    #[test]
    fn a_changed_cookie_or_another_key_is_refused() {
        let (cookie, _) = key().issue(
            SessionUser::Tenant {
                key_sha256: [3; 32],
            },
            0,
            60,
            [1; 16],
        );
        let operator = cookie.replacen(".tenant.", ".operator.", 1);
        assert_eq!(key().open(&operator, 1), None);
        let later = cookie.replacen(".60.", ".999999.", 1);
        assert_eq!(key().open(&later, 1), None);
        let rotated = SessionKey::derive(&[7; 32], &[8; 32]);
        assert_eq!(rotated.open(&cookie, 1), None);
        for junk in [
            "",
            ".",
            "s1",
            "s1.operator...",
            "a.b.c.d.e.f.g",
            &cookie[1..],
        ] {
            assert_eq!(key().open(junk, 1), None, "{junk}");
        }
    }

    #[test]
    fn the_padded_key_is_plain_hmac() {
        let mut plain = <Hmac<Sha256> as Mac>::new_from_slice(&[5; 32]).unwrap_or_else(|_| {
            unreachable!("HMAC takes any key length");
        });
        plain.update(&2u64.to_be_bytes());
        plain.update(b"hi");
        let expected: [u8; 32] = plain.finalize().into_bytes().into();
        assert_eq!(tag(&[5; 32], &[b"hi"]), expected);
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let (_, a) = key().issue(SessionUser::Operator, 0, 60, [1; 16]);
        let (_, b) = key().issue(SessionUser::Operator, 0, 60, [2; 16]);
        assert!(key().csrf_matches(&a, &key().csrf_token(&a)));
        assert!(!key().csrf_matches(&a, &key().csrf_token(&b)));
        assert!(!key().csrf_matches(&a, ""));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(
            session_cookie("a=1; basalt_session=s1.x; b=2"),
            Some("s1.x")
        );
        assert_eq!(session_cookie("basalt_sessionx=1"), None);
    }
}
