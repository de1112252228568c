//! One test per threat named in the module doc.

use super::*;
use std::os::unix::fs::PermissionsExt as _;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[test]
fn passwords_verify_and_are_never_stored() -> Result {
    let dir = tempfile::tempdir()?;
    let users = Users::open(dir.path())?;
    assert!(users.is_empty()?);
    let docs = Scope::parse("docs")?;
    users.add_user("alice", "correct horse", Permissions::READ_ONLY, &docs)?;
    assert!(!users.is_empty()?);
    let alice = users
        .verify_password("alice", "correct horse")?
        .ok_or("right password refused")?;
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.kind, PrincipalKind::User);
    assert_eq!(alice.perms, Permissions::READ_ONLY);
    assert_eq!(alice.folder, docs);
    assert!(!alice.drop_box());
    assert_eq!(users.verify_password("alice", "wrong horse")?, None);
    assert_eq!(users.verify_password("alice", "")?, None);
    assert_eq!(users.verify_password("mallory", "correct horse")?, None);
    assert_eq!(
        users.verify_password("alice", &"x".repeat(MAX_PASSWORD_LEN + 1))?,
        None
    );
    let text = std::fs::read_to_string(users.path())?;
    assert!(!text.contains("correct horse"));
    assert!(text.contains("$argon2id$"));
    assert_eq!(mode(users.path())?, 0o600);
    Ok(())
}

#[test]
fn password_change_and_removal_take_effect() -> Result {
    let dir = tempfile::tempdir()?;
    let users = Users::open(dir.path())?;
    users.add_user("bob", "first", Permissions::ALL, &Scope::whole_share())?;
    assert!(matches!(
        users.add_user("bob", "again", Permissions::ALL, &Scope::whole_share()),
        Err(UsersError::UserExists(_))
    ));
    users.set_password("bob", "second")?;
    assert_eq!(users.verify_password("bob", "first")?, None);
    assert!(users.verify_password("bob", "second")?.is_some());
    assert!(matches!(
        users.set_password("nobody", "x"),
        Err(UsersError::NoSuchUser(_))
    ));
    assert_eq!(users.list_users()?.len(), 1);
    assert!(users.remove_user("bob")?);
    assert!(!users.remove_user("bob")?);
    assert_eq!(users.verify_password("bob", "second")?, None);
    Ok(())
}

#[test]
fn bad_names_and_passwords_are_refused() -> Result {
    let dir = tempfile::tempdir()?;
    let users = Users::open(dir.path())?;
    let all = Permissions::ALL;
    let whole = Scope::whole_share();
    for name in [
        "",
        "-x",
        "a b",
        "a/b",
        "é",
        "a\n",
        &"a".repeat(MAX_USER_NAME_LEN + 1),
    ] {
        assert!(
            matches!(
                users.add_user(name, "pw", all, &whole),
                Err(UsersError::InvalidUserName(_))
            ),
            "{name:?}"
        );
    }
    assert!(matches!(
        users.add_user("ok", "", all, &whole),
        Err(UsersError::InvalidPassword)
    ));
    assert!(users.add_user("a.b_c-1", "pw", all, &whole).is_ok());
    Ok(())
}

#[test]
fn tokens_are_shown_once_stored_hashed_and_revocable() -> Result {
    let dir = tempfile::tempdir()?;
    let users = Users::open(dir.path())?;
    let new = users.create_token("laptop", Permissions::DROP_BOX, &Scope::parse("inbox")?)?;
    let secret = new.secret().to_owned();
    assert!(secret.starts_with(TOKEN_PREFIX));
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&secret[TOKEN_PREFIX.len()..])?.len(),
        32
    );
    assert!(!format!("{new:?}").contains(&secret));
    let text = std::fs::read_to_string(users.path())?;
    assert!(
        !text.contains(&secret[TOKEN_PREFIX.len()..]),
        "the secret is not stored"
    );
    let who = users.verify_token(&secret)?.ok_or("token refused")?;
    assert_eq!(who.name, format!("token:{}", new.id));
    assert_eq!(who.kind, PrincipalKind::Token);
    assert!(who.drop_box());
    assert_eq!(who.folder, Scope::parse("inbox")?);
    // One changed character, or another token, is refused.
    let mut tampered = secret.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(users.verify_token(std::str::from_utf8(&tampered)?)?, None);
    assert_eq!(users.verify_token("barge_")?, None);
    let other = users.create_token("", Permissions::ALL, &Scope::whole_share())?;
    assert_ne!(other.id, new.id);
    assert_ne!(other.secret(), new.secret());
    assert_eq!(users.list_tokens()?.len(), 2);
    assert_eq!(users.list_tokens()?[0].label, "laptop");
    assert!(users.revoke_token(&new.id)?);
    assert!(!users.revoke_token(&new.id)?);
    assert_eq!(users.verify_token(&secret)?, None);
    assert!(users.verify_token(other.secret())?.is_some());
    Ok(())
}

