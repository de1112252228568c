//! The one list of command words: each command's name, the words it also answers to, and its
//! help text. The one-shot commands (clap), the shell's parser, its `HELP` and its completion all
//! read this list, so a word added here is known everywhere at once.
//!
//! It holds no behaviour: what a command does is in [`commands`](super::commands).

/// One command and its words.
#[derive(Debug)]
pub(crate) struct Word {
    /// The word of the original clients (`LIST_FILES`, `UPLOAD`...), shown in capitals.
    pub(crate) classic: &'static str,
    /// The short form, which is also the one-shot subcommand's name.
    pub(crate) name: &'static str,
    /// Other words it answers to, shown in `--help`.
    pub(crate) aliases: &'static [&'static str],
    /// Words it answers to without showing them.
    pub(crate) hidden: &'static [&'static str],
    /// The line in the shell's `HELP`, in the original clients' words.
    pub(crate) summary: &'static str,
    /// How it is used, shown after the summary.
    pub(crate) usage: &'static str,
    /// The one-shot command's description in `barge --help`.
    pub(crate) about: &'static str,
    /// Alone on a shell line, it asks for its argument (`UPLOAD`, `DOWNLOAD`).
    pub(crate) prompts: bool,
}

/// `ls`: the server's listing.
pub(crate) const LS: Word = Word {
    classic: "LIST_FILES",
    name: "ls",
    aliases: &["list"],
    hidden: &["list_files"],
    summary: "List files on server.",
    usage: "ls [-l] [--json] [PATTERN]",
    about: "List the files on the server: id, size, name",
    prompts: false,
};

/// `put`: uploads.
pub(crate) const PUT: Word = Word {
    classic: "UPLOAD",
    name: "put",
    aliases: &["upload"],
    hidden: &[],
    summary: "Upload files with given format.",
    usage: "put FILE... [--as NAME] [-r [-L]], put - --as NAME",
    about: "Upload files or folders (-r), or standard input (-); each is verified by MD5",
    prompts: true,
};

/// `get`: downloads.
pub(crate) const GET: Word = Word {
    classic: "DOWNLOAD",
    name: "get",
    aliases: &["download"],
    hidden: &[],
    summary: "Download files from server by providing FILE ID",
    usage: "get ID-OR-NAME... [-o PATH|-] [-r] [--force]",
    about: "Download files by id, name or wildcard, or folders (-r); each is verified by MD5 before it is kept",
    prompts: true,
};

/// `bye`: the end of a shell session (the shell only).
pub(crate) const BYE: Word = Word {
    classic: "DISCONNECT",
    name: "bye",
    aliases: &["exit", "quit"],
    hidden: &["disconnect"],
    summary: "Disconnect from server",
    usage: "bye, exit, quit",
    about: "End the session",
    prompts: false,
};

/// `mv`: renames.
pub(crate) const MV: Word = Word {
    classic: "RENAME",
    name: "mv",
    aliases: &["rename", "change"],
    hidden: &[],
    summary: "Rename a file on server.",
    usage: "mv OLD NEW, mv OLD... FOLDER/",
    about: "Rename a file on the server, or move files into a folder",
    prompts: false,
};

/// `rm`: deletes.
pub(crate) const RM: Word = Word {
    classic: "DELETE",
    name: "rm",
    aliases: &["delete"],
    hidden: &[],
    summary: "Delete a file on server.",
    usage: "rm ID-OR-NAME...",
    about: "Delete files on the server (wildcards match their names)",
    prompts: false,
};

/// `help`: the shell's list of commands (the shell only).
pub(crate) const HELP: Word = Word {
    classic: "HELP",
    name: "help",
    aliases: &["?"],
    hidden: &[],
    summary: "Show this list.",
    usage: "",
    about: "Show the list of commands",
    prompts: false,
};

/// `cd`: the shell's working folder on the server (the shell only).
pub(crate) const CD: Word = Word {
    classic: "CD",
    name: "cd",
    aliases: &[],
    hidden: &[],
    summary: "Change the folder on server.",
    usage: "cd [FOLDER|..|/]",
    about: "Change the working folder on the server",
    prompts: false,
};

/// `pwd`: shows the working folder on the server (the shell only).
pub(crate) const PWD: Word = Word {
    classic: "PWD",
    name: "pwd",
    aliases: &[],
    hidden: &[],
    summary: "Show the folder on server.",
    usage: "pwd",
    about: "Show the working folder on the server",
    prompts: false,
};

/// `mkdir`: explains how folders come to be on the server (the shell only).
pub(crate) const MKDIR: Word = Word {
    classic: "MKDIR",
    name: "mkdir",
    aliases: &[],
    hidden: &[],
    summary: "Folders appear with their first file.",
    usage: "mkdir FOLDER",
    about: "Say how to make a folder on the server",
    prompts: false,
};

