//! Fernet tokens in upstream Keystone's format: a msgpack payload inside a Fernet token, padding stripped, keys in
//! a key repository (files `0`..`N` in one directory; `0` is the staged key, the highest number is the primary)
//! rotated the way `keystone-manage fernet_rotate` does.
//!
//! Payloads follow Keystone's layouts: `[version, user_id, methods, scope…, expires_at, audit_ids, …]`, where ids
//! that are UUID hex strings travel as 16 raw bytes (`[true, bytes]`) and others as text (`[false, text]`), methods
//! are a bitmask over the configured method list, `expires_at` is a float timestamp and audit ids are raw bytes of
//! their URL-safe base64 form.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeZone, Utc};
use fernet::{Fernet, MultiFernet};
use rmpv::Value;

use crate::error::Error;

/// Upstream's auth method order; a token's `methods` is a bitmask over it.
pub const AUTH_METHODS: &[&str] = &["external", "password", "token", "oauth1", "mapped", "application_credential"];

/// What a token says: who, how, for what scope, until when.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    pub user_id: String,
    pub methods: Vec<String>,
    pub scope: Scope,
    pub expires_at: DateTime<Utc>,
    pub audit_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Scope {
    Unscoped,
    Domain(String),
    Project(String),
    System,
    ApplicationCredential { project_id: String, app_cred_id: String },
    /// A trust-scoped token: the trust's project, through trust `trust_id`.
    Trust { project_id: String, trust_id: String },
}

const VERSION_UNSCOPED: u64 = 0;
const VERSION_DOMAIN: u64 = 1;
const VERSION_PROJECT: u64 = 2;
const VERSION_TRUST: u64 = 3;
const VERSION_SYSTEM: u64 = 8;
const VERSION_APP_CRED: u64 = 9;

/// The key repository and the Fernet instance built from it.
pub struct TokenKeys {
    dir: PathBuf,
    fernet: MultiFernet,
}

impl TokenKeys {
    /// Loads the repository at `dir`, creating it with a primary and a staged key on first use.
    pub fn load_or_create(dir: &Path) -> Result<TokenKeys, Error> {
        if read_keys(dir)?.is_empty() {
            fs::create_dir_all(dir).map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
            write_key(dir, 0, &Fernet::generate_key())?;
            write_key(dir, 1, &Fernet::generate_key())?;
        }
        Self::load(dir)
    }

    pub fn load(dir: &Path) -> Result<TokenKeys, Error> {
        let keys = read_keys(dir)?;
        if keys.is_empty() {
            return Err(Error::Config(format!("no Fernet keys in {}", dir.display())));
        }
        // Primary (highest index) first: it encrypts; every key decrypts.
        let mut fernets = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().rev() {
            let f = Fernet::new(key.trim())
                .ok_or_else(|| Error::Config(format!("Fernet key {}/{index} is malformed", dir.display())))?;
            fernets.push(f);
        }
        Ok(TokenKeys { dir: dir.to_path_buf(), fernet: MultiFernet::new(fernets) })
    }

    /// Rotates like upstream: the staged key becomes the new primary, a new staged key is created, and the oldest
    /// secondary keys beyond `max_active` are removed. Tokens signed by the previous primary stay valid.
    pub fn rotate(dir: &Path, max_active: usize) -> Result<(), Error> {
        let keys = read_keys(dir)?;
        let Some(staged) = keys.iter().find(|(i, _)| *i == 0).map(|(_, k)| k.clone()) else {
            return Err(Error::Config(format!("no staged key (0) in {}", dir.display())));
        };
        let next = keys.iter().map(|(i, _)| *i).max().unwrap_or(0) + 1;
        write_key(dir, next, &staged)?;
        write_key(dir, 0, &Fernet::generate_key())?;
        let mut indexes: Vec<u64> = read_keys(dir)?.into_iter().map(|(i, _)| i).filter(|i| *i != 0).collect();
        indexes.sort_unstable();
        let keep = max_active.max(2) - 1; // the staged key counts as active
        while indexes.len() > keep {
            let oldest = indexes.remove(0);
            fs::remove_file(dir.join(oldest.to_string()))
                .map_err(|e| Error::Config(format!("cannot remove old key {oldest}: {e}")))?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a token for `payload`.
    pub fn issue(&self, payload: &Payload) -> Result<String, Error> {
        let packed = pack(payload)?;
        Ok(self.fernet.encrypt(&packed).trim_end_matches('=').to_string())
    }

    /// Decrypts and decodes a token. Expiry is the caller's business (it needs the clock anyway).
    pub fn open(&self, token: &str) -> Result<Payload, Error> {
        if token.len() > 1024 || token.is_empty() {
            return Err(Error::InvalidToken);
        }
        let mut padded = token.to_string();
        while padded.len() % 4 != 0 {
            padded.push('=');
        }
        let bytes = self.fernet.decrypt(&padded).map_err(|_| Error::InvalidToken)?;
        unpack(&bytes)
    }

    /// Encrypts arbitrary data with the primary key (the credential key repository stores blobs this way).
    pub fn encrypt(&self, data: &[u8]) -> String {
        self.fernet.encrypt(data)
    }

    /// Decrypts what [`TokenKeys::encrypt`] produced with any key of the repository.
    pub fn decrypt(&self, data: &str) -> Result<Vec<u8>, Error> {
        self.fernet
            .decrypt(data)
            .map_err(|_| Error::Internal(format!("data cannot be decrypted with the keys in {}", self.dir.display())))
    }
}

fn read_keys(dir: &Path) -> Result<Vec<(u64, String)>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Config(format!("cannot read {}: {e}", dir.display()))),
    };
    let mut keys = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(index) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else { continue };
        let key = fs::read_to_string(entry.path())
            .map_err(|e| Error::Config(format!("cannot read key {}: {e}", entry.path().display())))?;
        keys.push((index, key));
    }
    keys.sort_by_key(|(i, _)| *i);
    Ok(keys)
}

