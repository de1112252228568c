//! Property tests of the codec and the name check, through the public API only: every value
//! survives an encode/decode round trip, no input makes a decoder panic, and no accepted name
//! can lead out of the folder. Also replays the fuzzers' inputs (`fuzz/seeds`, and any crash
//! kept in `fuzz/regressions`) through every decoder.

use std::path::{Component, Path};

use barge::name::{FileName, MAX_COMPONENT_LEN, MAX_DEPTH, MAX_NAME_LEN, STATE_DIR};
use barge::protocol::{
    Code, DownloadHeader, FileId, FileRef, ListingEntry, ListingHeader, RenameArgs, Reply, Request,
    UploadSpec, parse_size,
};
use proptest::prelude::*;

/// One valid component: printable text that is not `.`/`..`, with the odd `;`, space, dot and
/// non-ASCII letter that make splitting interesting.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_. ;%:-]{1,24}",
        "[a-z]{1,8}[éü日本🚀; ]{1,4}[a-z]{0,8}",
        Just("%2e%2e".to_owned()),
        Just("...".to_owned()),
        Just(".barge-not".to_owned()),
    ]
    .prop_filter("not a dot component", |c| c != "." && c != "..")
}

fn file_name() -> impl Strategy<Value = FileName> {
    prop::collection::vec(component(), 1..5)
        .prop_filter_map("valid name", |parts| FileName::parse(&parts.join("/")).ok())
}

fn file_id() -> impl Strategy<Value = FileId> {
    any::<[u8; 16]>().prop_map(FileId)
}

fn file_ref() -> impl Strategy<Value = FileRef> {
    prop_oneof![
        file_name().prop_map(|n| FileRef::parse(n.as_str()).unwrap()),
        file_id().prop_map(|id| FileRef::parse(&id.to_hex()).unwrap()),
    ]
}

fn upload_spec() -> impl Strategy<Value = UploadSpec> {
    (file_name(), any::<u64>()).prop_map(|(name, size)| UploadSpec { name, size })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::ListFiles),
        Just(Request::Help),
        Just(Request::Disconnect),
        Just(Request::Upload(None)),
        upload_spec().prop_map(|s| Request::Upload(Some(s))),
        upload_spec().prop_map(Request::Put),
        Just(Request::Download(None)),
        file_ref().prop_map(|r| Request::Download(Some(r))),
        Just(Request::Delete(None)),
        file_ref().prop_map(|r| Request::Delete(Some(r))),
        Just(Request::Rename(RenameArgs::Prompt)),
        file_ref().prop_map(|r| Request::Rename(RenameArgs::From(r))),
        (file_ref(), file_name()).prop_map(|(r, n)| Request::Rename(RenameArgs::Both(r, n))),
    ]
}

/// Text biased towards the pieces that break parsers: separators, dots, slashes, digits,
/// signs, control and formatting characters, multi-byte characters at slicing points.
fn nasty_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(".."),
        Just("."),
        Just("/"),
        Just("\\"),
        Just(";"),
        Just(" "),
        Just("\t"),
        Just("\r"),
        Just("\n"),
        Just("\0"),
        Just("\u{1b}"),
        Just("\u{85}"),
        Just("\u{202E}"),
        Just("\u{200B}"),
        Just("\u{FEFF}"),
        Just("C:"),
        Just(STATE_DIR),
        Just("é"),
        Just("e\u{301}"),
        Just("日"),
        Just("🚀"),
        Just("-"),
        Just("+"),
        Just("0"),
        Just("9"),
        Just("18446744073709551616"),
        Just("d41d8cd98f00b204e9800998ecf8427e"),
        Just("PUT"),
        Just("UPLOAD"),
        Just("RENAME"),
        Just("213"),
        Just("a"),
        Just("x"),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// The checks of `PROTOCOL.md` section 4, restated independently of `name.rs`.
fn obeys_the_rules(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && parts.len() <= MAX_DEPTH
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != ".." && p.len() <= MAX_COMPONENT_LEN)
        && !s.contains('\\')
        && !s.chars().any(disguises)
        && !parts[0].eq_ignore_ascii_case(STATE_DIR)
        && !(parts[0].len() >= 2
            && parts[0].as_bytes()[0].is_ascii_alphabetic()
            && parts[0].as_bytes()[1] == b':')
}

/// Characters a name may not hold, from the Unicode Character Database's properties as
/// `PROTOCOL.md` section 4 names them (not from `name.rs`'s code).
fn disguises(c: char) -> bool {
    use icu_properties::props::{BidiControl, DefaultIgnorableCodePoint, GeneralCategory as Gc};
    use icu_properties::{CodePointMapData, CodePointSetData};
    matches!(
        CodePointMapData::<Gc>::new().get(c),
        Gc::Control | Gc::Format | Gc::LineSeparator | Gc::ParagraphSeparator
    ) || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || CodePointSetData::new::<BidiControl>().contains(c)
}

