//! A service whose threads run code no unwinder can trust, for the tests
//! that profile it (`tests/tests/hostile.rs`).
//!
//! ```text
//! hostile serve [--addr HOST:PORT]     the pprof routes and /hello, with the threads below
//! hostile exec-during-profile          start a CPU profile, then execve a shell that burns CPU
//! ```
//!
//! The threads of `serve`, each looping for as long as the process lives:
//! - `wrong-cfi`: assembly whose unwind table says the return address is
//!   at the stack pointer after it moved the stack and wrote a garbage
//!   word there (the table is right only at its first instruction);
//! - `huge-cfa`: assembly whose table puts the caller's frame 2 GiB above
//!   the stack;
//! - `no-cfi`: assembly with no unwind table at all and a frame pointer
//!   that points into the first page;
//! - `wild-sp`: assembly that loops with its stack pointer pointing
//!   nowhere (a signal can only be taken on its alternate signal stack);
//! - `near-limit`: a thread with a 64 KiB stack, recursed to within 1 KiB
//!   of its guard page, burning CPU there;
//! - `libraries`: loads zlib with `dlopen`, runs its `crc32`, unloads it,
//!   over and over;
//! - `spawner`: runs `/bin/true` as a child process, over and over; a
//!   failed child is counted at `/stats`.

#![allow(
    unsafe_code,
    reason = "the point of this program: hand-written assembly with wrong or no unwind tables, a stack pointer that points nowhere, libraries loaded and unloaded, exec"
)]

use std::ffi::{CStr, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pprof_core::jemalloc_heap_profiling!();

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".text",
    ".globl pprof_hostile_wrong_cfi",
    ".type pprof_hostile_wrong_cfi, @function",
    "pprof_hostile_wrong_cfi:",
    ".cfi_startproc",
    "sub rsp, 64",
    "mov rax, 0xdeadbee0",
    "mov [rsp], rax",
    "mov rcx, rdi",
    "2:",
    "dec rcx",
    "jnz 2b",
    "add rsp, 64",
    "ret",
    ".cfi_endproc",
    ".size pprof_hostile_wrong_cfi, . - pprof_hostile_wrong_cfi",
    "",
    ".globl pprof_hostile_huge_cfa",
    ".type pprof_hostile_huge_cfa, @function",
    "pprof_hostile_huge_cfa:",
    ".cfi_startproc",
    ".cfi_def_cfa_offset 0x7fff0000",
    "mov rcx, rdi",
    "2:",
    "dec rcx",
    "jnz 2b",
    "ret",
    ".cfi_endproc",
    ".size pprof_hostile_huge_cfa, . - pprof_hostile_huge_cfa",
    "",
    ".globl pprof_hostile_no_cfi",
    ".type pprof_hostile_no_cfi, @function",
    "pprof_hostile_no_cfi:",
    "push rbp",
    "mov rbp, 0x10",
    "mov rcx, rdi",
    "2:",
    "dec rcx",
    "jnz 2b",
    "pop rbp",
    "ret",
    ".size pprof_hostile_no_cfi, . - pprof_hostile_no_cfi",
    "",
    ".globl pprof_hostile_wild_sp",
    ".type pprof_hostile_wild_sp, @function",
    "pprof_hostile_wild_sp:",
    ".cfi_startproc",
    "mov rax, rsp",
    "mov rsp, 0x1000",
    "mov rcx, rdi",
    "2:",
    "dec rcx",
    "jnz 2b",
    "mov rsp, rax",
    "ret",
    ".cfi_endproc",
    ".size pprof_hostile_wild_sp, . - pprof_hostile_wild_sp",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    fn pprof_hostile_wrong_cfi(loops: u64);
    fn pprof_hostile_huge_cfa(loops: u64);
    fn pprof_hostile_no_cfi(loops: u64);
    fn pprof_hostile_wild_sp(loops: u64);
}

/// Children of `spawner` that did not exit with status 0.
static FAILED_CHILDREN: AtomicU64 = AtomicU64::new(0);
static CHILDREN: AtomicU64 = AtomicU64::new(0);
/// Rounds of `libraries`.
static LOADS: AtomicU64 = AtomicU64::new(0);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(
            args.windows(2)
                .find(|w| w[0] == "--addr")
                .map_or("127.0.0.1:0", |w| w[1].as_str()),
        ),
        Some("exec-during-profile") => exec_during_profile(),
        _ => {
            eprintln!("usage: hostile serve [--addr HOST:PORT] | exec-during-profile");
            std::process::exit(2);
        }
    }
}

fn spawn(name: &str, stack: Option<usize>, body: impl FnOnce() + Send + 'static) {
    let mut builder = std::thread::Builder::new().name(name.to_owned());
    if let Some(bytes) = stack {
        builder = builder.stack_size(bytes);
    }
    builder.spawn(body).expect("spawn");
}

