//! `barge user ...` and `barge token ...`: managing the users and tokens of a server, on the
//! server's machine, in its state folder (found with the same `--root`/`--state-dir` as
//! `barge serve`). A running server picks up every change at its next login, without a restart.
//!
//! Passwords come from `--password-file FILE`, `BARGE_PASSWORD`, or a terminal prompt that does
//! not echo, never from the command line (where `ps` would show them to every local user).
//! Not here: the database itself (`barge::security::users`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use barge::security::users::{Permissions, Scope, Users};

/// Where the server's state is: as `barge serve` finds it.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct StateArgs {
    /// The shared folder of the server (its state is in DIR/.barge unless --state-dir)
    #[arg(
        long,
        value_name = "DIR",
        default_value = "barge-files",
        env = "BARGE_ROOT",
        global = true
    )]
    root: PathBuf,
    /// The server's state folder, if it was started with --state-dir
    #[arg(long, value_name = "DIR", env = "BARGE_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| self.root.join(barge::name::STATE_DIR))
    }

    fn open(&self) -> anyhow::Result<Users> {
        let dir = self.state_dir();
        Users::open(&dir)
            .with_context(|| format!("opening the user database in `{}`", dir.display()))
    }
}

/// What a user or token may do (`--read-only`, `--perm`, `--drop-box`) and where (`--folder`).
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct GrantArgs {
    /// List and download only
    #[arg(long, conflicts_with_all = ["perm", "drop_box"])]
    read_only: bool,
    #[command(flatten)]
    rest: PermArgs,
}

/// `--perm`, `--drop-box` and `--folder`: shared by `user add`, `token create` and
/// `serve --pair` (where `--read-only` already means the whole server).
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct PermArgs {
    /// What it may do: a comma-separated list of get, put, modify (modify = rename and
    /// delete); default all three
    #[arg(long, value_name = "LIST", value_parser = parse_perms, conflicts_with = "drop_box")]
    perm: Option<Permissions>,
    /// Upload only: no listing, no download, no rename or delete, never an overwrite
    #[arg(long)]
    drop_box: bool,
    /// Confine it to this folder of the share, which it then sees as the whole share
    #[arg(long, value_name = "DIR", value_parser = parse_folder)]
    folder: Option<Scope>,
}

impl PermArgs {
    pub(crate) fn perms(&self) -> Permissions {
        if self.drop_box {
            Permissions::DROP_BOX
        } else {
            self.perm.unwrap_or(Permissions::ALL)
        }
    }

    pub(crate) fn folder(&self) -> Scope {
        self.folder.clone().unwrap_or_default()
    }

    /// Whether any of the options was given.
    pub(crate) fn given(&self) -> bool {
        self.perm.is_some() || self.drop_box || self.folder.is_some()
    }

    /// How the grant reads in a listing or a message.
    pub(crate) fn describe(&self) -> String {
        describe(&self.perms(), &self.folder())
    }
}

impl GrantArgs {
    fn perms(&self) -> Permissions {
        if self.read_only {
            Permissions::READ_ONLY
        } else {
            self.rest.perms()
        }
    }

    fn folder(&self) -> Scope {
        self.rest.folder()
    }

    fn describe(&self) -> String {
        describe(&self.perms(), &self.folder())
    }
}

fn parse_perms(s: &str) -> Result<Permissions, String> {
    Permissions::parse_list(s).map_err(|e| e.to_string())
}

fn parse_folder(s: &str) -> Result<Scope, String> {
    Scope::parse(s).map_err(|e| e.to_string())
}

fn describe(perms: &Permissions, folder: &Scope) -> String {
    match folder.folder_name() {
        Some(f) => format!("{} in {}/", perms.describe(), f),
        None => perms.describe(),
    }
}

/// A password from `file`, else `BARGE_PASSWORD`, else the terminal (never echoed).
pub(crate) fn read_password(
    file: Option<&Path>,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the password file `{}`", file.display()))?;
        let line = text.lines().next().unwrap_or("");
        anyhow::ensure!(
            !line.is_empty(),
            "the password file `{}` is empty",
            file.display()
        );
        return Ok(line.to_owned());
    }
    if let Ok(pw) = std::env::var("BARGE_PASSWORD")
        && !pw.is_empty()
    {
        return Ok(pw);
    }
    let pw = rpassword::prompt_password(prompt).context(
        "no terminal to ask for the password on: use --password-file FILE or BARGE_PASSWORD",
    )?;
    if confirm {
        let again = rpassword::prompt_password("Again: ").context("reading the password")?;
        anyhow::ensure!(pw == again, "the passwords differ; nothing was changed");
    }
    Ok(pw)
}

/// `barge user ...`.
#[derive(clap::Args, Debug)]
pub(crate) struct UserArgs {
    #[command(flatten)]
    state: StateArgs,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(clap::Subcommand, Debug)]
enum UserCommand {
    /// Add a user (asks for its password)
    Add {
        /// The user name: letters, digits, '.', '_', '-'
        name: String,
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Remove a user
    Remove {
        /// The user name
        name: String,
    },
    /// List the users and what they may do
    List,
    /// Change a user's password
    Passwd {
        /// The user name
        name: String,
    },
}

/// `barge token ...`.
#[derive(clap::Args, Debug)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    state: StateArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Create a token and print it (shown once: it is stored only as a hash)
    Create {
        /// A label to recognise it by in `barge token list`
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Revoke a token by its id (see `barge token list`)
    Revoke {
        /// The token's id
        id: String,
    },
    /// List the tokens (never their secrets)
    List,
}

/// Runs `barge user ...`; a password comes from `password_file` (the global
/// `--password-file`), `BARGE_PASSWORD` or the terminal.
pub(crate) fn user(args: &UserArgs, password_file: Option<&Path>) -> anyhow::Result<()> {
    let users = args.state.open()?;
    match &args.command {
        UserCommand::Add { name, grant } => {
            let pw = read_password(password_file, &format!("Password for {name}: "), true)?;
            users.add_user(name, &pw, grant.perms(), &grant.folder())?;
            println!("Added user {name} ({}).", grant.describe());
        }
        UserCommand::Remove { name } => {
            anyhow::ensure!(users.remove_user(name)?, "no user {name:?}");
            println!("Removed user {name}.");
        }
        UserCommand::List => {
            for u in users.list_users()? {
                println!("{}\t{}", u.name, describe(&u.perms, &u.folder));
            }
        }
        UserCommand::Passwd { name } => {
            let pw = read_password(password_file, &format!("New password for {name}: "), true)?;
            users.set_password(name, &pw)?;
            println!("Changed the password of {name}.");
        }
    }
    Ok(())
}

/// Runs `barge token ...`.
pub(crate) fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let users = args.state.open()?;
    match &args.command {
        TokenCommand::Create { label, grant } => {
            let token = users.create_token(label, grant.perms(), &grant.folder())?;
            eprintln!(
                "Created token {} ({}). It is shown only now; give it to the client as\n\
                 BARGE_TOKEN or in a file for --token-file:",
                token.id,
                grant.describe()
            );
            println!("{}", token.secret());
        }
        TokenCommand::Revoke { id } => {
            anyhow::ensure!(users.revoke_token(id)?, "no token {id:?}");
            println!("Revoked token {id}.");
        }
        TokenCommand::List => {
            for t in users.list_tokens()? {
                println!(
                    "{}\t{}\t{}",
                    t.id,
                    describe(&t.perms, &t.folder),
                    barge::name::escape(&t.label)
                );
            }
        }
    }
    Ok(())
}
