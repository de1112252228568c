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
        }
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

    /// Moves a byte-counting bar; the first call tells its total.
    pub(crate) fn progress(&self, done: u64, total: u64) {
        if let Some(bar) = self.bar.borrow().as_ref() {
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
