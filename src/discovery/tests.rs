//! Unit tests of the parts of discovery that need no network: TXT records, names, addresses.

use std::collections::HashMap;

use super::*;

fn fp() -> Fingerprint {
    Fingerprint::of_spki(b"some key")
}

fn parse(pairs: &[(&str, &str)]) -> Result<Announcement, TxtError> {
    let map: HashMap<&str, &str> = pairs.iter().copied().collect();
    Announcement::from_txt(|k| map.get(k).copied())
}

#[test]
fn txt_records_round_trip() {
    for a in [
        Announcement {
            tls: true,
            fingerprint: Some(fp()),
            web_port: Some(8443),
        },
        Announcement {
            tls: false,
            fingerprint: None,
            web_port: None,
        },
    ] {
        let txt = a.to_txt();
        assert_eq!(txt[0], ("v", "1".to_owned()));
        let pairs: Vec<(&str, &str)> = txt.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(parse(&pairs), Ok(a));
        // Every record fits the 255-byte limit of one TXT string.
        assert!(txt.iter().all(|(k, v)| k.len() + 1 + v.len() <= 255));
    }
}

#[test]
fn bad_txt_records_are_refused() {
    let fp = fp().to_string();
    let good = [("v", "1"), ("tls", "1"), ("fp", fp.as_str()), ("web", "80")];
    assert!(parse(&good).is_ok());
    let cases: &[(&[(&str, &str)], TxtError)] = &[
        (&[("tls", "1")], TxtError::Version(None)),
        (
            &[("v", "2"), ("tls", "1")],
            TxtError::Version(Some("2".into())),
        ),
        (&[("v", "1")], TxtError::Malformed("tls")),
        (&[("v", "1"), ("tls", "yes")], TxtError::Malformed("tls")),
        (
            &[("v", "1"), ("tls", "1"), ("fp", "SHA256:short")],
            TxtError::Malformed("fp"),
        ),
        (
            &[("v", "1"), ("tls", "1"), ("fp", "MD5:x")],
            TxtError::Malformed("fp"),
        ),
        (
            &[("v", "1"), ("tls", "1"), ("web", "0")],
            TxtError::Malformed("web"),
        ),
        (
            &[("v", "1"), ("tls", "1"), ("web", "65536")],
            TxtError::Malformed("web"),
        ),
        (
            &[("v", "1"), ("tls", "1"), ("web", "")],
            TxtError::Malformed("web"),
        ),
    ];
    for (pairs, want) in cases {
        assert_eq!(parse(pairs).as_ref(), Err(want), "{pairs:?}");
    }
    // A version with escape sequences is kept printable.
    assert_eq!(
        parse(&[("v", "\u{1b}[2J")]),
        Err(TxtError::Version(Some("\\u{1b}[2J".into())))
    );
    // Keys a later version adds are ignored.
    assert!(parse(&[("v", "1"), ("tls", "0"), ("new", "x")]).is_ok());
}

#[test]
fn instance_names_are_unescaped() {
    let cases = [
        ("laptop._barge._tcp.local.", Some("laptop")),
        ("Laptop._BARGE._tcp.local.", Some("Laptop")),
        ("anna\\.mac._barge._tcp.local.", Some("anna.mac")),
        ("back\\\\slash._barge._tcp.local.", Some("back\\slash")),
        ("sp\\032ace._barge._tcp.local.", Some("sp ace")),
        ("caf\u{e9}._barge._tcp.local.", Some("caf\u{e9}")),
        ("._barge._tcp.local.", None),
        ("laptop._http._tcp.local.", None),
        ("_barge._tcp.local.", None),
        ("x\\.._barge._tcp.local.", Some("x.")),
        // The separating dot escaped: not a name of this type.
        ("x\\._barge._tcp.local.", None),
        ("x\\", None),
        ("", None),
    ];
    for (full, want) in cases {
        assert_eq!(instance_of(full).as_deref(), want, "{full:?}");
    }
}

#[test]
fn names_are_checked_and_defaulted() {
    assert!(check_name("laptop").is_ok());
    assert!(check_name("Anna's Mac (2)").is_ok());
    assert!(check_name(&"a".repeat(MAX_NAME_LEN)).is_ok());
    for bad in ["", "a\nb", "\u{1b}[31m", &"a".repeat(MAX_NAME_LEN + 1)] {
        assert!(
            matches!(check_name(bad), Err(DiscoveryError::InvalidName(_))),
            "{bad:?}"
        );
    }
    assert_eq!(default_name("vm"), "vm");
    assert_eq!(default_name("laptop.example.org"), "laptop");
    assert_eq!(default_name(""), "barge");
    assert_eq!(default_name(".x"), "barge");
    let long = "\u{e9}".repeat(40); // 80 bytes
    let cut = default_name(&long);
    assert!(
        cut.len() <= MAX_NAME_LEN && check_name(&cut).is_ok(),
        "{cut}"
    );
}

#[test]
fn addresses_are_ranked_and_loopback_dropped() {
    let addrs: Vec<SocketAddr> = [
        "[fe80::1%3]:7",
        "[fe80::2]:7", // link-local without its interface: unusable
        "[2001:db8::1]:7",
        "127.0.0.1:7",
        "[::1]:7",
        "0.0.0.0:7",
        "192.168.1.20:7",
        "169.254.1.1:7",
        "192.168.1.20:7",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let ranked: Vec<String> = rank(addrs).iter().map(show_addr).collect();
    assert_eq!(
        ranked,
        [
            "192.168.1.20:7",
            "169.254.1.1:7",
            "[2001:db8::1]:7",
            "[fe80::1%3]:7"
        ]
    );
    let many = (0..100u16).map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1)));
    assert_eq!(rank(many).len(), MAX_ADDRESSES);
}

#[test]
fn web_urls_follow_the_announcement() {
    let mut found = Found {
        name: "x".into(),
        port: 7070,
        addresses: vec![
            "10.0.0.1:7070".parse().unwrap(),
            "[fe80::1%2]:7070".parse().unwrap(),
        ],
        announcement: Announcement {
            tls: true,
            fingerprint: Some(fp()),
            web_port: Some(8443),
        },
    };
    assert_eq!(
        found.web_urls(),
        ["https://10.0.0.1:8443/", "https://[fe80::1%2]:8443/"]
    );
    found.announcement.tls = false;
    assert_eq!(found.web_urls()[0], "http://10.0.0.1:8443/");
    found.announcement.web_port = None;
    assert!(found.web_urls().is_empty());
}
