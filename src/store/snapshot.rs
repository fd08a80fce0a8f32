//! A consistent copy of a site's database as plain files in a folder, and back: what `backup`
//! packs and `restore` unpacks. SQLite: the online backup API into one file, while the site
//! writes. PostgreSQL: one REPEATABLE READ snapshot: each site table's definition (columns,
//! constraints, indexes, read from the catalog) and its rows (`COPY` text).
//!
//! Also the "serving" mark that keeps a restore from pulling a database out from under a
//! server: a shared lock each serving process holds (a `flock` beside the SQLite file, a
//! session advisory lock on PostgreSQL), which a restore must take exclusively.
//! Must not know about archives, site folders or `site_config.json` (`service::backup` does).

use super::{postgres, sqlite, Backend, Store};
use crate::error::{Error, Result};
use deadpool_postgres::tokio_postgres::{self, NoTls};
use futures_util::{SinkExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The SQLite file in a snapshot folder.
pub const SQLITE_FILE: &str = "site.sqlite3";
/// The table list of a PostgreSQL snapshot.
const POSTGRES_SCHEMA: &str = "postgres.json";
/// The advisory lock key serving processes share on PostgreSQL ("docs").
const SERVING_LOCK: i64 = 0x646f_6373;
/// The advisory lock of the scheduled backup ("docsbkup"): one process at a time backs a site up.
const BACKUP_LOCK: i64 = 0x646f_6373_626b_7570;

/// What a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// `sqlite` or `postgres`: a snapshot is restored into the same kind of database.
    pub backend: String,
    /// The newest update log's seq in the copy.
    pub newest_seq: i64,
    /// Rows in the copy, all tables together.
    pub rows: u64,
}

/// One PostgreSQL table as the catalog describes it.
#[derive(Debug, Serialize, Deserialize)]
struct TableDef {
    name: String,
    /// Column definitions (`"name" type NOT NULL DEFAULT ...`).
    columns: Vec<String>,
    /// Table constraints (`CONSTRAINT "x" PRIMARY KEY (...)`).
    constraints: Vec<String>,
    /// `CREATE INDEX` statements of indexes no constraint owns.
    indexes: Vec<String>,
    /// The file of its rows, in COPY's text format.
    rows_file: String,
}

impl Store {
    /// Writes a consistent copy of the database into the folder `dir` (which must exist),
    /// while the site may go on writing.
    pub async fn snapshot_into(&self, dir: &Path) -> Result<Snapshot> {
        match &self.backend {
            Backend::Sqlite(db) => {
                let (from, to) = (db.path().to_path_buf(), dir.join(SQLITE_FILE));
                tokio::task::spawn_blocking(move || sqlite_snapshot(&from, &to))
                    .await
                    .map_err(|e| Error::Internal(format!("the backup thread failed: {e}")))?
            }
            Backend::Postgres(pool) => postgres_snapshot(pool, dir).await,
        }
    }

    /// Marks the database as served by this process until the returned mark is dropped;
    /// fails while a restore runs.
    pub async fn mark_serving(&self) -> Result<ServingMark> {
        match &self.backend {
            Backend::Sqlite(db) => {
                let file = lock_file(db.path(), libc::LOCK_SH)?.ok_or_else(|| {
                    Error::Validation(format!(
                        "{} is being restored: serve it once the restore has ended",
                        db.path().display()
                    ))
                })?;
                Ok(ServingMark::File(file))
            }
            Backend::Postgres(pool) => {
                pg_session_lock(pool, "SELECT pg_try_advisory_lock_shared($1)", SERVING_LOCK)
                    .await?
                    .ok_or_else(|| {
                        Error::Validation(
                            "the database is being restored: serve it once the restore has ended"
                                .into(),
                        )
                    })
            }
        }
    }

