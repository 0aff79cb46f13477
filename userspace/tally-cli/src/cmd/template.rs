//! `tally template list`

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
    }
}
