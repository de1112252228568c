//! The library client against the fake server of [`crate::fake`] (the happy path, and servers
//! that lie) and against the real server in process (every command, batches, refusals).

use std::path::Path;
use std::time::Duration;

use barge::client::{Client, ClientError, Destination, Downloaded, Progress, PutItem};
use barge::name::FileName;
use barge::protocol::{Code, FileId, FileRef};

use crate::fake::{self, FakeServer, Quirks};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Every test finishes within this, whatever the server does.
const LIMIT: Duration = Duration::from_secs(20);

fn name(s: &str) -> Result<FileName, barge::name::NameError> {
    FileName::parse(s)
}

fn by_name(s: &str) -> Result<FileRef, barge::name::NameError> {
    FileRef::parse(s)
}

async fn connect(server: &FakeServer) -> Result<Client<tokio::net::TcpStream>, ClientError> {
    Client::connect(&server.addr(), Duration::from_secs(5)).await
}

/// Fails unless `r` is a refusal with `code`.
fn refused<T: std::fmt::Debug>(r: &Result<T, ClientError>, code: Code) -> Result<(), String> {
    match r {
        Err(ClientError::Refused { code: c, .. }) if *c == code => Ok(()),
        other => Err(format!("expected a {code} refusal, got {other:?}")),
    }
}

/// Runs a test body with the global limit.
async fn bounded<F: Future<Output = TestResult>>(f: F) -> TestResult {
    tokio::time::timeout(LIMIT, f).await?
}

#[tokio::test]
async fn upload_list_download_round_trip() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks::default()).await?;
        let dir = tempfile::tempdir()?;
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let src = dir.path().join("big.bin");
        std::fs::write(&src, &data)?;

        let mut client = connect(&server).await?;
        assert!(client.same_version());
        let mut events = Vec::new();
        let up = client
            .upload(&src, &name("sub dir/big; one.bin")?, |p| events.push(p))
            .await?;
        assert_eq!(up.size, data.len() as u64);
        assert_eq!(up.id.to_hex(), hex::encode(md5::Md5::digest(&data)));
        assert_eq!(
            events.first(),
            Some(&Progress {
                done: 0,
                total: up.size
            })
        );
        assert_eq!(
            events.last(),
            Some(&Progress {
                done: up.size,
                total: up.size
            })
        );
        assert_eq!(
            server.file("sub dir/big; one.bin").as_deref(),
            Some(&data[..])
        );

        let listing = client.list().await?;
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.entries[0].id, up.id);

        // By id into a folder: saved under the last component of the server's name.
        let out = tempfile::tempdir()?;
        let by_id = FileRef {
            id: Some(up.id),
            name: None,
        };
        let got = client
            .download(&by_id, &Destination::Dir(out.path().into()), false, |_| {})
            .await?;
        assert_eq!(got.path, out.path().join("big; one.bin"));
        assert_eq!(std::fs::read(&got.path)?, data);

        // Again: refused locally, the existing file is untouched, the connection still works.
        let again = client
            .download(&by_id, &Destination::Dir(out.path().into()), false, |_| {})
            .await;
        assert!(
            matches!(again, Err(ClientError::AlreadyExists { .. })),
            "{again:?}"
        );
        let again = client
            .download(&by_id, &Destination::Dir(out.path().into()), true, |_| {})
            .await?;
        assert_eq!(std::fs::read(&again.path)?, data);

        // By name to an exact path.
        let target = out.path().join("copy.bin");
        client
            .download(
                &by_name("sub dir/big; one.bin")?,
                &Destination::File(target.clone()),
                false,
                |_| {},
            )
            .await?;
        assert_eq!(std::fs::read(&target)?, data);
        assert_eq!(leftovers(out.path())?, 0);

        client
            .rename(&by_name("sub dir/big; one.bin")?, &name("renamed.bin")?)
            .await?;
        assert!(server.file("renamed.bin").is_some());
        client.delete(&by_name("renamed.bin")?).await?;
        assert!(client.list().await?.entries.is_empty());
        assert_eq!(client.help().await?.len(), 2);
        client.disconnect().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn refusals_keep_the_connection_usable() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks::default()).await?;
        server.insert("taken.txt", b"abc");
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("a.txt");
        std::fs::write(&src, b"hello")?;
        let mut client = connect(&server).await?;

        let r = client.upload(&src, &name("taken.txt")?, |_| {}).await;
        refused(&r, Code::CONFLICT)?;
        let r = client
            .download(
                &by_name("missing")?,
                &Destination::Dir(dir.path().into()),
                false,
                |_| {},
            )
            .await;
        refused(&r, Code::NOT_FOUND)?;
        let r = client.delete(&by_name("missing")?).await;
        refused(&r, Code::NOT_FOUND)?;
        let r = client
            .upload(&dir.path().join("nope"), &name("x")?, |_| {})
            .await;
        assert!(matches!(r, Err(ClientError::Io { .. })), "{r:?}");
        let r = client.upload(dir.path(), &name("x")?, |_| {}).await;
        assert!(matches!(r, Err(ClientError::IsAFolder { .. })), "{r:?}");
        assert!(client.is_usable());
        assert_eq!(client.list().await?.entries.len(), 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn put_many_pipelines_and_reports_in_order() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks::default()).await?;
        server.insert("f0007", b"already here");
        let dir = tempfile::tempdir()?;
        let mut items = Vec::new();
        for i in 0..3000 {
            let path = dir.path().join(format!("f{i:04}"));
            std::fs::write(&path, format!("content {i}").repeat(i % 50))?;
            items.push(PutItem {
                path,
                name: name(&format!("f{i:04}"))?,
            });
        }
        items.insert(
            5,
            PutItem {
                path: dir.path().join("missing"),
                name: name("missing")?,
            },
        );
        let mut client = connect(&server).await?;
        let mut seen = Vec::new();
        client.put_many(items, |i, r| seen.push((i, r))).await?;
        assert_eq!(seen.len(), 3001);
        assert!(
            seen.iter().enumerate().all(|(n, (i, _))| n == *i),
            "in order"
        );
        assert!(matches!(seen[5].1, Err(ClientError::Io { .. })));
        // f0007 is item 8 after the insertion; PUT onto an existing name is refused.
        assert!(matches!(
            seen[8].1,
            Err(ClientError::Refused {
                code: Code::CONFLICT,
                ..
            })
        ));
        assert_eq!(seen.iter().filter(|(_, r)| r.is_ok()).count(), 2999);
        assert_eq!(
            server.file("f2999"),
            Some("content 2999".repeat(2999 % 50).into_bytes())
        );
        assert_eq!(client.list().await?.entries.len(), 3000);
        Ok(())
    })
    .await
}

