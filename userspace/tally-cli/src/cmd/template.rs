//! `tally template list`, `tally template import NAME FILE`, `tally template create DIST`

use tally::api::{Client, TemplateInfo};

use crate::Failure;

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// The templates containers can be created from.
    List {
        /// JSON instead of a table.
        #[arg(short, long)]
        json: bool,
    },
    /// Make a template from a root-tree archive (tar, .tar.gz or .tar.zst), e.g. one exported
    /// from an OpenVZ template cache or `docker export`.
    Import {
        name: String,
        file: std::path::PathBuf,
        /// The signal that powers the template's init off (default: guessed from /sbin/init).
        #[arg(long)]
        halt_signal: Option<String>,
    },
    /// Make a distribution template with debootstrap (debian-11, debian-12, debian-13): a
    /// minimal system with sysvinit and OpenSSH. Takes minutes.
    Create {
        dist: String,
        /// The Debian mirror to install from.
        #[arg(long)]
        mirror: Option<String>,
        /// Install offline from a `debootstrap --make-tarball` tarball (`cargo xtask setup`
        /// makes one for debian-12).
        #[arg(long)]
        debs: Option<std::path::PathBuf>,
    },
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    match args {
        Args::List { json } => {
            let list: Vec<TemplateInfo> = client.get("/v1/templates").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list).expect("serializable"));
            } else {
                println!("{:<20} {:<12} ROOTFS", "NAME", "HALT");
                for t in list {
                    println!("{:<20} {:<12} {}", t.name, t.halt_signal, t.rootfs.display());
                }
            }
            Ok(0)
        }
        Args::Import {
            name,
            file,
            halt_signal,
        } => {
            let archive = std::path::absolute(&file)
                .map_err(|e| Failure::new(crate::ExitCode::BadArgument, format!("{}: {e}", file.display())))?;
            let t: TemplateInfo = client
                .post(
                    "/v1/templates",
                    &tally::api::ImportTemplate {
                        name,
                        archive,
                        halt_signal,
                    },
                )
                .await?;
            println!(
                "Template {} imported at {} (halt: {})",
                t.name,
                t.rootfs.display(),
                t.halt_signal
            );
            Ok(0)
        }
        Args::Create { dist, mirror, debs } => {
            let debs = debs
                .map(|d| {
                    std::path::absolute(&d)
                        .map_err(|e| Failure::new(crate::ExitCode::BadArgument, format!("{}: {e}", d.display())))
                })
                .transpose()?;
            eprintln!("Running debootstrap for {dist} (this takes minutes)...");
            let t: TemplateInfo = client
                .post(
                    "/v1/templates/create",
                    &tally::api::CreateTemplate { dist, mirror, debs },
                )
                .await?;
            println!(
                "Template {} created at {} (halt: {})",
                t.name,
                t.rootfs.display(),
                t.halt_signal
            );
            Ok(0)
        }
    }
}
