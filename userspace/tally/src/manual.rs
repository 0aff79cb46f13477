//! Man pages and shell completions, made from a binary's own clap definition (so they cannot
//! drift from its options), for the Debian package: `tally generate-manual DIR` and
//! `tallyd --generate-manual DIR` write DIR/man8/NAME.8 (one page per subcommand too,
//! NAME-SUB.8) and DIR/completions/{NAME.bash, _NAME}.

use std::{fs, io, path::Path};

use clap::Command;
use clap_complete::Shell;

pub fn write(cmd: Command, dir: &Path) -> io::Result<()> {
    let man = dir.join("man8");
    let completions = dir.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let name = cmd.get_name().to_string();
    let mut cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    cmd.build();
    page(&cmd, &name, &man)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub, &format!("{name}-{}", sub.get_name()), &man)?;
    }
    for (shell, file) in [(Shell::Bash, format!("{name}.bash")), (Shell::Zsh, format!("_{name}"))] {
        let mut out = fs::File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut cmd, &name, &mut out);
    }
    Ok(())
}

fn page(cmd: &Command, title: &str, dir: &Path) -> io::Result<()> {
    let mut out = fs::File::create(dir.join(format!("{title}.8")))?;
    clap_mangen::Man::new(cmd.clone().name(title.to_string()))
        .section("8")
        .render(&mut out)
}