fn serve(addr: &str) {
    #[cfg(target_arch = "x86_64")]
    {
        spawn("wrong-cfi", None, || {
            loop {
                // SAFETY: each routine only counts down a register (and moves
                // its own stack pointer and back); they take no pointer.
                unsafe { pprof_hostile_wrong_cfi(20_000_000) }
            }
        });
        spawn("huge-cfa", None, || {
            loop {
                // SAFETY: as above.
                unsafe { pprof_hostile_huge_cfa(20_000_000) }
            }
        });
        spawn("no-cfi", None, || {
            loop {
                // SAFETY: as above.
                unsafe { pprof_hostile_no_cfi(20_000_000) }
            }
        });
        spawn("wild-sp", None, || {
            loop {
                // SAFETY: as above; while its stack pointer points nowhere the
                // routine touches no memory, and signals land on the thread's
                // alternate stack.
                unsafe { pprof_hostile_wild_sp(20_000_000) }
            }
        });
    }
    spawn("near-limit", Some(64 << 10), near_limit);
    spawn("libraries", None, libraries);
    spawn("spawner", None, spawner);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        println!(
            "listening on http://{}",
            listener.local_addr().expect("address")
        );
        let app = axum::Router::new()
            .route("/hello", axum::routing::get(|| async { "hello\n" }))
            .route(
                "/stats",
                axum::routing::get(|| async {
                    format!(
                        "children {} failed {} loads {}\n",
                        CHILDREN.load(Ordering::Relaxed),
                        FAILED_CHILDREN.load(Ordering::Relaxed),
                        LOADS.load(Ordering::Relaxed)
                    )
                }),
            )
            .merge(pprof_axum::routes_with(
                pprof_core::Config::default().hz_range(1, 1000),
            ));
        axum::serve(listener, app).await.expect("serve");
    });
}

/// The bottom of this thread's stack (its lowest usable address).
fn stack_bottom() -> usize {
    // SAFETY: pthread_getattr_np fills a zeroed attr for this thread, which
    // is destroyed after the two reads.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return 0;
        }
        let mut addr: *mut c_void = std::ptr::null_mut();
        let mut size = 0;
        libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        addr as usize
    }
}

/// Recurse until within `margin` bytes of `bottom`, then burn CPU there.
#[inline(never)]
fn descend(bottom: usize, margin: usize, depth: u64) -> u64 {
    let here = 0u8;
    let at = std::hint::black_box(std::ptr::from_ref(&here)) as usize;
    if at > bottom + margin + 512 {
        return descend(bottom, margin, depth + 1) + 1;
    }
    let mut x = depth;
    loop {
        for _ in 0..1_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

fn near_limit() {
    let bottom = stack_bottom();
    if bottom != 0 {
        std::hint::black_box(descend(bottom, 1024, 0));
    }
}

type Crc32 = unsafe extern "C" fn(u64, *const u8, u32) -> u64;

fn libraries() {
    let data = vec![7u8; 64 << 10];
    let name = c"libz.so.1";
    let symbol = c"crc32";
    loop {
        // SAFETY: dlopen of a library by name; a null handle is checked.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            eprintln!("hostile: cannot load {}", cstr(name));
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        // SAFETY: dlsym on the live handle; a null symbol is checked.
        let crc = unsafe { libc::dlsym(handle, symbol.as_ptr()) };
        if !crc.is_null() {
            // SAFETY: zlib's crc32(uLong crc, const Bytef *buf, uInt len),
            // called while the library is loaded, on a buffer we own.
            let crc32: Crc32 = unsafe { std::mem::transmute::<*mut c_void, Crc32>(crc) };
            let mut sum = 0;
            for _ in 0..200 {
                // SAFETY: as above.
                sum = unsafe { crc32(sum, data.as_ptr(), data.len() as u32) };
            }
            std::hint::black_box(sum);
        }
        // SAFETY: the handle from dlopen above, closed once; nothing of the
        // library is used afterwards.
        unsafe { libc::dlclose(handle) };
        LOADS.fetch_add(1, Ordering::Relaxed);
    }
}

fn cstr(s: &CStr) -> String {
    s.to_string_lossy().into_owned()
}

fn spawner() {
    loop {
        let ok = std::process::Command::new("/bin/true")
            .status()
            .is_ok_and(|s| s.success());
        CHILDREN.fetch_add(1, Ordering::Relaxed);
        if !ok {
            FAILED_CHILDREN.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `request` through the pprof handler in process, on `runtime`.
fn start_cpu_profile(runtime: &tokio::runtime::Runtime, seconds: u32) {
    let pprof = pprof_core::Pprof::new(pprof_core::Config::default());
    runtime.spawn(async move {
        let request = http::Request::get(format!("/debug/pprof/profile?seconds={seconds}&hz=1000"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let _ = pprof.handle(request).await;
    });
}

/// Burn `cpu` of this thread's CPU time.
fn burn(cpu: Duration) {
    let start = thread_cpu();
    let mut x = 1u64;
    while thread_cpu() - start < cpu {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `now`, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Start a CPU profile, burn CPU until it runs, then replace this program
/// with a shell that burns CPU and exits 7: the shell must not die of a
/// `SIGPROF` meant for us.
fn exec_during_profile() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    start_cpu_profile(&runtime, 30);
    burn(Duration::from_millis(300));
    let shell = c"/bin/sh";
    let script = c"i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exit 7";
    let argv = [
        shell.as_ptr(),
        c"-c".as_ptr(),
        script.as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: execve with NUL-terminated strings and a null-terminated argv
    // that outlive the call; it returns only on failure.
    unsafe { libc::execv(shell.as_ptr(), argv.as_ptr()) };
    eprintln!("hostile: execv failed");
    std::process::exit(3);
}
