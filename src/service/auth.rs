//! Authentication: API keys (token and Basic), sessions, login with rate limiting, key generation.
//! Must not know HTTP: the API layer reads headers and cookies and hands over `Credentials`.

use super::documents::{get_auth, set_auth};
use super::permissions::Caller;
use crate::crypto::{digest, random_token, secrets_equal, verify_password};
use crate::error::{Error, Result};
use crate::site::Site;
use crate::store::{self, Doc, Param};
use serde_json::Value;

/// What a request presented to prove who it is.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `token key:secret` or Basic.
    ApiKey { key: String, secret: String },
    /// The `sid` cookie.
    Session { sid: String },
    /// Nothing.
    None,
}

/// How long a verified API key is trusted without reading the database again. A disabled user
/// or a regenerated key takes effect at once in the process that made the change, and within
/// this time in other processes.
const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// The site's cache of verified keys.
fn key_cache(site: &Site) -> std::sync::Arc<KeyCache> {
    site.extensions.get_or_default()
}

/// Forgets every verified key of the site (a user, role or key changed).
pub fn forget_verified_keys(site: &Site) {
    key_cache(site).clear();
}

/// Recently verified API keys: (verified at, clear secret, caller).
#[derive(Debug, Default)]
pub struct KeyCache {
    entries:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, String, Caller)>>,
}

impl KeyCache {
    fn get(&self, key: &str, secret: &str) -> Option<Caller> {
        let entries = self.entries.lock().expect("key cache");
        let (at, s, caller) = entries.get(key)?;
        (at.elapsed() < KEY_CACHE_TTL && secrets_equal(s, secret)).then(|| caller.clone())
    }

    fn put(&self, key: &str, secret: &str, caller: &Caller) {
        let mut entries = self.entries.lock().expect("key cache");
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(
            key.to_string(),
            (
                std::time::Instant::now(),
                secret.to_string(),
                caller.clone(),
            ),
        );
    }

    /// Forgets every key (a user, role or key changed).
    pub fn clear(&self) {
        self.entries.lock().expect("key cache").clear();
    }
}

/// A signed-in caller plus the session facts the HTTP layer needs.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    /// The CSRF token the session must send, for desk sessions.
    pub csrf_token: Option<String>,
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A user's `enabled` and roles, a row per role (one with a null role when it has none).
const CALLER: &str = r#"SELECT u.name AS known, u.enabled, r.role FROM "tabUser" u
    LEFT JOIN "tabHas Role" r ON r.parent = u.name AND r.parenttype = 'User'
    WHERE u.name = $1"#;

/// A session and its user as [`CALLER`] reads one: a request with a cookie is one statement.
const SESSION_CALLER: &str = r#"SELECT s."user", s.csrf_token, s.expires_at, u.name AS known, u.enabled, r.role
    FROM "__sessions" s
    LEFT JOIN "tabUser" u ON u.name = s."user"
    LEFT JOIN "tabHas Role" r ON r.parent = u.name AND r.parenttype = 'User'
    WHERE s.sid_hash = $1"#;

