//! The one unwinding routine, and the rules about where it refuses to run.
//!
//! Every handler (the CPU sampler's, the thread dump's, the poll
//! watchdog's) unwinds through [`from_signal`]. It uses libgcc's
//! `_Unwind_Backtrace` (through `backtrace`), which reads the interrupted
//! thread's unwind tables and stack; it allocates nothing and takes no
//! lock as long as the C library finds unwind tables without one. With
//! glibc ≥ 2.35 and a libgcc that uses it (GCC ≥ 12), that lookup is
//! `_dl_find_object`, lock-free and async-signal-safe; its one-time
//! initialisation runs in [`prepare`], outside any handler. Older
//! combinations fall back to `dl_iterate_phdr`, which takes the loader's
//! lock: a thread interrupted while holding it would wait for itself.
//!
//! So the routine refuses to unwind, records the interrupted pc alone, and
//! says why ([`Outcome`]), when:
//! - the lookup is not lock-free in this process ([`prepare`] checks once:
//!   glibc's version, and whether the loaded unwinder calls `_dl_find_object`);
//! - the pc lies inside the unwinder itself (libgcc's code: a thread caught
//!   unwinding for a panic or a lock's stack capture), where re-entering it
//!   could meet its own half-done state;
//! - the pc lies inside the dynamic loader (a thread in `dlopen` or lazy
//!   binding holds the loader's locks).
//!
//! Walks are bounded by the output's length. Stacks are read by the
//! unwinder as the tables describe them; code without unwind tables ends
//! the walk (the unwinder finds no table and stops), it is not guessed at.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Deepest stack recorded by a handler; deeper stacks keep their innermost frames.
pub(crate) const MAX_FRAMES: usize = 128;

/// How far a handler's walk got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Outcome {
    /// The whole stack, up to the thread's first frame.
    Whole = 0,
    /// The innermost [`MAX_FRAMES`] frames of a deeper stack.
    Truncated = 1,
    /// Not unwound: the pc is inside the unwinder.
    InUnwinder = 2,
    /// Not unwound: the pc is inside the dynamic loader.
    InLoader = 3,
    /// Not unwound: this C library has no lock-free unwind-table lookup.
    NoLockFreeLookup = 4,
    /// The unwinder did not get past the signal frame: the pc alone.
    SignalFrame = 5,
}

impl Outcome {
    /// The outcome a stored byte stands for.
    pub(crate) fn from_u8(byte: u8) -> Self {
        match byte {
            0 => Self::Whole,
            1 => Self::Truncated,
            2 => Self::InUnwinder,
            3 => Self::InLoader,
            4 => Self::NoLockFreeLookup,
            _ => Self::SignalFrame,
        }
    }

    /// Why the stack is short, in words; `None` for a whole stack.
    pub(crate) fn reason(self) -> Option<&'static str> {
        match self {
            Self::Whole => None,
            Self::Truncated => Some("stack truncated at 128 frames"),
            Self::InUnwinder => Some("not unwound: interrupted inside the unwinder"),
            Self::InLoader => Some("not unwound: interrupted inside the dynamic loader"),
            Self::NoLockFreeLookup => Some(
                "not unwound: the C library has no lock-free unwind-table lookup (glibc < 2.35)",
            ),
            Self::SignalFrame => Some("not unwound: the unwinder stopped at the signal frame"),
        }
    }
}

/// Address ranges where a handler must not unwind, found once.
#[derive(Debug, Default)]
struct Risky {
    /// `(start, end)` of the unwinder's and the loader's code.
    unwinder: Vec<(usize, usize)>,
    loader: Vec<(usize, usize)>,
    lock_free_lookup: bool,
}

/// The ranges, published for handlers as plain atomics (a handler may not
/// touch the `OnceLock` while it initialises).
static UNWINDER: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
static LOADER: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
/// 0: not prepared, 1: lock-free lookup, 2: lookup takes a lock.
static LOOKUP: AtomicUsize = AtomicUsize::new(0);

/// Run the unwinder's one-time set-up here, outside any signal handler,
/// and find where handlers must not unwind. Cheap after the first call.
pub(super) fn prepare() {
    static PREPARED: OnceLock<()> = OnceLock::new();
    PREPARED.get_or_init(|| {
        backtrace::trace(|_| true);
        let risky = find_risky();
        publish(&UNWINDER, &risky.unwinder);
        publish(&LOADER, &risky.loader);
        LOOKUP.store(
            if risky.lock_free_lookup { 1 } else { 2 },
            Ordering::Release,
        );
    });
}

/// Whether handlers unwind at all in this process (after [`prepare`]).
pub(crate) fn lock_free_lookup() -> bool {
    prepare();
    LOOKUP.load(Ordering::Acquire) == 1
}

fn publish(slots: &[AtomicUsize; 4], ranges: &[(usize, usize)]) {
    for (pair, &(start, end)) in slots.chunks(2).zip(ranges) {
        pair[0].store(start, Ordering::Relaxed);
        pair[1].store(end, Ordering::Release);
    }
}

fn within(slots: &[AtomicUsize; 4], pc: usize) -> bool {
    slots.chunks(2).any(|pair| {
        let end = pair[1].load(Ordering::Acquire);
        end != 0 && (pair[0].load(Ordering::Relaxed)..end).contains(&pc)
    })
}

