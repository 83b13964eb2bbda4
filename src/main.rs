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
    /// Development certificates for TLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Write a development CA, a server certificate and a client certificate (PEM).
    ///
    /// Files: ca.pem, server.pem (chain), server-key.pem, client.pem, client-key.pem; keys are
    /// written with mode 0600. Serve with
    /// `torsion serve echo --listen tls:8443:certKey=DIR/server.pem:privateKey=DIR/server-key.pem`.
    Create {
        /// Directory to write into (created if missing; files of these names in it are
        /// overwritten).
        #[arg(long)]
        dir: std::path::PathBuf,
        /// A name, wildcard (*.example.test) or address the server certificate is valid for
        /// (repeatable; default localhost, 127.0.0.1 and ::1).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
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
        Command::Certs {
            command: CertsCommand::Create { dir, hosts },
        } => match torsion::transports::tls::create_dev_certs(&dir, &hosts) {
            Ok(certs) => {
                println!("CA certificate:     {}", certs.ca_cert.display());
                println!("server certificate: {}", certs.server_cert.display());
                println!("server key:         {}", certs.server_key.display());
                println!("client certificate: {}", certs.client_cert.display());
                println!("client key:         {}", certs.client_key.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("torsion: {e}");
                ExitCode::from(1)
            }
        },
    }
}
