//! API keys with roles (`[auth] mode = "keys"`): which key may call which route.
//!
//! The keys file holds the SHA-256 digest of each key, never the key. A plain, fast digest is
//! enough because the keys are random, not chosen by people: a key of 32 bytes from
//! `/dev/urandom` has 256 bits of entropy, so a leaked file gives no practical way back to a
//! key (a preimage search of 2^255 digests on average), and there is no dictionary to try.
//! Slow password hashes (argon2, bcrypt) exist to protect guessable passwords, and would cost
//! every request milliseconds; they would buy nothing here. The digest of a presented key is
//! compared with every stored digest in constant time (`subtle`), all of them each time, so
//! neither the time taken nor an early exit says how much of a digest matched.
//!
//! Routes: the health routes, the page (`GET /` and its `/page.js`, `/page.css`) and
//! `/metrics` are open; `/admin/*` needs the `admin` role; every other route, unknown ones
//! included, needs the `predict` role (so a route added later is closed until it is listed
//! here). The rules match the route template axum matched, never the raw path, so no spelling
//! of a path reaches a route the rules do not name.
//!
//! `/metrics` is open because what it shows is aggregate (counts and latencies by route
//! template, method and status; queue depth; the model's name and version, which the open
//! `/readyz` shows too): no request data, no client or key ids, and labels clients cannot
//! add to. Closing it would mean giving every Prometheus scraper a key, and with only two
//! roles that key would be an admin key, one that can also swap the model.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::{ApiError, ServeError};
use crate::state::AppState;

/// `[auth]`: whether requests need an API key, and where the keys' digests are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `off` (the default, for local use) or `keys`.
    pub mode: AuthMode,
    /// The keys file (`[[keys]]` with `id`, `sha256` and `roles`); needed when `mode = "keys"`.
    /// Read at start and again on each SIGHUP.
    pub keys_file: PathBuf,
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No keys: every route is open, and the admin routes take the key in
    /// `[admin] key_env`.
    #[default]
    Off,
    /// Every route but the open ones needs a key from `keys_file` with the route's role.
    Keys,
}

impl AuthConfig {
    /// What is wrong with these settings, if anything.
    ///
    /// # Errors
    /// A sentence naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.mode == AuthMode::Keys && self.keys_file.as_os_str().is_empty() {
            return Err("auth.mode = \"keys\" needs auth.keys_file".into());
        }
        Ok(())
    }
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `/predict`, the `KServe` v2 routes and any other route that is neither open nor admin.
    Predict,
    /// `/admin/*` (reloading the model). Does not include `predict`: list both for both.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Predict => "predict",
            Self::Admin => "admin",
        }
    }
}

/// The role a request to the route template `matched` needs (`None`: the route is open).
/// `None` for `matched` is a path no route matched, which needs `predict` like any other.
#[must_use]
pub fn required_role(matched: Option<&str>) -> Option<Role> {
    match matched {
        Some("/" | "/page.js" | "/page.css" | "/healthz" | "/readyz" | "/metrics") => None,
        Some(route) if route.starts_with("/v2/health/") => None,
        Some(route) if route.starts_with("/admin/") => Some(Role::Admin),
        _ => Some(Role::Predict),
    }
}

/// A key that was presented and matched: its id (never the key) and its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's `id` from the keys file.
    pub id: Arc<str>,
    /// What it may do.
    pub roles: Vec<Role>,
}

impl Principal {
    /// Whether the key has `role`.
    #[must_use]
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// One entry of the keys file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    sha256: String,
    roles: Vec<Role>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

/// A checked keys file.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<(Principal, [u8; 32])>,
}

