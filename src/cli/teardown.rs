//! Finalizers run by commands: stop the VMs of workers about to be deleted, before their
//! records go. Also the small tokio bridge the synchronous commands use.

use super::Failure;
use crate::engine::vm::VmDriver;
use crate::engine::{Config, Engine};
use crate::orchestrator::Sessions;
use crate::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Runs a future to completion on a fresh multi-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    Ok(rt.block_on(f))
}

/// Stops each worker's VM (adopting it from a previous engine when needed).
pub fn workers(state_dir: &Path, names: &[String]) -> Result<(), Failure> {
    let store = Store::open(state_dir)?;
    let driver = Arc::new(crate::drivers::vms::QemuVms::new());
    let names = names.to_vec();
    let dir = state_dir.to_path_buf();
    block_on(async move {
        let engine = Engine::new(
            store,
            driver.clone(),
            Arc::new(Sessions::default()),
            Config {
                state_dir: dir,
                orchestrator_port: 0,
                token: String::new(),
                default_initrd: None,
                concurrency: 1,
                resync: Duration::from_secs(3600),
            },
        );
        for n in &names {
            engine.teardown(n).await;
        }
        let _ = driver.exits();
    })
    .map_err(Failure::invalid)
}
