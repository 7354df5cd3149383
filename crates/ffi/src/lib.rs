//! The only foreign calls of atrest, each behind a safe wrapper:
//!
//! - [`secretbox`]: libsodium's `crypto_secretbox` (XSalsa20-Poly1305), detached form. It is
//!   used instead of a pure-Rust implementation because it is several times faster on the
//!   project's machines (BENCHMARKS.md).
//! - [`fork_generation`]: a counter bumped in the child after every `fork()`, so that
//!   per-process random buffers can be discarded by a forked child.
//!
//! Every `unsafe` block is allowed individually and carries a SAFETY comment.
#![deny(unsafe_code)]

pub mod secretbox;

use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static FORKS: AtomicU64 = AtomicU64::new(0);
static FORK_HOOK: OnceLock<bool> = OnceLock::new();

extern "C" {
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> c_int;
}

/// Runs in the child right after `fork()`, while it has a single thread. An atomic add is
/// async-signal-safe.
extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// How many times this process's ancestry has forked since the hook was installed, or `None`
/// if the hook could not be installed (then callers must not keep random buffers).
///
/// The first call installs a `pthread_atfork` child handler; any `fork()` (or `posix_spawn`
/// / `system`, which run the same handlers) after that call returns a different value in
/// the child. A raw `clone` syscall bypassing libc is not seen; `vfork` children may only
/// `exec` or `_exit`, so they cannot reuse a buffer.
pub fn fork_generation() -> Option<u64> {
    let installed = *FORK_HOOK.get_or_init(|| {
        // SAFETY: `pthread_atfork` only records the three function pointers; `forked_child`
        // is a plain `extern "C" fn` with static lifetime that touches only an atomic.
        #[allow(unsafe_code)]
        let rc = unsafe { pthread_atfork(None, None, Some(forked_child)) };
        rc == 0
    });
    installed.then(|| FORKS.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_generation_is_stable_without_fork() {
        let a = fork_generation();
        assert!(a.is_some());
        assert_eq!(a, fork_generation());
    }
}
