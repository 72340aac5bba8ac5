//! `basic_auth_users`: HTTP basic authentication against bcrypt hashes, as exporter-toolkit
//! does it (`web/handler.go`): the same hashes, a cache of credentials already checked, and
//! as much work for an unknown user as for a known one.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Mutex,
};

use base64::Engine as _;
use hyper::header::HeaderValue;
use ring::{hmac, rand::SecureRandom as _};
use tokio::sync::Semaphore;

/// Credentials that passed, remembered so that a scraper's every request does not cost a
/// bcrypt comparison (tens of milliseconds at cost 10). Past this many, the cache starts over:
/// a few users, each with one password, need a few entries.
const CACHED: usize = 64;

/// The users of a web config file and what is known of their credentials.
pub struct BasicAuth {
    /// User name -> bcrypt hash.
    users: BTreeMap<String, String>,
    /// The hash of a random password at the users' highest cost, compared for an unknown user
    /// so that answering takes as long as for a user with a wrong password: the time of an
    /// answer does not say which users exist.
    pub(super) decoy: String,
    /// The key (random, this process's) of [`BasicAuth::tag`].
    key: hmac::Key,
    /// Tags of credentials that passed: never the passwords themselves, nor a plain hash of
    /// them that could be attacked offline from a memory dump.
    passed: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt comparison at a time (exporter-toolkit's `bcryptMtx`): a client sending
    /// wrong passwords as fast as it can takes one core of the blocking pool, not all of them.
    comparing: Semaphore,
}

/// Whether a request may have the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No credentials, or not a user's: answered 401 with `WWW-Authenticate`.
    Denied,
}

impl BasicAuth {
    /// The users of `basic_auth_users` (user name -> bcrypt hash), each hash checked.
    pub(super) fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, String> {
        let mut cost = 0;
        for (user, hash) in &users {
            let parts: bcrypt::HashParts = hash.parse().map_err(|e| {
                format!("basic_auth_users: the hash of user {user:?} is not a bcrypt hash: {e}")
            })?;
            cost = cost.max(parts.get_cost());
        }
        let random = ring::rand::SystemRandom::new();
        let mut secret = [0u8; 32];
        random
            .fill(&mut secret)
            .map_err(|_| "cannot get random bytes for the credential cache".to_string())?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        random
            .fill(&mut secret)
            .map_err(|_| "cannot get random bytes for the credential cache".to_string())?;
        let decoy = bcrypt::hash(secret, cost)
            .map_err(|e| format!("basic_auth_users: cannot hash at cost {cost}: {e}"))?;
        Ok(BasicAuth {
            users,
            decoy,
            key,
            passed: Mutex::new(HashSet::new()),
            comparing: Semaphore::new(1),
        })
    }

    /// Whether `authorization` (the request's header) holds a user's name and password.
    /// The bcrypt comparison runs on the blocking pool, never on the runtime's thread.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> Verdict {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return Verdict::Denied;
        };
        let tag = self.tag(&user, &password);
        if self.passed().contains(&tag) {
            return Verdict::Allowed;
        }
        let (known, hash) = match self.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => (false, self.decoy.clone()),
        };
        let matches = {
            // Never closed: the permit always comes.
            let _permit = self.comparing.acquire().await;
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                .await
                .is_ok_and(|verified| verified.unwrap_or(false))
        };
        if !(known && matches) {
            return Verdict::Denied;
        }
        let mut passed = self.passed();
        if passed.len() >= CACHED {
            passed.clear();
        }
        passed.insert(tag);
        Verdict::Allowed
    }

    /// The cache of credentials that passed (a panic while it was held left nothing half
    /// done: a set of tags).
    pub(super) fn passed(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.passed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cache's key for a user name and password: HMAC-SHA256 under this process's key,
    /// the name's length first so that no two pairs run together.
    fn tag(&self, user: &str, password: &str) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(&(user.len() as u64).to_le_bytes());
        context.update(user.as_bytes());
        context.update(password.as_bytes());
        let mut tag = [0; 32];
        tag.copy_from_slice(context.sign().as_ref());
        tag
    }
}

/// The user name and password of an `Authorization: Basic ...` header (RFC 7617), if it is
/// one.
fn credentials(header: &HeaderValue) -> Option<(String, String)> {
    let header = header.to_str().ok()?;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
