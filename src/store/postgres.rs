//! PostgreSQL through tokio-postgres and a deadpool pool.
//!
//! What a PostgreSQL write costs is mostly round trips, so they are counted: a statement is
//! prepared once per connection (each later run is one round trip), a transaction's BEGIN is
//! not sent on its own but with its first statement (tokio-postgres pipelines requests made
//! together), a statement whose answer nobody needs is deferred to travel with the next one or
//! the COMMIT, and nothing is sent when a connection is handed out or given back, except that
//! one idle for more than [`IDLE_BEFORE_PING`] is checked first.

use super::{Doc, Param};
use crate::error::{Error, Result};
use deadpool_postgres::tokio_postgres::types::{FromSql, ToSql, Type};
use deadpool_postgres::tokio_postgres::{self, NoTls, Row, Statement};
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Object, RecyclingMethod};
use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use std::time::Duration;

/// The pool of a site's connections.
pub(super) type Pool = deadpool_postgres::Pool;

/// How long a pooled connection may sit unused before it is checked when handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// Prepared statements a connection keeps; past this its cache starts again (list queries
/// with filters of their own would otherwise grow it for ever).
const MAX_STATEMENTS: usize = 512;

/// A connection in use: pooled, or carrying a transaction.
#[derive(Debug)]
pub(super) enum Handle {
    Pool(Object),
    Tx(Txn),
}

/// A transaction's connection. Its BEGIN goes out with its first statement; dropped while
/// open, it is rolled back before the connection goes back to the pool.
#[derive(Debug)]
pub(super) struct Txn {
    client: Option<Object>,
    /// The statement that opens the transaction, until it has been sent.
    begin: Option<&'static str>,
    /// A statement failed since the transaction began, or since it last rolled back to a
    /// savepoint: PostgreSQL would quietly turn a COMMIT into a ROLLBACK, so commit refuses.
    failed: bool,
    /// Statements nobody waits for, sent with the next statement or the COMMIT.
    deferred: Vec<(String, Vec<Param>)>,
}

impl Txn {
    /// A transaction opened by `begin` (`BEGIN`, or `BEGIN READ ONLY`) on `client`.
    pub(super) fn new(client: Object, begin: &'static str) -> Txn {
        Txn {
            client: Some(client),
            begin: Some(begin),
            failed: false,
            deferred: Vec::new(),
        }
    }

    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("client present until the transaction ends")
    }

    /// Commits (nothing to send when no statement ran); statements deferred go with the COMMIT,
    /// in one round trip (if one fails, PostgreSQL rolls the transaction back instead).
    pub(super) async fn commit(mut self) -> Result<()> {
        if self.begin.is_some() && self.deferred.is_empty() {
            return Ok(());
        }
        if self.failed {
            self.end("ROLLBACK").await?;
            return Err(Error::Internal(
                "a statement of this transaction failed: it was rolled back".into(),
            ));
        }
        let deferred = std::mem::take(&mut self.deferred);
        let begin = self.begin.take();
        let client = self
            .client
            .take()
            .expect("client present until the transaction ends");
        let committed = async {
            let deferred = prepare_all(&client, &deferred).await?;
            after_pending(&client, begin, &deferred, client.batch_execute("COMMIT")).await
        }
        .await;
        if committed.is_err() {
            // Its state is unknown: it must not serve another transaction.
            drop(Object::take(client));
        }
        committed
    }

    /// Rolls back.
    pub(super) async fn rollback(mut self) -> Result<()> {
        if self.begin.is_some() {
            return Ok(());
        }
        self.end("ROLLBACK").await
    }

    async fn end(&mut self, sql: &str) -> Result<()> {
        let client = self
            .client
            .take()
            .expect("client present until the transaction ends");
        match client.batch_execute(sql).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Its state is unknown: it must not serve another transaction.
                drop(Object::take(client));
                Err(e.into())
            }
        }
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if self.begin.is_some() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

impl Handle {
    fn client(&self) -> &Object {
        match self {
            Handle::Pool(c) => c,
            Handle::Tx(t) => t.client(),
        }
    }

    /// The BEGIN still to send with the next statement (then it counts as sent).
    fn take_begin(&mut self) -> Option<&'static str> {
        match self {
            Handle::Tx(t) => t.begin.take(),
            Handle::Pool(_) => None,
        }
    }

    /// The deferred statements to send before the next one.
    fn take_deferred(&mut self) -> Vec<(String, Vec<Param>)> {
        match self {
            Handle::Tx(t) => std::mem::take(&mut t.deferred),
            Handle::Pool(_) => Vec::new(),
        }
    }

    fn note<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            if let Handle::Tx(t) = self {
                t.failed = true;
            }
        }
        r
    }

    /// Keeps the connection out of the pool (it may hold a session lock): it closes.
    pub(super) fn detach(self) {
        if let Handle::Pool(c) = self {
            drop(Object::take(c));
        }
    }
}

