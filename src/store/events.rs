//! Events about objects, kubectl style: a repeat of the same (type, reason, message) on an
//! object bumps the count and last-seen time of the existing row instead of adding one.

use super::{Result, SqliteStore, clock};
use crate::manifest::Kind;
use rusqlite::params;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub name: String,
    pub event_type: String,
    pub reason: String,
    pub message: String,
    pub count: i64,
    pub first_time: String,
    pub last_time: String,
}

/// An event noted during a reconcile, written with the status that reconcile writes (one
/// transaction for the transition) and stamped with the time it was noted.
#[derive(Debug, Clone, PartialEq)]
pub struct EventNote {
    pub event_type: EventType,
    pub reason: String,
    pub message: String,
    pub at: String,
}

impl EventNote {
    pub fn now(event_type: EventType, reason: &str, message: &str) -> Self {
        EventNote {
            event_type,
            reason: reason.to_string(),
            message: message.to_string(),
            at: clock::now(),
        }
    }
}

/// Writes `e` on `conn` (inside the caller's transaction): a repeat of the object's last
/// event with the same type, reason and message bumps its count, anything else is a new row.
pub(super) fn write_event(
    conn: &rusqlite::Connection,
    kind: Kind,
    name: &str,
    e: &EventNote,
) -> rusqlite::Result<()> {
    let args = params![
        kind.as_str(),
        name,
        e.event_type.as_str(),
        e.reason,
        e.message,
        e.at
    ];
    let updated = conn
        .prepare_cached(
            "UPDATE events SET count = count + 1, last_time = ?6
             WHERE id = (SELECT id FROM events WHERE kind = ?1 AND name = ?2 AND type = ?3
                         AND reason = ?4 AND message = ?5 ORDER BY id DESC LIMIT 1)",
        )?
        .execute(args)?;
    if updated == 0 {
        conn.prepare_cached(
            "INSERT INTO events (kind, name, type, reason, message, count, first_time, last_time)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)",
        )?
        .execute(args)?;
    }
    Ok(())
}

impl SqliteStore {
    pub fn record_event(
        &mut self,
        kind: Kind,
        name: &str,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<()> {
        let e = EventNote::now(event_type, reason, message);
        self.observation(|conn| write_event(conn, kind, name, &e))
    }

    /// Events noted earlier (a reconcile's, left without a status write to go with), each
    /// stamped with the time it was noted, in one transaction.
    pub fn record_events(&mut self, kind: Kind, name: &str, events: &[EventNote]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.observation(|conn| {
            let tx = rusqlite::Transaction::new_unchecked(
                conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            for e in events {
                write_event(&tx, kind, name, e)?;
            }
            tx.commit()
        })
    }

    /// How often each object of `kind` had an event with `reason` (e.g. boots: `PoweredOn`).
    pub fn event_counts(&self, kind: Kind, reason: &str) -> Result<Vec<(String, u64)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, SUM(count) FROM events WHERE kind = ?1 AND reason = ?2
                 GROUP BY name ORDER BY name",
            )
            .map_err(self.sq())?;
        let rows = stmt
            .query_map(params![kind.as_str(), reason], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(self.sq())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.sq())
    }

    /// The most recent `limit` events of an object, oldest first.
    pub fn events(&self, kind: Kind, name: &str, limit: usize) -> Result<Vec<Event>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT type, reason, message, count, first_time, last_time FROM events
                 WHERE kind = ?1 AND name = ?2 ORDER BY last_time DESC, id DESC LIMIT ?3",
            )
            .map_err(self.sq())?;
        let rows = stmt
            .query_map(params![kind.as_str(), name, limit as i64], |r| {
                Ok(Event {
                    kind,
                    name: name.to_string(),
                    event_type: r.get(0)?,
                    reason: r.get(1)?,
                    message: r.get(2)?,
                    count: r.get(3)?,
                    first_time: r.get(4)?,
                    last_time: r.get(5)?,
                })
            })
            .map_err(self.sq())?;
        let mut out: Vec<Event> = rows.collect::<rusqlite::Result<_>>().map_err(self.sq())?;
        out.reverse();
        Ok(out)
    }

    /// The most recent `limit` events of every object, newest first (the web view's feed).
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT kind, name, type, reason, message, count, first_time, last_time FROM events
                 ORDER BY last_time DESC, id DESC LIMIT ?1",
            )
            .map_err(self.sq())?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                let kind: String = r.get(0)?;
                Ok((
                    kind,
                    Event {
                        kind: Kind::Cluster,
                        name: r.get(1)?,
                        event_type: r.get(2)?,
                        reason: r.get(3)?,
                        message: r.get(4)?,
                        count: r.get(5)?,
                        first_time: r.get(6)?,
                        last_time: r.get(7)?,
                    },
                ))
            })
            .map_err(self.sq())?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, mut e) = row.map_err(self.sq())?;
            // Rows of a kind this build does not know are skipped rather than failing the feed.
            let Ok(k) = kind.parse::<Kind>() else {
                continue;
            };
            e.kind = k;
            out.push(e);
        }
        Ok(out)
    }
}
