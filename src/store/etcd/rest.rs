//! Energy records in etcd: meter samples and worker phase history, keyed by time so key order
//! is time order.

use super::client::RangeOpts;
use super::{EtcdStore, decode, encode, segment};
use crate::store::energy::{PhaseChange, Sample};
use crate::store::{Result, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct SampleRecord {
    at_ms: i64,
    watts: f64,
    volts: Option<f64>,
    amps: Option<f64>,
    watt_hours: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PhaseRecord {
    at_ms: i64,
    phase: String,
}

/// Unix milliseconds as a key segment that sorts as the number does (negatives before zero).
fn time_key(ms: i64) -> String {
    format!("{:020}", (ms as i128 - i64::MIN as i128) as u128)
}

impl EtcdStore {
    /// A record appended at time `ms` under `dir/`: the key is the time plus a revision-free
    /// tiebreak (the store revision it was written at is not known before), so two records of
    /// the same millisecond both stay, written create-only.
    fn append(&self, dir: &str, ms: i64, value: Vec<u8>) -> Result<()> {
        for n in 0..super::CAS_TRIES {
            let key = self.key(&format!("{dir}/{}.{n:04}", time_key(ms)));
            let answer = self.txn(
                vec![super::client::absent(&key)],
                vec![super::client::put_op(&key, &value)],
                vec![],
            )?;
            if super::client::succeeded(&answer) {
                return Ok(());
            }
        }
        Err(StoreError::Etcd(format!(
            "{dir}: too many records at {ms} ms"
        )))
    }

    /// Every record under `dir/`, oldest first (key order is time order).
    fn all_under<T: serde::de::DeserializeOwned>(&self, dir: &str) -> Result<Vec<T>> {
        self.range(&self.key(&format!("{dir}/")), true, RangeOpts::default())?
            .iter()
            .map(decode)
            .collect()
    }

    pub fn record_sample(&mut self, s: &Sample) -> Result<()> {
        segment("meter", &s.meter)?;
        let rec = SampleRecord {
            at_ms: s.at_ms,
            watts: s.watts,
            volts: s.volts,
            amps: s.amps,
            watt_hours: s.watt_hours,
        };
        self.append(&format!("samples/{}", s.meter), s.at_ms, encode(&rec))
    }

    fn sample(meter: &str, r: SampleRecord) -> Sample {
        Sample {
            meter: meter.to_string(),
            at_ms: r.at_ms,
            watts: r.watts,
            volts: r.volts,
            amps: r.amps,
            watt_hours: r.watt_hours,
        }
    }

    /// `meter`'s samples in `[from_ms, to_ms]` plus the last one before and the first after.
    pub fn samples(&self, meter: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Sample>> {
        segment("meter", meter)?;
        let all: Vec<SampleRecord> = self.all_under(&format!("samples/{meter}"))?;
        let before = all.iter().rposition(|s| s.at_ms < from_ms);
        let after = all.iter().position(|s| s.at_ms > to_ms);
        Ok(all
            .into_iter()
            .enumerate()
            .filter(|(i, s)| {
                Some(*i) == before || Some(*i) == after || (s.at_ms >= from_ms && s.at_ms <= to_ms)
            })
            .map(|(_, s)| Self::sample(meter, s))
            .collect())
    }

    pub fn latest_sample(&self, meter: &str) -> Result<Option<Sample>> {
        segment("meter", meter)?;
        self.last_under(&format!("samples/{meter}/"))?
            .map(|kv| Ok(Self::sample(meter, decode(&kv)?)))
            .transpose()
    }

    pub(super) fn note_phase(&self, worker: &str, at_ms: i64, phase: &str) -> Result<()> {
        let rec = PhaseRecord {
            at_ms,
            phase: phase.to_string(),
        };
        self.append(&format!("phases/{worker}"), at_ms, encode(&rec))
    }

    pub fn phase_history(
        &self,
        worker: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PhaseChange>> {
        segment("worker", worker)?;
        let all: Vec<PhaseRecord> = self.all_under(&format!("phases/{worker}"))?;
        let before = all.iter().rposition(|p| p.at_ms < from_ms);
        Ok(all
            .into_iter()
            .enumerate()
            .filter(|(i, p)| Some(*i) == before || (p.at_ms >= from_ms && p.at_ms <= to_ms))
            .map(|(_, p)| PhaseChange {
                worker: worker.to_string(),
                at_ms: p.at_ms,
                phase: p.phase,
            })
            .collect())
    }

    pub fn record_phase_at(&mut self, worker: &str, at_ms: i64, phase: &str) -> Result<()> {
        segment("worker", worker)?;
        self.note_phase(worker, at_ms, phase)
    }
}
