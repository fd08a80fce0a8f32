//! The one error type of the library; the HTTP layer turns it into Frappe's error envelope.

/// A failure that a caller can act on, named after Frappe's exception types.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be parsed at all (bad JSON, bad form, a malformed argument).
    #[error("{0}")]
    BadRequest(String),
    /// Parsed input that breaks a rule.
    #[error("{0}")]
    Validation(String),
    /// A required field is missing.
    #[error("{0}")]
    Mandatory(String),
    /// A Link points at a document that does not exist.
    #[error("{0}")]
    LinkValidation(String),
    /// A document cannot be deleted while others link to it.
    #[error("{0}")]
    LinkExists(String),
    /// A save carried a `modified` older than the stored one.
    #[error("{0}")]
    TimestampMismatch(String),
    /// Wrong password, unknown key or wrong secret.
    #[error("{0}")]
    Authentication(String),
    /// The caller's roles do not allow the action.
    #[error("{0}")]
    Permission(String),
    /// No such document or type (Frappe answers these without `exc`).
    #[error("{0}")]
    DoesNotExist(String),
    /// No such method (answered with `exc`, as Frappe's refusal of one is, so that a client
    /// never takes it for an empty success).
    #[error("{0}")]
    NoSuchMethod(String),
    /// A name or unique value already exists.
    #[error("{0}")]
    DuplicateEntry(String),
    /// The request body is larger than the site allows.
    #[error("{0}")]
    TooLarge(String),
    /// Too many failed logins.
    #[error("{0}")]
    TooManyRequests(String),
    /// A desk session did not send its CSRF token.
    #[error("{0}")]
    CsrfToken(String),
    /// Anything unexpected; the message is safe to show, details are logged.
    #[error("{0}")]
    Internal(String),
}

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Frappe's exception class name for this error.
    pub fn exc_type(&self) -> &'static str {
        match self {
            Error::BadRequest(_) | Error::Validation(_) | Error::TooLarge(_) => "ValidationError",
            Error::Mandatory(_) => "MandatoryError",
            Error::LinkValidation(_) => "LinkValidationError",
            Error::LinkExists(_) => "LinkExistsError",
            Error::TimestampMismatch(_) => "TimestampMismatchError",
            Error::Authentication(_) => "AuthenticationError",
            Error::Permission(_) => "PermissionError",
            Error::DoesNotExist(_) | Error::NoSuchMethod(_) => "DoesNotExistError",
            Error::DuplicateEntry(_) => "DuplicateEntryError",
            Error::TooManyRequests(_) => "TooManyRequestsError",
            Error::CsrfToken(_) => "CSRFTokenError",
            Error::Internal(_) => "InternalServerError",
        }
    }

    /// The HTTP status Frappe uses for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) | Error::CsrfToken(_) => 400,
            Error::Authentication(_) => 401,
            Error::Permission(_) => 403,
            Error::DoesNotExist(_) | Error::NoSuchMethod(_) => 404,
            Error::DuplicateEntry(_) => 409,
            Error::TooLarge(_) => 413,
            Error::Validation(_)
            | Error::Mandatory(_)
            | Error::LinkValidation(_)
            | Error::LinkExists(_)
            | Error::TimestampMismatch(_) => 417,
            Error::TooManyRequests(_) => 429,
            Error::Internal(_) => 500,
        }
    }

    /// The human message.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// Turns a file system error into "cannot WHAT PATH: error".
    pub fn file<'a>(
        what: &'static str,
        path: &'a std::path::Path,
    ) -> impl Fn(std::io::Error) -> Error + 'a {
        move |e| Error::Validation(format!("cannot {what} {}: {e}", path.display()))
    }

    /// Shorthand for a validation error.
    pub fn validation(msg: impl Into<String>) -> Self {
        Error::Validation(msg.into())
    }
}

impl From<deadpool_postgres::tokio_postgres::Error> for Error {
    fn from(e: deadpool_postgres::tokio_postgres::Error) -> Self {
        use deadpool_postgres::tokio_postgres::error::SqlState;
        if let Some(db) = e.as_db_error() {
            if *db.code() == SqlState::UNIQUE_VIOLATION {
                return Error::DuplicateEntry(format!("Duplicate entry: {}", db.message()));
            }
            // A NUL in text that reached PostgreSQL anyway (the API refuses it earlier).
            if [
                SqlState::CHARACTER_NOT_IN_REPERTOIRE,
                SqlState::UNTRANSLATABLE_CHARACTER,
            ]
            .contains(db.code())
            {
                return Error::Validation(
                    "Text may not contain the NUL character (\\u0000)".into(),
                );
            }
            // A sum or a cast past the column's range: the query asked for it.
            if *db.code() == SqlState::NUMERIC_VALUE_OUT_OF_RANGE {
                return Error::Validation(format!(
                    "A number in this query is out of range: {}",
                    db.message()
                ));
            }
            // The error's own text is only "db error": what the server said is here.
            return database_error(format!(
                "{} {}: {}{}",
                db.severity(),
                db.code().code(),
                db.message(),
                db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
            ));
        }
        match std::error::Error::source(&e) {
            Some(cause) => database_error(format!("{e}: {cause}")),
            None => database_error(e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        database_error(format!("no PostgreSQL connection: {e}"))
    }
}

/// Any other database error: logged with an id, and only the id goes to the client.
fn database_error(e: impl std::fmt::Display) -> Error {
    let id = rand::random::<u32>();
    tracing::error!(error_id = format!("{id:08x}"), "database error: {e}");
    Error::Internal(format!("Internal error (id {id:08x}); see the server log"))
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, msg) = &e {
            if matches!(
                f.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) {
                let msg = msg.clone().unwrap_or_else(|| f.to_string());
                return Error::DuplicateEntry(format!("Duplicate entry: {msg}"));
            }
            // SQLite's SUM of integers that overflows.
            if msg.as_deref() == Some("integer overflow") {
                return Error::Validation(
                    "A number in this query is out of range: integer overflow".into(),
                );
            }
        }
        database_error(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::BadRequest(format!("Invalid JSON: {e}"))
    }
}
