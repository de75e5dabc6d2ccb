use std::sync::Arc;
use std::time::Duration;

use super::events::Kind;
use super::*;

/// Every event recorded (the process-wide rates; every test sets the same).
fn record_everything() {
    set_mutex_profile_fraction(1);
    set_block_profile_rate(1);
}

use crate::profiles::{contention_stacks as recorded, contention_text};

/// Values of the stacks whose leaf function ends with `leaf`.
fn with_leaf(kind: Kind, leaf: &str) -> Vec<Vec<i64>> {
    recorded(kind)
        .into_iter()
        .filter(|(names, _)| names.first().is_some_and(|n| n.ends_with(leaf)))
        .map(|(_, values)| values)
        .collect()
}

const HOLD: Duration = Duration::from_millis(300);

#[inline(never)]
fn hold_the_mutex(lock: &Mutex<u32>, holding: &std::sync::Barrier) {
    let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
    holding.wait();
    std::thread::sleep(HOLD);
    *guard += 1;
}

#[inline(never)]
fn wait_for_the_mutex(lock: &Mutex<u32>) {
    let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
    *guard += 1;
}

#[test]
fn contention_is_charged_to_the_holder_and_the_waiter() {
    record_everything();
    let lock = Arc::new(Mutex::new(0));
    let holding = Arc::new(std::sync::Barrier::new(2));
    let holder = {
        let (lock, holding) = (lock.clone(), holding.clone());
        std::thread::spawn(move || hold_the_mutex(&lock, &holding))
    };
    holding.wait();
    wait_for_the_mutex(&lock);
    holder.join().expect("holder");
    assert_eq!(*lock.lock().expect("not poisoned"), 2);

    // The waiter waited for (most of) the holder's sleep: between 0.5× and
    // 3× of it, generous for a loaded machine.
    let in_range = |delay: i64| (150_000_000..900_000_000).contains(&delay);
    let mutex = with_leaf(Kind::Mutex, "sync::tests::hold_the_mutex");
    assert_eq!(mutex.len(), 1, "{:#?}", recorded(Kind::Mutex));
    assert_eq!(mutex[0][0], 1, "one contention");
    assert!(in_range(mutex[0][1]), "mutex delay {}", mutex[0][1]);
    let block = with_leaf(Kind::Block, "sync::tests::wait_for_the_mutex");
    assert_eq!(block.len(), 1, "{:#?}", recorded(Kind::Block));
    assert_eq!(block[0][0], 1);
    assert!(in_range(block[0][1]), "block delay {}", block[0][1]);
    // The waiter's own unlock found nobody waiting: not in the mutex profile.
    assert!(with_leaf(Kind::Mutex, "sync::tests::wait_for_the_mutex").is_empty());

    // Go's text form: header, cycles (= ns) and count, addresses, frame lines.
    let text = contention_text(Kind::Mutex);
    assert!(
        text.starts_with("--- mutex:\ncycles/second=1000000000\n"),
        "{text}"
    );
    let record = format!("{} {} @ 0x", mutex[0][1], mutex[0][0]);
    assert!(text.contains(&record), "{text}");
    assert!(
        text.contains("\tpprof_core::sync::tests::hold_the_mutex\t"),
        "{text}"
    );
    let text = contention_text(Kind::Block);
    assert!(
        text.starts_with("--- contention:\ncycles/second=1000000000\n"),
        "{text}"
    );
}

#[inline(never)]
fn lock_alone_many_times(lock: &Mutex<u64>, rw: &RwLock<u64>) {
    for _ in 0..10_000 {
        *lock.lock().expect("not poisoned") += 1;
        *rw.write().expect("not poisoned") += 1;
        let _ = *rw.read().expect("not poisoned");
    }
}

#[test]
fn uncontended_locking_records_nothing() {
    record_everything();
    let lock = Mutex::new(0);
    let rw = RwLock::new(0);
    lock_alone_many_times(&lock, &rw);
    for kind in [Kind::Mutex, Kind::Block] {
        assert!(
            !recorded(kind)
                .iter()
                .any(|(names, _)| names.iter().any(|n| n.contains("lock_alone_many_times"))),
            "{kind:?}"
        );
    }
}

#[inline(never)]
fn write_and_hold(lock: &RwLock<u32>, holding: &std::sync::Barrier) {
    let mut guard = lock.write().unwrap_or_else(PoisonError::into_inner);
    holding.wait();
    std::thread::sleep(HOLD);
    *guard += 1;
}

