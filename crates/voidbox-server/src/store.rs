//! What outlives the daemon: one SQLite file (WAL) in its state directory,
//! holding the runs with their events and the sandboxes it held. Migrations
//! are numbered by `user_version`. A daemon that starts finds the runs and
//! sandboxes its predecessor left in flight and marks them ended, with the
//! reason (their VMs died with it).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

/// Each migration, in order; `user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        created_unix_ms INTEGER NOT NULL,
        ended_unix_ms INTEGER,
        output TEXT,
        error TEXT,
        result TEXT,
        events_dropped INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE run_events (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        created_unix_ms INTEGER NOT NULL,
        info TEXT NOT NULL,
        ended_unix_ms INTEGER,
        end_reason TEXT
    );",
    // 2: agent sessions and their messages.
    "CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        created_unix_ms INTEGER NOT NULL,
        options TEXT NOT NULL,
        totals TEXT NOT NULL,
        destroyed_unix_ms INTEGER
    );
    CREATE TABLE session_messages (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;",
];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("state database: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

/// A session as stored: its options (JSON), totals (JSON) and messages
/// (JSON each, in order).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredSession {
    pub id: String,
    pub created_unix_ms: u64,
    pub options: String,
    pub totals: String,
    pub messages: Vec<String>,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredRun {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub created_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub result: Option<serde_json::Value>,
    pub events_dropped: u64,
    pub events: u64,
}

/// A sandbox as recorded: its id, when it ended and why.
#[cfg(test)]
pub(crate) type EndedSandbox = (String, Option<u64>, Option<String>);

/// The daemon's database.
pub(crate) struct Store {
    db: Mutex<Connection>,
}

fn json_text(value: &Option<serde_json::Value>) -> Option<String> {
    value.as_ref().map(|v| v.to_string())
}

fn json_value(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl Store {
    /// Opens (making, migrating) the database at `path`, and ends what a
    /// previous daemon left in flight at `now_ms`.
    pub fn open(path: &Path, now_ms: u64) -> Result<Store, StoreError> {
        let db = Connection::open(path)?;
        Store::ready(db, now_ms)
    }

    /// A database in memory (tests, and a daemon told to keep nothing).
    pub fn in_memory(now_ms: u64) -> Result<Store, StoreError> {
        Store::ready(Connection::open_in_memory()?, now_ms)
    }

    fn ready(mut db: Connection, now_ms: u64) -> Result<Store, StoreError> {
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.pragma_update(None, "foreign_keys", true)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: usize = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = db.transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        db.execute(
            "UPDATE runs SET status = 'failed', ended_unix_ms = ?1,
                 error = 'the daemon stopped while it ran'
             WHERE status IN ('running', 'queued')",
            params![now_ms as i64],
        )?;
        db.execute(
            "UPDATE sandboxes SET ended_unix_ms = ?1, end_reason = 'the daemon stopped'
             WHERE ended_unix_ms IS NULL",
            params![now_ms as i64],
        )?;
        Ok(Store { db: Mutex::new(db) })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert_run(&self, run: &StoredRun) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO runs (id, name, kind, status, created_unix_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run.id, run.name, run.kind, run.status, run.created_unix_ms as i64],
        )?;
        Ok(())
    }

    /// A queued run's turn came.
    pub fn set_run_running(&self, id: &str) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE runs SET status = 'running' WHERE id = ?1 AND status = 'queued'",
            params![id],
        )?;
        Ok(())
    }

    pub fn add_event(&self, run: &str, seq: u64, json: &str) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO run_events (run_id, seq, json) VALUES (?1, ?2, ?3)",
            params![run, seq as i64, json],
        )?;
        Ok(())
    }

    pub fn end_run(&self, run: &StoredRun) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE runs SET status = ?2, ended_unix_ms = ?3, output = ?4, error = ?5,
                 result = ?6, events_dropped = ?7 WHERE id = ?1",
            params![
                run.id,
                run.status,
                run.ended_unix_ms.map(|t| t as i64),
                json_text(&run.output),
                run.error,
                json_text(&run.result),
                run.events_dropped as i64,
            ],
        )?;
        Ok(())
    }

    fn run_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRun> {
        Ok(StoredRun {
            id: row.get(0)?,
            name: row.get(1)?,
            kind: row.get(2)?,
            status: row.get(3)?,
            created_unix_ms: row.get::<_, i64>(4)? as u64,
            ended_unix_ms: row.get::<_, Option<i64>>(5)?.map(|t| t as u64),
            output: json_value(row.get(6)?),
            error: row.get(7)?,
            result: json_value(row.get(8)?),
            events_dropped: row.get::<_, i64>(9)? as u64,
            events: row.get::<_, i64>(10)? as u64,
        })
    }

    const RUN_COLUMNS: &'static str = "id, name, kind, status, created_unix_ms, ended_unix_ms, output, error, result, events_dropped,
         (SELECT COUNT(*) FROM run_events e WHERE e.run_id = runs.id)";

    pub fn run(&self, id: &str) -> Result<Option<StoredRun>, StoreError> {
        let sql = format!("SELECT {} FROM runs WHERE id = ?1", Self::RUN_COLUMNS);
        Ok(self
            .db()
            .query_row(&sql, params![id], Store::run_from)
            .optional()?)
    }

    /// The newest `limit` runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<StoredRun>, StoreError> {
        let sql = format!(
            "SELECT {} FROM runs ORDER BY created_unix_ms DESC, id DESC LIMIT ?1",
            Self::RUN_COLUMNS
        );
        let db = self.db();
        let mut query = db.prepare(&sql)?;
        let rows = query.query_map(params![limit as i64], Store::run_from)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// At most `limit` events of `run` after number `after`, in order.
    pub fn events_after(
        &self,
        run: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let db = self.db();
        let mut query = db.prepare(
            "SELECT seq, json FROM run_events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = query.query_map(params![run, after as i64, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets the oldest ended runs beyond the newest `keep`.
    pub fn forget_runs_beyond(&self, keep: usize) -> Result<(), StoreError> {
        self.db().execute(
            "DELETE FROM runs WHERE status NOT IN ('running', 'queued') AND id NOT IN
                 (SELECT id FROM runs ORDER BY created_unix_ms DESC, id DESC LIMIT ?1)",
            params![keep as i64],
        )?;
        Ok(())
    }

    pub fn insert_session(&self, session: &StoredSession) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO sessions (id, created_unix_ms, options, totals) VALUES (?1, ?2, ?3, ?4)",
            params![
                session.id,
                session.created_unix_ms as i64,
                session.options,
                session.totals
            ],
        )?;
        Ok(())
    }

    /// Replaces a session's totals and messages, at once.
    pub fn save_session(
        &self,
        id: &str,
        totals: &str,
        messages: &[String],
    ) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE sessions SET totals = ?2 WHERE id = ?1",
            params![id, totals],
        )?;
        tx.execute(
            "DELETE FROM session_messages WHERE session_id = ?1",
            params![id],
        )?;
        for (seq, json) in messages.iter().enumerate() {
            tx.execute(
                "INSERT INTO session_messages (session_id, seq, json) VALUES (?1, ?2, ?3)",
                params![id, seq as i64, json],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The sessions not destroyed, with their messages, oldest first.
    pub fn sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        let db = self.db();
        let mut found = db.prepare(
            "SELECT id, created_unix_ms, options, totals FROM sessions
             WHERE destroyed_unix_ms IS NULL ORDER BY created_unix_ms, id",
        )?;
        let mut sessions: Vec<StoredSession> = found
            .query_map([], |row| {
                Ok(StoredSession {
                    id: row.get(0)?,
                    created_unix_ms: row.get::<_, i64>(1)? as u64,
                    options: row.get(2)?,
                    totals: row.get(3)?,
                    messages: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut messages =
            db.prepare("SELECT json FROM session_messages WHERE session_id = ?1 ORDER BY seq")?;
        for session in &mut sessions {
            session.messages = messages
                .query_map(params![session.id], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
        }
        Ok(sessions)
    }

    /// Marks a session destroyed and forgets its messages.
    pub fn destroy_session(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        let db = self.db();
        db.execute(
            "UPDATE sessions SET destroyed_unix_ms = ?2 WHERE id = ?1",
            params![id, now_ms as i64],
        )?;
        db.execute(
            "DELETE FROM session_messages WHERE session_id = ?1",
            params![id],
        )?;
        Ok(())
    }

    pub fn insert_sandbox(
        &self,
        id: &str,
        created_ms: u64,
        info: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT OR REPLACE INTO sandboxes (id, created_unix_ms, info) VALUES (?1, ?2, ?3)",
            params![id, created_ms as i64, info.to_string()],
        )?;
        Ok(())
    }

    pub fn end_sandbox(&self, id: &str, ended_ms: u64, reason: &str) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE sandboxes SET ended_unix_ms = ?2, end_reason = ?3
             WHERE id = ?1 AND ended_unix_ms IS NULL",
            params![id, ended_ms as i64, reason],
        )?;
        Ok(())
    }

    /// Every sandbox recorded: its id, when it ended and why, newest first.
    #[cfg(test)]
    pub fn ended_sandboxes(&self) -> Result<Vec<EndedSandbox>, StoreError> {
        let db = self.db();
        let mut query = db.prepare(
            "SELECT id, ended_unix_ms, end_reason FROM sandboxes
             ORDER BY created_unix_ms DESC, id DESC",
        )?;
        let rows = query.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?.map(|t| t as u64),
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, at: u64) -> StoredRun {
        StoredRun {
            id: id.into(),
            name: "demo".into(),
            kind: "pipeline".into(),
            status: "running".into(),
            created_unix_ms: at,
            ended_unix_ms: None,
            output: None,
            error: None,
            result: None,
            events_dropped: 0,
            events: 0,
        }
    }

    #[test]
    fn runs_and_their_events_outlive_the_daemon_and_what_was_in_flight_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("voidbox.db");
        {
            let store = Store::open(&path, 1).unwrap();
            store.insert_run(&run("done", 10)).unwrap();
            store.insert_run(&run("flying", 20)).unwrap();
            for seq in 1..=3 {
                store
                    .add_event("done", seq, &format!("{{\"n\":{seq}}}"))
                    .unwrap();
            }
            store.add_event("flying", 1, "{}").unwrap();
            let mut ended = run("done", 10);
            ended.status = "succeeded".into();
            ended.ended_unix_ms = Some(11);
            ended.output = Some(serde_json::json!("the answer"));
            store.end_run(&ended).unwrap();
            store
                .insert_sandbox("vm-1", 5, &serde_json::json!({"memory_mb": 256}))
                .unwrap();
        }
        // A new daemon on the same file.
        let store = Store::open(&path, 99).unwrap();
        let done = store.run("done").unwrap().unwrap();
        assert_eq!(done.status, "succeeded");
        assert_eq!(done.output, Some(serde_json::json!("the answer")));
        assert_eq!(done.events, 3);
        let flying = store.run("flying").unwrap().unwrap();
        assert_eq!(flying.status, "failed");
        assert_eq!(
            flying.error.as_deref(),
            Some("the daemon stopped while it ran")
        );
        assert_eq!(flying.ended_unix_ms, Some(99));
        assert_eq!(
            store.events_after("done", 1, 10).unwrap(),
            vec![(2, "{\"n\":2}".to_string()), (3, "{\"n\":3}".to_string())]
        );
        let listed: Vec<String> = store.runs(10).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(listed, ["flying", "done"]);
        let vms = store.ended_sandboxes().unwrap();
        assert_eq!(vms[0].1, Some(99));
        assert_eq!(vms[0].2.as_deref(), Some("the daemon stopped"));
        // Keeping one: the older goes, with its events.
        store.forget_runs_beyond(1).unwrap();
        assert!(store.run("done").unwrap().is_none());
        assert!(store.events_after("done", 0, 10).unwrap().is_empty());
        // Migrations ran once: a third open changes nothing.
        drop(store);
        let store = Store::open(&path, 100).unwrap();
        assert_eq!(store.runs(10).unwrap().len(), 1);
    }
}
