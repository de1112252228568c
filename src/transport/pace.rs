//! The minimum body rate: one web-server-style rule that a body must keep moving, on top of
//! the per-operation stall timeout of [`super::Connection`].

use std::future::Future;
use std::io;
use std::time::Duration;

use super::{TransportError, with_timeout};

/// A minimum transfer rate over fixed windows, like a web server's minimum-rate timeout: a body
/// must move at least `need` bytes in each `window`, so a peer that sends or reads a byte just
/// often enough to dodge the per-operation stall timeout still cannot hold a transfer (and the
/// disk space reserved for it) open.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pace {
    pub(super) need: u64,
    pub(super) window: Duration,
    pub(super) window_end: tokio::time::Instant,
    pub(super) moved: u64,
}

/// How long one body operation may wait.
pub(super) struct Wait {
    /// The stall timeout, if any.
    stall: Option<Duration>,
    /// When the rate window ends, if that comes before the stall timeout.
    window_end: Option<tokio::time::Instant>,
}

impl Wait {
    /// Runs `fut` within the wait: `None` when the rate window ended first (the caller checks
    /// the rate and tries again), a timeout error when the stall timeout did.
    pub(super) async fn run<T>(
        &self,
        fut: impl Future<Output = io::Result<T>>,
    ) -> Option<Result<T, TransportError>> {
        match (self.window_end, self.stall) {
            (Some(end), _) => tokio::time::timeout_at(end, fut)
                .await
                .ok()
                .map(|r| r.map_err(TransportError::from)),
            (None, stall) => Some(with_timeout(stall, fut).await),
        }
    }
}

/// The wait for the next body operation; an error when the window just ended below the rate.
pub(super) fn next_wait(
    pace: &mut Option<Pace>,
    stall: Option<Duration>,
) -> Result<Wait, TransportError> {
    let Some(p) = pace else {
        return Ok(Wait {
            stall,
            window_end: None,
        });
    };
    let now = tokio::time::Instant::now();
    if now >= p.window_end {
        if p.moved < p.need {
            return Err(TransportError::TimedOut(p.window));
        }
        p.window_end = now + p.window;
        p.moved = 0;
    }
    let stall_end = stall.map(|t| now + t);
    Ok(match stall_end {
        Some(s) if s <= p.window_end => Wait {
            stall,
            window_end: None,
        },
        _ => Wait {
            stall,
            window_end: Some(p.window_end),
        },
    })
}

pub(super) fn record(pace: &mut Option<Pace>, n: usize) {
    if let Some(p) = pace {
        p.moved = p.moved.saturating_add(n as u64);
    }
}