#[inline(never)]
fn read_after_the_writer(lock: &RwLock<u32>) -> u32 {
    *lock.read().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn rwlock_readers_waiting_on_a_writer_are_recorded() {
    record_everything();
    let lock = Arc::new(RwLock::new(0));
    let holding = Arc::new(std::sync::Barrier::new(2));
    let writer = {
        let (lock, holding) = (lock.clone(), holding.clone());
        std::thread::spawn(move || write_and_hold(&lock, &holding))
    };
    holding.wait();
    assert_eq!(read_after_the_writer(&lock), 1);
    writer.join().expect("writer");
    let mutex = with_leaf(Kind::Mutex, "sync::tests::write_and_hold");
    assert_eq!(mutex.len(), 1, "{:#?}", recorded(Kind::Mutex));
    assert!(mutex[0][1] >= 150_000_000, "{}", mutex[0][1]);
    let block = with_leaf(Kind::Block, "sync::tests::read_after_the_writer");
    assert_eq!(block.len(), 1, "{:#?}", recorded(Kind::Block));
}

#[test]
fn std_api_poisoning_and_try_lock() {
    let lock = Arc::new(Mutex::new(vec![1]));
    {
        let held = lock.lock().expect("first lock");
        assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
        drop(held);
    }
    let poisoner = lock.clone();
    let _ = std::thread::spawn(move || {
        let _guard = poisoner.lock();
        panic!("poison it");
    })
    .join();
    assert!(lock.is_poisoned());
    let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
    assert_eq!(*guard, [1]);
    drop(guard);
    assert!(matches!(lock.try_lock(), Err(TryLockError::Poisoned(_))));
    lock.clear_poison();
    assert!(lock.try_lock().is_ok());
    let mut owned = Mutex::new(String::from("a"));
    owned.get_mut().expect("not poisoned").push('b');
    assert_eq!(
        format!("{owned:?}"),
        r#"Mutex { data: "ab", poisoned: false, .. }"#
    );
    assert_eq!(owned.into_inner().expect("not poisoned"), "ab");
    let rw: RwLock<Vec<u8>> = RwLock::default();
    rw.write().expect("write").push(3);
    assert_eq!(rw.try_read().expect("read").len(), 1);
    assert_eq!(rw.into_inner().expect("not poisoned"), [3]);
}

#[test]
fn send_and_sync_as_std() {
    fn send_sync<T: Send + Sync>() {}
    fn sync<T: Sync>() {}
    send_sync::<Mutex<Vec<u8>>>();
    send_sync::<RwLock<Vec<u8>>>();
    sync::<MutexGuard<'static, Vec<u8>>>();
    sync::<RwLockReadGuard<'static, Vec<u8>>>();
    // Unsized values, as std allows.
    let slice: &Mutex<[u8]> = &Mutex::new([1u8, 2]);
    assert_eq!(slice.lock().expect("lock").len(), 2);
}

#[inline(never)]
fn wait_for_the_signal(state: &(Mutex<bool>, Condvar)) {
    let (ready, signal) = state;
    let guard = ready.lock().unwrap_or_else(PoisonError::into_inner);
    let guard = signal
        .wait_while(guard, |ready| !*ready)
        .unwrap_or_else(PoisonError::into_inner);
    assert!(*guard);
}

#[test]
fn condvar_waits_are_blocking_events_of_the_waiter() {
    record_everything();
    let state = Arc::new((Mutex::new(false), Condvar::new()));
    let waiter = {
        let state = state.clone();
        std::thread::spawn(move || wait_for_the_signal(&state))
    };
    std::thread::sleep(HOLD);
    *state.0.lock().expect("not poisoned") = true;
    state.1.notify_all();
    waiter.join().expect("waiter");
    let block = with_leaf(Kind::Block, "sync::tests::wait_for_the_signal");
    assert_eq!(block.len(), 1, "{:#?}", recorded(Kind::Block));
    assert_eq!(block[0][0], 1);
    assert!(
        (150_000_000..2_000_000_000).contains(&block[0][1]),
        "{}",
        block[0][1]
    );
    let (lock, signal) = &*state;
    let (guard, timeout) = signal
        .wait_timeout(lock.lock().expect("lock"), Duration::from_millis(10))
        .expect("not poisoned");
    assert!(timeout.timed_out() && *guard);
}

/// Holds `backtrace`'s global lock (taken by `backtrace::trace` and by every
/// symbolization through `backtrace`) until told to let go.
fn hold_backtrace_lock() -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut first = true;
        backtrace::trace(|_| {
            if first {
                first = false;
                let _ = held_tx.send(());
                let _ = release_rx.recv_timeout(Duration::from_secs(60));
            }
            false
        });
    });
    held_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the holder took backtrace's lock");
    (release_tx, holder)
}

#[inline(never)]
fn contend_while_a_symbolization_runs(lock: &Mutex<u32>) {
    let holding = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            holding.wait();
            std::thread::sleep(Duration::from_millis(50));
            *guard += 1;
        });
        holding.wait();
        *lock.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    });
}

#[test]
fn an_unlock_that_records_does_not_wait_for_backtraces_lock() {
    record_everything();
    let (release, holder) = hold_backtrace_lock();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let lock = Arc::new(Mutex::new(0));
    let contending = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            contend_while_a_symbolization_runs(&lock);
            let _ = done_tx.send(());
        })
    };
    // Not a timing assertion: a stalled unlock would wait the full minute
    // the holder keeps the lock.
    let finished = done_rx.recv_timeout(Duration::from_secs(20));
    let _ = release.send(());
    holder.join().expect("holder");
    contending.join().expect("contending threads");
    assert!(
        finished.is_ok(),
        "an unlock that records waited for backtrace's lock"
    );
    assert_eq!(*lock.lock().expect("not poisoned"), 2);
    assert!(
        recorded(Kind::Block).iter().any(|(names, _)| names
            .iter()
            .any(|n| n.contains("contend_while_a_symbolization_runs"))),
        "{:#?}",
        recorded(Kind::Block)
    );
}