#[test]
fn a_running_server_sees_changes_without_restart() -> Result {
    let dir = tempfile::tempdir()?;
    let server = Users::open(dir.path())?;
    let admin = Users::open(dir.path())?;
    admin.add_user("carol", "pw1", Permissions::ALL, &Scope::whole_share())?;
    assert!(
        server.verify_password("carol", "pw1")?.is_some(),
        "added user seen"
    );
    let token = admin.create_token("t", Permissions::READ_ONLY, &Scope::whole_share())?;
    assert!(server.verify_token(token.secret())?.is_some());
    admin.revoke_token(&token.id)?;
    assert_eq!(
        server.verify_token(token.secret())?,
        None,
        "revocation seen at once"
    );
    admin.remove_user("carol")?;
    assert_eq!(
        server.verify_password("carol", "pw1")?,
        None,
        "removal seen at once"
    );
    Ok(())
}

#[test]
fn an_open_or_broken_file_is_refused_and_logins_fail_closed() -> Result {
    let dir = tempfile::tempdir()?;
    let users = Users::open(dir.path())?;
    let token = users.create_token("t", Permissions::ALL, &Scope::whole_share())?;
    let path = users.path().to_owned();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    assert!(matches!(
        Users::open(dir.path()),
        Err(UsersError::File(FileError::TooOpen { .. }))
    ));
    assert!(
        users.verify_token(token.secret()).is_err(),
        "a running server refuses too"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    assert!(
        users.verify_token(token.secret())?.is_some(),
        "and recovers when fixed"
    );
    // A folder that escapes, written by hand, is refused: the file is not trusted half-way.
    let text =
        std::fs::read_to_string(&path)?.replace("\"perms\"", "\"folder\": \"../up\", \"perms\"");
    files::write_atomic(&path, text.as_bytes())?;
    assert!(matches!(
        Users::open(dir.path()),
        Err(UsersError::Corrupt { .. })
    ));
    assert!(users.verify_token(token.secret()).is_err());
    files::write_atomic(&path, b"{ not json")?;
    assert!(matches!(
        Users::open(dir.path()),
        Err(UsersError::Corrupt { .. })
    ));
    Ok(())
}

#[test]
fn concurrent_admin_commands_lose_nothing() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_owned();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || -> std::result::Result<(), UsersError> {
                let users = Users::open(&path)?;
                for j in 0..3 {
                    users.create_token(
                        &format!("{i}-{j}"),
                        Permissions::ALL,
                        &Scope::whole_share(),
                    )?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "thread panicked")??;
    }
    assert_eq!(Users::open(&path)?.list_tokens()?.len(), 12);
    Ok(())
}

fn stats(users: &Users) -> u64 {
    users.stats.load(std::sync::atomic::Ordering::Relaxed)
}