/// What `get_many` reported, in call order.
type Outcomes = Vec<(usize, Result<Downloaded, ClientError>)>;

async fn get_many(
    client: &mut Client<tokio::net::TcpStream>,
    files: &[&str],
    dest: &Destination,
    overwrite: bool,
) -> Result<(Outcomes, Result<(), ClientError>), Box<dyn std::error::Error>> {
    let refs = files
        .iter()
        .map(|f| FileRef::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = Vec::new();
    let result = client
        .get_many(refs, dest, overwrite, |i, r| seen.push((i, r)))
        .await;
    Ok((seen, result))
}

#[tokio::test]
async fn get_many_pipelines_and_reports_in_order() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks::default()).await?;
        let mut names = Vec::new();
        for i in 0..400 {
            let name = format!("dir{}/f{i:03}", i % 3);
            server.insert(&name, format!("content {i}").repeat(i % 40).as_bytes());
            names.push(name);
        }
        // Larger than one chunk: streamed rather than saved whole.
        let big: Vec<u8> = (0..700_001u32).map(|i| (i % 253) as u8).collect();
        server.insert("zz/big.bin", &big);
        names.insert(200, "zz/big.bin".to_owned());
        names.insert(100, "missing".to_owned());
        let by_id = hex::encode(md5::Md5::digest(b"content 7".repeat(7)));
        names.push(by_id.clone());

        let out = tempfile::tempdir()?;
        let dest = Destination::Dir(out.path().into());
        let asked: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut client = connect(&server).await?;
        let (seen, result) = get_many(&mut client, &asked, &dest, false).await?;
        result?;
        assert_eq!(seen.len(), asked.len());
        assert!(
            seen.iter().enumerate().all(|(n, (i, _))| n == *i),
            "in order"
        );
        for ((_, outcome), name) in seen.iter().zip(&names) {
            match (name.as_str(), outcome) {
                ("missing", Err(ClientError::Refused { code, .. })) => {
                    assert_eq!(*code, Code::NOT_FOUND);
                }
                // Asked by id, the file is already there (saved under its name, dir1/f007).
                (id, Err(ClientError::AlreadyExists { path })) if id == by_id => {
                    assert_eq!(path, &out.path().join("f007"));
                }
                (name, Ok(got)) => {
                    assert_eq!(got.name.as_str(), name);
                    let leaf = name.rsplit('/').next().ok_or("leaf")?;
                    assert_eq!(got.path, out.path().join(leaf));
                    assert_eq!(Some(std::fs::read(&got.path)?), server.file(name));
                }
                (name, outcome) => return Err(format!("{name}: {outcome:?}").into()),
            }
        }
        assert_eq!(std::fs::read(out.path().join("big.bin"))?, big);
        assert_eq!(leftovers(out.path())?, 0);
        assert!(client.is_usable());
        assert_eq!(client.list().await?.entries.len(), 401);

        // Again, replacing: all but the missing one succeed, the id included.
        let (seen, result) = get_many(&mut client, &asked, &dest, true).await?;
        result?;
        assert_eq!(
            seen.iter().filter(|(_, r)| r.is_ok()).count(),
            asked.len() - 1
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn get_many_keeps_what_a_run_of_downloads_keeps() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks::default()).await?;
        server.insert("a/same.txt", b"first");
        server.insert("b/same.txt", b"second");
        server.insert("new.txt", b"new");
        server.insert("old.txt", b"server's");
        let out = tempfile::tempdir()?;
        std::fs::write(out.path().join("old.txt"), b"mine")?;
        let dest = Destination::Dir(out.path().into());
        let old_id = hex::encode(md5::Md5::digest(b"server's"));
        let asked = ["a/same.txt", "old.txt", &old_id, "b/same.txt", "new.txt"];
        let mut client = connect(&server).await?;

        // Without overwrite: the first of two same-named files wins; existing files stay, asked
        // for by name (refused before asking) or by id (refused once the name is known).
        let (seen, result) = get_many(&mut client, &asked, &dest, false).await?;
        result?;
        let exists: Vec<bool> = seen
            .iter()
            .map(|(_, r)| matches!(r, Err(ClientError::AlreadyExists { .. })))
            .collect();
        assert_eq!(exists, [false, true, true, true, false], "{seen:?}");
        assert_eq!(std::fs::read(out.path().join("same.txt"))?, b"first");
        assert_eq!(std::fs::read(out.path().join("old.txt"))?, b"mine");
        assert_eq!(std::fs::read(out.path().join("new.txt"))?, b"new");

        // With it, the last one wins, as it would one download after another.
        let (seen, result) = get_many(&mut client, &asked, &dest, true).await?;
        result?;
        assert!(seen.iter().all(|(_, r)| r.is_ok()), "{seen:?}");
        assert_eq!(std::fs::read(out.path().join("same.txt"))?, b"second");
        assert_eq!(std::fs::read(out.path().join("old.txt"))?, b"server's");

        // To one exact path: the first file only, unless overwriting.
        let one = out.path().join("one.txt");
        let (seen, result) = get_many(
            &mut client,
            &["new.txt", "old.txt"],
            &Destination::File(one.clone()),
            false,
        )
        .await?;
        result?;
        assert!(matches!(seen[1].1, Err(ClientError::AlreadyExists { .. })));
        assert_eq!(std::fs::read(&one)?, b"new");
        assert_eq!(leftovers(out.path())?, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn get_many_drops_a_corrupt_file_and_goes_on() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks {
            corrupt_only: Some("f050".to_owned()),
            ..Quirks::default()
        })
        .await?;
        let names: Vec<String> = (0..100).map(|i| format!("f{i:03}")).collect();
        for name in &names {
            server.insert(name, name.as_bytes());
        }
        let out = tempfile::tempdir()?;
        let asked: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut client = connect(&server).await?;
        let dest = Destination::Dir(out.path().into());
        let (seen, result) = get_many(&mut client, &asked, &dest, false).await?;
        result?;
        assert_eq!(seen.len(), 100);
        for (i, outcome) in &seen {
            if *i == 50 {
                assert!(
                    matches!(outcome, Err(ClientError::ChecksumMismatch { .. })),
                    "{outcome:?}"
                );
            } else {
                assert!(outcome.is_ok(), "{i}: {outcome:?}");
            }
        }
        assert!(!out.path().join("f050").exists());
        assert_eq!(std::fs::read(out.path().join("f051"))?, b"f051");
        assert_eq!(count_files(out.path())?, 99, "nothing else kept");
        assert!(client.is_usable());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn get_many_stops_at_a_hostile_header() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks {
            download_name: Some("../evil".to_owned()),
            ..Quirks::default()
        })
        .await?;
        server.insert("a", b"a");
        server.insert("b", b"b");
        let root = tempfile::tempdir()?;
        let out = root.path().join("out");
        std::fs::create_dir(&out)?;
        let mut client = connect(&server).await?;
        let (seen, result) =
            get_many(&mut client, &["a", "b"], &Destination::Dir(out), false).await?;
        // The error is the first item's outcome; nothing is reported, nothing written.
        assert!(seen.is_empty(), "{seen:?}");
        assert!(
            matches!(result, Err(ClientError::Protocol(_))),
            "{result:?}"
        );
        assert!(!client.is_usable());
        assert_eq!(count_files(root.path())?, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn wrong_md5_on_upload_is_a_mismatch_and_the_copy_is_deleted() -> TestResult {
    bounded(async {
        let quirks = Quirks {
            upload_md5: Some("0".repeat(32)),
            ..Quirks::default()
        };
        let server = fake::start(quirks).await?;
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("a.txt");
        std::fs::write(&src, b"hello")?;
        let mut client = connect(&server).await?;
        let r = client.upload(&src, &name("a.txt")?, |_| {}).await;
        let Err(ClientError::ChecksumMismatch { expected, actual }) = r else {
            return Err(format!("expected a mismatch, got {r:?}").into());
        };
        assert_eq!(actual, FileId([0; 16]));
        assert_eq!(expected.to_hex(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(server.file("a.txt"), None, "the bad copy was deleted");
        assert!(server.mismatch_reported("a.txt"), "the server was told");

        let mut results = Vec::new();
        let items = vec![PutItem {
            path: src.clone(),
            name: name("b.txt")?,
        }];
        client.put_many(items, |_, r| results.push(r)).await?;
        assert!(matches!(
            results.as_slice(),
            [Err(ClientError::ChecksumMismatch { .. })]
        ));
        assert_eq!(server.file("b.txt"), None, "the bad copy was deleted");
        assert!(server.mismatch_reported("b.txt"), "the server was told");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn corrupt_download_keeps_nothing() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks {
            corrupt_download: true,
            ..Quirks::default()
        })
        .await?;
        server.insert("a.txt", b"hello");
        let dir = tempfile::tempdir()?;
        let mut client = connect(&server).await?;
        let r = client
            .download(
                &by_name("a.txt")?,
                &Destination::Dir(dir.path().into()),
                false,
                |_| {},
            )
            .await;
        assert!(
            matches!(r, Err(ClientError::ChecksumMismatch { .. })),
            "{r:?}"
        );
        assert_eq!(leftovers(dir.path())?, 0, "no file, no temporary file");
        assert!(client.is_usable());
        Ok(())
    })
    .await
}

/// A large download goes through a kept `.part` file (resume on); the MD5 taken as its bytes
/// were written must still catch a corrupt body, and nothing of it is kept.
#[tokio::test]
async fn corrupt_large_download_with_resume_is_a_mismatch_and_nothing_is_kept() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks {
            corrupt_download: true,
            ..Quirks::default()
        })
        .await?;
        let body: Vec<u8> = (0..barge::client::RESUME_MIN * 2)
            .map(|i| (i % 251) as u8)
            .collect();
        server.insert("big.bin", &body);
        let dir = tempfile::tempdir()?;
        let mut client = connect(&server).await?;
        client.set_resume(true);
        let r = client
            .download(
                &by_name("big.bin")?,
                &Destination::Dir(dir.path().into()),
                false,
                |_| {},
            )
            .await;
        assert!(
            matches!(r, Err(ClientError::ChecksumMismatch { .. })),
            "{r:?}"
        );
        assert_eq!(count_files(dir.path())?, 0, "no file, no part kept");
        assert!(client.is_usable());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn hostile_names_are_refused() -> TestResult {
    bounded(async {
        let root = tempfile::tempdir()?;
        let inner = root.path().join("a/b");
        std::fs::create_dir_all(&inner)?;
        for evil in ["../../evil", "/etc/evil", "sub/../../evil", "ok\u{1b}[2J"] {
            let quirks = Quirks {
                download_name: Some(evil.to_owned()),
                ..Quirks::default()
            };
            let server = fake::start(quirks).await?;
            server.insert("good.txt", b"bad");
            let mut client = connect(&server).await?;
            let by_id = FileRef::parse(&hex::encode(md5::Md5::digest(b"bad")))?;
            let r = client
                .download(&by_id, &Destination::Dir(inner.clone()), false, |_| {})
                .await;
            assert!(
                matches!(r, Err(ClientError::Protocol(_))),
                "{evil:?}: {r:?}"
            );
            assert!(!client.is_usable());
        }
        let quirks = Quirks {
            listing_name: Some("../../evil".to_owned()),
            ..Quirks::default()
        };
        let server = fake::start(quirks).await?;
        let mut client = connect(&server).await?;
        assert!(matches!(client.list().await, Err(ClientError::Protocol(_))));
        assert_eq!(count_files(root.path())?, 0, "nothing written anywhere");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_hidden_name_chosen_by_the_server_is_not_created() -> TestResult {
    bounded(async {
        let root = tempfile::tempdir()?;
        let server = fake::start(Quirks {
            download_name: Some(".bashrc".to_owned()),
            ..Quirks::default()
        })
        .await?;
        server.insert("notes.txt", b"echo pwned");
        let mut client = connect(&server).await?;
        let by_id = FileRef::parse(&hex::encode(md5::Md5::digest(b"echo pwned")))?;
        let dest = Destination::Dir(root.path().to_path_buf());
        let r = client.download(&by_id, &dest, false, |_| {}).await;
        assert!(matches!(r, Err(ClientError::HiddenName { .. })), "{r:?}");
        assert_eq!(count_files(root.path())?, 0, "no dot-file created");
        // The body was skipped: the same connection still works, and an explicit path is fine.
        assert!(client.is_usable());
        let target = root.path().join("chosen.sh");
        client
            .download(&by_id, &Destination::File(target.clone()), false, |_| {})
            .await?;
        assert_eq!(std::fs::read(&target)?, b"echo pwned");

        // Pipelined: that item is refused, its body skipped, and the run goes on in step.
        std::fs::remove_file(&target)?;
        let id = by_id.as_str();
        let (seen, result) = get_many(&mut client, &[&id, &id], &dest, false).await?;
        result?;
        assert!(
            seen.iter()
                .all(|(_, r)| matches!(r, Err(ClientError::HiddenName { .. }))),
            "{seen:?}"
        );
        assert_eq!(count_files(root.path())?, 0, "no dot-file created");
        assert!(client.is_usable());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_download_bigger_than_the_free_space_is_not_started() -> TestResult {
    bounded(async {
        let root = tempfile::tempdir()?;
        let server = fake::start(Quirks {
            download_size: Some(u64::MAX / 2),
            ..Quirks::default()
        })
        .await?;
        server.insert("huge.bin", b"not really huge");
        let mut client = connect(&server).await?;
        let by_name = FileRef::parse("huge.bin")?;
        let dest = Destination::Dir(root.path().to_path_buf());
        let r = client.download(&by_name, &dest, false, |_| {}).await;
        assert!(
            matches!(r, Err(ClientError::InsufficientSpace { .. })),
            "{r:?}"
        );
        assert_eq!(count_files(root.path())?, 0, "nothing written");
        // The body cannot be skipped (it may never end): the connection is given up.
        assert!(!client.is_usable());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn greetings_are_checked() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks {
            busy: true,
            ..Quirks::default()
        })
        .await?;
        assert!(matches!(
            connect(&server).await,
            Err(ClientError::Busy { .. })
        ));
        let server = fake::start(Quirks {
            greeting: Some("220 ftp ready".into()),
            ..Quirks::default()
        })
        .await?;
        assert!(matches!(
            connect(&server).await,
            Err(ClientError::Protocol(_))
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        drop(listener);
        let r = Client::connect(&addr, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(ClientError::Connect { .. })), "{r:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_idle_hang_up_is_noticed_before_the_next_request() -> TestResult {
    bounded(async {
        let quirks = Quirks {
            hang_up: Some("408 Idle timeout".into()),
            ..Quirks::default()
        };
        let server = fake::start(quirks).await?;
        let mut client = connect(&server).await?;
        let why = loop {
            match client.check_idle().await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => break e,
            }
        };
        assert!(why.to_string().contains("408 Idle timeout"), "{why}");
        assert!(!client.is_usable());
        assert!(matches!(
            client.list().await,
            Err(ClientError::Disconnected(_))
        ));

        // A live connection passes, and stays usable.
        let server = fake::start(Quirks::default()).await?;
        let mut client = connect(&server).await?;
        client.check_idle().await?;
        client.list().await?;
        client.check_idle().await?;
        Ok(())
    })
    .await
}

/// Files (including temporary ones) directly in `dir`.
fn leftovers(dir: &Path) -> std::io::Result<usize> {
    let names: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    Ok(names
        .iter()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".barge-"))
        .count())
}

/// Files anywhere under `dir`.
fn count_files(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            n += count_files(&entry.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

use md5::Digest as _;

/// PROTOCOL.md section 6: a client reads a code it does not know by its first digit. A `2xx`
/// to an upload means stored, and, as for `226`, its first word is the id, checked as usual.
#[tokio::test]
async fn an_unknown_2xx_to_an_upload_is_read_by_its_first_digit() -> TestResult {
    bounded(async {
        let server = fake::start(Quirks {
            stored_code: Some(227),
            ..Quirks::default()
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.txt");
        std::fs::write(&path, b"hello")?;
        let mut client = connect(&server).await?;
        let v = client.upload(&path, &name("a.txt")?, |_| {}).await?;
        assert_eq!(v.id, FileId(md5::Md5::digest(b"hello").into()));
        assert_eq!(server.file("a.txt").as_deref(), Some(&b"hello"[..]));

        // Pipelined too.
        let items = vec![PutItem {
            path: path.clone(),
            name: name("b.txt")?,
        }];
        let mut seen = Vec::new();
        client.put_many(items, |i, r| seen.push((i, r))).await?;
        assert!(matches!(seen.as_slice(), [(0, Ok(_))]), "{seen:?}");
        assert!(client.is_usable());

        // The id it carries is still checked.
        let server = fake::start(Quirks {
            stored_code: Some(227),
            upload_md5: Some("0".repeat(32)),
            ..Quirks::default()
        })
        .await?;
        let mut client = connect(&server).await?;
        let r = client.upload(&path, &name("a.txt")?, |_| {}).await;
        assert!(
            matches!(r, Err(ClientError::ChecksumMismatch { .. })),
            "{r:?}"
        );
        Ok(())
    })
    .await
}

/// Converts the shared helpers' error type to this file's.
fn boxed(e: Box<dyn std::error::Error + Send + Sync>) -> Box<dyn std::error::Error> {
    e
}

/// A real server with a 4-byte limit: a pipelined `413` closes the connection, and the files
/// after it fail for that reason, without quoting the `413` as if it were theirs.
#[tokio::test]
async fn a_batch_failure_does_not_quote_an_earlier_reply() -> TestResult {
    bounded(async {
        let config = barge::store::StoreConfig {
            max_file_size: 4,
            ..Default::default()
        };
        let server =
            crate::common::TestServer::start_with(tempfile::tempdir()?, config, Default::default())
                .await
                .map_err(boxed)?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("big.txt"), b"too large")?;
        std::fs::write(dir.path().join("ok.txt"), b"ok")?;
        let items = ["big.txt", "ok.txt"]
            .into_iter()
            .map(|n| {
                Ok(PutItem {
                    path: dir.path().join(n),
                    name: name(n)?,
                })
            })
            .collect::<Result<Vec<_>, barge::name::NameError>>()?;
        let mut client = Client::connect(&server.addr.to_string(), Duration::from_secs(5)).await?;
        let mut seen = Vec::new();
        let result = client.put_many(items, |i, r| seen.push((i, r))).await;
        assert!(
            matches!(
                seen.as_slice(),
                [(
                    0,
                    Err(ClientError::Refused {
                        code: Code::TOO_LARGE,
                        ..
                    })
                )]
            ),
            "{seen:?}"
        );
        // The batch error is the outcome of ok.txt: the connection is gone.
        let e = result.err().ok_or("the batch did not fail")?;
        assert!(e.is_connection_lost(), "{e:?}");
        assert!(!e.to_string().contains("413"), "{e}");
        assert!(!client.is_usable());
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The library client against the real server, in process on 127.0.0.1:0.

async fn real() -> Result<crate::common::TestServer, Box<dyn std::error::Error>> {
    crate::common::TestServer::start().await.map_err(boxed)
}

async fn connect_real(
    server: &crate::common::TestServer,
) -> Result<Client<tokio::net::TcpStream>, ClientError> {
    Client::connect(&server.addr.to_string(), Duration::from_secs(5)).await
}

fn md5_of(data: &[u8]) -> FileId {
    FileId(md5::Md5::digest(data).into())
}

/// Bytes that differ from chunk to chunk, so a reordered or repeated chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) % 251) as u8 ^ seed)
        .collect()
}

#[tokio::test]
async fn real_server_round_trip() -> TestResult {
    bounded(async {
        let server = real().await?;
        let mut client = connect_real(&server).await?;
        assert!(client.same_version());
        assert_eq!(client.list().await?.entries, Vec::new());

        // Several chunks and a tail, through upload and download.
        let local = tempfile::tempdir()?;
        let data = pattern(3 * barge::transfer::CHUNK + 17, 1);
        let path = local.path().join("big.bin");
        std::fs::write(&path, &data)?;
        let mut last = None;
        let v = client
            .upload(&path, &name("dir/big.bin")?, |p| last = Some(p))
            .await?;
        assert_eq!(v.id, md5_of(&data));
        assert_eq!(v.size, data.len() as u64);
        assert_eq!(
            last,
            Some(Progress {
                done: data.len() as u64,
                total: data.len() as u64
            })
        );
        assert_eq!(std::fs::read(server.root().join("dir/big.bin"))?, data);

        let listing = client.list().await?;
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.entries[0].name.as_str(), "dir/big.bin");
        assert_eq!(listing.entries[0].id, v.id);
        assert_eq!(listing.entries[0].size, data.len() as u64);

        // By id into a folder (under the leaf of its name), by name to an exact path.
        let out = tempfile::tempdir()?;
        let got = client
            .download(
                &FileRef::parse(&v.id.to_hex())?,
                &Destination::Dir(out.path().into()),
                false,
                |_| {},
            )
            .await?;
        assert_eq!(got.path, out.path().join("big.bin"));
        assert_eq!(got.name.as_str(), "dir/big.bin");
        assert_eq!(std::fs::read(&got.path)?, data);
        let exact = out.path().join("copy.bin");
        let got = client
            .download(
                &by_name("dir/big.bin")?,
                &Destination::File(exact.clone()),
                false,
                |_| {},
            )
            .await?;
        assert_eq!((got.id, got.size), (v.id, data.len() as u64));
        assert_eq!(std::fs::read(&exact)?, data);
        assert_eq!(leftovers(out.path())?, 0);
        assert_eq!(count_files(out.path())?, 2);

        // Rename, then the old name is gone and the new one downloads.
        client
            .rename(&by_name("dir/big.bin")?, &name("moved.bin")?)
            .await?;
        let names: Vec<String> = client
            .list()
            .await?
            .entries
            .iter()
            .map(|e| e.name.as_str().to_owned())
            .collect();
        assert_eq!(names, ["moved.bin"]);
        let r = client
            .download(
                &by_name("dir/big.bin")?,
                &Destination::Dir(out.path().into()),
                true,
                |_| {},
            )
            .await;
        refused(&r, Code::NOT_FOUND)?;

        // Help names every command of the protocol.
        let help = client.help().await?;
        for word in [
            "LIST_FILES",
            "UPLOAD",
            "DOWNLOAD",
            "RENAME",
            "DELETE",
            "DISCONNECT",
        ] {
            assert!(help.iter().any(|l| l.starts_with(word)), "{word}: {help:?}");
        }

        // Delete by id.
        client.delete(&FileRef::parse(&v.id.to_hex())?).await?;
        assert!(client.list().await?.entries.is_empty());
        assert!(!server.root().join("moved.bin").exists());

        assert!(client.is_usable());
        client.disconnect().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn real_server_batches() -> TestResult {
    bounded(async {
        let server = real().await?;
        let local = tempfile::tempdir()?;
        // Small files (one hop each) and one over a chunk (streamed), in one batch.
        let mut items = Vec::new();
        let mut contents = Vec::new();
        for i in 0..30u8 {
            let len = if i == 7 {
                2 * barge::transfer::CHUNK + 3
            } else {
                usize::from(i) * 37
            };
            let data = pattern(len, i);
            let file = format!("f{i:02}.bin");
            std::fs::write(local.path().join(&file), &data)?;
            items.push(PutItem {
                path: local.path().join(&file),
                name: name(&format!("batch/{file}"))?,
            });
            contents.push((format!("batch/{file}"), data));
        }
        let mut client = connect_real(&server).await?;
        let mut seen = Vec::new();
        client.put_many(items, |i, r| seen.push((i, r))).await?;
        assert_eq!(seen.len(), contents.len());
        for ((i, r), (file, data)) in seen.iter().zip(&contents) {
            let v = r.as_ref().map_err(|e| format!("{file}: {e}"))?;
            assert_eq!(v.id, md5_of(data), "{i} {file}");
            assert_eq!(&std::fs::read(server.root().join(file))?, data);
        }
        assert!(client.is_usable());

        // Back again, pipelined, with one missing file in the middle.
        let out = tempfile::tempdir()?;
        let mut asked: Vec<&str> = contents.iter().map(|(f, _)| f.as_str()).collect();
        asked.insert(10, "batch/missing.bin");
        let (got, result) = get_many(
            &mut client,
            &asked,
            &Destination::Dir(out.path().into()),
            false,
        )
        .await?;
        result?;
        assert_eq!(got.len(), asked.len());
        for (i, r) in &got {
            if *i == 10 {
                refused(r, Code::NOT_FOUND)?;
                continue;
            }
            let d = r.as_ref().map_err(|e| format!("{i}: {e}"))?;
            let (_, data) = &contents[if *i > 10 { i - 1 } else { *i }];
            assert_eq!(&std::fs::read(&d.path)?, data);
        }
        assert_eq!(leftovers(out.path())?, 0);
        assert_eq!(count_files(out.path())?, contents.len());
        assert!(client.is_usable());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn real_server_refusals_keep_the_connection() -> TestResult {
    bounded(async {
        let server = real().await?;
        let local = tempfile::tempdir()?;
        let path = local.path().join("a.txt");
        std::fs::write(&path, b"first")?;
        let mut client = connect_real(&server).await?;
        client.upload(&path, &name("a.txt")?, |_| {}).await?;

        // 409: the name is taken, before a byte of the body is sent.
        let r = client.upload(&path, &name("a.txt")?, |_| {}).await;
        refused(&r, Code::CONFLICT)?;
        // 409: a folder in the name is a file.
        let r = client.upload(&path, &name("a.txt/b.txt")?, |_| {}).await;
        refused(&r, Code::CONFLICT)?;
        // 404 for each command that names a file.
        let out = Destination::Dir(local.path().join("out"));
        std::fs::create_dir(local.path().join("out"))?;
        for r in [
            client
                .download(&by_name("nope.txt")?, &out, false, |_| {})
                .await
                .map(drop),
            client.rename(&by_name("nope.txt")?, &name("x")?).await,
            client.delete(&by_name("nope.txt")?).await,
        ] {
            refused(&r, Code::NOT_FOUND)?;
        }
        // 409: renaming onto an existing name.
        std::fs::write(&path, b"second")?;
        client.upload(&path, &name("b.txt")?, |_| {}).await?;
        let r = client.rename(&by_name("a.txt")?, &name("b.txt")?).await;
        refused(&r, Code::CONFLICT)?;
        // 422 never reaches the wire from this client: names are checked before sending.
        assert!(FileName::parse("../escape").is_err());
        assert!(client.is_usable());
        assert_eq!(client.list().await?.entries.len(), 2);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn real_server_refusals_by_configuration() -> TestResult {
    bounded(async {
        let local = tempfile::tempdir()?;
        let path = local.path().join("a.txt");
        std::fs::write(&path, b"too large")?;
        for (config, code) in [
            (
                barge::store::StoreConfig {
                    read_only: true,
                    ..Default::default()
                },
                Code::FORBIDDEN,
            ),
            (
                barge::store::StoreConfig {
                    max_file_size: 4,
                    ..Default::default()
                },
                Code::TOO_LARGE,
            ),
        ] {
            let server = crate::common::TestServer::start_with(
                tempfile::tempdir()?,
                config,
                Default::default(),
            )
            .await
            .map_err(boxed)?;
            let mut client = connect_real(&server).await?;
            let r = client.upload(&path, &name("a.txt")?, |_| {}).await;
            refused(&r, code)?;
            // Refused before the body: the connection goes on.
            assert!(client.is_usable());
            assert!(client.list().await?.entries.is_empty());
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn real_server_disconnect_and_shutdown() -> TestResult {
    bounded(async {
        let server = real().await?;
        let client = connect_real(&server).await?;
        client.disconnect().await?;

        // A server that shuts down is noticed before the next request.
        let mut client = connect_real(&server).await?;
        client.list().await?;
        server.stop().await.map_err(boxed)?;
        let r = client.check_idle().await;
        assert!(matches!(r, Err(ClientError::Disconnected(_))), "{r:?}");
        assert!(!client.is_usable());
        let r = client.list().await;
        assert!(matches!(r, Err(ClientError::Disconnected(_))), "{r:?}");
        Ok(())
    })
    .await
}
