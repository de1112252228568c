//! Where `barge serve` writes its log: standard error, one `write` per line, except for the
//! lines one thread logs in one synchronous step marked with [`together`] (the audit lines of a
//! group commit's replies), which are gathered and written with one `write`.
//!
//! A group commit of 256 small uploads logged its 256 audit lines with 256 `write`s: about 3 %
//! of the server's CPU in a run of small pipelined uploads (issue 11). Held lines are the same
//! lines in the same order; they are held only until the end of the step that logged them
//! (which has no `await`), so the log never lags behind what the server did, and at most
//! [`HELD_MAX`] bytes of them at once.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Held lines are written out once they reach this many bytes (an audit line is a few hundred
/// bytes; a long name, escaped, makes it a few KiB).
pub const HELD_MAX: usize = 64 * 1024;

/// The lines being held on this thread, and where they go.
struct Held {
    lines: Vec<u8>,
    /// The destination of the first held line (all of one subscriber's lines go to the same).
    out: Option<Box<dyn Write>>,
}

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Runs `f`, holding the lines this thread logs meanwhile and writing them at the end with one
/// `write` (or one per [`HELD_MAX`] bytes). Nested calls hold for the outermost; a panic in `f`
/// still writes what was held.
pub fn together<T>(f: impl FnOnce() -> T) -> T {
    let outermost = HELD.with(|h| {
        let mut h = h.borrow_mut();
        if h.is_some() {
            return false;
        }
        *h = Some(Held {
            lines: Vec::new(),
            out: None,
        });
        true
    });
    if !outermost {
        return f();
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            if let Some(Held {
                lines,
                out: Some(mut out),
            }) = HELD.with(|h| h.borrow_mut().take())
            {
                let _ = out.write_all(&lines).and_then(|()| out.flush());
            }
        }
    }
    let _release = Release;
    f()
}

/// Standard error, holding lines inside [`together`]: `barge serve`'s log writer.
pub type Stderr = Holding<fn() -> io::Stderr>;

/// The log writer of [`Stderr`].
#[must_use]
pub fn stderr() -> Stderr {
    Holding(io::stderr)
}

/// A [`MakeWriter`] that writes each line through the writer `make` gives, or holds it inside
/// [`together`].
#[derive(Clone, Copy, Debug)]
pub struct Holding<F>(pub F);

impl<'a, F, W> MakeWriter<'a> for Holding<F>
where
    F: Fn() -> W + Copy + 'static,
    W: Write + 'static,
{
    type Writer = Line<F>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(self.0)
    }
}

/// One log line's writer (`tracing_subscriber` writes each line with one `write_all`).
pub struct Line<F>(F);

impl<F, W> Write for Line<F>
where
    F: Fn() -> W,
    W: Write + 'static,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Taken out while held lines are written, so that no borrow spans the `write`.
        let full = HELD.with(|h| {
            let mut h = h.borrow_mut();
            let held = h.as_mut()?;
            let out = held.out.get_or_insert_with(|| Box::new((self.0)()));
            held.lines.extend_from_slice(buf);
            if held.lines.len() < HELD_MAX {
                return Some(None);
            }
            let lines = std::mem::take(&mut held.lines);
            Some(Some((lines, std::mem::replace(out, Box::new(io::sink())))))
        });
        match full {
            None => (self.0)().write(buf),
            Some(None) => Ok(buf.len()),
            Some(Some((lines, mut out))) => {
                let written = out.write_all(&lines);
                HELD.with(|h| {
                    if let Some(held) = h.borrow_mut().as_mut() {
                        held.out = Some(out);
                    }
                });
                written.map(|()| buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// Each `write` that reached the destination, as it was written.
        static WRITES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    struct Recorder;

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            WRITES.with(|w| w.borrow_mut().push(buf.to_vec()));
            CALLS.with(|c| c.set(c.get() + 1));
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log(line: &str) {
        let make = Holding(|| Recorder);
        make.make_writer().write_all(line.as_bytes()).unwrap();
    }

    fn writes() -> Vec<String> {
        WRITES.with(|w| {
            w.borrow_mut()
                .drain(..)
                .map(|b| String::from_utf8(b).unwrap())
                .collect()
        })
    }

    #[test]
    fn lines_outside_together_are_written_one_by_one() {
        log("a\n");
        log("b\n");
        assert_eq!(writes(), ["a\n", "b\n"]);
    }

    #[test]
    fn lines_logged_together_are_written_with_one_write_in_order_at_the_end() {
        let n = together(|| {
            log("one\n");
            together(|| log("two\n"));
            log("three\n");
            assert!(
                writes().is_empty(),
                "nothing is written before the step ends"
            );
            3
        });
        assert_eq!(n, 3);
        assert_eq!(writes(), ["one\ntwo\nthree\n"]);
        log("after\n");
        assert_eq!(writes(), ["after\n"], "the hold ends with its step");
    }

    #[test]
    fn held_lines_are_written_out_at_the_bound() {
        let line = "x".repeat(1000) + "\n";
        together(|| {
            for _ in 0..100 {
                log(&line);
            }
            let written = writes();
            assert_eq!(written.len(), 1, "one write when the bound was reached");
            assert!(written[0].len() >= HELD_MAX && written[0].len() < HELD_MAX + line.len());
        });
        let rest = writes();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            rest[0].len(),
            100 * line.len() - (HELD_MAX / line.len() + 1) * line.len()
        );
    }

    #[test]
    fn a_panic_inside_still_writes_what_was_held() {
        let caught = std::panic::catch_unwind(|| {
            together(|| {
                log("before the panic\n");
                panic!("boom");
            })
        });
        assert!(caught.is_err());
        assert_eq!(writes(), ["before the panic\n"]);
        log("next\n");
        assert_eq!(writes(), ["next\n"], "no hold is left behind");
    }

    #[test]
    fn a_step_that_logs_nothing_writes_nothing() {
        CALLS.with(|c| c.set(0));
        together(|| {});
        assert_eq!(CALLS.with(Cell::get), 0);
    }
}