/// Opens a pool on `url`, failing at once when the database does not answer.
pub(super) async fn open(url: &str) -> Result<Pool> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::Validation(format!("bad database URL: {e}")))?;
    let cannot_open =
        |e: String| Error::Validation(format!("cannot open database {}: {e}", super::redact(url)));
    // One direct connection first, so a wrong URL fails at once instead of after the pool's
    // wait timeout.
    let (client, _connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| cannot_open(e.to_string()))?;
    drop(client);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        // As many as the 16 concurrent writers the bench drives, and a few for pulls; three
        // processes on one server stay well under PostgreSQL's default of 100.
        .max_size(20)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(30)))
        // Only a connection unused for a while may have been cut (a server restart, a
        // firewall's idle timeout); one in steady use fails loudly, and is dropped, if it was.
        .pre_recycle(Hook::async_fn(|client, metrics| {
            Box::pin(async move {
                if metrics.last_used() > IDLE_BEFORE_PING {
                    client.simple_query("").await.map_err(HookError::Backend)?;
                }
                Ok(())
            })
        }))
        .build()
        .map_err(|e| cannot_open(e.to_string()))
}

/// A connection from the pool.
pub(super) async fn get(pool: &Pool) -> Result<Object> {
    Ok(pool.get().await?)
}

fn param_type(p: &Param) -> Type {
    match p {
        Param::Text(_) => Type::TEXT,
        Param::Int(_) => Type::INT8,
        Param::Float(_) => Type::FLOAT8,
    }
}

fn param_value(p: &Param) -> &(dyn ToSql + Sync) {
    match p {
        Param::Text(v) => v,
        Param::Int(v) => v,
        Param::Float(v) => v,
    }
}

/// Runs a statement (BEGIN first when the transaction has not begun, in the same round trip):
/// its rows and the number of rows it changed.
async fn run(h: &mut Handle, sql: &str, params: &[Param]) -> Result<(Vec<Row>, u64)> {
    // Prepared before BEGIN is taken: a statement that cannot be prepared leaves the
    // transaction unbegun, and the next statement begins it.
    let deferred = h.take_deferred();
    let prepared = async {
        Ok::<_, Error>((
            prepare_all(h.client(), &deferred).await?,
            prepare(h.client(), sql, params).await?,
        ))
    }
    .await;
    let (deferred, statement) = h.note(prepared)?;
    let begin = h.take_begin();
    let r = run_on(h.client(), begin, &deferred, &statement, params).await;
    h.note(r)
}

/// Defers a statement to the next one of the transaction, or its COMMIT (outside a
/// transaction it runs at once).
pub(super) async fn execute_deferred(h: &mut Handle, sql: &str, params: Vec<Param>) -> Result<()> {
    match h {
        Handle::Tx(t) => {
            t.deferred.push((sql.to_string(), params));
            Ok(())
        }
        Handle::Pool(_) => execute(h, sql, &params).await.map(|_| ()),
    }
}

/// Deferred statements with their prepared forms.
type Prepared<'a> = Vec<(Statement, &'a [Param])>;

async fn prepare_all<'a>(
    client: &Object,
    deferred: &'a [(String, Vec<Param>)],
) -> Result<Prepared<'a>> {
    let mut out = Vec::with_capacity(deferred.len());
    for (sql, params) in deferred {
        out.push((prepare(client, sql, params).await?, params.as_slice()));
    }
    Ok(out)
}

/// Runs `main` after BEGIN (when given) and the deferred statements, all sent together (one
/// round trip); the first failure is the answer.
async fn after_pending<T>(
    client: &Object,
    begin: Option<&'static str>,
    deferred: &Prepared<'_>,
    main: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    if begin.is_none() && deferred.is_empty() {
        return Ok(main.await?);
    }
    let (before, done) = tokio::join!(send_first(client, begin, deferred), main);
    before?;
    Ok(done?)
}

/// Sends BEGIN (when given) and the deferred statements, in order, and waits for them: the
/// caller polls it together with its own statement, so all travel in one round trip.
async fn send_first(
    client: &Object,
    begin: Option<&'static str>,
    deferred: &Prepared<'_>,
) -> Result<()> {
    let began = async {
        match begin {
            Some(b) => client.batch_execute(b).await,
            None => Ok(()),
        }
    };
    let sent = futures_util::future::join_all(
        deferred
            .iter()
            .map(|(st, params)| client.execute_raw(st, params.iter().map(param_value))),
    );
    let (began, sent) = tokio::join!(began, sent);
    began?;
    for r in sent {
        r?;
    }
    Ok(())
}