/// The caller `user` as [`CALLER`]'s rows show it: refused when missing or disabled.
fn caller_from(user: &str, rows: &[Doc]) -> Result<Caller> {
    let Some(u) = rows
        .first()
        .filter(|r| r.get("known").is_some_and(|k| !k.is_null()))
    else {
        return Err(Error::Authentication(format!("User {user} does not exist")));
    };
    if u.get("enabled").and_then(Value::as_i64) == Some(0) {
        return Err(Error::Authentication(format!("User {user} is disabled")));
    }
    let mut roles: Vec<String> = rows
        .iter()
        .filter_map(|r| r.get("role").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    roles.push("All".into());
    if user == "Administrator" {
        roles.push("Administrator".into());
    }
    Ok(Caller {
        user: user.into(),
        roles,
        session: None,
    })
}

/// [`Site::caller_for`] on a connection already held (a write transaction's: its cache is warm).
pub async fn caller_in(conn: &mut store::Conn, user: &str) -> Result<Caller> {
    if user == "Guest" {
        return Ok(Caller::guest());
    }
    let rows = store::fetch_docs(conn, CALLER, &[Param::text(user)]).await?;
    caller_from(user, &rows)
}

impl Site {
    /// The caller with the roles of `user` (from `Has Role`), refused when disabled or missing.
    pub async fn caller_for(&self, user: &str) -> Result<Caller> {
        if user == "Guest" {
            return Ok(Caller::guest());
        }
        let mut conn = self.store.conn().await?;
        caller_in(&mut conn, user).await
    }

    /// Resolves credentials to a caller: Guest when none were sent.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<Authenticated> {
        match creds {
            Credentials::None => Ok(Authenticated {
                caller: Caller::guest(),
                csrf_token: None,
            }),
            Credentials::ApiKey { key, secret } => {
                if let Some(caller) = key_cache(self).get(key, secret) {
                    return Ok(Authenticated {
                        caller,
                        csrf_token: None,
                    });
                }
                let mut conn = self.store.conn().await?;
                let rows = store::fetch_docs(
                    &mut conn,
                    r#"SELECT name FROM "tabUser" WHERE api_key = $1"#,
                    &[Param::Text(Some(key.clone()))],
                )
                .await?;
                let Some(user) = rows.first().map(|r| text(r.get("name"))) else {
                    return Err(Error::Authentication(
                        "Invalid API key: no user has this key".into(),
                    ));
                };
                let stored = get_auth(&mut conn, "User", &user, "api_secret")
                    .await?
                    .unwrap_or_default();
                drop(conn);
                let clear = if stored.is_empty() {
                    String::new()
                } else {
                    self.cipher.decrypt(&stored)?
                };
                if clear.is_empty() || !secrets_equal(&clear, secret) {
                    return Err(Error::Authentication(
                        "Invalid API secret for this API key".into(),
                    ));
                }
                let caller = self.caller_for(&user).await?;
                key_cache(self).put(key, secret, &caller);
                Ok(Authenticated {
                    caller,
                    csrf_token: None,
                })
            }
            Credentials::Session { sid } => {
                let mut conn = self.store.conn().await?;
                let rows =
                    store::fetch_docs(&mut conn, SESSION_CALLER, &[Param::text(&digest(sid))])
                        .await?;
                drop(conn);
                match rows.first() {
                    Some(r) if text(r.get("expires_at")) > self.clock.now() => {
                        let csrf = r
                            .get("csrf_token")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        let user = text(r.get("user"));
                        let mut caller = match user.as_str() {
                            "Guest" => Caller::guest(),
                            _ => caller_from(&user, &rows)?,
                        };
                        caller.session = Some(digest(sid));
                        Ok(Authenticated {
                            caller,
                            csrf_token: csrf,
                        })
                    }
                    // An expired or unknown session is a visitor, as in Frappe.
                    _ => Ok(Authenticated {
                        caller: Caller::guest(),
                        csrf_token: None,
                    }),
                }
            }
        }
    }

    /// Checks a user's password and opens a session; `from` is the client address for the rate limit.
    /// Returns (sid, full name).
    pub async fn login(
        &self,
        usr: &str,
        pwd: &str,
        from: &str,
        desk: bool,
    ) -> Result<(String, String, Option<String>)> {
        let key = format!("{usr}|{from}");
        let now_s = chrono::Utc::now().timestamp();
        let window = self.config.login_window_seconds;
        // The attempt is counted before the password is checked, in the transaction that
        // reads the count: parallel attempts cannot pass the limit between the two.
        {
            let mut tx = self.store.begin().await?;
            if tx.dialect() == store::Dialect::Postgres {
                store::fetch_values(
                    &mut tx,
                    "SELECT pg_advisory_xact_lock($1)",
                    &[Param::Int(Some(crate::crypto::lock_key("login", &key)))],
                )
                .await?;
            }
            store::execute(
                &mut tx,
                r#"DELETE FROM "__login_failures" WHERE at < $1"#,
                &[Param::Int(Some(now_s - window))],
            )
            .await?;
            let n = store::fetch_scalar(
                &mut tx,
                r#"SELECT COUNT(*) FROM "__login_failures" WHERE key = $1"#,
                &[Param::Text(Some(key.clone()))],
            )
            .await?
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
            if n >= self.config.login_max_failures {
                tx.commit().await?;
                return Err(Error::TooManyRequests(format!(
                    "Too many failed logins for {usr}; try again in {window} seconds"
                )));
            }
            store::execute(
                &mut tx,
                r#"INSERT INTO "__login_failures" (key, at) VALUES ($1, $2)"#,
                &[Param::Text(Some(key.clone())), Param::Int(Some(now_s))],
            )
            .await?;
            tx.commit().await?;
        }
        let mut conn = self.store.conn().await?;
        let user = store::fetch_docs(
            &mut conn,
            r#"SELECT name, full_name, enabled FROM "tabUser" WHERE name = $1"#,
            &[Param::Text(Some(usr.into()))],
        )
        .await?;
        let hash = get_auth(&mut conn, "User", usr, "password").await?;
        drop(conn);
        let enabled = user
            .first()
            .is_some_and(|u| u.get("enabled").and_then(Value::as_i64) != Some(0));
        // An unknown user costs one hash check too, so timing does not tell who exists.
        let pwd_owned = pwd.to_string();
        let verified = tokio::task::spawn_blocking(move || match hash {
            Some(h) => verify_password(&pwd_owned, &h),
            None => {
                verify_password(&pwd_owned, crate::crypto::decoy_password_hash());
                false
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("password check stopped: {e}")))?;
        if !(verified && enabled) {
            return Err(Error::Authentication("Invalid login credentials".into()));
        }
        let sid = random_token(40);
        let csrf = desk.then(|| random_token(32));
        let expires = (self.clock.now_naive()
            + chrono::Duration::hours(self.config.session_expiry_hours))
        .format(crate::time::DATETIME_FORMAT)
        .to_string();
        let mut tx = self.store.begin().await?;
        store::execute(
            &mut tx,
            r#"DELETE FROM "__login_failures" WHERE key = $1"#,
            &[Param::Text(Some(key))],
        )
        .await?;
        store::execute(
            &mut tx,
            r#"INSERT INTO "__sessions" (sid_hash, "user", csrf_token, expires_at, created) VALUES ($1, $2, $3, $4, $5)"#,
            &[Param::Text(Some(digest(&sid))), Param::Text(Some(usr.into())), Param::Text(csrf.clone()), Param::Text(Some(expires)), Param::Text(Some(self.clock.now()))],
        )
        .await?;
        store::execute(
            &mut tx,
            r#"DELETE FROM "__sessions" WHERE expires_at < $1"#,
            &[Param::Text(Some(self.clock.now()))],
        )
        .await?;
        tx.commit().await?;
        let full_name = user
            .first()
            .map(|u| text(u.get("full_name")))
            .unwrap_or_default();
        Ok((sid, full_name, csrf))
    }

    /// Ends a session.
    pub async fn logout(&self, sid: &str) -> Result<()> {
        let mut tx = self.store.begin().await?;
        store::execute(
            &mut tx,
            r#"DELETE FROM "__sessions" WHERE sid_hash = $1"#,
            &[Param::Text(Some(digest(sid)))],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets `api_key` (when empty) and a new `api_secret` for `user`; returns the secret once.
    pub async fn generate_keys(&self, caller: &Caller, user: &str) -> Result<(String, String)> {
        if !caller.is_system_manager() && caller.user != user {
            return Err(Error::Permission(format!(
                "Only a System Manager or {user} may generate keys for {user}"
            )));
        }
        let mut tx = self.store.begin().await?;
        let rows = store::fetch_docs(
            &mut tx,
            r#"SELECT api_key FROM "tabUser" WHERE name = $1"#,
            &[Param::Text(Some(user.into()))],
        )
        .await?;
        let Some(row) = rows.first() else {
            return Err(Error::DoesNotExist(format!("User {user} not found")));
        };
        let mut key = text(row.get("api_key"));
        if key.is_empty() {
            key = random_token(15);
        }
        let secret = random_token(15);
        store::execute(
            &mut tx,
            r#"UPDATE "tabUser" SET api_key = $1, api_secret = '*****', modified = $2, modified_by = $3 WHERE name = $4"#,
            &[Param::Text(Some(key.clone())), Param::Text(Some(self.clock.now())), Param::Text(Some(caller.user.clone())), Param::Text(Some(user.into()))],
        )
        .await?;
        set_auth(
            &mut tx,
            "User",
            user,
            "api_secret",
            &self.cipher.encrypt(&secret),
            true,
        )
        .await?;
        tx.commit().await?;
        forget_verified_keys(self);
        Ok((key, secret))
    }

    /// Sets a user's login password (CLI and server use); the user's sessions end.
    pub async fn set_password(&self, user: &str, password: &str) -> Result<()> {
        let hash = crate::crypto::hash_password(password)?;
        let mut tx = self.store.begin().await?;
        set_auth(&mut tx, "User", user, "password", &hash, false).await?;
        end_sessions(&mut tx, user, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Decrypts a Password field for a System Manager; the keys of the streaming types stay hidden.
    pub async fn get_password(
        &self,
        caller: &Caller,
        doctype: &str,
        name: &str,
        field: &str,
    ) -> Result<String> {
        if !caller.is_system_manager() {
            return Err(Error::Permission(
                "Only a System Manager may read passwords".into(),
            ));
        }
        if matches!(doctype, "Event Producer" | "Event Consumer")
            || (doctype == "User" && field == "password")
        {
            return Err(Error::Permission(format!(
                "The {field} of {doctype} is never returned"
            )));
        }
        let mut conn = self.store.conn().await?;
        let stored = get_auth(&mut conn, doctype, name, field)
            .await?
            .ok_or_else(|| {
                Error::DoesNotExist(format!("No {field} is set for {doctype} {name}"))
            })?;
        self.cipher.decrypt(&stored)
    }

    /// Decrypts a stored Password field for server code.
    pub async fn decrypt_field(
        &self,
        doctype: &str,
        name: &str,
        field: &str,
    ) -> Result<Option<String>> {
        let mut conn = self.store.conn().await?;
        match get_auth(&mut conn, doctype, name, field).await? {
            Some(s) => Ok(Some(self.cipher.decrypt(&s)?)),
            None => Ok(None),
        }
    }
}

/// Ends the sessions of `user`, except the one whose hashed sid is `keep`.
pub async fn end_sessions(conn: &mut store::Conn, user: &str, keep: Option<&str>) -> Result<()> {
    store::execute(
        conn,
        r#"DELETE FROM "__sessions" WHERE "user" = $1 AND sid_hash <> $2"#,
        &[Param::text(user), Param::text(keep.unwrap_or(""))],
    )
    .await?;
    Ok(())
}
