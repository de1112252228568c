//! What the shell does to words before a command sees them, as a login shell would for a local
//! command: `~` becomes the home folder, and for `put` local wildcards (`*.pdf`) become the
//! local files they match. Wildcards for the other commands are left alone: they match the
//! server's names (`get *.pdf`, `rm old/*`), as in sftp.

use std::path::Path;

/// Options whose value is a local path (`~` is expanded in it).
const LOCAL_PATH_OPTIONS: [&str; 2] = ["-o", "--output"];

/// Expands the words of one command line (`words[0]` is the command); `local_args` says the
/// command's arguments are local paths (`put`).
pub(super) fn expand(words: Vec<String>, local_args: bool, home: Option<&Path>) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut words = words.into_iter();
    out.extend(words.next());
    let mut value_of: Option<String> = None;
    for word in words {
        match value_of.take() {
            Some(option) if LOCAL_PATH_OPTIONS.contains(&option.as_str()) => {
                out.push(tilde(&word, home));
                continue;
            }
            Some(_) => {
                out.push(word);
                continue;
            }
            None => {}
        }
        if word.starts_with('-') && word.len() > 1 {
            if !word.contains('=')
                && (LOCAL_PATH_OPTIONS.contains(&word.as_str()) || word == "--as")
            {
                value_of = Some(word.clone());
            }
            out.push(word);
            continue;
        }
        if !local_args {
            out.push(word);
            continue;
        }
        let word = tilde(&word, home);
        let matched = local_matches(&word);
        if matched.is_empty() {
            // As a shell without `nullglob`: no match leaves the word as it is.
            out.push(word);
        } else {
            out.extend(matched);
        }
    }
    out
}

/// `~` or `~/...` with the home folder.
pub(super) fn tilde(word: &str, home: Option<&Path>) -> String {
    let Some(home) = home else {
        return word.to_owned();
    };
    match word.strip_prefix('~') {
        Some("") => home.display().to_string(),
        Some(rest) if rest.starts_with('/') => format!("{}{rest}", home.display()),
        _ => word.to_owned(),
    }
}

/// The local paths a wildcard matches, sorted; none when it holds no wildcard.
fn local_matches(word: &str) -> Vec<String> {
    if !word.contains(['*', '?', '[']) {
        return Vec::new();
    }
    let Ok(paths) = glob::glob(word) else {
        return Vec::new();
    };
    paths
        .filter_map(Result::ok)
        .map(|p| p.display().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn put_expands_local_wildcards_and_tilde() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        for f in ["a.pdf", "b.pdf", "c.txt"] {
            std::fs::write(dir.path().join(f), b"x")?;
        }
        let d = dir.path().display();
        let home = Path::new("/home/me");
        let got = expand(
            words(&["put", &format!("{d}/*.pdf"), "~/x", "--as", "~y"]),
            true,
            Some(home),
        );
        let want = words(&[
            "put",
            &format!("{d}/a.pdf"),
            &format!("{d}/b.pdf"),
            "/home/me/x",
            "--as",
            "~y",
        ]);
        assert_eq!(got, want);
        // No match: the word stays.
        let got = expand(words(&["put", &format!("{d}/*.zip")]), true, Some(home));
        assert_eq!(got, words(&["put", &format!("{d}/*.zip")]));
        Ok(())
    }

    #[test]
    fn get_keeps_wildcards_for_the_server_but_expands_its_output() {
        let home = Path::new("/home/me");
        let got = expand(
            words(&["get", "*.pdf", "-o", "~/Downloads/", "~/x"]),
            false,
            Some(home),
        );
        assert_eq!(
            got,
            words(&["get", "*.pdf", "-o", "/home/me/Downloads/", "~/x"])
        );
    }
}