/// Every decoder of the crate, fed `bytes`; none may panic, whatever the input.
fn decode_everything(bytes: &[u8]) {
    let _ = Request::decode(bytes);
    let _ = barge::client::decode_listing(bytes, barge::client::ListingLimit { files: 3 });
    if let Ok(s) = std::str::from_utf8(bytes) {
        let _ = FileName::parse(s);
        let _ = FileRef::parse(s);
        let _ = FileId::parse(s);
        let _ = parse_size(s);
        let _ = UploadSpec::decode(s);
        let _ = ListingEntry::decode(s);
        let _ = ListingHeader::decode(s);
        let _ = DownloadHeader::decode(s);
        if let Ok(r) = Reply::decode(s) {
            let _ = r.first_word();
            let _ = r.to_string();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_round_trip(req in request()) {
        let line = req.encode();
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1);
        prop_assert_eq!(Request::decode(line.trim_end_matches('\n').as_bytes()), Ok(req.clone()));
        // A client may end its lines with CRLF.
        let crlf = format!("{}\r", line.trim_end_matches('\n'));
        prop_assert_eq!(Request::decode(crlf.as_bytes()), Ok(req));
    }

    #[test]
    fn upload_spec_round_trip(spec in upload_spec()) {
        prop_assert_eq!(UploadSpec::decode(&spec.encode()), Ok(spec));
    }

    #[test]
    fn listing_entry_round_trip(id in file_id(), name in file_name(), size in any::<u64>()) {
        let e = ListingEntry { id, name, size };
        let mut s = String::new();
        e.encode_into(&mut s);
        prop_assert_eq!(ListingEntry::decode(&s), Ok(e));
    }

    #[test]
    fn download_header_round_trip(id in file_id(), name in file_name(), size in any::<u64>()) {
        let h = DownloadHeader { size, id, name };
        prop_assert_eq!(DownloadHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn reply_round_trip(code in 200u16..600, text in "[^\r\n]{0,80}") {
        let r = Reply::new(Code::new(code).unwrap(), text);
        let mut buf = Vec::new();
        r.encode_into(&mut buf);
        prop_assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
        let line = std::str::from_utf8(&buf[..buf.len() - 1]).unwrap();
        prop_assert_eq!(Reply::decode(line), Ok(r));
    }

    #[test]
    fn reply_is_always_one_line(code in 200u16..600, text in ".{0,40}[\r\n].{0,40}") {
        let r = Reply::new(Code::new(code).unwrap(), text);
        let mut buf = Vec::new();
        r.encode_into(&mut buf);
        prop_assert_eq!(buf.iter().filter(|&&b| b == b'\n' || b == b'\r').count(), 1);
    }

    #[test]
    fn id_and_size_round_trip(id in file_id(), size in any::<u64>()) {
        prop_assert_eq!(FileId::parse(&id.to_hex()), Ok(id));
        prop_assert_eq!(FileId::parse(&id.to_hex().to_uppercase()), Ok(id));
        prop_assert_eq!(parse_size(&size.to_string()), Ok(size));
    }

    #[test]
    fn no_byte_string_panics_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        decode_everything(&bytes);
    }

    #[test]
    fn no_nasty_text_panics_a_decoder(s in nasty_text(), prefix in prop_oneof![
        Just(""), Just("PUT "), Just("UPLOAD "), Just("RENAME "), Just("DOWNLOAD "),
        Just("213 "), Just("d41d8cd98f00b204e9800998ecf8427e;"), Just("5 d41d8cd98f00b204e9800998ecf8427e "),
    ]) {
        decode_everything(format!("{prefix}{s}").as_bytes());
    }

    #[test]
    fn accepted_names_obey_every_rule(s in nasty_text()) {
        if let Ok(name) = FileName::parse(&s) {
            prop_assert!(obeys_the_rules(&s), "accepted {:?}", s);
            prop_assert_eq!(name.as_str(), s.as_str());
            // Joined to a folder, a name never climbs out, replaces the base, or names the
            // folder itself: every component is a plain one.
            prop_assert!(Path::new(&s).components().all(|c| matches!(c, Component::Normal(_))));
            prop_assert!(!name.to_string().chars().any(char::is_control));
        } else {
            prop_assert!(!obeys_the_rules(&s), "refused {:?}", s);
        }
    }

    #[test]
    fn arbitrary_strings_are_judged_by_the_rules(s in any::<String>()) {
        prop_assert_eq!(FileName::parse(&s).is_ok(), obeys_the_rules(&s), "{:?}", s);
    }

    #[test]
    fn request_names_are_checked_names(s in nasty_text()) {
        // Whatever a line holds, a decoded request only ever carries names that obey the rules.
        for cmd in ["UPLOAD", "PUT", "DOWNLOAD", "DELETE", "RENAME"] {
            let line = format!("{cmd} {s};5");
            if let Ok(req) = Request::decode(line.as_bytes()) {
                let names: Vec<&str> = match &req {
                    Request::Upload(Some(u)) | Request::Put(u) => vec![u.name.as_str()],
                    Request::Download(Some(r)) | Request::Delete(Some(r))
                    | Request::Rename(RenameArgs::From(r)) => r.name.iter().map(FileName::as_str).collect(),
                    Request::Rename(RenameArgs::Both(r, to)) => {
                        let mut v: Vec<&str> = r.name.iter().map(FileName::as_str).collect();
                        v.push(to.as_str());
                        v
                    }
                    _ => vec![],
                };
                for n in names {
                    prop_assert!(obeys_the_rules(n), "{:?} carried {:?}", line, n);
                }
            }
        }
    }
}

/// Inputs the fuzzers start from, and any input that once crashed one (kept as regressions),
/// run through every decoder.
#[test]
fn fuzz_corpus_and_regressions_decode_without_panic() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(targets) = std::fs::read_dir(fuzz.join(dir)) else {
            continue;
        };
        for target in targets.flatten() {
            let Ok(files) = std::fs::read_dir(target.path()) else {
                continue;
            };
            for file in files.flatten() {
                let bytes = std::fs::read(file.path()).unwrap();
                decode_everything(&bytes);
                n += 1;
            }
        }
    }
    assert!(n > 0, "no fuzz inputs found under {}", fuzz.display());
}
