//! tally, the command line. Talks to tallyd for everything but `check`, which probes the
//! kernel itself (it runs before tallyd is installed). Exit codes: tally::api::ExitCode
//! (docs/exit-codes.md); `exec` exits with the command's own code.

mod cmd;
mod pty;
mod rows;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tally::api::{Client, ClientError, ExitCode};

#[derive(Parser, Debug)]
#[command(
    name = "tally",
    version,
    about = "OpenVZ-style containers and user beancounters on mainline Linux"
)]
struct Cli {
    /// tallyd's API socket.
    #[arg(long, global = true, env = "TALLY_SOCKET", default_value = tally::api::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// What this kernel offers: the enforcement tier, why, and how each row is kept.
    Check(cmd::check::Args),
    /// Create a (stopped) container from an OS template.
    Create(cmd::create::Args),
    /// Start a container: its root, network and init.
    Start(cmd::start::Args),
    /// Stop a container (its init powers off; --fast kills).
    Stop(cmd::stop::Args),
    /// Stop and start a container.
    Restart(cmd::start::Args),
    /// Mount a container's root on the host (VE_ROOT).
    Mount(cmd::mount::Args),
    /// Unmount a stopped container's root.
    Umount(cmd::mount::Args),
    /// vzctl's status line: CTID 101 exist mounted running.
    Status(cmd::status::Args),
    /// Containers, like vzlist (-a: stopped ones too; -o fields; -s sort; -j JSON).
    List(cmd::list::Args),
    /// Create a container from an OpenVZ CTID.conf, as it is.
    ImportOpenvz(cmd::import_openvz::Args),
    /// OS templates.
    #[command(subcommand)]
    Template(cmd::template::Args),
    /// Set beancounter limits, applied at once; --save also writes them to the config.
    Set(cmd::set::Args),
    /// Run a command inside a running container; exits with the command's exit code.
    Exec(cmd::exec::Args),
    /// An interactive login shell inside a running container, on a pty of its own.
    Enter(cmd::enter::Args),
    /// The beancounters, as /proc/user_beancounters shows them.
    Ubc(cmd::ubc::Args),
    /// Stop everything in a container and remove it.
    Destroy(cmd::destroy::Args),
    /// Limit-hit events ("resource shortage"), newest last.
    Events(cmd::events::Args),
    /// A live view of the containers nearest to their barriers (like top, or vzubc -w).
    Top(cmd::top::Args),
    /// The files a container read most (bytes, calls, last read), from the kernel.
    Reads(cmd::reads::Args),
    /// The dedup file cache (pfcache): status, stats, promote, gc, drop.
    #[command(subcommand)]
    Cache(cmd::cache::Args),
    /// vzcfgvalidate's checks of a container's limits; exit 2 on an error.
    Validate(cmd::validate::Args),
    /// Writes the man pages and shell completions to DIR (for packaging).
    #[command(hide = true)]
    GenerateManual { dir: PathBuf },
}

/// A failure with the exit code the catalogue gives it.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure {
            code: e.exit_code().number(),
            message: e.to_string(),
        }
    }
}

impl Failure {
    pub fn new(code: ExitCode, message: impl ToString) -> Self {
        Failure {
            code: code.number(),
            message: message.to_string(),
        }
    }
}

/// Checks a container id before it goes anywhere near a URL or a path.
pub fn ctid(raw: &str) -> Result<tally::ct::CtId, Failure> {
    tally::ct::CtId::parse(raw).map_err(|e| Failure::new(ExitCode::BadValue, e))
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // Usage errors take the catalogue's number (vzctl: 20, invalid parameter), not clap's 2.
            let _ = e.print();
            std::process::exit(ExitCode::BadArgument.number());
        }
        Err(e) => e.exit(),
    };
    let client = Client::new(&cli.socket);
    let result = match cli.command {
        Command::Check(a) => cmd::check::run(a),
        Command::Create(a) => block_on(cmd::create::run(&client, a)),
        Command::Start(a) => block_on(cmd::start::run(&client, a, false)),
        Command::Stop(a) => block_on(cmd::stop::run(&client, a)),
        Command::Restart(a) => block_on(cmd::start::run(&client, a, true)),
        Command::Mount(a) => block_on(cmd::mount::run(&client, a, true)),
        Command::Umount(a) => block_on(cmd::mount::run(&client, a, false)),
        Command::Status(a) => block_on(cmd::status::run(&client, a)),
        Command::List(a) => block_on(cmd::list::run(&client, a)),
        Command::ImportOpenvz(a) => block_on(cmd::import_openvz::run(&client, a)),
        Command::Template(a) => block_on(cmd::template::run(&client, a)),
        Command::Set(a) => block_on(cmd::set::run(&client, a)),
        Command::Exec(a) => cmd::exec::run(&client, a),
        Command::Enter(a) => cmd::enter::run(&client, a),
        Command::Ubc(a) => block_on(cmd::ubc::run(&client, a)),
        Command::Destroy(a) => block_on(cmd::destroy::run(&client, a)),
        Command::Events(a) => block_on(cmd::events::run(&client, a)),
        Command::Top(a) => block_on(cmd::top::run(&client, a)),
        Command::Reads(a) => block_on(cmd::reads::run(&client, a)),
        Command::Cache(a) => block_on(cmd::cache::run(&client, a)),
        Command::Validate(a) => cmd::validate::run(&client, a),
        Command::GenerateManual { dir } => tally::manual::write(<Cli as clap::CommandFactory>::command(), &dir)
            .map(|()| 0)
            .map_err(|e| Failure::new(ExitCode::SystemError, format!("{}: {e}", dir.display()))),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(f) => {
            eprintln!("tally: {}", f.message);
            std::process::exit(f.code);
        }
    }
}

/// One thread only: `exec` relies on the process being single-threaded when it is moved into
/// a container, so the CLI never starts a multi-threaded runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}
