//! SQLite through rusqlite, called on the caller's thread.
//!
//! One writer connection behind an async mutex (a site has one writer at a time anyway) and a
//! small pool of read-only connections. Statements are short and run synchronously: handing
//! each one to a worker thread cost more than the statement itself.

use super::{Doc, Param};
use crate::error::{Error, Result};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// Readers open at once, at most; more wait.
const MAX_READERS: usize = 16;
/// Idle readers kept for reuse.
const IDLE_READERS: usize = 4;
/// Prepared statements cached per connection.
const STATEMENT_CACHE: usize = 256;
/// Least time between two background checkpoints on a busy database ...
const CHECKPOINT_GAP: Duration = Duration::from_millis(50);
/// ... and on a quiet one, whose last checkpoint found fewer than [`BUSY_WAL_FRAMES`]: each
/// checkpoint syncs two files, which a data folder of many lightly written sites (a head office's
/// 200 branches on one machine) would otherwise do thousands of times a second.
const QUIET_CHECKPOINT_GAP: Duration = Duration::from_secs(1);
/// WAL frames (pages) that make a database busy: 4 MiB.
const BUSY_WAL_FRAMES: i64 = 1_000;
/// WAL pages at which a commit checkpoints by itself, should the background fall behind.
const WAL_AUTOCHECKPOINT: u32 = 10_000;

/// The connections of one SQLite file.
#[derive(Debug)]
pub(super) struct Db {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    idle: SyncMutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    checkpoints: Checkpoints,
}

/// Copies committed WAL frames into the database file on a thread of its own, so commits do
/// not pay for it (SQLite would otherwise checkpoint inside whichever commit crosses the limit).
/// Every commit is copied within [`CHECKPOINT_GAP`] on a busy database and
/// [`QUIET_CHECKPOINT_GAP`] on a quiet one.
#[derive(Debug)]
struct Checkpoints {
    wake: SyncSender<()>,
    /// A commit is waiting for the thread: later commits need not wake it (a wake-up per
    /// commit was a context switch per commit).
    pending: Arc<AtomicBool>,
}

impl Checkpoints {
    fn start(path: &Path) -> Result<Checkpoints> {
        let conn = open_conn(path, false, false)?;
        let (wake, rx) = sync_channel::<()>(1);
        let pending = Arc::new(AtomicBool::new(false));
        let seen = pending.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let mut gap = CHECKPOINT_GAP;
                let mut last = Instant::now() - QUIET_CHECKPOINT_GAP;
                // Ends when the database is dropped (its sender with it), after a last copy.
                while rx.recv().is_ok() {
                    // Commits that come meanwhile are copied by the same checkpoint.
                    let mut open = true;
                    while let Some(rest) = (last + gap).checked_duration_since(Instant::now()) {
                        match rx.recv_timeout(rest) {
                            Ok(()) => {}
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    last = Instant::now();
                    // Cleared before the copy: a commit from now on wakes the thread again.
                    seen.store(false, Ordering::SeqCst);
                    // PASSIVE never waits on readers or the writer; frames it cannot copy now
                    // are copied next time. Its second column is the number of WAL frames.
                    match conn
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
                    {
                        Ok(frames) if frames >= BUSY_WAL_FRAMES => gap = CHECKPOINT_GAP,
                        Ok(_) => gap = QUIET_CHECKPOINT_GAP,
                        Err(e) => tracing::debug!("background checkpoint: {e}"),
                    }
                    if !open {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpoints { wake, pending })
    }

    /// After a commit: the thread copies it soon (one wake-up stands for any number).
    fn committed(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            let _ = self.wake.try_send(());
        }
    }
}

/// A connection in use: the writer (held exclusively) or a reader.
#[derive(Debug)]
pub(super) enum Handle {
    Writer(OwnedMutexGuard<Connection>, Arc<Db>),
    Reader(Reader),
}

/// A reader on loan from the pool; it goes back when dropped.
#[derive(Debug)]
pub(super) struct Reader {
    conn: Option<Connection>,
    db: Arc<Db>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let (Some(conn), Ok(mut idle)) = (self.conn.take(), self.db.idle.lock()) {
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
    }
}

impl Handle {
    /// Tells the database a transaction on this handle committed.
    pub(super) fn committed(&self) {
        if let Handle::Writer(_, db) = self {
            db.checkpoints.committed();
        }
    }

    /// Ends a transaction left open (a failed COMMIT, or a `Tx` dropped), so the writer goes
    /// back clean to the next task.
    pub(super) fn roll_back_if_open(&self) {
        if !self.conn().is_autocommit() {
            let _ = self.conn().execute_batch("ROLLBACK");
        }
    }

    /// The connection.
    pub(super) fn conn(&self) -> &Connection {
        match self {
            Handle::Writer(g, _) => g,
            Handle::Reader(r) => r.conn.as_ref().expect("reader present until dropped"),
        }
    }
}

/// The path in a `sqlite://PATH` (or `sqlite:PATH`) URL, without query options.
pub(super) fn path_of(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

fn open_conn(path: &Path, create: bool, read_only: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000; \
         PRAGMA foreign_keys=OFF; PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT};"
    ))?;
    if read_only {
        // A write on a reader would wait on the writer's lock while holding a thread; it is
        // refused instead, so such a bug shows at once.
        conn.execute_batch("PRAGMA query_only=ON;")?;
    }
    Ok(conn)
}