/// Writes a key file atomically with mode 0600.
fn write_key(dir: &Path, index: u64, key: &str) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{index}.tmp"));
    let err = |e: std::io::Error| Error::Config(format!("cannot write key {index} in {}: {e}", dir.display()));
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(key.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, dir.join(index.to_string())).map_err(err)
}

fn methods_to_int(methods: &[String]) -> u64 {
    AUTH_METHODS.iter().enumerate().filter(|(_, m)| methods.iter().any(|x| x == *m)).map(|(i, _)| 1u64 << i).sum()
}

fn int_to_methods(bits: u64) -> Vec<String> {
    AUTH_METHODS.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, m)| m.to_string()).collect()
}

/// `[true, 16 bytes]` for a UUID hex id, `[false, text]` otherwise, as upstream.
fn pack_id(id: &str) -> Value {
    match uuid::Uuid::try_parse(id) {
        Ok(u) if id.len() == 32 && id == u.simple().to_string() => {
            Value::Array(vec![Value::Boolean(true), Value::Binary(u.as_bytes().to_vec())])
        }
        _ => Value::Array(vec![Value::Boolean(false), Value::String(id.into())]),
    }
}

fn unpack_id(v: &Value) -> Result<String, Error> {
    let Value::Array(parts) = v else { return Err(Error::InvalidToken) };
    match parts.as_slice() {
        [Value::Boolean(true), Value::Binary(b)] => {
            let u = uuid::Uuid::from_slice(b).map_err(|_| Error::InvalidToken)?;
            Ok(u.simple().to_string())
        }
        [Value::Boolean(false), Value::String(s)] => s.as_str().map(str::to_string).ok_or(Error::InvalidToken),
        [Value::Boolean(false), Value::Binary(b)] => String::from_utf8(b.clone()).map_err(|_| Error::InvalidToken),
        _ => Err(Error::InvalidToken),
    }
}

fn pack_audit_ids(ids: &[String]) -> Result<Value, Error> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(Value::Binary(URL_SAFE_NO_PAD.decode(id).map_err(|_| Error::InvalidToken)?));
    }
    Ok(Value::Array(out))
}

fn unpack_audit_ids(v: &Value) -> Result<Vec<String>, Error> {
    let Value::Array(items) = v else { return Err(Error::InvalidToken) };
    items
        .iter()
        .map(|i| match i {
            Value::Binary(b) => Ok(URL_SAFE_NO_PAD.encode(b)),
            _ => Err(Error::InvalidToken),
        })
        .collect()
}

fn pack(p: &Payload) -> Result<Vec<u8>, Error> {
    let expires = p.expires_at.timestamp_micros() as f64 / 1_000_000.0;
    let user = pack_id(&p.user_id);
    let methods = Value::from(methods_to_int(&p.methods));
    let audit = pack_audit_ids(&p.audit_ids)?;
    let items = match &p.scope {
        Scope::Unscoped => vec![Value::from(VERSION_UNSCOPED), user, methods, Value::F64(expires), audit],
        Scope::Domain(d) => vec![Value::from(VERSION_DOMAIN), user, methods, pack_id(d), Value::F64(expires), audit],
        Scope::Project(pr) => {
            vec![Value::from(VERSION_PROJECT), user, methods, pack_id(pr), Value::F64(expires), audit]
        }
        Scope::System => {
            vec![Value::from(VERSION_SYSTEM), user, methods, Value::from("all"), Value::F64(expires), audit]
        }
        Scope::ApplicationCredential { project_id, app_cred_id } => vec![
            Value::from(VERSION_APP_CRED),
            user,
            methods,
            pack_id(project_id),
            Value::F64(expires),
            audit,
            pack_id(app_cred_id),
        ],
        Scope::Trust { project_id, trust_id } => vec![
            Value::from(VERSION_TRUST),
            user,
            methods,
            pack_id(project_id),
            Value::F64(expires),
            audit,
            pack_id(trust_id),
        ],
    };
    let mut buf = Vec::with_capacity(96);
    rmpv::encode::write_value(&mut buf, &Value::Array(items)).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(buf)
}