/// Issue 11: while nothing changes in the state folder, commands do not `stat` the database
/// (the watch vouches for it, up to a `stat` a second); every change made through the folder
/// is seen by the very next call, and one the watch cannot see (the file written through a
/// hard link elsewhere) within a second.
#[test]
fn generation_sees_every_change_without_a_stat_per_call() -> Result {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let server = Users::open(&state)?;
    let admin = Users::open(&state)?;
    // No state folder yet: a stat per call, and the watch is tried again a second later.
    let g0 = server.generation();
    let before = stats(&server);
    let _ = server.generation();
    assert_eq!(stats(&server), before + 1, "no watch: a stat per call");
    admin.add_user("dave", "pw1", Permissions::ALL, &Scope::whole_share())?;
    let g1 = server.generation();
    assert_ne!(g1, g0, "the first user seen at once");
    std::thread::sleep(watch::RESTAT_EVERY);
    let _ = server.generation(); // sets up the watch, now that the folder exists
    let before = stats(&server);
    for _ in 0..1000 {
        assert_eq!(server.generation(), g1);
    }
    let spent = stats(&server) - before;
    assert!(spent <= 2, "{spent} stats for 1000 quiet calls");
    // The folder's other entries (the index beside the database is written on every upload)
    // wake nothing.
    let before = stats(&server);
    for i in 0..100 {
        std::fs::write(state.join("index.redb"), format!("{i}"))?;
        assert_eq!(server.generation(), g1);
    }
    let spent = stats(&server) - before;
    assert!(spent <= 1, "{spent} stats for 100 writes of another file");
    // Each kind of change through the folder, seen by the next call.
    admin.add_user("erin", "pw2", Permissions::READ_ONLY, &Scope::whole_share())?;
    let g2 = server.generation();
    assert_ne!(g2, g1, "an added user seen at once");
    admin.remove_user("erin")?;
    let g3 = server.generation();
    assert_ne!(g3, g2, "a removal seen at once");
    let path = server.path().to_owned();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let g4 = server.generation();
    assert_ne!(g4, g3, "a chmod seen at once");
    assert!(
        server.is_empty().is_err(),
        "a file open to others is refused"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let g5 = server.generation();
    assert_ne!(g5, g4);
    // Written in place through a hard link in another folder: no event in the state folder.
    let elsewhere = dir.path().join("link.json");
    std::fs::hard_link(&path, &elsewhere)?;
    let g6 = server.generation();
    let text = std::fs::read_to_string(&elsewhere)?.replace("\"dave\"", "\"dan\"");
    std::fs::write(&elsewhere, text)?;
    let deadline = Instant::now() + watch::RESTAT_EVERY * 3;
    while server.generation() == g6 {
        assert!(
            Instant::now() < deadline,
            "a change the watch missed never seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(server.verify_password("dave", "pw1")?.is_none());
    assert!(server.verify_password("dan", "pw1")?.is_some());
    // The state folder replaced: the watch is lost, and every call looks again.
    let g7 = server.generation();
    std::fs::rename(&state, dir.path().join("old"))?;
    std::fs::create_dir(&state)?;
    let g8 = server.generation();
    assert_ne!(g8, g7, "the folder's replacement seen at once");
    let before = stats(&server);
    let _ = server.generation();
    assert_eq!(
        stats(&server),
        before + 1,
        "a lost watch vouches for nothing"
    );
    // A second on, the new folder is watched.
    std::thread::sleep(watch::RESTAT_EVERY);
    let _ = server.generation();
    let before = stats(&server);
    for _ in 0..100 {
        assert_eq!(server.generation(), g8);
    }
    assert!(stats(&server) - before <= 1, "the new folder is watched");
    admin.add_user("fay", "pw3", Permissions::ALL, &Scope::whole_share())?;
    assert_ne!(
        server.generation(),
        g8,
        "a change in the new folder seen at once"
    );
    Ok(())
}

/// A state folder that is a symlink (as dotfile managers make them) is watched too.
#[test]
fn a_symlinked_state_folder_is_watched() -> Result {
    let dir = tempfile::tempdir()?;
    let real = dir.path().join("real");
    std::fs::create_dir(&real)?;
    let state = dir.path().join("state");
    std::os::unix::fs::symlink(&real, &state)?;
    let server = Users::open(&state)?;
    let admin = Users::open(&state)?;
    let g0 = server.generation(); // sets up the watch
    let before = stats(&server);
    for _ in 0..100 {
        assert_eq!(server.generation(), g0);
    }
    assert!(
        stats(&server) - before <= 1,
        "the symlinked folder is watched"
    );
    admin.add_user("gus", "pw", Permissions::ALL, &Scope::whole_share())?;
    assert_ne!(server.generation(), g0, "a change seen at once");
    Ok(())
}
