//! The store's transactions on a real database: a statement deferred to the commit (the update
//! log's, on PostgreSQL) that fails takes the whole write with it, and a PostgreSQL transaction
//! in which a statement failed refuses to commit (the server would quietly roll it back and
//! answer success), unless it rolled back to a savepoint since.

mod common;

use docstream::store::{self, Param, Store};

/// A store on SQLite (in `dir`) or on a fresh PostgreSQL database, with a table `t` holding
/// one row, `a`; and its URL.
async fn store_with_table(postgres: bool, dir: &std::path::Path) -> Option<(Store, String)> {
    let url = if postgres {
        if !common::postgres_available().await {
            return None;
        }
        common::fresh_pg_database().await
    } else {
        format!("sqlite://{}", dir.join("t.sqlite3").display())
    };
    let db = Store::open(&url, true).await.expect("open the store");
    let mut tx = db.begin().await.unwrap();
    store::execute_batch(&mut tx, "CREATE TABLE t (name TEXT PRIMARY KEY)")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    insert(&mut tx, "a").await.unwrap();
    tx.commit().await.unwrap();
    Some((db, url))
}

/// Closes the store and drops its PostgreSQL database.
async fn done(db: Store, url: &str) {
    db.close().await;
    if url.starts_with("postgres") {
        common::drop_pg_database(url).await;
    }
}

async fn names(db: &Store) -> Vec<String> {
    store::fetch_values(
        &mut db.conn().await.unwrap(),
        "SELECT name FROM t ORDER BY name",
        &[],
    )
    .await
    .unwrap()
    .into_iter()
    .filter_map(|r| r[0].as_str().map(str::to_string))
    .collect()
}

const INSERT: &str = "INSERT INTO t (name) VALUES ($1)";

async fn insert(conn: &mut store::Conn, name: &str) -> docstream::error::Result<u64> {
    store::execute(conn, INSERT, &[Param::text(name)]).await
}

async fn failed_deferred_statement_fails_the_write(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Some((db, url)) = store_with_table(postgres, dir.path()).await else {
        return;
    };
    // A write whose deferred statement breaks the primary key: it fails, whether at the
    // statement (SQLite runs it at once) or at the commit it travels with (PostgreSQL), and
    // nothing of it stays.
    let mut tx = db.begin().await.unwrap();
    insert(&mut tx, "b").await.unwrap();
    let (failed, tx) = match store::execute_deferred(&mut tx, INSERT, vec![Param::text("a")]).await
    {
        Err(e) => (Some(e), Some(tx)),
        Ok(()) => (tx.commit().await.err(), None),
    };
    let e = failed.expect("the write fails");
    drop(tx);
    assert!(
        matches!(e, docstream::error::Error::DuplicateEntry(_)),
        "the deferred statement's own error is reported: {e:?}"
    );
    assert_eq!(names(&db).await, ["a"], "nothing of the failed write stays");

    // A deferred statement that succeeds is committed, and the next statement sees it.
    let mut tx = db.begin().await.unwrap();
    store::execute_deferred(&mut tx, INSERT, vec![Param::text("c")])
        .await
        .unwrap();
    let seen = store::fetch_scalar(&mut tx, "SELECT COUNT(*) FROM t WHERE name = 'c'", &[])
        .await
        .unwrap();
    assert_eq!(seen, Some(serde_json::json!(1)));
    store::execute_deferred(&mut tx, INSERT, vec![Param::text("d")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(names(&db).await, ["a", "c", "d"]);
    done(db, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deferred_statement_fails_the_write_sqlite() {
    failed_deferred_statement_fails_the_write(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deferred_statement_fails_the_write_postgres() {
    failed_deferred_statement_fails_the_write(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_to_commit_after_a_failed_statement() {
    let dir = tempfile::tempdir().unwrap();
    let Some((db, url)) = store_with_table(true, dir.path()).await else {
        return;
    };
    // The error is ignored by the caller: the commit must not claim success.
    let mut tx = db.begin().await.unwrap();
    insert(&mut tx, "b").await.unwrap();
    assert!(insert(&mut tx, "a").await.is_err());
    assert!(
        tx.commit().await.is_err(),
        "a commit after a failed statement reports failure"
    );
    assert_eq!(names(&db).await, ["a"]);

    // Rolled back to a savepoint, the transaction is whole again and commits.
    let mut tx = db.begin().await.unwrap();
    insert(&mut tx, "c").await.unwrap();
    let inner = store::in_savepoint(&mut tx, async |c: &mut store::Conn| insert(c, "a").await)
        .await
        .unwrap();
    assert!(inner.is_err(), "the duplicate fails inside the savepoint");
    tx.commit().await.unwrap();
    assert_eq!(names(&db).await, ["a", "c"]);
    done(db, &url).await;
}