fn unpack(bytes: &[u8]) -> Result<Payload, Error> {
    let mut cursor = bytes;
    let value = rmpv::decode::read_value(&mut cursor).map_err(|_| Error::InvalidToken)?;
    let Value::Array(items) = value else { return Err(Error::InvalidToken) };
    let version = items.first().and_then(Value::as_u64).ok_or(Error::InvalidToken)?;
    let get = |i: usize| items.get(i).ok_or(Error::InvalidToken);
    let user_id = unpack_id(get(1)?)?;
    let methods = int_to_methods(get(2)?.as_u64().ok_or(Error::InvalidToken)?);
    let (scope, rest) = match version {
        VERSION_UNSCOPED => (Scope::Unscoped, 3),
        VERSION_DOMAIN => (Scope::Domain(unpack_id(get(3)?)?), 4),
        VERSION_PROJECT => (Scope::Project(unpack_id(get(3)?)?), 4),
        VERSION_SYSTEM => (Scope::System, 4),
        VERSION_TRUST => (Scope::Trust { project_id: unpack_id(get(3)?)?, trust_id: unpack_id(get(6)?)? }, 4),
        VERSION_APP_CRED => (
            Scope::ApplicationCredential { project_id: unpack_id(get(3)?)?, app_cred_id: unpack_id(get(6)?)? },
            4,
        ),
        _ => return Err(Error::InvalidToken),
    };
    let expires = get(rest)?.as_f64().ok_or(Error::InvalidToken)?;
    let expires_at = Utc.timestamp_micros((expires * 1_000_000.0).round() as i64).single().ok_or(Error::InvalidToken)?;
    let audit_ids = unpack_audit_ids(get(rest + 1)?)?;
    Ok(Payload { user_id, methods, scope, expires_at, audit_ids })
}

/// A fresh audit id: 16 random bytes, URL-safe base64 without padding (22 characters), as upstream.
pub fn new_audit_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(scope: Scope) -> Payload {
        Payload {
            user_id: uuid::Uuid::new_v4().simple().to_string(),
            methods: vec!["password".into()],
            scope,
            expires_at: Utc.timestamp_micros(1_900_000_000_123_456).unwrap(),
            audit_ids: vec![new_audit_id()],
        }
    }

    #[test]
    fn round_trips_every_scope() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let pid = uuid::Uuid::new_v4().simple().to_string();
        for scope in [
            Scope::Unscoped,
            Scope::Domain("default".into()),
            Scope::Project(pid.clone()),
            Scope::System,
            Scope::ApplicationCredential { project_id: pid.clone(), app_cred_id: "ac1".into() },
            Scope::Trust { project_id: pid.clone(), trust_id: uuid::Uuid::new_v4().simple().to_string() },
        ] {
            let p = payload(scope);
            let token = keys.issue(&p).unwrap();
            assert!(!token.ends_with('='));
            assert_eq!(keys.open(&token).unwrap(), p);
        }
    }

    #[test]
    fn non_uuid_ids_and_methods_bitmask() {
        let mut p = payload(Scope::Project("admin-project".into()));
        p.user_id = "not-a-uuid".into();
        p.methods = vec!["password".into(), "token".into()];
        assert_eq!(methods_to_int(&p.methods), 2 | 4);
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(keys.open(&keys.issue(&p).unwrap()).unwrap(), p);
    }

    #[test]
    fn garbage_and_foreign_tokens_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let other = TokenKeys::load_or_create(other_dir.path()).unwrap();
        let foreign = other.issue(&payload(Scope::System)).unwrap();
        for bad in ["", "abc", "gAAAA", &foreign, &"x".repeat(5000)] {
            assert!(matches!(keys.open(bad), Err(Error::InvalidToken)), "{bad}");
        }
        let mut token = keys.issue(&payload(Scope::System)).unwrap();
        token.replace_range(20..21, if &token[20..21] == "A" { "B" } else { "A" });
        assert!(matches!(keys.open(&token), Err(Error::InvalidToken)));
    }

    #[test]
    fn rotation_keeps_previous_primary_valid_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let old = keys.issue(&payload(Scope::System)).unwrap();
        TokenKeys::rotate(dir.path(), 3).unwrap();
        let keys = TokenKeys::load(dir.path()).unwrap();
        assert!(keys.open(&old).is_ok(), "token of the previous primary must stay valid");
        let newer = keys.issue(&payload(Scope::System)).unwrap();
        TokenKeys::rotate(dir.path(), 3).unwrap();
        let names: Vec<u64> = read_keys(dir.path()).unwrap().into_iter().map(|(i, _)| i).collect();
        assert_eq!(names, vec![0, 2, 3], "staged + two newest");
        let keys = TokenKeys::load(dir.path()).unwrap();
        assert!(keys.open(&old).is_err(), "pruned key no longer validates");
        assert!(keys.open(&newer).is_ok());
    }
}