    /// The site's scheduled-backup lock, taken without waiting: None while another process
    /// (or task) holds it. Released when the returned mark is dropped.
    pub async fn try_backup_lock(&self) -> Result<Option<ServingMark>> {
        match &self.backend {
            Backend::Sqlite(db) => Ok(lock_file_at(
                &suffixed(db.path(), ".backup-lock"),
                libc::LOCK_EX,
            )?
            .map(ServingMark::File)),
            Backend::Postgres(pool) => {
                pg_session_lock(pool, "SELECT pg_try_advisory_lock($1)", BACKUP_LOCK).await
            }
        }
    }
}

/// Takes a session advisory lock with `try_sql` (`pg_try_advisory_lock...($1)`) without
/// waiting; None while another session holds it the other way.
async fn pg_session_lock(
    pool: &deadpool_postgres::Pool,
    try_sql: &str,
    key: i64,
) -> Result<Option<ServingMark>> {
    let client = postgres::get(pool).await?;
    let held = client.query_one(try_sql, &[&key]).await?.get::<_, bool>(0);
    // A session lock outlives its use: the connection leaves the pool with the mark, and
    // closing it releases the lock (a pooled connection would keep it for its next user).
    Ok(held.then(|| ServingMark::Postgres(deadpool_postgres::Object::take(client))))
}

/// Held while a process serves a site (see [`Store::mark_serving`]), or backs it up.
pub enum ServingMark {
    File(std::fs::File),
    Postgres(deadpool_postgres::ClientWrapper),
}

impl std::fmt::Debug for ServingMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServingMark")
    }
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// `flock`s the lock file of `db` (`LOCK_SH` or `LOCK_EX`) without waiting; None when another
/// process holds it the other way.
fn lock_file(db: &Path, how: libc::c_int) -> Result<Option<std::fs::File>> {
    lock_file_at(&suffixed(db, ".lock"), how)
}

/// `flock`s the file `path` (made if missing) without waiting; None when another holds it.
fn lock_file_at(path: &Path, how: libc::c_int) -> Result<Option<std::fs::File>> {
    use std::os::unix::io::AsRawFd;
    let path = path.to_path_buf();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::file("open", &path))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let r = unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) };
    if r == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(Error::file("lock", &path)(e))
    }
}

fn sqlite_snapshot(from: &Path, to: &Path) -> Result<Snapshot> {
    use rusqlite::backup::{Backup, StepResult};
    use rusqlite::{Connection, OpenFlags};
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| Error::Validation(format!("cannot open {}: {e}", from.display())))?;
    src.busy_timeout(std::time::Duration::from_secs(30))?;
    let mut dst = Connection::open(to)?;
    {
        let backup = Backup::new(&src, &mut dst)?;
        // All pages in one step: one read transaction, so one point in time, while writers go
        // on in the WAL (steps of a few pages would start again at each of their commits).
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }
    let check: String = dst.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(Error::Internal(format!(
            "the copy of {} is damaged: {check}",
            from.display()
        )));
    }
    let newest_seq = dst
        .query_row(
            r#"SELECT COALESCE(MAX(name), 0) FROM "tabEvent Update Log""#,
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    let mut rows = 0u64;
    let tables: Vec<String> = dst
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for t in tables {
        let n: i64 = dst.query_row(&format!("SELECT COUNT(*) FROM {}", super::q(&t)), [], |r| {
            r.get(0)
        })?;
        rows += n as u64;
    }
    dst.execute_batch("PRAGMA journal_mode=DELETE")?;
    Ok(Snapshot {
        backend: "sqlite".into(),
        newest_seq,
        rows,
    })
}

/// The site's tables: Frappe's `tab...` and docstream's `__...`.
const SITE_TABLES: &str = "SELECT c.relname::text FROM pg_class c WHERE c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace AND (left(c.relname, 3) = 'tab' OR left(c.relname, 2) = '__') ORDER BY c.relname";
const TABLE_OID: &str = "(SELECT c.oid FROM pg_class c WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace)";