/// The statement, prepared on this connection once.
async fn prepare(client: &Object, sql: &str, params: &[Param]) -> Result<Statement> {
    if client.statement_cache.size() >= MAX_STATEMENTS {
        client.statement_cache.clear();
    }
    let types: Vec<Type> = params.iter().map(param_type).collect();
    Ok(client.prepare_typed_cached(sql, &types).await?)
}

async fn run_on(
    client: &Object,
    begin: Option<&'static str>,
    deferred: &Prepared<'_>,
    statement: &Statement,
    params: &[Param],
) -> Result<(Vec<Row>, u64)> {
    let rows = async {
        let stream = client
            .query_raw(statement, params.iter().map(param_value))
            .await?;
        let mut stream = std::pin::pin!(stream);
        let mut rows = Vec::new();
        while let Some(row) = stream.try_next().await? {
            rows.push(row);
        }
        let changed = stream.rows_affected().unwrap_or(0);
        Ok::<_, tokio_postgres::Error>((rows, changed))
    };
    after_pending(client, begin, deferred, rows).await
}

/// Runs a statement, returning the rows it changed.
pub(super) async fn execute(h: &mut Handle, sql: &str, params: &[Param]) -> Result<u64> {
    Ok(run(h, sql, params).await?.1)
}

/// Runs a query; rows as JSON objects by column name.
pub(super) async fn fetch_docs(h: &mut Handle, sql: &str, params: &[Param]) -> Result<Vec<Doc>> {
    let (rows, _) = run(h, sql, params).await?;
    rows.iter()
        .map(|row| {
            let mut m = Map::with_capacity(row.len());
            for (i, col) in row.columns().iter().enumerate() {
                m.insert(col.name().to_string(), cell(row, i)?);
            }
            Ok(m)
        })
        .collect()
}

/// Runs a query; rows as values by position.
pub(super) async fn fetch_values(
    h: &mut Handle,
    sql: &str,
    params: &[Param],
) -> Result<Vec<Vec<Value>>> {
    let (rows, _) = run(h, sql, params).await?;
    rows.iter()
        .map(|row| (0..row.len()).map(|i| cell(row, i)).collect())
        .collect()
}

/// Runs one or more statements without parameters.
pub(super) async fn execute_batch(h: &mut Handle, sql: &str) -> Result<()> {
    let deferred = h.take_deferred();
    let prepared = prepare_all(h.client(), &deferred).await;
    let deferred = h.note(prepared)?;
    let begin = h.take_begin();
    let client = h.client();
    let r = after_pending(client, begin, &deferred, client.batch_execute(sql)).await;
    let r = h.note(r);
    // Rolling back to a savepoint makes the transaction whole again.
    if r.is_ok()
        && sql
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("ROLLBACK TO")
    {
        if let Handle::Tx(t) = h {
            t.failed = false;
        }
    }
    r
}

/// Runs statements without parameters on a connection of its own to `url` (creating and
/// dropping databases: the bench's, the tests').
pub async fn admin_execute(url: &str, sql: &str) -> Result<()> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::Validation(format!("bad database URL: {e}")))?;
    let (client, connection) = config.connect(NoTls).await?;
    let running = tokio::spawn(connection);
    let r = client.batch_execute(sql).await;
    drop(client);
    let _ = running.await;
    Ok(r?)
}

/// A column's value as the store hands it out: integers and floats as numbers, booleans as
/// 0/1, text (and anything text-like) as strings.
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let float = |f: f64| {
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        };
        Ok(Cell(match *ty {
            Type::BOOL => Value::from(bool::from_sql(ty, raw)? as i64),
            Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
            Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
            Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
            Type::OID => Value::from(u32::from_sql(ty, raw)?),
            Type::FLOAT4 => float(f32::from_sql(ty, raw)? as f64),
            Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
            Type::BYTEA => Value::String(String::from_utf8_lossy(raw).into()),
            Type::VOID => Value::Null,
            _ if <&str as FromSql>::accepts(ty) => Value::String(<&str>::from_sql(ty, raw)?.into()),
            _ => return Err(format!("cannot read a PostgreSQL {ty} column").into()),
        }))
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn cell(row: &Row, i: usize) -> Result<Value> {
    Ok(row.try_get::<_, Cell>(i)?.0)
}
