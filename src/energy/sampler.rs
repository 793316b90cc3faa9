//! Runs every declared `PowerMeter` for as long as its host runs, storing each sample as it
//! arrives. Self-contained: it needs only the state directory and a stop signal, so `apply`'s in-process
//! engine and the `serve` daemon start it the same way ([`spawn`]). It rescans the store so
//! meters added, changed or deleted while it runs are picked up.
//!
//! Failures never stop sampling: a WattsUp that disappears is reopened with backoff, a command
//! that hangs is killed at its timeout and that sample skipped; each is a Warning event on the
//! meter. The meter's status says whether it is `Sampling` or not (`Disconnected`, `Failing`).

use crate::drivers::meter::wattsup::WattsUp;
use crate::drivers::meter::{MeterError, Reading, command, model};
use crate::engine::status::{CondStatus, Status};
use crate::manifest::Kind;
use crate::manifest::types::{CommandMeter, ModelMeter, PowerMeterSpec, WattsUpMeter, WorkerSpec};
use crate::store::energy::Sample;
use crate::store::{EventType, Store, clock};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the store is rescanned for meter changes.
const RESCAN: Duration = Duration::from_secs(2);
/// Longest wait between attempts to reopen a meter.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Shared = Arc<Mutex<Store>>;

/// Starts sampling every meter in the store under `state_dir` until `stop` turns true. The
/// sampler has a connection of its own: SQLite (WAL) readers do not wait for the engine's
/// writes, so a slow fsync elsewhere cannot leave holes in the samples.
pub fn spawn(
    state_dir: &std::path::Path,
    stop: watch::Receiver<bool>,
) -> crate::store::Result<JoinHandle<()>> {
    let store = Arc::new(Mutex::new(Store::open(state_dir)?));
    Ok(tokio::spawn(supervise(store, stop)))
}

/// Runs `f` on the store off the async workers (a sample is an fsynced commit).
async fn db<T: Send + 'static>(
    store: &Shared,
    f: impl FnOnce(&mut Store) -> T + Send + 'static,
) -> Option<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&mut store.lock().unwrap_or_else(|p| p.into_inner())))
        .await
        .ok()
}

