//! The `torsion` command-line tool.
//!
//! `torsion serve echo --listen tcp:8000` serves a built-in protocol on one or more endpoints
//! until SIGINT/SIGTERM, then stops gracefully.

// A command-line tool talks to its user on stdout/stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// torsion: event-driven networking in the style of Twisted.
#[derive(Parser, Debug)]
#[command(name = "torsion", version, about)]
struct Cli {
    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a built-in protocol on one or more endpoints until Ctrl-C.
    Serve(serve::ServeArgs),
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cli.command {
        Command::Serve(args) => serve::run(args),
    }
}
