//! Fuzz target: what a client decodes from a server (a hostile server included): status lines
//! and the data of `210`/`213` replies and listing lines.
use barge::protocol::{DownloadHeader, ListingEntry, ListingHeader, Reply};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(r) = Reply::decode(s) {
            let mut buf = Vec::new();
            r.encode_into(&mut buf);
            let _ = r.to_string();
            let _ = ListingHeader::decode(&r.text);
            if let Ok(h) = DownloadHeader::decode(&r.text) {
                assert_eq!(DownloadHeader::decode(&h.encode()).as_ref(), Ok(&h));
            }
        }
        if let Ok(e) = ListingEntry::decode(s) {
            let mut out = String::new();
            e.encode_into(&mut out);
            assert_eq!(ListingEntry::decode(&out).as_ref(), Ok(&e));
        }
    });
}
