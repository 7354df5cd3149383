//! One-time login links and the sessions they open.
//!
//! Browsers cannot present the bearer token or client certificate kubectl uses, so the page
//! has its own login, as Jupyter's: the host mints a random token and prints a link holding
//! it; the first request with the token gets a session cookie (HttpOnly, SameSite=Strict)
//! and the token is spent. Only SHA-256 digests of tokens and sessions are kept, so a
//! memory or store dump does not yield a usable credential.
//!
//! `atrest status --web` keeps its tokens in memory ([`MemoryTokens`]). `atrest serve`
//! keeps them in its store ([`StoreTokens`]) under `<prefix>/atrest/ui-logins/`, attached
//! to a lease, so `atrest ui-url` can mint one for a running server and an unused link
//! expires by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atrest_storage::KeyPrefix;
use atrest_store::Store;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long an unused login link stays valid.
pub const LOGIN_TTL: Duration = Duration::from_secs(3600);

/// A random credential (login token or session id): 32 bytes from the OS CSPRNG, as hex.
/// Its `Debug` output does not show it.
pub struct Token(Zeroizing<String>);

impl Token {
    /// A fresh token.
    pub fn generate() -> Result<Self, String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| format!("the OS random number generator failed: {e}"))?;
        Ok(Token(Zeroizing::new(hex::encode(bytes.as_ref()))))
    }

    /// The token's text, for the link (the only place it is shown).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn digest(&self) -> [u8; 32] {
        digest(&self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Where one-time login tokens are kept.
#[async_trait::async_trait]
pub trait LoginTokens: Send + Sync {
    /// Spends `token`: `true` once for a valid, unexpired token; `false` after.
    async fn redeem(&self, token: &str) -> Result<bool, String>;
}

/// Tokens held by this process.
#[derive(Debug, Default)]
pub struct MemoryTokens {
    digests: Mutex<HashMap<[u8; 32], Instant>>,
}

impl MemoryTokens {
    /// Mints a token valid for [`LOGIN_TTL`].
    pub fn mint(&self) -> Result<Token, String> {
        let token = Token::generate()?;
        self.digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.digest(), Instant::now() + LOGIN_TTL);
        Ok(token)
    }
}

#[async_trait::async_trait]
impl LoginTokens for MemoryTokens {
    async fn redeem(&self, token: &str) -> Result<bool, String> {
        let mut digests = self.digests.lock().unwrap_or_else(|p| p.into_inner());
        Ok(matches!(digests.remove(&digest(token)), Some(until) if Instant::now() < until))
    }
}

/// Tokens kept in the store, shared by every process that reads it.
pub struct StoreTokens {
    store: Arc<dyn Store>,
    prefix: KeyPrefix,
}

impl std::fmt::Debug for StoreTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTokens")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl StoreTokens {
    pub fn new(store: Arc<dyn Store>, prefix: KeyPrefix) -> Self {
        StoreTokens { store, prefix }
    }

    fn key(&self, digest: &[u8; 32]) -> String {
        format!(
            "{}{}",
            self.prefix.reserved("ui-logins"),
            hex::encode(digest)
        )
    }

    /// Mints a token valid for [`LOGIN_TTL`] (its record expires with its lease).
    pub async fn mint(&self) -> Result<Token, String> {
        let token = Token::generate()?;
        let lease = self
            .store
            .grant_lease(LOGIN_TTL)
            .await
            .map_err(|e| format!("storing the login token: {e}"))?;
        self.store
            .create(self.key(&token.digest()).as_bytes(), b"{}", Some(lease))
            .await
            .map_err(|e| format!("storing the login token: {e}"))?;
        Ok(token)
    }
}

#[async_trait::async_trait]
impl LoginTokens for StoreTokens {
    async fn redeem(&self, token: &str) -> Result<bool, String> {
        let key = self.key(&digest(token));
        let Some(kv) = self
            .store
            .get(key.as_bytes())
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        // Spent by whoever deletes it first: a link opened twice at once logs in once.
        match self
            .store
            .delete(key.as_bytes(), Some(kv.mod_revision))
            .await
        {
            Ok(_) => Ok(true),
            Err(
                atrest_store::StoreError::Conflict { .. }
                | atrest_store::StoreError::NotFound { .. },
            ) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Open sessions, by digest of the cookie.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Sessions {
    /// Opens a session; the token goes into the cookie.
    pub fn open(&self) -> Token {
        // A failing OS generator leaves an unusable session: the login answers with the
        // redirect but the page then asks to log in again (no weak fallback).
        let token = Token::generate().unwrap_or(Token(Zeroizing::new(String::new())));
        if !token.expose().is_empty() {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            open.retain(|_, until| *until > now);
            open.insert(token.digest(), now + SESSION_TTL);
        }
        token
    }

    /// Whether `cookie` is an open, unexpired session.
    pub fn valid(&self, cookie: Option<&str>) -> bool {
        let Some(cookie) = cookie.filter(|c| !c.is_empty()) else {
            return false;
        };
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        matches!(open.get(&digest(cookie)), Some(until) if Instant::now() < *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_tokens_are_spent_once() {
        let tokens = MemoryTokens::default();
        let token = tokens.mint().expect("CSPRNG");
        assert_eq!(token.expose().len(), 64);
        assert!(!format!("{token:?}").contains(token.expose()));
        assert!(!tokens.redeem("not-a-token").await.expect("memory"));
        assert!(tokens.redeem(token.expose()).await.expect("memory"));
        assert!(!tokens.redeem(token.expose()).await.expect("memory"));
    }

    #[test]
    fn sessions_accept_only_what_they_opened() {
        let sessions = Sessions::default();
        let s = sessions.open();
        assert!(sessions.valid(Some(s.expose())));
        assert!(!sessions.valid(Some("0000")));
        assert!(!sessions.valid(Some("")));
        assert!(!sessions.valid(None));
    }
}
