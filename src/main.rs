//! The `barge` command: `barge serve` shares a folder; the other commands talk to a server.
//! Everything is in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