/// The executable mappings of libgcc's unwinder and of the loader, and
/// whether the lookup the unwinder uses is lock-free.
fn find_risky() -> Risky {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut risky = Risky::default();
    let mut unwinder_files = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or_default();
        if !perms.contains('x') {
            continue;
        }
        let Some((start, end)) = range.split_once('-').and_then(|(s, e)| {
            Some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        }) else {
            continue;
        };
        let file = path.rsplit('/').next().unwrap_or_default();
        if file.starts_with("libgcc_s.so") {
            risky.unwinder.push((start, end));
            unwinder_files.push(path.to_owned());
        } else if file.starts_with("ld-linux") || file.starts_with("ld-musl") || file == "ld.so" {
            risky.loader.push((start, end));
        }
    }
    risky.unwinder.truncate(2);
    risky.loader.truncate(2);
    // A libgcc that imports `_dl_find_object` uses it (and exists only on
    // a glibc that has it); one linked into the executable is checked there.
    if unwinder_files.is_empty() {
        unwinder_files.extend(
            std::env::current_exe()
                .ok()
                .map(|p| p.display().to_string()),
        );
    }
    risky.lock_free_lookup = glibc_at_least(2, 35)
        && unwinder_files.iter().any(|file| {
            std::fs::read(file).is_ok_and(|bytes| {
                bytes
                    .windows(b"_dl_find_object\0".len())
                    .any(|w| w == b"_dl_find_object\0")
            })
        });
    risky
}

/// Whether the running C library is glibc at `major.minor` or newer.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: gnu_get_libc_version returns a pointer to a static,
    // NUL-terminated string that lives as long as the process.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let version = version.to_string_lossy();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (have_major, have_minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (have_major, have_minor) >= (major, minor)
}

/// The calling thread's stack as lookup addresses (return address − 1),
/// leaf first, as many as fit in `buf`; returns how many. Not for signal
/// handlers. It takes no lock of `backtrace`'s, so an unlock that records
/// never waits for a symbolization in progress. The first frames are this
/// function and its callers' capture machinery; the encoder trims them.
#[inline(never)]
pub(crate) fn stack_here(buf: &mut [u64]) -> usize {
    let mut n = 0;
    // SAFETY: `backtrace`'s global lock only serialises unwinders that are
    // not thread-safe (Windows' dbghelp); on Linux libgcc's unwinder may run
    // on many threads at once (the signal handlers here already do). The
    // closure cannot panic: it only stores into `buf` within its length.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize as u64;
            if ip > 1 && n < buf.len() {
                buf[n] = ip - 1;
                n += 1;
            }
            n < buf.len()
        });
    }
    n
}

/// From inside a signal handler: the interrupted thread's stack into
/// `out`, leaf first, starting at the `interrupted` pc (the frames above it
/// are the handler and the kernel's trampoline); raw addresses, the leaf
/// exact and the others return addresses. Returns how many were written
/// and how far the walk got. Follows the module's rules on where not to
/// unwind; the pc alone is always recorded when known.
///
/// # Safety
///
/// Call only from a signal handler on the thread being unwound, after
/// [`prepare`] has run once in the process.
pub(super) unsafe fn from_signal(
    interrupted: Option<usize>,
    out: &[AtomicUsize],
) -> (usize, Outcome) {
    let refusal = match interrupted {
        _ if LOOKUP.load(Ordering::Acquire) != 1 => Some(Outcome::NoLockFreeLookup),
        Some(pc) if within(&UNWINDER, pc) => Some(Outcome::InUnwinder),
        Some(pc) if within(&LOADER, pc) => Some(Outcome::InLoader),
        _ => None,
    };
    if let Some(why) = refusal {
        return match (interrupted, out.first()) {
            (Some(pc), Some(first)) => {
                first.store(pc, Ordering::Relaxed);
                (1, why)
            }
            _ => (0, why),
        };
    }
    let mut len = 0;
    let mut deeper = false;
    // Frames above the interrupted one are this handler and the kernel's
    // signal trampoline: skip them until the interrupted pc appears.
    let mut recording = interrupted.is_none();
    // SAFETY: unwinds only the current thread; the unwinder neither
    // allocates nor locks with a lock-free table lookup (checked above)
    // and its initialisation ran in `prepare`. The closure only stores
    // into atomics.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if !recording && Some(ip) == interrupted {
                recording = true;
            }
            if recording {
                if len == out.len() {
                    deeper = true;
                    return false;
                }
                out[len].store(ip, Ordering::Relaxed);
                len += 1;
            }
            true
        });
    }
    if len == 0 {
        if let (Some(pc), Some(first)) = (interrupted, out.first()) {
            first.store(pc, Ordering::Relaxed);
            return (1, Outcome::SignalFrame);
        }
        return (0, Outcome::SignalFrame);
    }
    (
        len,
        if deeper {
            Outcome::Truncated
        } else {
            Outcome::Whole
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_unwinds_lock_free_and_knows_the_risky_code() {
        prepare();
        // The project's machines run glibc 2.36 with GCC 12's libgcc.
        assert!(glibc_at_least(2, 17));
        let risky = find_risky();
        assert!(!risky.loader.is_empty(), "{risky:?}");
        if glibc_at_least(2, 35) {
            assert!(lock_free_lookup(), "{risky:?}");
        }
        let in_loader = risky.loader[0].0;
        assert!(within(&LOADER, in_loader));
        assert!(!within(
            &LOADER,
            stack_here as fn(&mut [u64]) -> usize as usize
        ));
    }

    #[test]
    fn outcomes_round_trip_through_a_byte() {
        for o in [
            Outcome::Whole,
            Outcome::Truncated,
            Outcome::InUnwinder,
            Outcome::InLoader,
            Outcome::NoLockFreeLookup,
            Outcome::SignalFrame,
        ] {
            assert_eq!(Outcome::from_u8(o as u8), o);
            assert_eq!(o.reason().is_none(), o == Outcome::Whole);
        }
    }
}