impl KeySet {
    /// Parses and checks a keys file's text: ids of letters, digits and `._@-` (at most 64),
    /// each id and each digest once, a digest of 64 hex digits, at least one role per key.
    ///
    /// # Errors
    /// A sentence naming the entry and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut keys: Vec<(Principal, [u8; 32])> = Vec::with_capacity(file.keys.len());
        for (i, entry) in file.keys.into_iter().enumerate() {
            let n = i + 1;
            let id_ok = !entry.id.is_empty()
                && entry.id.len() <= 64
                && entry
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
            if !id_ok {
                return Err(format!(
                    "key {n}: id {:?} must be 1 to 64 letters, digits, '.', '_', '@' or '-'",
                    entry.id
                ));
            }
            let digest = parse_digest(&entry.sha256).ok_or_else(|| {
                format!(
                    "key {:?}: sha256 must be 64 hex digits (the first field of `sha256sum`'s \
                     output), not the key itself",
                    entry.id
                )
            })?;
            if entry.roles.is_empty() {
                return Err(format!(
                    "key {:?}: roles is empty; give it \"predict\", \"admin\" or both",
                    entry.id
                ));
            }
            if let Some((other, _)) = keys.iter().find(|(p, _)| *p.id == *entry.id) {
                return Err(format!("key {:?} is listed twice", other.id));
            }
            if let Some((other, _)) = keys.iter().find(|(_, d)| *d == digest) {
                return Err(format!(
                    "keys {:?} and {:?} have the same sha256 (one key under two ids)",
                    other.id, entry.id
                ));
            }
            let mut roles = entry.roles;
            roles.dedup();
            keys.push((
                Principal {
                    id: entry.id.into(),
                    roles,
                },
                digest,
            ));
        }
        Ok(Self { keys })
    }

    /// Reads and checks the keys file at `path`.
    ///
    /// # Errors
    /// [`ServeError::Credentials`] naming the file and what is wrong.
    pub fn load(path: &Path) -> Result<Self, ServeError> {
        let error = |message: String| ServeError::Credentials {
            path: path.to_path_buf(),
            what: "API keys file",
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        Self::parse(&text).map_err(error)
    }

    /// How many keys there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key whose digest is `key`'s, comparing with every stored digest in constant time.
    #[must_use]
    pub fn find(&self, key: &[u8]) -> Option<&Principal> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = None;
        for (principal, stored) in &self.keys {
            if bool::from(stored[..].ct_eq(&digest[..])) {
                found = Some(principal);
            }
        }
        found
    }
}

/// The SHA-256 of `key` as 64 lowercase hex digits: what the keys file's `sha256` holds.
#[must_use]
pub fn hash_key(key: &[u8]) -> String {
    use std::fmt::Write as _;
    Sha256::digest(key)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = (high * 16 + low) as u8;
    }
    Some(digest)
}

/// The server's authentication: its settings and the keys now in force.
pub struct Auth {
    config: AuthConfig,
    /// `None` until the keys file has been read once.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Serialises reloads, so the last file read is the one in force.
    reloading: Mutex<()>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .field("keys", &self.current().map(|k| k.len()))
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Authentication with `config`. Reads nothing: with `mode = "keys"`, call
    /// [`Auth::reload`] before serving ([`crate::serve`] does); until then every protected
    /// route answers 503.
    #[must_use]
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            config: config.clone(),
            keys: RwLock::new(None),
            reloading: Mutex::new(()),
        }
    }

    /// Whether requests need keys (`mode = "keys"`).
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.config.mode == AuthMode::Keys
    }

    /// The keys in force, once read.
    #[must_use]
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the keys file again and puts its keys in force; a file that does not read or
    /// check is refused (and logged) and the keys already in force stay. Blocks on file I/O:
    /// call it off the async executor. Does nothing (`Ok(0)`) with `mode = "off"`.
    ///
    /// # Errors
    /// [`ServeError::Credentials`] naming the file and what is wrong.
    pub fn reload(&self) -> Result<usize, ServeError> {
        if !self.is_on() {
            return Ok(0);
        }
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let path = &self.config.keys_file;
        match KeySet::load(path) {
            Ok(keys) => {
                let count = keys.len();
                if keys.is_empty() {
                    tracing::warn!(file = %path.display(), "the keys file has no keys: every protected route answers 401");
                }
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(keys));
                tracing::info!(file = %path.display(), keys = count, "API keys loaded");
                Ok(count)
            }
            Err(e) => {
                tracing::warn!(error = %e, "keys file refused; the keys already in force (if any) stay");
                Err(e)
            }
        }
    }

    /// Reads the keys file if keys are on and it has not been read yet.
    ///
    /// # Errors
    /// As [`Auth::reload`].
    pub fn ensure_loaded(&self) -> Result<(), ServeError> {
        if self.is_on() && self.current().is_none() {
            self.reload()?;
        }
        Ok(())
    }
}

/// The key a request presents: `Authorization: Bearer <key>`, else the `key_header` header
/// (`rate_limit.client_header`, `x-api-key` by default).
fn presented_key<'a>(headers: &'a HeaderMap, key_header: &str) -> Option<&'a [u8]> {
    let bearer = headers.get_all(header::AUTHORIZATION).iter().find_map(|v| {
        let v = v.as_bytes();
        (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii())
    });
    bearer
        .or_else(|| {
            (!key_header.is_empty())
                .then(|| headers.get(key_header))
                .flatten()
                .map(HeaderValue::as_bytes)
        })
        .filter(|k| !k.is_empty())
}

