//! Sending a listing (`PROTOCOL.md` section 5.1) in bounded pieces.
//!
//! The store hands over a [`Listing`]: a snapshot of its index that shares every chunk with it,
//! so holding one costs what the index changes meanwhile, not the folder's size. The count of
//! the `210` reply comes from that snapshot, and the lines are written from it a page at a time,
//! each page only once the socket has taken the one before. So what a connection holds for a
//! listing is one page of text ([`PAGE_BYTES`]) plus a snapshot, however slowly it reads and
//! however many files there are; one that stops reading meets the stall timeout on a page.
//!
//! Not here: walking the folder (the store), or what a confined user may see (its [`Scope`]).

use std::time::Duration;

use crate::metrics::Metrics;
use crate::protocol::ListingEntry;
use crate::security::users::Scope;
use crate::store::Listing;
use crate::transport::{Connection, Stream, TransportError};

/// Listing text queued before it is written out and the next page is made: large enough that
/// a fast reader gets big writes (a TLS record is 16 KiB), small enough that the text a
/// connection holds stays a rounding error.
pub(super) const PAGE_BYTES: usize = 32 * 1024;

/// How many lines `scope` sees of `listing` (every line, for no scope): the `210` count. For a
/// confined user it is counted on the same snapshot, by the same rule, as [`send`] sends, so
/// the two always agree.
pub(super) fn count(listing: &Listing, scope: Option<&Scope>) -> usize {
    match scope {
        None => listing.len(),
        Some(scope) => listing
            .under(scope.folder_name())
            .filter(|(name, ..)| scope.to_seen(name).is_some())
            .count(),
    }
}

/// Writes the lines of `listing` as `scope` sees them, in name order: a page at a time, each
/// written out (within `stall`) before the next is made. The last page is left queued, like any
/// reply, for the next flush.
///
/// # Errors
/// [`TransportError::TimedOut`] when the peer takes no bytes of a page for `stall`: the page's
/// lines not started may then be dropped ([`Connection::drop_unsent`]) for a last reply. Or an
/// I/O error.
pub(super) async fn send<S: Stream>(
    conn: &mut Connection<S>,
    listing: &Listing,
    scope: Option<&Scope>,
    stall: Option<Duration>,
    metrics: &Metrics,
) -> Result<(), TransportError> {
    let mut held = metrics.listing();
    let mut page = String::with_capacity(PAGE_BYTES + 2 * 1024);
    for (name, id, size) in listing.under(scope.and_then(Scope::folder_name)) {
        match scope {
            None => ListingEntry::encode_parts(&id, name, size, &mut page),
            Some(scope) => match scope.to_seen(name) {
                Some(seen) => ListingEntry::encode_parts(&id, &seen, size, &mut page),
                None => continue,
            },
        }
        page.push('\n');
        if page.len() >= PAGE_BYTES {
            conn.queue_lines(page.as_bytes());
            page.clear();
            held.queued(conn.unsent());
            conn.flush(stall).await?;
            held.queued(0);
        }
    }
    if !page.is_empty() {
        conn.queue_lines(page.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::id::FileId;
    use crate::name::FileName;
    use crate::store::FileEntry;

    fn listing(names: impl IntoIterator<Item = String>) -> Listing {
        Listing::from_entries(
            names.into_iter().map(|n| FileEntry {
                id: FileId([7; 16]),
                name: FileName::parse(&n).unwrap(),
                size: 1,
            }),
            0,
        )
    }

    /// Sends `listing` as `scope` sees it through a pipe read on the other side; the lines.
    async fn sent(listing: &Listing, scope: Option<&Scope>) -> Vec<String> {
        let (ours, mut theirs) = tokio::io::duplex(16 * 1024);
        let reader = tokio::spawn(async move {
            let mut all = String::new();
            theirs.read_to_string(&mut all).await.unwrap();
            all
        });
        let mut conn = Connection::new(ours);
        send(&mut conn, listing, scope, None, &Metrics::new())
            .await
            .unwrap();
        conn.flush(None).await.unwrap();
        drop(conn);
        let all = reader.await.unwrap();
        assert!(all.is_empty() || all.ends_with('\n'));
        all.lines().map(str::to_owned).collect()
    }

    /// The `210` count of a confined user is the number of lines it is sent, across many
    /// pages, though names around and inside its folder are not all names it may see
    /// (`a/.barge/x` would be `.barge/x`, `a/C:/y` a drive, to it).
    #[tokio::test]
    async fn a_confined_count_is_the_lines_sent() {
        let mut names: Vec<String> = ["a-b/x", "a/.barge/x", "a/C:/y", "a0", "b"]
            .map(str::to_owned)
            .to_vec();
        names.extend((0..900).map(|i| format!("a/{}{i:04}", "f".repeat(100))));
        let l = listing(names);
        let scope = Scope::folder(FileName::parse("a").unwrap());
        let lines = sent(&l, Some(&scope)).await;
        assert_eq!(count(&l, Some(&scope)), 900);
        assert_eq!(
            lines.len(),
            900,
            "more than one page: {}",
            lines.len() * 140
        );
        assert!(
            lines
                .iter()
                .all(|l| l.contains(";fff") && !l.contains(";a/"))
        );
        assert!(
            lines.windows(2).all(|w| w[0] < w[1]),
            "out of order or twice"
        );
        // Unconfined: every file, as many lines as the count.
        assert_eq!(sent(&l, None).await.len(), count(&l, None));
        assert_eq!(count(&l, None), 905);
    }

    /// A reader that takes nothing: the sender stops at the first page it cannot write, with
    /// no more than that page queued, and says the stall timed out.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_reader_holds_one_page() {
        let l = listing((0..20_000).map(|i| format!("{}{i:05}", "g".repeat(200))));
        let (ours, _theirs) = tokio::io::duplex(4096);
        let mut conn = Connection::new(ours);
        let metrics = Metrics::new();
        let r = send(&mut conn, &l, None, Some(Duration::from_secs(60)), &metrics).await;
        assert!(matches!(r, Err(TransportError::TimedOut(_))), "{r:?}");
        assert!(
            conn.unsent() <= PAGE_BYTES + 1024,
            "{} bytes queued for a listing of 4.6 MB",
            conn.unsent()
        );
        assert_eq!(metrics.listings_in_flight(), (0, 0));
    }
}
