//! Who is calling and what their roles allow, from the types' DocPerm rows.
//! Must not read the database: a `Caller` carries its roles.

use crate::error::{Error, Result};
use crate::meta::{DocType, PermType};

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name (email), `Administrator` or `Guest`.
    pub user: String,
    /// Role names, `All` included for every signed-in user.
    pub roles: Vec<String>,
    /// The hashed `sid` when the caller came with a session cookie (its other sessions end
    /// when it changes its password, this one stays).
    pub session: Option<String>,
}

impl Caller {
    /// The anonymous caller.
    pub fn guest() -> Caller {
        Caller {
            user: "Guest".into(),
            roles: vec!["Guest".into()],
            session: None,
        }
    }

    /// Administrator, for server-side work.
    pub fn administrator() -> Caller {
        Caller {
            user: "Administrator".into(),
            roles: vec![
                "Administrator".into(),
                "System Manager".into(),
                "All".into(),
            ],
            session: None,
        }
    }

    /// True for Guest.
    pub fn is_guest(&self) -> bool {
        self.user == "Guest"
    }

    /// True when the caller has the role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Administrator or System Manager.
    pub fn is_system_manager(&self) -> bool {
        self.user == "Administrator"
            || self.has_role("Administrator")
            || self.has_role("System Manager")
    }

    /// True when the caller's roles allow `perm` on `dt`.
    pub fn can(&self, dt: &DocType, perm: PermType) -> bool {
        if self.is_guest() {
            return false;
        }
        if matches!(perm, PermType::Submit | PermType::Cancel) && !dt.is_submittable {
            return false;
        }
        let administrator = self.user == "Administrator" || self.has_role("Administrator");
        // System Managers follow the type's own System Manager rule where it has one (Event
        // Update Logs are read-only for them); on types without one they may do everything.
        let sm_rule = dt.permissions.iter().any(|p| p.role == "System Manager");
        if administrator || (self.is_system_manager() && !sm_rule) {
            return true;
        }
        dt.permissions.iter().any(|p| {
            self.has_role(&p.role)
                && match perm {
                    PermType::Read => p.read,
                    PermType::Write => p.write,
                    PermType::Create => p.create,
                    PermType::Delete => p.delete,
                    PermType::Submit => p.submit,
                    PermType::Cancel => p.cancel,
                }
        })
    }

    /// `can`, or a `PermissionError` that says what is missing.
    pub fn require(&self, dt: &DocType, perm: PermType) -> Result<()> {
        if self.can(dt, perm) {
            Ok(())
        } else if self.is_guest() {
            Err(Error::Permission(
                "Not permitted: log in, or send an Authorization header".into(),
            ))
        } else {
            Err(Error::Permission(format!(
                "User {} does not have doctype access via role permission for document {} ({} not allowed)",
                self.user,
                dt.name,
                perm.name()
            )))
        }
    }
}