/// Decides whether `request` may reach its route: `Ok(None)` when keys are off or the route
/// is open, `Ok(Some(key))` for a key with the route's role; else the refusal (401 without a
/// key or with an unknown one, 403 for a key without the role, 503 while no keys are loaded).
pub(crate) fn authorize(
    state: &AppState,
    request: &Request,
) -> Result<Option<Principal>, ApiError> {
    let auth = &state.auth;
    if !auth.is_on() {
        return Ok(None);
    }
    let matched = request.extensions().get::<MatchedPath>();
    let Some(role) = required_role(matched.map(MatchedPath::as_str)) else {
        return Ok(None);
    };
    let Some(keys) = auth.current() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "auth_unavailable",
            "no API keys are loaded yet; retry",
        )
        .retry_after(1));
    };
    let Some(key) = presented_key(request.headers(), &state.config.rate_limit.client_header) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_key",
            "this route needs an API key: send Authorization: Bearer <key>",
        ));
    };
    let Some(principal) = keys.find(key) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_key",
            "unknown API key",
        ));
    };
    if !principal.has(role) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "key {:?} does not have the {} role this route needs",
                principal.id,
                role.name()
            ),
        ));
    }
    Ok(Some(principal.clone()))
}

/// Adds the `WWW-Authenticate` challenge a 401 must carry, where it has none.
pub(crate) fn challenge(response: &mut Response) {
    if response.status() == StatusCode::UNAUTHORIZED
        && !response.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"kiln\""),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_check_and_match() {
        let alice = hash_key(b"alice-key");
        let text = format!(
            "[[keys]]\nid = \"alice\"\nsha256 = \"{alice}\"\nroles = [\"predict\"]\n\
             [[keys]]\nid = \"ops\"\nsha256 = \"{}\"\nroles = [\"admin\", \"predict\"]\n",
            hash_key(b"ops-key").to_uppercase()
        );
        let keys = KeySet::parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(&*keys.find(b"alice-key").unwrap().id, "alice");
        assert!(keys.find(b"ops-key").unwrap().has(Role::Admin));
        assert!(!keys.find(b"alice-key").unwrap().has(Role::Admin));
        assert!(keys.find(b"alice-key ").is_none());
        assert!(keys.find(b"").is_none());

        let entry = |id: &str, sha256: &str, roles: &str| {
            format!("[[keys]]\nid = \"{id}\"\nsha256 = \"{sha256}\"\nroles = [{roles}]\n")
        };
        let other = hash_key(b"x");
        let refused = [
            (entry("a b", &alice, "\"predict\""), "id"),
            (entry("a", "alice-key", "\"predict\""), "64 hex"),
            (entry("a", &alice[1..], "\"predict\""), "64 hex"),
            (entry("a", &alice, ""), "roles is empty"),
            (entry("a", &alice, "\"root\""), "unknown variant"),
            (
                entry("a", &alice, "\"predict\"") + "key = \"x\"\n",
                "unknown field",
            ),
            (
                text.clone() + &entry("alice", &other, "\"predict\""),
                "twice",
            ),
            (
                text.clone() + &entry("bob", &alice, "\"predict\""),
                "same sha256",
            ),
        ];
        for (text, why) in refused {
            let error = KeySet::parse(&text).unwrap_err();
            assert!(error.contains(why), "{error} (wanted {why})");
        }
        assert!(KeySet::parse("").unwrap().is_empty());
    }

    #[test]
    fn routes_and_their_roles() {
        for open in [
            "/",
            "/page.js",
            "/page.css",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v2/health/live",
            "/v2/health/ready",
        ] {
            assert_eq!(required_role(Some(open)), None, "{open}");
        }
        assert_eq!(required_role(Some("/admin/reload")), Some(Role::Admin));
        for closed in [
            "/predict",
            "/v2",
            "/v2/models/{name}/infer",
            "/v2/models/{name}",
        ] {
            assert_eq!(required_role(Some(closed)), Some(Role::Predict), "{closed}");
        }
        assert_eq!(required_role(None), Some(Role::Predict));
    }

    #[test]
    fn keys_come_from_bearer_or_the_key_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers, "x-api-key"), None);
        headers.insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(presented_key(&headers, "x-api-key"), Some(&b"k1"[..]));
        assert_eq!(presented_key(&headers, ""), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  k2 "),
        );
        assert_eq!(presented_key(&headers, "x-api-key"), Some(&b"k2"[..]));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic a2V5"),
        );
        assert_eq!(presented_key(&headers, "x-api-key"), Some(&b"k1"[..]));
    }
}
