//! A second handle on a connection's socket, by descriptor number: the one
//! unsafe step of noticing a client that hangs up, for servers that keep
//! running a handler after that (actix-web). Not signal machinery; here
//! because every `unsafe` line of pprof-core but the jemalloc glue is.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A new descriptor for what `fd` is open on, owned by the caller; `None`
/// when `fd` is not open. A number may have been closed and reused: the
/// caller checks that the duplicate is the connection it expects.
pub(crate) fn duplicate(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) reads and adds to the descriptor table
    // only: on a descriptor that is not open it fails (EBADF), on one that
    // is it returns a fresh descriptor that nothing else owns.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return None;
    }
    // SAFETY: `dup` was just returned by fcntl: open, and ours alone.
    Some(unsafe { OwnedFd::from_raw_fd(dup) })
}