impl Db {
    /// Opens the file of `url` (creating it when `create`).
    pub(super) fn open(url: &str, create: bool) -> Result<Arc<Db>> {
        let path = path_of(url);
        let writer = open_conn(&path, create, false).map_err(|e| {
            Error::Validation(format!("cannot open database {}: {e}", path.display()))
        })?;
        let checkpoints = Checkpoints::start(&path)?;
        Ok(Arc::new(Db {
            path,
            writer: Arc::new(Mutex::new(writer)),
            idle: SyncMutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_READERS)),
            checkpoints,
        }))
    }

    /// The database file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The writer, once no other task of this process holds it.
    pub(super) async fn writer(self: &Arc<Db>) -> Handle {
        Handle::Writer(self.writer.clone().lock_owned().await, self.clone())
    }

    /// A reader.
    pub(super) async fn reader(self: &Arc<Db>) -> Result<Handle> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the database is closed".into()))?;
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.path, false, true)?,
        };
        Ok(Handle::Reader(Reader {
            conn: Some(conn),
            db: self.clone(),
            _permit: permit,
        }))
    }

    /// Drops idle readers and refuses new ones.
    pub(super) fn close(&self) {
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// The statement with `$N` placeholders written `?N`, which SQLite numbers itself: asking a
/// statement for its parameter names is linear per name, so quadratic on multi-row inserts.
fn numbered(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    // Only ASCII bytes change, one for one, so the text stays valid UTF-8.
    let mut bytes = sql.as_bytes().to_vec();
    let mut quote = 0u8;
    for i in 0..bytes.len() {
        let b = bytes[i];
        if quote != 0 {
            if b == quote {
                quote = 0;
            }
        } else if b == b'\'' || b == b'"' {
            quote = b;
        } else if b == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            bytes[i] = b'?';
        }
    }
    Cow::Owned(String::from_utf8(bytes).expect("ASCII-for-ASCII swaps keep UTF-8 valid"))
}

/// Binds `params` by position (`?N` takes the Nth).
fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Param]) -> Result<()> {
    let wanted = stmt.parameter_count();
    if wanted > params.len() {
        return Err(Error::Internal(format!(
            "statement wants {wanted} parameters, got {}",
            params.len()
        )));
    }
    for (i, p) in params.iter().take(wanted).enumerate() {
        match p {
            Param::Text(v) => stmt.raw_bind_parameter(i + 1, v.as_deref())?,
            Param::Int(v) => stmt.raw_bind_parameter(i + 1, *v)?,
            Param::Float(v) => stmt.raw_bind_parameter(i + 1, *v)?,
        }
    }
    Ok(())
}

fn cell(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        ValueRef::Text(t) | ValueRef::Blob(t) => Value::String(String::from_utf8_lossy(t).into()),
    }
}

/// Runs a statement, returning the rows it changed.
pub(super) fn execute(conn: &Connection, sql: &str, params: &[Param]) -> Result<u64> {
    let mut stmt = conn.prepare_cached(&numbered(sql))?;
    bind(&mut stmt, params)?;
    Ok(stmt.raw_execute()? as u64)
}

/// Runs one statement (with `?N` placeholders) once per set of parameters.
pub(super) fn execute_each(conn: &Connection, sql: &str, rows: &[Vec<Param>]) -> Result<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    for row in rows {
        bind(&mut stmt, row)?;
        stmt.raw_execute()?;
    }
    Ok(())
}

/// Runs a query; rows as JSON objects by column name.
pub(super) fn fetch_docs(conn: &Connection, sql: &str, params: &[Param]) -> Result<Vec<Doc>> {
    let mut stmt = conn.prepare_cached(&numbered(sql))?;
    bind(&mut stmt, params)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    // Column names are read once the first row is there: a cached statement is prepared again
    // by its first step after a schema change, and only then has its new columns.
    let mut names: Option<Vec<String>> = None;
    while let Some(row) = rows.next()? {
        let names = names.get_or_insert_with(|| {
            let st = row.as_ref();
            (0..st.column_count())
                .map(|i| st.column_name(i).unwrap_or_default().to_string())
                .collect()
        });
        let mut m = Map::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            m.insert(name.clone(), cell(row.get_ref(i)?));
        }
        out.push(m);
    }
    Ok(out)
}

/// Runs a query; rows as values by position (columns may share a name).
pub(super) fn fetch_values(
    conn: &Connection,
    sql: &str,
    params: &[Param],
) -> Result<Vec<Vec<Value>>> {
    let mut stmt = conn.prepare_cached(&numbered(sql))?;
    bind(&mut stmt, params)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let width = row.as_ref().column_count();
        out.push(
            (0..width)
                .map(|i| row.get_ref(i).map(cell))
                .collect::<rusqlite::Result<_>>()?,
        );
    }
    Ok(out)
}

/// Runs one or more statements without parameters.
pub(super) fn execute_batch(conn: &Connection, sql: &str) -> Result<()> {
    Ok(conn.execute_batch(sql)?)
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn dollar_placeholders_become_numbered_outside_quotes() {
        assert_eq!(
            numbered(r#"SELECT '$1', "a$2" FROM t WHERE x = $2 AND y = $10 OR z = $"#),
            r#"SELECT '$1', "a$2" FROM t WHERE x = ?2 AND y = ?10 OR z = $"#
        );
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
    }
}
