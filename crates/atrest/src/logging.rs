//! Log output for long-running commands: `RUST_LOG` filters (default `info`), to stderr.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // When stderr cannot be written (a log file on a full disk), tracing-subscriber's
        // report of that failure is an `eprintln!`, which panics, killing whichever thread
        // logged: the store's writer among them. A lost log line is the lesser harm.
        .log_internal_errors(false)
        .with_target(false)
        .try_init();
}
