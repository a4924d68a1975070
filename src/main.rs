//! `unified-presence --config FILE`: parse arguments, read the config, set
//! up tracing, run until SIGINT/SIGTERM.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use unified_presence::config::{Config, RegistrationMode};

/// One virtual XMPP address per person: an external component (XEP-0114).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Path of component.toml.
    #[arg(long, short, default_value = "component.toml")]
    config: PathBuf,
    /// Check the configuration (every problem, each with its fix), that
    /// the store's directory is writable and that the server's component
    /// port accepts connections; then exit (1 if anything is wrong).
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
    if args.check {
        return check(&args.config);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unified-presence: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check`: every problem at once, so that an admin fixes them in one go.
fn check(path: &Path) -> ExitCode {
    let config = match Config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut problems: Vec<String> = config.problems().iter().map(|p| p.to_string()).collect();
    problems.extend(store_problem(&config.store.path));
    let addr = config.server.address;
    if let Err(e) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        problems.push(format!(
            "server.address: nothing accepts connections at {addr} ({e}): is the XMPP server running, \
             and is this its component port (Prosody: component_ports and component_interfaces; \
             ejabberd: the port of its ejabberd_service listener)?"
        ));
    }
    if problems.is_empty() {
        println!(
            "{}: ok: {} as a component of the server at {addr} (port open), {} provisioned owner{}, \
             registration {}, store {}{}",
            path.display(),
            config.server.domain,
            config.owners.len(),
            if config.owners.len() == 1 { "" } else { "s" },
            match config.registration.mode {
                RegistrationMode::Closed => "closed".to_owned(),
                RegistrationMode::Open => "open".to_owned(),
                RegistrationMode::Domains => format!("for {}", config.registration.domains.join(", ")),
            },
            config.store.path.display(),
            config
                .http
                .as_ref()
                .map(|h| format!(", admin http on {}", h.bind))
                .unwrap_or_default(),
        );
        return ExitCode::SUCCESS;
    }
    eprintln!("{}: {} problem(s):", path.display(), problems.len());
    for p in &problems {
        eprintln!("  - {p}");
    }
    ExitCode::FAILURE
}

/// The store's directory must be writable (or creatable) by this user.
fn store_problem(path: &Path) -> Option<String> {
    let mut dir = path;
    while !dir.exists() {
        dir = dir.parent().filter(|p| !p.as_os_str().is_empty())?;
    }
    let probe = dir.join(format!(".unified-presence-check-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!(
            "store.path: {} cannot be written by this user ({e}): create it for the service's user \
             (the systemd unit's StateDirectory does), or pick another path",
            dir.display()
        )),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::from_file(&args.config).with_context(|| {
        format!(
            "configuration {} (run with --check to see every problem)",
            args.config.display()
        )
    })?;
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
