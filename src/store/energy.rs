//! Energy records: power meter samples, committed one by one as they arrive, and the history
//! of worker phases that attribution of a meter's energy to workers reads back.

use super::{Result, SqliteStore, clock};
use rusqlite::{Connection, OptionalExtension, params};

/// One reading of one meter. Volts, amps and watt-hours only where the meter reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub meter: String,
    /// Unix milliseconds when the reading arrived.
    pub at_ms: i64,
    pub watts: f64,
    pub volts: Option<f64>,
    pub amps: Option<f64>,
    pub watt_hours: Option<f64>,
}

/// A worker entered `phase` at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseChange {
    pub worker: String,
    pub at_ms: i64,
    pub phase: String,
}

const SAMPLE_COLUMNS: &str = "meter, at, watts, volts, amps, watt_hours";

fn row_to_sample(r: &rusqlite::Row<'_>) -> rusqlite::Result<Sample> {
    Ok(Sample {
        meter: r.get(0)?,
        at_ms: r.get(1)?,
        watts: r.get(2)?,
        volts: r.get(3)?,
        amps: r.get(4)?,
        watt_hours: r.get(5)?,
    })
}

/// Appends `phase` to `worker`'s history unless it is already the latest entry.
pub(super) fn note_phase(conn: &Connection, worker: &str, phase: &str) -> rusqlite::Result<()> {
    // Every worker status write comes here: cached statements keep it cheap.
    let last: Option<String> = conn
        .prepare_cached(
            "SELECT phase FROM worker_phases WHERE worker = ?1 ORDER BY at DESC, id DESC LIMIT 1",
        )?
        .query_row(params![worker], |r| r.get(0))
        .optional()?;
    if last.as_deref() != Some(phase) {
        conn.prepare_cached("INSERT INTO worker_phases (worker, at, phase) VALUES (?1, ?2, ?3)")?
            .execute(params![worker, clock::now_millis(), phase])?;
    }
    Ok(())
}

impl SqliteStore {
    /// Stores one sample in its own committed (fsynced) transaction: a crash loses none that
    /// was acknowledged.
    pub fn record_sample(&mut self, s: &Sample) -> Result<()> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO meter_samples ({SAMPLE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ),
                params![s.meter, s.at_ms, s.watts, s.volts, s.amps, s.watt_hours],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    /// `meter`'s samples in `[from_ms, to_ms]`, oldest first, plus the last one before and the
    /// first one after the window (so a window edge can be interpolated).
    pub fn samples(&self, meter: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Sample>> {
        let sq = self.sq();
        let before = self
            .conn
            .query_row(
                &format!("SELECT {SAMPLE_COLUMNS} FROM meter_samples WHERE meter = ?1 AND at < ?2 ORDER BY at DESC, id DESC LIMIT 1"),
                params![meter, from_ms],
                row_to_sample,
            )
            .optional()
            .map_err(&sq)?;
        let after = self
            .conn
            .query_row(
                &format!("SELECT {SAMPLE_COLUMNS} FROM meter_samples WHERE meter = ?1 AND at > ?2 ORDER BY at, id LIMIT 1"),
                params![meter, to_ms],
                row_to_sample,
            )
            .optional()
            .map_err(&sq)?;
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {SAMPLE_COLUMNS} FROM meter_samples WHERE meter = ?1 AND at >= ?2 AND at <= ?3 ORDER BY at, id"))
            .map_err(&sq)?;
        let inside = stmt
            .query_map(params![meter, from_ms, to_ms], row_to_sample)
            .map_err(&sq)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&sq)?;
        Ok(before.into_iter().chain(inside).chain(after).collect())
    }

    /// The most recent sample of `meter`.
    pub fn latest_sample(&self, meter: &str) -> Result<Option<Sample>> {
        self.conn
            .query_row(
                &format!("SELECT {SAMPLE_COLUMNS} FROM meter_samples WHERE meter = ?1 ORDER BY at DESC, id DESC LIMIT 1"),
                params![meter],
                row_to_sample,
            )
            .optional()
            .map_err(self.sq())
    }

    /// `worker`'s phase changes in `[from_ms, to_ms]`, oldest first, preceded by the phase it
    /// was in at `from_ms` (if any was recorded before).
    pub fn phase_history(
        &self,
        worker: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PhaseChange>> {
        let sq = self.sq();
        let row = |r: &rusqlite::Row<'_>| {
            Ok(PhaseChange {
                worker: worker.to_string(),
                at_ms: r.get(0)?,
                phase: r.get(1)?,
            })
        };
        let before = self
            .conn
            .query_row(
                "SELECT at, phase FROM worker_phases WHERE worker = ?1 AND at < ?2 ORDER BY at DESC, id DESC LIMIT 1",
                params![worker, from_ms],
                row,
            )
            .optional()
            .map_err(&sq)?;
        let mut stmt = self
            .conn
            .prepare("SELECT at, phase FROM worker_phases WHERE worker = ?1 AND at >= ?2 AND at <= ?3 ORDER BY at, id")
            .map_err(&sq)?;
        let inside = stmt
            .query_map(params![worker, from_ms, to_ms], row)
            .map_err(&sq)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&sq)?;
        Ok(before.into_iter().chain(inside).collect())
    }

    /// Records a phase change at an explicit time (imports and tests; the engine's status
    /// writes record theirs through `set_status`).
    pub fn record_phase_at(&mut self, worker: &str, at_ms: i64, phase: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO worker_phases (worker, at, phase) VALUES (?1, ?2, ?3)",
                params![worker, at_ms, phase],
            )
            .map_err(self.sq())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use crate::store::DesiredObject;

    #[test]
    fn samples_window_includes_neighbours() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteStore::open(dir.path()).expect("open");
        for (t, w) in [(1000, 1.0), (2000, 2.0), (3000, 3.0), (4000, 4.0)] {
            store
                .record_sample(&Sample {
                    meter: "m".into(),
                    at_ms: t,
                    watts: w,
                    volts: None,
                    amps: None,
                    watt_hours: None,
                })
                .expect("sample");
        }
        let got: Vec<i64> = store
            .samples("m", 2500, 2600)
            .expect("samples")
            .iter()
            .map(|s| s.at_ms)
            .collect();
        assert_eq!(got, vec![2000, 3000]);
        assert_eq!(
            store.latest_sample("m").expect("latest").map(|s| s.watts),
            Some(4.0)
        );
        assert!(store.samples("other", 0, 10_000).expect("none").is_empty());
    }

    #[test]
    fn worker_status_writes_record_phase_changes_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteStore::open(dir.path()).expect("open");
        let obj = DesiredObject {
            kind: Kind::Worker,
            name: "w".into(),
            labels: Default::default(),
            annotations: Default::default(),
            spec: serde_json::json!({}),
            owner: None,
            source: None,
        };
        store.apply(&[obj], None, false, false).expect("apply");
        for phase in ["Booting", "Booting", "Ready", "Busy", "Ready"] {
            store
                .set_status(Kind::Worker, "w", &serde_json::json!({"phase": phase}))
                .expect("status");
        }
        let phases: Vec<String> = store
            .phase_history("w", 0, i64::MAX)
            .expect("history")
            .into_iter()
            .map(|p| p.phase)
            .collect();
        assert_eq!(phases, ["Booting", "Ready", "Busy", "Ready"]);
    }
}
