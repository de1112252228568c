//! Fuzz target: one command line from a client, as the server decodes it.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(req) = barge::protocol::Request::decode(data) {
            // Whatever decodes must survive its own round trip.
            let line = req.encode();
            let again = barge::protocol::Request::decode(line.trim_end_matches('\n').as_bytes());
            assert_eq!(again.as_ref(), Ok(&req), "{line:?}");
        }
    });
}
