//! Fuzz target: the client's listing decoder, as a hostile server would feed it: a `210` reply
//! and its lines, within a small limit so that the limit checks are reached too. Whatever the
//! bytes, it returns a listing or an error, never panics, and a listing it returns holds
//! exactly the announced number of valid entries.
use barge::client::{ListingLimit, decode_listing};
use barge::protocol::{ListingEntry, ListingHeader, Reply};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        for limit in [ListingLimit { files: 3 }, ListingLimit::DEFAULT] {
            let Ok(listing) = decode_listing(data, limit) else {
                continue;
            };
            assert!(listing.entries.len() as u64 <= limit.files);
            // It came from a valid header whose count is the number of entries.
            let text = std::str::from_utf8(data).unwrap_or_default();
            let head = text.split('\n').next().unwrap_or_default();
            let head = head.strip_suffix('\r').unwrap_or(head);
            let reply = Reply::decode(head).expect("decoded once already");
            let header = ListingHeader::decode(&reply.text).expect("decoded once already");
            assert_eq!(header.count, listing.entries.len() as u64);
            for e in &listing.entries {
                let mut line = String::new();
                e.encode_into(&mut line);
                assert_eq!(ListingEntry::decode(&line).as_ref(), Ok(e));
            }
        }
    });
}
