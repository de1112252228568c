//! Where output goes: results on stdout, errors and notes on stderr, progress bars on stderr.
//!
//! Progress bars show only when stderr is a terminal and `--quiet` is off; lines printed while a
//! bar is drawn are printed around it, so the two never tangle.

use std::cell::RefCell;
use std::fmt::Display;
use std::io::{self, IsTerminal as _, Write as _};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::StdoutClosed;

/// Transfers smaller than this finish before a bar would tell anything.
const MIN_BAR_BYTES: u64 = 1 << 20;
/// Batches of fewer files than this get no bar either.
const MIN_BAR_FILES: u64 = 50;

/// The terminal side of a command.
#[derive(Debug)]
pub(crate) struct Ui {
    quiet: bool,
    bars: bool,
    /// The bar being drawn, if any.
    bar: RefCell<Option<ProgressBar>>,
    /// What the transfers since [`Ui::start_tally`] achieved, for the summary line.
    tally: RefCell<(Tally, Option<std::time::Instant>)>,
}

/// What a progress bar counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Unit {
    Bytes,
    Files,
}

impl Ui {
    pub(crate) fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bars: !quiet && io::stderr().is_terminal(),
            bar: RefCell::new(None),
            tally: RefCell::default(),
        }
    }

    /// Starts counting the files a command transfers, for [`Ui::end_tally`].
    pub(crate) fn start_tally(&self) {
        *self.tally.borrow_mut() = (Tally::default(), Some(std::time::Instant::now()));
    }

    /// Counts a verified file of `bytes` bytes.
    pub(crate) fn count_done(&self, bytes: u64) {
        let mut tally = self.tally.borrow_mut();
        tally.0.files += 1;
        tally.0.bytes += bytes;
    }

    /// Counts a file that failed, as shown to the user.
    pub(crate) fn count_failed(&self, what: &str) {
        self.tally.borrow_mut().0.failed.push(what.to_owned());
    }

    /// Prints the summary of the transfers since [`Ui::start_tally`] (unless `--quiet`), once
    /// the progress bars are gone: they showed the rate only while it was changing.
    pub(crate) fn end_tally(&self, verb: &str) -> anyhow::Result<()> {
        let (tally, start) = std::mem::take(&mut *self.tally.borrow_mut());
        match start {
            // A single failure has said all there is to say on its own line.
            Some(start) if tally.files > 0 || tally.failed.len() > 1 => {
                self.done(tally.summary(verb, start.elapsed()))
            }
            _ => Ok(()),
        }
    }

    /// Whether standard output is a terminal (a person reads it, not a script).
    pub(crate) fn terminal(&self) -> bool {
        io::stdout().is_terminal()
    }

    /// A line of the result the user asked for (a listing): stdout, even with `--quiet`.
    pub(crate) fn result(&self, line: impl Display) -> anyhow::Result<()> {
        self.around_bar(|| {
            let mut out = io::stdout().lock();
            writeln!(out, "{line}").and_then(|()| out.flush())
        })
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
            _ => anyhow::Error::new(e).context("writing to standard output"),
        })
    }

    /// A report of something done (`Success: ...`): stdout, unless `--quiet`.
    pub(crate) fn done(&self, line: impl Display) -> anyhow::Result<()> {
        if self.quiet {
            Ok(())
        } else {
            self.result(line)
        }
    }

    /// A remark for people (no files, pending files, connected): stderr, unless `--quiet`.
    pub(crate) fn note(&self, line: impl Display) {
        if !self.quiet {
            self.around_bar(|| writeln!(io::stderr(), "{line}"))
                .unwrap_or_default();
        }
    }

    /// A failure (`Fail: ...`, an error): stderr, always.
    pub(crate) fn fail(&self, line: impl Display) {
        self.around_bar(|| writeln!(io::stderr(), "{line}"))
            .unwrap_or_default();
    }

    /// Starts a progress bar (replacing any other). It stays hidden until the first progress
    /// shows the transfer is big enough to be worth a bar, and for good unless bars are on.
    pub(crate) fn start_bar(&self, label: &str, total: u64, unit: Unit) {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        let template = match unit {
            Unit::Bytes => {
                "{msg:.bold} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
            }
            Unit::Files => "{msg:.bold} [{wide_bar}] {pos}/{len} files, ETA {eta}",
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_owned());
        let worth_it = match unit {
            Unit::Bytes => total >= MIN_BAR_BYTES,
            Unit::Files => total >= MIN_BAR_FILES,
        };
        if self.bars && worth_it {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        if let Some(old) = self.bar.replace(Some(bar)) {
            old.finish_and_clear();
        }
    }

    /// Starts the one bar of a folder transfer: bytes, with the files done out of `files` as
    /// its message. Shown when either count is big enough to be worth it.
    pub(crate) fn start_tree_bar(&self, label: &str, files: u64, bytes: u64) {
        let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(
            "{prefix:.bold} {msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        bar.set_message(format!("0/{files} files"));
        if self.bars && (bytes >= MIN_BAR_BYTES || files >= MIN_BAR_FILES) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        if let Some(old) = self.bar.replace(Some(bar)) {
            old.finish_and_clear();
        }
    }

    /// Moves a folder transfer's bar past one more file of `bytes` bytes.
    pub(crate) fn tree_step(&self, done: u64, files: u64, bytes: u64) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.inc(bytes);
            bar.set_message(format!("{done}/{files} files"));
        }
    }

    /// Moves a byte-counting bar; the first call tells its total.
    pub(crate) fn progress(&self, done: u64, total: u64) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            if bar.position() == 0 && bar.length() != Some(total) && done > 0 && done < total {
                // The first event of a resumed transfer starts where the last try stopped.
                self.note(format_args!(
                    "Resuming at byte {done} of {total} ({}%)",
                    done.saturating_mul(100) / total.max(1)
                ));
            }
            if bar.length() != Some(total) {
                bar.set_length(total);
                if self.bars && bar.is_hidden() && total >= MIN_BAR_BYTES {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                }
            }
            bar.set_position(done);
        }
    }

    /// Moves a file-counting bar one step.
    pub(crate) fn step(&self) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.inc(1);
        }
    }

    /// Removes the bar.
    pub(crate) fn end_bar(&self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn around_bar<T>(&self, f: impl FnOnce() -> T) -> T {
        match self.bar.borrow().as_ref() {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

/// What a transfer of many files achieved, for the summary line at its end.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Files transferred and verified.
    pub(crate) files: u64,
    /// Their bytes.
    pub(crate) bytes: u64,
    /// Files left alone because the other side already had them (`--skip-existing`).
    pub(crate) skipped: u64,
    /// What failed, as shown to the user.
    pub(crate) failed: Vec<String>,
}

/// At most this many failures are named again in a summary (each was reported on its own line).
const SUMMARY_FAILURES: usize = 20;

impl Tally {
    /// The summary: files, bytes, time, rate, then what was skipped and what failed.
    pub(crate) fn summary(&self, verb: &str, elapsed: std::time::Duration) -> String {
        use std::fmt::Write as _;
        let secs = elapsed.as_secs_f64().max(0.001);
        let plural = if self.files == 1 { "" } else { "s" };
        let mut out = format!(
            "{verb} {} file{plural}, {} in {secs:.2} s ({}/s)",
            self.files,
            indicatif::BinaryBytes(self.bytes),
            // Whole bytes per second: the display rounds anyway.
            indicatif::BinaryBytes((self.bytes as f64 / secs) as u64),
        );
        if self.skipped > 0 {
            let _ = write!(out, "; {} skipped (already there)", self.skipped);
        }
        if !self.failed.is_empty() {
            let _ = write!(out, "; {} failed: ", self.failed.len());
            let shown: Vec<&str> = self
                .failed
                .iter()
                .take(SUMMARY_FAILURES)
                .map(String::as_str)
                .collect();
            out.push_str(&shown.join(", "));
            if self.failed.len() > SUMMARY_FAILURES {
                let _ = write!(out, " and {} more", self.failed.len() - SUMMARY_FAILURES);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_say_files_bytes_time_rate_and_failures() {
        let mut t = Tally {
            files: 3,
            bytes: 3 << 20,
            skipped: 1,
            failed: vec!["a".into(), "b c".into()],
        };
        let s = t.summary("Uploaded", std::time::Duration::from_secs(2));
        assert_eq!(
            s,
            "Uploaded 3 files, 3.00 MiB in 2.00 s (1.50 MiB/s); 1 skipped (already there); 2 failed: a, b c"
        );
        t.failed = (0..25).map(|i| i.to_string()).collect();
        t.skipped = 0;
        let s = t.summary("Downloaded", std::time::Duration::from_secs(1));
        assert!(s.ends_with(", 19 and 5 more"), "{s}");
    }
}
