//! The server's Prometheus metrics (`barge serve --metrics ADDR`, scraped at `/metrics`).
//!
//! One [`Metrics`] value per server, shared by the TCP sessions and the web gateway through an
//! `Arc`: no global registry, so tests run servers side by side without mixing their numbers.
//! It owns the counters and their text encoding (`prometheus-client`); it does not serve HTTP
//! (the `barge serve` command does, with axum) and does not decide what an outcome is (the
//! audit step in `server::audit` reports each finished action here and in the log alike).
//!
//! The server cannot see an MD5 mismatch itself: the client compares the id it computed with
//! the server's (`PROTOCOL.md` section 5). A client that finds one (it shows `Fail`) reports it
//! with `MISMATCH` (the `barge` client and the web page do), and those reports are counted in
//! `barge_md5_mismatches_total`; a client that does not report is not counted.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which way a file moved.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// A file received (an upload).
    Upload,
    /// A file sent (a download).
    Download,
}

/// How an action ended, as the audit log and the metrics say it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused with an error reply (a name taken, no permission, a bad request...).
    Refused,
    /// Cut short: the connection broke, the server shut down, or the file changed while sent.
    Aborted,
}

impl Direction {
    /// The word used in labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
        }
    }
}

impl Outcome {
    /// The word used in log lines.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Aborted => "aborted",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    direction: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// Seconds, from 1 ms to about 4.5 minutes: a listing takes milliseconds, a large transfer
/// minutes.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Every metric of one server. Cheap to update from any task (atomics only).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_refused: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    transfers: Family<TransferLabels, Counter>,
    md5_mismatches: Counter,
    temp_bytes: Gauge<u64, AtomicU64>,
    index_files: Gauge,
    hashing_backlog: Gauge,
    listings_sending: Gauge,
    listing_buffered: Gauge<u64, AtomicU64>,
    latency: Family<CommandLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all at zero.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("barge");
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections being served now (listener: tcp or web)",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections refused because the server was at its connection limits",
            connections_refused.clone(),
        );
        let bytes_received = Counter::default();
        registry.register(
            "received_bytes",
            "File bytes received in uploads that were stored",
            bytes_received.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "sent_bytes",
            "File bytes sent in downloads that went out whole",
            bytes_sent.clone(),
        );
        let transfers = Family::<TransferLabels, Counter>::default();
        registry.register(
            "transfers",
            "File transfers by direction and outcome (ok, refused, aborted)",
            transfers.clone(),
        );
        let md5_mismatches = Counter::default();
        registry.register(
            "md5_mismatches",
            "Uploads whose client reported that its MD5 differs from the server's (shown as Fail)",
            md5_mismatches.clone(),
        );
        let temp_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "temp_bytes_in_flight",
            "Bytes announced by uploads in progress (being written to temporary files)",
            temp_bytes.clone(),
        );
        let index_files = Gauge::default();
        registry.register(
            "index_files",
            "Files listed with a known id, as of the last listing",
            index_files.clone(),
        );
        let hashing_backlog = Gauge::default();
        registry.register(
            "hashing_backlog",
            "Files waiting to be hashed, as of the last listing",
            hashing_backlog.clone(),
        );
        let listings_sending = Gauge::default();
        registry.register(
            "listings_sending",
            "Listings being sent now (each holds a snapshot, not a copy, of the index)",
            listings_sending.clone(),
        );
        let listing_buffered = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "listing_buffered_bytes",
            "Listing text made for connections (TCP and web) and not yet taken by their sockets",
            listing_buffered.clone(),
        );
        let latency = Family::<CommandLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from a command to its last reply (a transfer's whole body included)",
            latency.clone(),
        );
        Self {
            registry,
            connections_open,
            connections_refused,
            bytes_received,
            bytes_sent,
            transfers,
            md5_mismatches,
            temp_bytes,
            index_files,
            hashing_backlog,
            listings_sending,
            listing_buffered,
            latency,
        }
    }

    /// Counts a connection on `listener` (`"tcp"` or `"web"`) as open until the guard drops.
    #[must_use]
    pub fn connection(&self, listener: &'static str) -> OpenConnection {
        let gauge = self
            .connections_open
            .get_or_create(&ListenerLabels { listener })
            .clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    /// Counts a client's report of an MD5 mismatch (`MISMATCH`, or the web page's report).
    pub fn md5_mismatch(&self) {
        self.md5_mismatches.inc();
    }

    /// Counts a connection refused at the limits.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts a finished transfer of `bytes` (counted only when it went through whole).
    pub fn transfer(&self, direction: Direction, outcome: Outcome, bytes: u64) {
        self.transfers
            .get_or_create(&TransferLabels {
                direction: direction.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
        if outcome == Outcome::Ok {
            match direction {
                Direction::Upload => self.bytes_received.inc_by(bytes),
                Direction::Download => self.bytes_sent.inc_by(bytes),
            };
        }
    }

    /// Counts `bytes` as being written to a temporary file until the guard drops.
    #[must_use]
    pub fn temp(&self, bytes: u64) -> HeldBytes {
        self.temp_bytes.inc_by(bytes);
        HeldBytes {
            gauge: self.temp_bytes.clone(),
            bytes,
        }
    }

    /// Counts `bytes` of listing text made and not yet sent (a page of the web gateway's
    /// `/api/files`, until hyper has written it) until the guard drops; see [`listing`].
    ///
    /// [`listing`]: Self::listing
    #[must_use]
    pub fn listing_page(&self, bytes: usize) -> HeldBytes {
        let bytes = bytes as u64;
        self.listing_buffered.inc_by(bytes);
        HeldBytes {
            gauge: self.listing_buffered.clone(),
            bytes,
        }
    }

    /// Records what the last listing saw: files with an id, and files still to hash.
    pub fn index(&self, files: usize, pending: usize) {
        self.index_files
            .set(i64::try_from(files).unwrap_or(i64::MAX));
        self.hashing_backlog
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Counts a listing as being sent until the guard drops; the guard also counts the listing
    /// text it says is queued.
    #[must_use]
    pub fn listing(&self) -> SendingListing {
        self.listings_sending.inc();
        SendingListing {
            sending: self.listings_sending.clone(),
            buffered: self.listing_buffered.clone(),
            bytes: 0,
        }
    }

    /// Listings being sent now, and the listing bytes they have queued and not yet sent: what
    /// slow readers make the server hold for listings.
    #[must_use]
    pub fn listings_in_flight(&self) -> (u64, u64) {
        (
            u64::try_from(self.listings_sending.get()).unwrap_or(0),
            self.listing_buffered.get(),
        )
    }

    /// Records how long a command took, by command and outcome.
    pub fn observe(&self, command: &'static str, outcome: Outcome, took: Duration) {
        self.latency
            .get_or_create(&CommandLabels {
                command,
                outcome: outcome.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// The metrics in Prometheus' text format (version 0.0.4 / OpenMetrics text).
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// An open connection, counted until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Bytes counted on a gauge until dropped: of an upload in progress, or of a listing page
/// handed to the web server and not yet sent.
#[derive(Debug)]
pub struct HeldBytes {
    gauge: Gauge<u64, AtomicU64>,
    bytes: u64,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

/// A listing being sent, counted until dropped, with the bytes it has queued.
#[derive(Debug)]
pub struct SendingListing {
    sending: Gauge,
    buffered: Gauge<u64, AtomicU64>,
    bytes: u64,
}

impl SendingListing {
    /// Says how many listing bytes are queued now (replacing what was said before).
    pub fn queued(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        if bytes >= self.bytes {
            self.buffered.inc_by(bytes - self.bytes);
        } else {
            self.buffered.dec_by(self.bytes - bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for SendingListing {
    fn drop(&mut self) {
        self.buffered.dec_by(self.bytes);
        self.sending.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counters_move_and_guards_give_back() {
        let m = Metrics::new();
        let conn = m.connection("tcp");
        let temp = m.temp(100);
        m.transfer(Direction::Upload, Outcome::Ok, 100);
        m.transfer(Direction::Download, Outcome::Aborted, 7);
        m.connection_refused();
        m.index(3, 2);
        m.observe("upload", Outcome::Ok, Duration::from_millis(3));
        let text = m.encode();
        assert_eq!(
            value(&text, "barge_connections_open{listener=\"tcp\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "barge_temp_bytes_in_flight"), Some(100.0));
        assert_eq!(value(&text, "barge_received_bytes_total"), Some(100.0));
        // An aborted transfer is counted, its bytes are not.
        assert_eq!(value(&text, "barge_sent_bytes_total"), Some(0.0));
        assert_eq!(
            value(
                &text,
                "barge_transfers_total{direction=\"download\",outcome=\"aborted\"}"
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "barge_connections_refused_total"), Some(1.0));
        assert_eq!(value(&text, "barge_index_files"), Some(3.0));
        assert_eq!(value(&text, "barge_hashing_backlog"), Some(2.0));
        assert!(text.contains("barge_request_duration_seconds_count{command=\"upload\""));
        drop((conn, temp));
        let text = m.encode();
        assert_eq!(
            value(&text, "barge_connections_open{listener=\"tcp\"}"),
            Some(0.0)
        );
        assert_eq!(value(&text, "barge_temp_bytes_in_flight"), Some(0.0));
    }
}
