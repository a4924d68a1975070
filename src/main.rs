//! `unified-presence --config FILE`: parse arguments, read the config, set
//! up tracing, run until SIGINT/SIGTERM.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use unified_presence::config::Config;

/// One virtual XMPP address per person: an external component (XEP-0114).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Path of component.toml.
    #[arg(long, short, default_value = "component.toml")]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unified-presence: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::from_file(&args.config)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    if args.check {
        println!(
            "{}: ok ({} owners, domain {})",
            args.config.display(),
            config.owners.len(),
            config.server.domain
        );
        return Ok(());
    }
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => {
            EnvFilter::try_new(env).context("RUST_LOG is not a valid tracing filter")?
        }
        _ => EnvFilter::try_new(&config.log.level)
            .context("log.level is not a valid tracing filter")?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(unified_presence::runtime::run(config, shutdown_signal()))?;
    Ok(())
}