/// `lcd`: the local working folder (the shell only).
pub(crate) const LCD: Word = Word {
    classic: "LCD",
    name: "lcd",
    aliases: &[],
    hidden: &[],
    summary: "Change the local folder.",
    usage: "lcd [FOLDER]",
    about: "Change the local working folder",
    prompts: false,
};

/// `lls`: lists a local folder (the shell only).
pub(crate) const LLS: Word = Word {
    classic: "LLS",
    name: "lls",
    aliases: &[],
    hidden: &[],
    summary: "List local files.",
    usage: "lls [FOLDER]",
    about: "List a local folder",
    prompts: false,
};

/// `lpwd`: shows the local working folder (the shell only).
pub(crate) const LPWD: Word = Word {
    classic: "LPWD",
    name: "lpwd",
    aliases: &[],
    hidden: &[],
    summary: "Show the local folder.",
    usage: "lpwd",
    about: "Show the local working folder",
    prompts: false,
};

/// `clear`: clears the terminal (the shell only).
pub(crate) const CLEAR: Word = Word {
    classic: "CLEAR",
    name: "clear",
    aliases: &[],
    hidden: &[],
    summary: "Clear the screen.",
    usage: "",
    about: "Clear the screen",
    prompts: false,
};

/// Every command, in the order of the shell's `HELP`: the original clients' first.
pub(crate) const ALL: [&Word; 14] = [
    &LS, &PUT, &GET, &BYE, &MV, &RM, &HELP, &CD, &PWD, &MKDIR, &LCD, &LLS, &LPWD, &CLEAR,
];

impl Word {
    /// Whether this is `other` (names are unique, see the tests).
    pub(crate) fn is(&self, other: &Word) -> bool {
        self.name == other.name
    }

    /// Whether `word` (in any case) names this command.
    pub(crate) fn matches(&self, word: &str) -> bool {
        let word = word.to_lowercase();
        word == self.name
            || word == self.classic.to_lowercase()
            || self.aliases.contains(&word.as_str())
            || self.hidden.contains(&word.as_str())
    }
}

/// Gives the subcommands of `command` that are in the list their other words and their help.
pub(crate) fn apply(mut command: clap::Command) -> clap::Command {
    for w in ALL {
        if command.find_subcommand(w.name).is_some() {
            command = command.mut_subcommand(w.name, |c| {
                c.visible_aliases(w.aliases)
                    .aliases(w.hidden)
                    .about(w.about)
            });
        }
    }
    server_meanings(command)
}

/// The global options are worded for the client; `serve` reads some of them as the server's
/// and ignores the others, so its `--help` says what they mean there. The server's versions are
/// copies of the global options given to `serve` itself (clap then does not propagate the
/// global ones there, and the values still reach the global options).
fn server_meanings(command: clap::Command) -> clap::Command {
    if command.find_subcommand("serve").is_none() {
        return command;
    }
    let globals: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    command.mut_subcommand("serve", |mut serve| {
        for arg in globals {
            let arg = match arg.get_id().as_str() {
                "host" => arg.help("Address to listen on (0.0.0.0 or :: for every interface)"),
                "port" => arg.help("Port to listen on (0 picks a free one)"),
                "debug" => {
                    arg.help("Log every protocol line on stderr (secrets masked, names escaped)")
                }
                "quiet" => {
                    arg.help("Has no effect on serve (set the log level with BARGE_LOG=warn)")
                }
                "plain" => arg
                    .help("Serve clear text instead of TLS (for nc; logins then only on loopback)"),
                // Client-only options: accepted (they are global) but meaningless here.
                "fingerprint" | "trust_new" | "user" | "password_file" | "token_file" => {
                    arg.hide(true)
                }
                _ => continue,
            };
            serve = serve.arg(arg);
        }
        serve
    })
}

/// Parses `args` into `T`, a clap parser whose subcommands take their words from the list.
pub(crate) fn parse<T, I, A>(args: I) -> Result<T, clap::Error>
where
    T: clap::Parser,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    let mut command = apply(T::command());
    let mut matches = command.try_get_matches_from_mut(args)?;
    T::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// The command `word` (in any case) names.
pub(crate) fn find(word: &str) -> Option<&'static Word> {
    ALL.into_iter().find(|w| w.matches(word))
}

/// The words worth completing: the classic ones in capitals, the short forms and the shown
/// aliases in lower case.
pub(crate) fn completions() -> impl Iterator<Item = &'static str> {
    let classic = ALL.into_iter().map(|w| w.classic);
    let short = ALL
        .into_iter()
        .flat_map(|w| std::iter::once(w.name).chain(w.aliases.iter().copied()))
        .filter(|w| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    classic.chain(short)
}

