//! The `barge` command: `barge serve` shares a folder; the other commands talk to a server.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Verified file sharing on your own network.
#[derive(Parser, Debug)]
#[command(name = "barge", version, about)]
struct Cli {
    /// Log every command and reply (names escaped)
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Share a folder: wait for clients and serve them
    Serve(cli::serve::ServeArgs),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    init_tracing(args.debug);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("barge: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Command::Serve(a) => cli::serve::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("barge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(debug: bool) {
    let default = if debug { "barge=debug" } else { "barge=info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BARGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
