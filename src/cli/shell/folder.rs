//! The shell's working folder on the server (`cd`, `pwd`) and how the names typed in the shell
//! are read against it, as sftp does: `a.txt` in `photos` is `photos/a.txt`, `../a.txt` and
//! `/a.txt` are `a.txt`.
//!
//! The protocol has no working folder: the server only ever sees full names, so this is the
//! shell's own state, rebuilt as plain components here and checked by the usual name rules
//! when the command is parsed. It does not know which folders exist (see the shell's `cd`).

/// Options of the server-side commands whose value is a local path, not a server name.
const LOCAL_VALUE_OPTIONS: [&str; 2] = ["-o", "--output"];

/// Reads `word` against the working folder `cwd` (`""` is the top): a leading `/` starts from
/// the top, `.` and empty components are dropped, `..` goes up. A trailing `/` is kept (it
/// means "a folder" to `mv` and `-o`).
///
/// # Errors
/// A `..` above the top of the share.
pub(super) fn resolve(cwd: &str, word: &str) -> Result<String, String> {
    let (mut parts, rest): (Vec<&str>, &str) = match word.strip_prefix('/') {
        Some(rest) => (Vec::new(), rest),
        None => (cwd.split('/').filter(|p| !p.is_empty()).collect(), word),
    };
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("{word}: above the top of the server's folder"));
                }
            }
            part => parts.push(part),
        }
    }
    let mut out = parts.join("/");
    if word.ends_with('/') && !out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Whether `word` reads as a file id (32 hex digits), which no folder changes.
fn is_id(word: &str) -> bool {
    word.len() == 32 && word.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Rewrites the server names among the words of a `get`, `rm`, `mv` or `ls` line (`words[0]`
/// is the command) against `cwd`; option values that are local paths (`-o`) are left alone.
///
/// # Errors
/// A name that climbs above the top of the share.
pub(super) fn rewrite(words: Vec<String>, cwd: &str) -> Result<Vec<String>, String> {
    if cwd.is_empty()
        && !words
            .iter()
            .skip(1)
            .any(|w| w.starts_with('/') || w.contains(".."))
    {
        return Ok(words);
    }
    let mut out = Vec::with_capacity(words.len());
    let mut words = words.into_iter();
    out.extend(words.next());
    let mut local_value = false;
    for word in words {
        if std::mem::take(&mut local_value) {
            out.push(word);
        } else if word.starts_with('-') && word.len() > 1 {
            local_value = LOCAL_VALUE_OPTIONS.contains(&word.as_str());
            out.push(word);
        } else if is_id(&word) {
            out.push(word);
        } else {
            out.push(resolve(cwd, &word)?);
        }
    }
    Ok(out)
}

/// Rewrites the value of `--as` in a `put` line against `cwd`.
///
/// # Errors
/// A name that climbs above the top of the share.
pub(super) fn rewrite_as(words: Vec<String>, cwd: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(words.len());
    let mut is_as = false;
    for word in words {
        if std::mem::take(&mut is_as) {
            out.push(resolve(cwd, &word)?);
        } else if let Some(name) = word.strip_prefix("--as=") {
            out.push(format!("--as={}", resolve(cwd, name)?));
        } else {
            is_as = word == "--as";
            out.push(word);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn names_resolve_against_the_working_folder() {
        let cases = [
            ("", "a.txt", Ok("a.txt")),
            ("photos", "a.txt", Ok("photos/a.txt")),
            ("photos/2024", "../a.txt", Ok("photos/a.txt")),
            ("photos", "/a.txt", Ok("a.txt")),
            ("photos", "./x/./y/", Ok("photos/x/y/")),
            ("photos", "..", Ok("")),
            ("photos", "*.jpg", Ok("photos/*.jpg")),
            ("", "..", Err(())),
            ("a", "../../b", Err(())),
        ];
        for (cwd, word, want) in cases {
            let got = resolve(cwd, word);
            match want {
                Ok(want) => assert_eq!(got.as_deref(), Ok(want), "{cwd} {word}"),
                Err(()) => assert!(got.is_err(), "{cwd} {word}: {got:?}"),
            }
        }
    }

    #[test]
    fn only_server_names_are_rewritten() {
        let id = "9e107d9d372bb6826bd81d3542a419d6";
        let got = rewrite(words(&["get", "a", "-o", "out/", id, "../b"]), "x/y");
        assert_eq!(got, Ok(words(&["get", "x/y/a", "-o", "out/", id, "x/b"])));
        let got = rewrite(words(&["mv", "a", "b/"]), "x");
        assert_eq!(got, Ok(words(&["mv", "x/a", "x/b/"])));
        // At the top nothing changes, `..` is still caught.
        assert_eq!(rewrite(words(&["rm", "a"]), ""), Ok(words(&["rm", "a"])));
        assert!(rewrite(words(&["rm", "../a"]), "").is_err());
        let got = rewrite_as(words(&["put", "f", "--as", "n.txt"]), "x");
        assert_eq!(got, Ok(words(&["put", "f", "--as", "x/n.txt"])));
        let got = rewrite_as(words(&["put", "f", "--as=/n.txt"]), "x");
        assert_eq!(got, Ok(words(&["put", "f", "--as=n.txt"])));
    }
}
