//! Secrets of a write: Password fields encrypted and login passwords hashed into `__Auth`,
//! never into the document's own columns.
//! Must not log a secret nor return one.

use super::Pending;
use crate::error::Result;
use crate::meta::DocType;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Param};

pub(super) async fn store_secrets(
    site: &Site,
    conn: &mut Conn,
    caller: &Caller,
    dt: &DocType,
    name: &str,
    pending: &Pending,
) -> Result<()> {
    for (field, plain) in &pending.secrets {
        set_auth(
            conn,
            &dt.name,
            name,
            field,
            &site.cipher.encrypt(plain),
            true,
        )
        .await?;
    }
    if let Some(pw) = &pending.login_password {
        set_auth(
            conn,
            &dt.name,
            name,
            "password",
            &crate::crypto::hash_password(pw)?,
            false,
        )
        .await?;
        // As in Frappe, a new password ends the user's other sessions.
        let keep = (caller.user == name)
            .then_some(caller.session.as_deref())
            .flatten();
        crate::service::auth::end_sessions(conn, name, keep).await?;
    }
    Ok(())
}

/// Stores a secret in `__Auth` (encrypted value or password hash).
pub async fn set_auth(
    conn: &mut Conn,
    doctype: &str,
    name: &str,
    field: &str,
    value: &str,
    encrypted: bool,
) -> Result<()> {
    store::execute(
        conn,
        r#"INSERT INTO "__Auth" (doctype, name, fieldname, password, encrypted) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (doctype, name, fieldname) DO UPDATE SET password = excluded.password, encrypted = excluded.encrypted"#,
        &[Param::text(doctype), Param::text(name), Param::text(field), Param::text(value), Param::Int(Some(encrypted as i64))],
    )
    .await?;
    Ok(())
}

/// Reads a secret from `__Auth` as stored.
pub async fn get_auth(
    conn: &mut Conn,
    doctype: &str,
    name: &str,
    field: &str,
) -> Result<Option<String>> {
    let v = store::fetch_scalar(
        conn,
        r#"SELECT password FROM "__Auth" WHERE doctype = $1 AND name = $2 AND fieldname = $3"#,
        &[Param::text(doctype), Param::text(name), Param::text(field)],
    )
    .await?;
    Ok(v.and_then(|v| v.as_str().map(str::to_string)))
}