async fn supervise(store: Shared, mut stop: watch::Receiver<bool>) {
    let mut running: HashMap<String, (serde_json::Value, JoinHandle<()>)> = HashMap::new();
    while !*stop.borrow() {
        let meters = db(&store, |s| s.list(Some(Kind::PowerMeter)))
            .await
            .and_then(Result::ok)
            .unwrap_or_default();
        running.retain(|name, (_, task)| {
            let keep = meters.iter().any(|m| &m.name == name);
            if !keep {
                task.abort();
            }
            keep
        });
        for m in meters {
            if running
                .get(&m.name)
                .is_some_and(|(spec, _)| *spec == m.spec)
            {
                continue;
            }
            if let Some((_, old)) = running.remove(&m.name) {
                old.abort();
            }
            let Ok(spec) = serde_json::from_value::<PowerMeterSpec>(m.spec.clone()) else {
                continue;
            };
            let meter = Meter {
                store: store.clone(),
                name: m.name.clone(),
                generation: m.generation,
            };
            let task = tokio::spawn(meter.run(spec, stop.clone()));
            running.insert(m.name, (m.spec, task));
        }
        tokio::select! {
            r = stop.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
    // Model meters take a last sample at the stop, so the end of the last run is covered.
    for (_, (_, mut task)) in running {
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

struct Meter {
    store: Shared,
    name: String,
    generation: i64,
}

fn duration(d: &crate::manifest::quantity::Duration, fallback: Duration) -> Duration {
    d.parse().unwrap_or(fallback).max(Duration::from_millis(10))
}

impl Meter {
    /// Samples until `stop` turns true.
    async fn run(mut self, spec: PowerMeterSpec, mut stop: watch::Receiver<bool>) {
        let stopped = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Some(w) = &spec.wattsup {
            tokio::select! { _ = self.wattsup(w) => {}, _ = stopped => {} }
        } else if let Some(c) = &spec.command {
            tokio::select! { _ = self.command(c) => {}, _ = stopped => {} }
        } else if let Some(m) = &spec.model {
            tokio::pin!(stopped);
            self.model(m, &spec, stopped).await;
        }
    }

    async fn record(&mut self, at_ms: i64, r: Reading) {
        let sample = Sample {
            meter: self.name.clone(),
            at_ms,
            watts: r.watts,
            volts: r.volts,
            amps: r.amps,
            watt_hours: r.watt_hours,
        };
        match db(&self.store, move |s| s.record_sample(&sample)).await {
            Some(Ok(())) => self.set_phase("Sampling", "").await,
            Some(Err(e)) => tracing::error!(meter = %self.name, "cannot store a sample: {e}"),
            None => {}
        }
    }

    async fn event(&self, t: EventType, reason: &'static str, message: String) {
        match t {
            EventType::Normal => tracing::info!(meter = %self.name, reason, "{message}"),
            EventType::Warning => tracing::warn!(meter = %self.name, reason, "{message}"),
        }
        let name = self.name.clone();
        db(&self.store, move |s| {
            s.record_event(Kind::PowerMeter, &name, t, reason, &message)
        })
        .await;
    }

    /// Writes the meter's phase to its status unless the stored status already says it. The
    /// stored status is checked each time, not a phase remembered here: the engine's first
    /// reconcile of a new meter can write its status (phase Accepted) over the first
    /// Sampling, and a remembered phase then never wrote it again.
    async fn set_phase(&self, phase: &'static str, why: &str) {
        let (name, generation, why) = (self.name.clone(), self.generation, why.to_string());
        db(&self.store, move |s| {
            let Ok(Some(obj)) = s.get(Kind::PowerMeter, &name) else {
                return;
            };
            let mut st = Status::from_value(&obj.status);
            if st.phase() == Some(phase) && st.observed_generation() == generation {
                return;
            }
            let ok = phase == "Sampling";
            st.set_phase(phase).observed(generation).condition(
                "Sampling",
                CondStatus::from_bool(ok),
                phase,
                &why,
            );
            let _ = st.save(s, Kind::PowerMeter, &name, &[]);
        })
        .await;
    }

    async fn wattsup(&mut self, w: &WattsUpMeter) {
        let interval = duration(&w.interval, Duration::from_secs(1)).max(Duration::from_secs(1));
        // The protocol promises a reply within 2 s; a few missed records mean the meter is gone.
        let silence = interval * 3 + Duration::from_secs(2);
        let mut backoff = Duration::from_millis(250);
        loop {
            match WattsUp::open(&w.device, interval).await {
                Ok(mut meter) => {
                    self.event(
                        EventType::Normal,
                        "Connected",
                        format!("logging every {}s on {}", interval.as_secs(), w.device),
                    )
                    .await;
                    let mut rejected = 0;
                    let why = loop {
                        match tokio::time::timeout(silence, meter.next()).await {
                            Ok(Ok(r)) => {
                                backoff = Duration::from_millis(250);
                                self.record(clock::now_millis(), r).await;
                            }
                            Ok(Err(e)) => break e.to_string(),
                            Err(_) => break MeterError::Timeout(silence).to_string(),
                        }
                        if meter.rejected > rejected {
                            rejected = meter.rejected;
                            self.event(
                                EventType::Warning,
                                "CorruptRecord",
                                format!(
                                    "skipped a packet that is not a valid data record from {}",
                                    w.device
                                ),
                            )
                            .await;
                        }
                    };
                    self.event(EventType::Warning, "Disconnected", why.clone())
                        .await;
                    self.set_phase("Disconnected", &why).await;
                }
                Err(e) => {
                    let why = e.to_string();
                    self.event(EventType::Warning, "OpenFailed", why.clone())
                        .await;
                    self.set_phase("Disconnected", &why).await;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn command(&mut self, c: &CommandMeter) {
        let interval = duration(&c.interval, Duration::from_secs(1));
        let timeout = duration(&c.timeout, Duration::from_secs(5));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = clock::now_millis();
            match command::read(&c.command, timeout).await {
                // The reading describes the moment the command ran.
                Ok(r) => {
                    let at = started + (clock::now_millis() - started) / 2;
                    self.record(at, r).await;
                }
                Err(e @ MeterError::Timeout(_)) => {
                    let why = format!(
                        "{} did not answer: {e}; sample skipped",
                        c.command.join(" ")
                    );
                    self.event(EventType::Warning, "ReadTimeout", why.clone())
                        .await;
                    self.set_phase("Failing", &why).await;
                }
                Err(e) => {
                    let why = format!("{e}; sample skipped");
                    self.event(EventType::Warning, "ReadFailed", why.clone())
                        .await;
                    self.set_phase("Failing", &why).await;
                }
            }
        }
    }

    async fn model(
        &mut self,
        m: &ModelMeter,
        spec: &PowerMeterSpec,
        mut stopped: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) {
        let interval = m.interval.as_ref().map_or(Duration::from_secs(1), |i| {
            duration(i, Duration::from_secs(1))
        });
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut stopped => true,
            };
            let at = clock::now_millis();
            let (m, covers) = (m.clone(), spec.covers.clone());
            let watts = db(&self.store, move |s| {
                let workers = s.list(Some(Kind::Worker)).ok()?;
                Some(
                    workers
                        .iter()
                        .filter(|w| covers.matches(&w.labels))
                        .filter_map(|w| {
                            let spec: WorkerSpec = serde_json::from_value(w.spec.clone()).ok()?;
                            let phase = w
                                .status
                                .get("phase")
                                .and_then(|p| p.as_str())
                                .unwrap_or("Off");
                            Some(model::watts(
                                &m,
                                model::Kind::of(&spec),
                                model::Phase::of_status(phase),
                            ))
                        })
                        .sum::<f64>(),
                )
            })
            .await
            .flatten();
            if let Some(watts) = watts {
                self.record(
                    at,
                    Reading {
                        watts,
                        ..Reading::default()
                    },
                )
                .await;
            }
            if last {
                return;
            }
        }
    }
}