#[test]
fn waiters_are_charged_after_the_unlock() {
    // Someone waits, so the next unlock goes to the book; the book is busy.
    let lock = Arc::new(Mutex::new(0));
    let _waiting = lock.waiters.register();
    let book = lock.waiters.book.lock().expect("book");
    let unlocking = {
        let lock = lock.clone();
        std::thread::spawn(move || *lock.lock().expect("not poisoned") += 1)
    };
    // The lock is free while its unlocker waits for the book: the charge
    // comes after the unlock, so a critical section never grows by it.
    // Not a timing assertion: up to 20 s for the other thread to get there.
    let mut free = false;
    for _ in 0..2000 {
        if let Ok(value) = lock.inner.try_lock()
            && *value == 1
        {
            free = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(book);
    unlocking.join().expect("unlocking thread");
    assert!(
        free,
        "the unlocker held the lock while it waited for the book"
    );
}

#[test]
fn contention_arithmetic_neither_overflows_nor_loses_a_settled_wait() {
    // 2000 waiters on a process up 200 days: their start times sum past u64.
    let mut book = Book::new();
    let day: u64 = 86_400 * 1_000_000_000;
    let tickets: Vec<Ticket> = (0..2000).map(|_| book.register(200 * day)).collect();
    assert_eq!(book.charge(200 * day + 10, None), Some((2000, 20_000)));
    // Charged once: the next charge owes only the time since.
    assert_eq!(book.charge(200 * day + 15, None), Some((0, 10_000)));
    // Charged waiters that take the lock leave nothing owed.
    for t in &tickets {
        assert_eq!(book.deregister(t, 200 * day + 16, true), None);
    }
    assert_eq!(book.pending(), 0);
    assert_eq!(book.charge(200 * day + 17, None), None);
}

#[test]
fn a_wait_that_ends_before_its_unlocker_reaches_the_book_is_charged_to_that_unlocker() {
    // The waiter takes the lock (its wait 300 ns) while the unlock that let
    // it in is on its way to the book; then the waiter unlocks first.
    let mut book = Book::new();
    let waiter = book.register(1_000);
    let settled = book.deregister(&waiter, 1_300, true);
    assert!(settled.is_some());
    assert_eq!(book.pending(), 1);
    // The waiter's own unlock leaves its own wait alone...
    assert_eq!(book.charge(1_305, settled), None);
    assert_eq!(book.pending(), 1);
    // ...for the unlock that let it in.
    assert_eq!(book.charge(1_310, None), Some((1, 300)));
    assert_eq!(book.pending(), 0);
    // With no unlock on its way, a wait that began after the last one
    // looked (a few instructions) is dropped, and nothing lingers.
    let late = book.register(2_000);
    assert_eq!(book.deregister(&late, 2_001, false), None);
    assert_eq!(book.pending(), 0);
}

#[inline(never)]
fn wait_on_the_condvar_here<'a>(
    state: &'a (Mutex<u32>, Condvar),
    guard: MutexGuard<'a, u32>,
) -> MutexGuard<'a, u32> {
    state
        .1
        .wait_timeout(guard, Duration::from_millis(20))
        .unwrap_or_else(PoisonError::into_inner)
        .0
}

#[inline(never)]
fn release_the_condvar_guard_here(state: &(Mutex<u32>, Condvar), waiting: &std::sync::Barrier) {
    let guard = state.0.lock().unwrap_or_else(PoisonError::into_inner);
    waiting.wait();
    // Let the other thread start waiting for the mutex.
    std::thread::sleep(Duration::from_millis(100));
    let mut guard = wait_on_the_condvar_here(state, guard);
    *guard += 1;
    drop(guard);
}

#[inline(never)]
fn lock_while_the_condvar_user_holds_it(state: &(Mutex<u32>, Condvar)) {
    *state.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
}

#[test]
fn a_condvar_wait_records_nothing_while_the_mutex_is_held() {
    record_everything();
    let state = Arc::new((Mutex::new(0), Condvar::new()));
    let waiting = Arc::new(std::sync::Barrier::new(2));
    let user = {
        let (state, waiting) = (state.clone(), waiting.clone());
        std::thread::spawn(move || release_the_condvar_guard_here(&state, &waiting))
    };
    waiting.wait();
    lock_while_the_condvar_user_holds_it(&state);
    user.join().expect("condvar user");
    // The critical section that ended at the wait is charged where the
    // guard was finally released (the lock free), not at the wait.
    assert!(
        with_leaf(Kind::Mutex, "sync::tests::wait_on_the_condvar_here").is_empty(),
        "{:#?}",
        recorded(Kind::Mutex)
    );
    let charged = with_leaf(Kind::Mutex, "sync::tests::release_the_condvar_guard_here");
    assert_eq!(charged.len(), 1, "{:#?}", recorded(Kind::Mutex));
    assert_eq!(charged[0][0], 1, "one contention");
}
