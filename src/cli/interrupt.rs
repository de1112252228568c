//! Ctrl-C (or SIGTERM) while a command runs cancels it (dropping a transfer halfway deletes its
//! temporary file); at any other time it ends the program at once, as usual.
//!
//! Once a program listens for Ctrl-C, the signal no longer ends it by itself, so the listener
//! installed by `catch_interrupts` decides, by whether a command is running.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use tokio::sync::Notify;

/// How many times Ctrl-C was pressed.
static PRESSED: AtomicU64 = AtomicU64::new(0);
/// How many interruptible commands are running.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static WAKE: Notify = Notify::const_new();

pub(super) fn install(rt: &tokio::runtime::Runtime) {
    rt.spawn(async {
        while tokio::signal::ctrl_c().await.is_ok() {
            press();
        }
    });
    // SIGTERM (`kill`, a service manager) stops a command the same way, so that a
    // download it stops still removes its temporary `.part` file.
    #[cfg(unix)]
    rt.spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            while term.recv().await.is_some() {
                press();
            }
        }
    });
}

fn press() {
    if RUNNING.load(SeqCst) == 0 {
        std::process::exit(super::Status::Interrupted as i32);
    }
    PRESSED.fetch_add(1, SeqCst);
    WAKE.notify_waiters();
}

/// Completes when Ctrl-C is pressed after the call.
pub(super) async fn pressed() {
    // Read the count before counting ourselves as running: a press in between then ends
    // the program (nothing has started yet) or is seen here, never lost.
    let start = PRESSED.load(SeqCst);
    RUNNING.fetch_add(1, SeqCst);
    let _running = Running;
    loop {
        let notified = WAKE.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if PRESSED.load(SeqCst) != start {
            return;
        }
        notified.await;
    }
}

struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, SeqCst);
    }
}
