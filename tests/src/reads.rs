//! Per-container file-read statistics end to end: a container writes a file and reads it back
//! through its overlay; `tally reads --json` lists the real file (its inode in the container's
//! upper directory, as `stat` on the host sees it) with the calls and bytes it read, under that
//! container only; another container's reads and the host's own reads of the same file are
//! not attributed to it.

use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};
use tally::{
    api::FileReadView,
    ct::{rootfs::Rootfs, CtId},
    kernel::reads::monotonic_now_ns,
};

use crate::{
    check,
    env::Env,
    harness::ok,
    harness::{Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![Test {
        name: "file_reads_count_the_real_upper_inode_per_container",
        run: real_inode_per_container,
    }]
}

/// `tally reads CT --json`, every file.
fn reads(env: &Env, ct: &str) -> Result<Vec<FileReadView>> {
    let out = ok(env, &["reads", ct, "--top", "100000", "--json"])?;
    serde_json::from_str(&out).context("tally reads --json")
}

/// (st_dev, st_ino, size) of `path` inside container `ct`'s upper directory, from the host.
fn upper_file(env: &Env, ct: &str, path: &str) -> Result<(u64, u64, u64)> {
    let upper = Rootfs::new(&env.instance.root, &CtId::parse(ct)?).private.join("upper");
    let file = upper.join(path.trim_start_matches('/'));
    let meta = std::fs::metadata(&file).with_context(|| format!("stat {}", file.display()))?;
    Ok((meta.dev(), meta.ino(), meta.len()))
}

fn find(list: &[FileReadView], (dev, ino, _): (u64, u64, u64)) -> Option<&FileReadView> {
    list.iter().find(|f| f.read.dev == dev && f.read.ino == ino)
}

fn real_inode_per_container(env: &mut Env) -> Outcome {
    let ready = try_or_fail!(env.start_tallyd(), "starting tallyd");
    println!("    {ready}");
    for ct in ["101", "102"] {
        try_or_fail!(ok(env, &["create", ct]), "create");
        try_or_fail!(ok(env, &["start", ct]), "start");
    }
    // 1 MiB in 101, 512 KiB in 102, each written inside and so in its own upper directory.
    for (ct, file, count) in [("101", "/srv/f", "16"), ("102", "/srv/g", "8")] {
        let script = format!("mkdir -p /srv && dd if=/dev/zero of={file} bs=64k count={count} 2>/dev/null");
        try_or_fail!(ok(env, &["exec", ct, "--", "sh", "-c", &script]), "writing the file");
    }
    let f = try_or_fail!(upper_file(env, "101", "/srv/f"), "101's file");
    let g = try_or_fail!(upper_file(env, "102", "/srv/g"), "102's file");
    check!(f.2 == 1 << 20 && g.2 == 512 << 10, "sizes {} and {}", f.2, g.2);

    let before = monotonic_now_ns();
    try_or_fail!(
        ok(env, &["exec", "101", "--", "sh", "-c", "cat /srv/f > /dev/null"]),
        "reading in 101"
    );
    // 102 reads its own file twice, and through a plain read loop (dd) as well as cat's way.
    try_or_fail!(
        ok(
            env,
            &[
                "exec",
                "102",
                "--",
                "sh",
                "-c",
                "cat /srv/g > /dev/null; dd if=/srv/g of=/dev/null bs=4k 2>/dev/null"
            ]
        ),
        "reading in 102"
    );

    let in_101 = try_or_fail!(reads(env, "101"), "101's reads");
    let Some(seen) = find(&in_101, f) else {
        return Outcome::Fail(format!(
            "101's list has no dev {} inode {} (its upper /srv/f): {in_101:#?}",
            f.0, f.1
        ));
    };
    check!(seen.read.reads > 0, "no read calls counted: {seen:?}");
    check!(
        seen.read.bytes >= f.2,
        "{} bytes counted, the file has {}: {seen:?}",
        seen.read.bytes,
        f.2
    );
    check!(
        seen.read.last_read_ns >= before && seen.read.last_read_ns <= monotonic_now_ns(),
        "last read {} not between {before} and now",
        seen.read.last_read_ns
    );
    check!(
        seen.path.as_deref() == Some(std::path::Path::new("/srv/f")),
        "path {:?}, expected /srv/f",
        seen.path
    );
    check!(
        find(&in_101, g).is_none(),
        "102's file is in 101's list: {:?}",
        find(&in_101, g)
    );

    let in_102 = try_or_fail!(reads(env, "102"), "102's reads");
    let Some(theirs) = find(&in_102, g) else {
        return Outcome::Fail(format!("102's list has no inode {} (its /srv/g): {in_102:#?}", g.1));
    };
    // cat and dd: 2 x 512 KiB, dd in 4 KiB calls (128 reads and the one at EOF).
    check!(
        theirs.read.bytes >= 2 * g.2,
        "102 read {} bytes of /srv/g",
        theirs.read.bytes
    );
    check!(theirs.read.reads >= 129, "102 made {} read calls", theirs.read.reads);
    check!(find(&in_102, f).is_none(), "101's file is in 102's list");

    // The host reading 101's file (not a container): nothing changes for 101.
    let upper_f = Rootfs::new(&env.instance.root, &CtId::parse("101").expect("id"))
        .private
        .join("upper/srv/f");
    try_or_fail!(std::fs::read(&upper_f), "reading the file on the host");
    let again = try_or_fail!(reads(env, "101"), "101's reads");
    let after = find(&again, f).map(|r| (r.read.reads, r.read.bytes));
    check!(
        after == Some((seen.read.reads, seen.read.bytes)),
        "the host's read changed 101's counts: {after:?} after {:?}",
        (seen.read.reads, seen.read.bytes)
    );
    Outcome::Pass
}