/// Each command that takes a server's files, with arguments that make a valid line: for tests
/// that every word of the list parses, in the shell and on the command line.
#[cfg(test)]
pub(crate) const SAMPLES: [(&Word, &[&str]); 5] = [
    (&LS, &[]),
    (&PUT, &["a"]),
    (&GET, &["a"]),
    (&MV, &["a", "b"]),
    (&RM, &["a"]),
];

#[cfg(test)]
impl Word {
    /// Every word it answers to.
    pub(crate) fn all_words(&self) -> Vec<String> {
        let mut out = vec![self.name.to_owned(), self.classic.to_lowercase()];
        out.extend(
            self.aliases
                .iter()
                .chain(self.hidden)
                .map(|w| (*w).to_owned()),
        );
        out
    }
}

/// The shell's `HELP` text.
pub(crate) fn help() -> String {
    use std::fmt::Write as _;
    const COLUMN: usize = 63;
    let mut out =
        String::from("This is an interactive client, the following commands are available:\n\n");
    for (i, w) in ALL.iter().enumerate() {
        let head = format!("    {}. {} - {}", i + 1, w.classic, w.summary);
        let _ = match (w.usage.is_empty(), head.len() < COLUMN) {
            (true, _) => writeln!(out, "{head}"),
            (false, true) => writeln!(out, "{head:<COLUMN$}{}", w.usage),
            (false, false) => writeln!(out, "{head}\n{:COLUMN$}{}", "", w.usage),
        };
    }
    out.push_str(
        "\n!COMMAND runs COMMAND on this machine (! alone: a shell).\n\
         Commands work in any case. UPLOAD and DOWNLOAD alone ask for the file (and, for\n\
         UPLOAD, for approval, read from the next line when commands come from a pipe).\n\
         Names are relative to the folder on server (cd); /NAME starts from its top.\n\
         Quote names with spaces (\"my file.txt\") or escape them (my\\ file.txt); Tab completes.",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_finds_its_command() {
        for w in ALL {
            let lower = w.classic.to_lowercase();
            let words = [w.classic, w.name, lower.as_str()];
            for word in words.iter().chain(w.aliases).chain(w.hidden) {
                assert_eq!(find(word).map(|f| f.name), Some(w.name), "{word}");
                let upper = word.to_uppercase();
                assert_eq!(find(&upper).map(|f| f.name), Some(w.name), "{upper}");
            }
        }
        assert!(find("nope").is_none());
        assert!(find("").is_none());
    }

    #[test]
    fn no_word_names_two_commands() {
        let mut owner = std::collections::HashMap::new();
        for w in ALL {
            let mut words: std::collections::HashSet<String> = w
                .aliases
                .iter()
                .chain(w.hidden)
                .map(|a| (*a).to_owned())
                .collect();
            words.insert(w.name.to_owned());
            words.insert(w.classic.to_lowercase());
            for word in words {
                let before = owner.insert(word.clone(), w.name);
                assert!(before.is_none(), "{word} names {before:?} and {}", w.name);
            }
        }
    }

    #[test]
    fn help_keeps_its_layout() {
        let want = "\
This is an interactive client, the following commands are available:

    1. LIST_FILES - List files on server.                      ls [-l] [--json] [PATTERN]
    2. UPLOAD - Upload files with given format.                put FILE... [--as NAME] [-r [-L]], put - --as NAME
    3. DOWNLOAD - Download files from server by providing FILE ID
                                                               get ID-OR-NAME... [-o PATH|-] [-r] [--force]
    4. DISCONNECT - Disconnect from server                     bye, exit, quit
    5. RENAME - Rename a file on server.                       mv OLD NEW, mv OLD... FOLDER/
    6. DELETE - Delete a file on server.                       rm ID-OR-NAME...
    7. HELP - Show this list.
    8. CD - Change the folder on server.                       cd [FOLDER|..|/]
    9. PWD - Show the folder on server.                        pwd
    10. MKDIR - Folders appear with their first file.          mkdir FOLDER
    11. LCD - Change the local folder.                         lcd [FOLDER]
    12. LLS - List local files.                                lls [FOLDER]
    13. LPWD - Show the local folder.                          lpwd
    14. CLEAR - Clear the screen.

!COMMAND runs COMMAND on this machine (! alone: a shell).
Commands work in any case. UPLOAD and DOWNLOAD alone ask for the file (and, for
UPLOAD, for approval, read from the next line when commands come from a pipe).
Names are relative to the folder on server (cd); /NAME starts from its top.
Quote names with spaces (\"my file.txt\") or escape them (my\\ file.txt); Tab completes.";
        assert_eq!(help(), want);
    }

    #[test]
    fn help_lists_every_command() {
        let help = help();
        assert!(
            help.contains("    1. LIST_FILES - List files on server."),
            "{help}"
        );
        for w in ALL {
            assert!(help.contains(w.classic), "{}", w.classic);
            assert!(help.contains(w.usage), "{}", w.usage);
        }
    }
}
