//! How long-running operations report progress (the command line draws a bar).

/// Receives progress of a long operation. Every method has a no-op default.
pub trait Progress: Send + Sync {
    /// A new phase begins (`scanning`, `rewriting`, `verifying`), with its total when known.
    fn phase(&self, _name: &str, _total: Option<u64>) {}
    /// `n` more items of the current phase are done.
    fn advance(&self, _n: u64) {}
    /// The operation has finished (the bar is cleared).
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
