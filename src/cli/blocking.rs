//! The small tokio bridge the synchronous commands use.

/// Runs a future to completion on a fresh multi-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    Ok(rt.block_on(f))
}