async fn postgres_snapshot(pool: &postgres::Pool, dir: &Path) -> Result<Snapshot> {
    let client = postgres::get(pool).await?;
    let result = async {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let names = texts(&client, SITE_TABLES, &[]).await?;
        let mut defs = Vec::new();
        let mut rows = 0u64;
        for (i, name) in names.into_iter().enumerate() {
            let def = table_def(&client, &name, format!("{i:04}.copy")).await?;
            let path = dir.join(&def.rows_file);
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(Error::file("write", &path))?;
            let stream = client
                .copy_out(&format!("COPY {} TO STDOUT", super::q(&name)))
                .await?;
            futures_util::pin_mut!(stream);
            while let Some(chunk) = stream.try_next().await? {
                rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(Error::file("write", &path))?;
            }
            file.flush().await.map_err(Error::file("write", &path))?;
            defs.push(def);
        }
        let newest_seq = match defs.iter().any(|d| d.name == "tabEvent Update Log") {
            true => client
                .query_one(
                    r#"SELECT COALESCE(MAX(name), 0)::bigint FROM "tabEvent Update Log""#,
                    &[],
                )
                .await?
                .get::<_, i64>(0),
            false => 0,
        };
        client.batch_execute("COMMIT").await?;
        let path = dir.join(POSTGRES_SCHEMA);
        std::fs::write(&path, serde_json::to_vec_pretty(&defs)?)
            .map_err(Error::file("write", &path))?;
        Ok(Snapshot {
            backend: "postgres".into(),
            newest_seq,
            rows,
        })
    }
    .await;
    if result.is_err() {
        // Its transaction may still be open: the connection must not serve anyone else.
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

/// The first column of every row of `sql`, as text.
async fn texts(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<String>> {
    Ok(client
        .query(sql, params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn table_def(
    client: &tokio_postgres::Client,
    name: &str,
    rows_file: String,
) -> Result<TableDef> {
    let columns = texts(
        client,
        &format!("SELECT quote_ident(a.attname::text) || ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END || COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attrelid = {TABLE_OID} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"),
        &[&name],
    )
    .await?;
    let constraints = texts(
        client,
        &format!("SELECT 'CONSTRAINT ' || quote_ident(conname::text) || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = {TABLE_OID} ORDER BY conname"),
        &[&name],
    )
    .await?;
    let indexes = texts(
        client,
        &format!("SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = {TABLE_OID} AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY i.indexrelid"),
        &[&name],
    )
    .await?;
    Ok(TableDef {
        name: name.to_string(),
        columns,
        constraints,
        indexes,
        rows_file,
    })
}

/// Where a restore leaves its mark (JSON) in the restored database's settings, in the same
/// transaction: what it restored and when.
pub const RESTORED_SETTING: &str = "restored";

/// Puts the snapshot in `dir` into the database at `url`, replacing the site held there, and
/// `marker` under [`RESTORED_SETTING`], all or nothing; refused while a process serves that
/// database.
pub async fn restore_snapshot(url: &str, dir: &Path, backend: &str, marker: &str) -> Result<()> {
    let marker = marker.to_string();
    let is_postgres = url.starts_with("postgres");
    match (backend, is_postgres) {
        ("sqlite", false) => {
            let (from, to) = (dir.join(SQLITE_FILE), sqlite::path_of(url));
            tokio::task::spawn_blocking(move || sqlite_restore(&from, &to, &marker))
                .await
                .map_err(|e| Error::Internal(format!("the restore thread failed: {e}")))?
        }
        ("postgres", true) => postgres_restore(url, dir, &marker).await,
        (made, _) => Err(Error::Validation(format!(
            "this backup was made from a {made} database and the site's database is {}: a backup is restored into the same kind of database (give --db for another database)",
            if is_postgres { "postgres" } else { "sqlite" }
        ))),
    }
}

fn serving_refusal(what: &str) -> Error {
    Error::Validation(format!(
        "{what} is being served: stop every `docstream serve` of this site first"
    ))
}

fn sqlite_restore(from: &Path, to: &Path, marker: &str) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(Error::file("create", parent))?;
    }
    let _lock =
        lock_file(to, libc::LOCK_EX)?.ok_or_else(|| serving_refusal(&to.display().to_string()))?;
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".restoring");
    let tmp = PathBuf::from(tmp);
    std::fs::copy(from, &tmp).map_err(Error::file("write", &tmp))?;
    {
        let conn = rusqlite::Connection::open(&tmp)?;
        conn.execute(
            r#"INSERT INTO "__settings" (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"#,
            rusqlite::params![RESTORED_SETTING, marker],
        )?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut p = to.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(PathBuf::from(&p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::file("remove", Path::new(&p))(e)),
        }
    }
    std::fs::rename(&tmp, to).map_err(Error::file("replace", to))?;
    Ok(())
}

async fn postgres_restore(url: &str, dir: &Path, marker: &str) -> Result<()> {
    let path = dir.join(POSTGRES_SCHEMA);
    let text = std::fs::read(&path).map_err(Error::file("read", &path))?;
    let defs: Vec<TableDef> = serde_json::from_slice(&text)?;
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::Validation(format!("bad database URL: {e}")))?;
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        Error::Validation(format!("cannot open database {}: {e}", super::redact(url)))
    })?;
    let running = tokio::spawn(connection);
    let result = async {
        client.batch_execute("BEGIN").await?;
        let free = client
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SERVING_LOCK])
            .await?
            .get::<_, bool>(0);
        if !free {
            return Err(serving_refusal(&format!(
                "the database {}",
                super::redact(url)
            )));
        }
        let old = texts(&client, SITE_TABLES, &[]).await?;
        for t in old {
            client
                .batch_execute(&format!("DROP TABLE {} CASCADE", super::q(&t)))
                .await?;
        }
        for def in &defs {
            let body: Vec<&str> = def
                .columns
                .iter()
                .chain(&def.constraints)
                .map(String::as_str)
                .collect();
            client
                .batch_execute(&format!(
                    "CREATE TABLE {} ({})",
                    super::q(&def.name),
                    body.join(", ")
                ))
                .await?;
            let rows = dir.join(&def.rows_file);
            let mut file = tokio::fs::File::open(&rows)
                .await
                .map_err(Error::file("read", &rows))?;
            let sink = client
                .copy_in::<_, bytes::Bytes>(&format!("COPY {} FROM STDIN", super::q(&def.name)))
                .await?;
            futures_util::pin_mut!(sink);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).await.map_err(Error::file("read", &rows))?;
                if n == 0 {
                    break;
                }
                sink.send(bytes::Bytes::copy_from_slice(&buf[..n])).await?;
            }
            sink.finish().await?;
            for index in &def.indexes {
                client.batch_execute(index).await?;
            }
        }
        client
            .execute(
                r#"INSERT INTO "__settings" (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"#,
                &[&RESTORED_SETTING, &marker],
            )
            .await?;
        client.batch_execute("COMMIT").await?;
        Ok(())
    }
    .await;
    drop(client);
    let _ = running.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_waits_for_no_server_and_a_server_for_no_restore() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("site.sqlite3");
        let serving = lock_file(&db, libc::LOCK_SH).unwrap();
        assert!(serving.is_some());
        // flock belongs to the open file: a second open stands for another process.
        assert!(lock_file(&db, libc::LOCK_EX).unwrap().is_none());
        assert!(lock_file(&db, libc::LOCK_SH).unwrap().is_some());
        drop(serving);
        let restoring = lock_file(&db, libc::LOCK_EX).unwrap();
        assert!(restoring.is_some());
        assert!(lock_file(&db, libc::LOCK_SH).unwrap().is_none());
    }
}
