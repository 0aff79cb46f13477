//! The dedup file cache end to end: containers each with a private copy (in their upper
//! directories, not from the template) of the same files read them; tallyd promotes what the
//! kernel's read statistics show several containers read; after a restart the containers read
//! one shared copy, so the page cache they fill (summed over their memory cgroups, which are
//! charged for what they bring in) is about one copy instead of one per container. A write in
//! one container stays its own; a corrupt object is never served; eviction keeps the store
//! under its cap.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tally::ct::{rootfs::Rootfs, CtId};

use crate::{
    check,
    env::Env,
    harness::ok,
    harness::{Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![Test {
        name: "dedup_cache_serves_one_copy_to_many_containers_and_keeps_writes_private",
        run: dedup,
    }]
}

/// (containers, files, bytes per file): the 20 containers and 64 MiB on the host; a
/// smaller run in the emulated VMs (2 GiB of memory, slow disks).
fn sizes() -> (usize, usize, usize) {
    if crate::harness::emulated() {
        (4, 4, 2 << 20)
    } else {
        (20, 16, 4 << 20)
    }
}

pub(crate) fn drop_page_cache() -> Result<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "1").context("dropping the page cache")
}

/// Page cache charged to the containers' memory cgroups, summed.
pub(crate) fn file_bytes(env: &Env, cts: &[String]) -> Result<u64> {
    let mut sum = 0;
    for ct in cts {
        let stat = env.cgroup(ct)?.memory_usage()?.stat;
        sum += stat
            .get("file")
            .or_else(|| stat.get("total_cache"))
            .or_else(|| stat.get("cache"))
            .copied()
            .unwrap_or(0);
    }
    Ok(sum)
}

/// Reads every data file in each container (as its processes would).
pub(crate) fn read_all(env: &Env, cts: &[String]) -> Result<()> {
    for ct in cts {
        ok(env, &["exec", ct, "--", "sh", "-c", "cat /srv/data/* > /dev/null"])?;
    }
    Ok(())
}

fn sha256_inside(env: &Env, ct: &str, path: &str) -> Result<String> {
    let out = ok(env, &["exec", ct, "--", "sha256sum", path])?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_string())
}

/// Copies `files` into container `ct`'s upper directory at /srv/data, owned by its root.
pub(crate) fn give_copies(env: &Env, ct: &str, files: &[PathBuf]) -> Result<()> {
    let id = CtId::parse(ct)?;
    let conf = std::fs::read_to_string(env.instance.config_path(&id))?;
    let base: u32 = conf
        .lines()
        .find_map(|l| l.strip_prefix("USERNS_BASE=\""))
        .and_then(|v| v.trim_end_matches('"').parse().ok())
        .unwrap_or(0);
    let data = Rootfs::new(&env.instance.root, &id).private.join("upper/srv/data");
    std::fs::create_dir_all(&data)?;
    for dir in [data.parent().unwrap(), data.as_path()] {
        nix::unistd::chown(dir, Some(base.into()), Some(base.into()))?;
    }
    for f in files {
        let to = data.join(f.file_name().context("a file name")?);
        std::fs::copy(f, &to)?;
        nix::unistd::chown(&to, Some(base.into()), Some(base.into()))?;
    }
    Ok(())
}

fn dedup(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run(
        "the cache's layers do not change with the tier; its read statistics' fallback programs run on the host",
    ) {
        return o;
    }
    let (n, nfiles, size) = sizes();
    let total = (nfiles * size) as u64;
    let port = try_or_fail!(
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()),
        "a port for the exporter"
    )
    .port();
    let exporter = format!("127.0.0.1:{port}");
    try_or_fail!(env.start_tallyd_with(&["--metrics", &exporter]), "starting tallyd");
    try_or_fail!(
        std::fs::write(
            env.instance.root.join("pfcache.conf"),
            "PFCACHE_INCLUDES=\"/srv\"\nPFCACHE_MIN_SIZE=\"4096\"\n"
        ),
        "pfcache.conf"
    );
    // The same pseudo-random files for every container.
    let src = env.instance.root.join("tally-itest-data");
    let files = try_or_fail!(make_files(&src, nfiles, size, 1), "making the data files");
    let cts: Vec<String> = (0..n).map(|i| format!("{}", 500 + i)).collect();
    for ct in &cts {
        try_or_fail!(ok(env, &["create", ct]), "create");
        try_or_fail!(give_copies(env, ct, &files), "private copies");
        try_or_fail!(ok(env, &["start", ct]), "start");
    }
    let original = try_or_fail!(sha256_inside(env, &cts[0], "/srv/data/f0"), "sha256sum");
    // On tmpfs (the VMs' root) files live in memory charged when written: no page cache to
    // drop and refill, so the sharing is shown by the links alone there.
    let measurable = !on_tmpfs(&env.instance.root);

    // Without the cache: each container caches its own copy.
    if measurable {
        try_or_fail!(drop_page_cache(), "drop caches");
        let b0 = try_or_fail!(file_bytes(env, &cts), "memory.stat");
        try_or_fail!(read_all(env, &cts), "reading");
        let without = try_or_fail!(file_bytes(env, &cts), "memory.stat").saturating_sub(b0);
        println!(
            "    page cache for {n} containers reading {} MiB each, no cache: {} MiB",
            total >> 20,
            without >> 20
        );
        check!(
            without >= total * n as u64 * 8 / 10,
            "the measurement does not see the copies: {without} bytes for {n} x {total}"
        );
    } else {
        println!("    the instance is on tmpfs: page cache not measured here (the host tier measures it)");
        try_or_fail!(read_all(env, &cts), "reading");
    }

    let out = try_or_fail!(ok(env, &["cache", "promote"]), "cache promote");
    let promoted: usize = out.split_whitespace().next().and_then(|w| w.parse().ok()).unwrap_or(0);
    check!(
        promoted == n * nfiles,
        "promoted {promoted} copies, expected {}: {out}",
        n * nfiles
    );
    for ct in &cts {
        try_or_fail!(ok(env, &["restart", ct]), "restart");
    }
    let private0 = Rootfs::new(&env.instance.root, &CtId::parse(&cts[0]).unwrap());
    check!(
        !private0.private.join("upper/srv/data/f0").exists() && private0.cache_layer().join("srv/data/f0").exists(),
        "after the restart f0 should be a link in the cache layer, not a private copy"
    );
    let seen = try_or_fail!(sha256_inside(env, &cts[1], "/srv/data/f0"), "sha256sum");
    check!(seen == original, "the shared f0 reads {seen}, not {original}");

    // With the cache: one copy in the page cache for all of them (one inode: the links).
    let inode = |ct: &str| {
        let p = Rootfs::new(&env.instance.root, &CtId::parse(ct).unwrap())
            .cache_layer()
            .join("srv/data/f0");
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    check!(
        cts.iter().all(|c| inode(c).is_some() && inode(c) == inode(&cts[0])),
        "the containers' f0 links are not one inode"
    );
    if measurable {
        try_or_fail!(drop_page_cache(), "drop caches");
        let b1 = try_or_fail!(file_bytes(env, &cts), "memory.stat");
        try_or_fail!(read_all(env, &cts), "reading");
        let with = try_or_fail!(file_bytes(env, &cts), "memory.stat").saturating_sub(b1);
        println!(
            "    with the cache: {} MiB (at most 1.2 x {} MiB)",
            with >> 20,
            total >> 20
        );
        check!(
            with <= total * 12 / 10,
            "{with} bytes of page cache for one shared {total}"
        );
    }

    // A write stays in its container.
    try_or_fail!(
        ok(env, &["exec", &cts[0], "--", "sh", "-c", "echo mine >> /srv/data/f0"]),
        "write"
    );
    let mine = try_or_fail!(sha256_inside(env, &cts[0], "/srv/data/f0"), "sha256sum");
    let theirs = try_or_fail!(sha256_inside(env, &cts[1], "/srv/data/f0"), "sha256sum");
    check!(
        mine != original && theirs == original,
        "after a write in {}: its f0 {mine}, {}'s {theirs}",
        cts[0],
        cts[1]
    );
    let status: serde_json::Value = try_or_fail!(
        serde_json::from_str(&try_or_fail!(ok(env, &["cache", "stats", "--json"]), "stats")),
        "stats JSON"
    );
    check!(status["corrupt_dropped"] == 0, "the write reached the store: {status}");

    // A corrupt object is never served: two containers get a new shared file pending, its
    // object is damaged before they restart, and they keep their own copies.
    let extra = try_or_fail!(
        make_files(&env.instance.root.join("tally-itest-extra"), 1, 1 << 20, 2),
        "extra file"
    );
    let extra_name = extra[0].file_name().unwrap().to_string_lossy().into_owned();
    for ct in &cts[..2] {
        try_or_fail!(ok(env, &["stop", ct]), "stop");
        try_or_fail!(give_copies(env, ct, &extra), "the extra copy");
        try_or_fail!(ok(env, &["start", ct]), "start");
        try_or_fail!(
            ok(env, &["exec", ct, "--", "cat", &format!("/srv/data/{extra_name}")]).map(drop),
            "read"
        );
    }
    let out = try_or_fail!(ok(env, &["cache", "promote"]), "cache promote");
    check!(
        out.starts_with("2 "),
        "the extra file should be promoted for both: {out}"
    );
    let object = try_or_fail!(object_of(env, &extra[0]), "the extra object");
    try_or_fail!(std::fs::write(&object, b"corrupted"), "corrupting the object");
    for ct in &cts[..2] {
        try_or_fail!(ok(env, &["restart", ct]), "restart");
        let p = Rootfs::new(&env.instance.root, &CtId::parse(ct).unwrap());
        check!(
            p.private.join("upper/srv/data").join(&extra_name).exists()
                && !p.cache_layer().join("srv/data").join(&extra_name).exists(),
            "{ct} was given the corrupt object"
        );
        let got = try_or_fail!(sha256_inside(env, ct, &format!("/srv/data/{extra_name}")), "sha256sum");
        let want = try_or_fail!(tally::ct::cache::hash(&extra[0]).map_err(anyhow::Error::from), "hash");
        check!(got == want, "{ct}'s extra file reads {got}, not {want}");
    }
    check!(!object.exists(), "the corrupt object is still in the store");

    // Eviction: a cap below the store's size.
    try_or_fail!(
        std::fs::write(
            env.instance.root.join("pfcache.conf"),
            format!("PFCACHE_INCLUDES=\"/srv\"\nPFCACHE_SIZE=\"{}\"\n", 3 * size)
        ),
        "pfcache.conf"
    );
    try_or_fail!(ok(env, &["cache", "gc"]), "cache gc");
    let stats: serde_json::Value = try_or_fail!(
        serde_json::from_str(&try_or_fail!(ok(env, &["cache", "stats", "--json"]), "stats")),
        "stats JSON"
    );
    println!("    after gc with a cap of {} MiB: {stats}", (3 * size) >> 20);
    check!(
        stats["bytes"].as_u64().is_some_and(|b| b <= 3 * size as u64)
            && stats["evictions"].as_u64().is_some_and(|e| e >= (nfiles - 3) as u64)
            && stats["corrupt_dropped"].as_u64().is_some_and(|c| c >= 1),
        "after gc: {stats}"
    );
    // The exporter reports the same store.
    let metrics = try_or_fail!(scrape(&exporter), "scraping the exporter");
    for (name, key) in [
        ("tally_cache_objects", "objects"),
        ("tally_cache_bytes", "bytes"),
        ("tally_cache_promotions_total", "promotions"),
        ("tally_cache_evictions_total", "evictions"),
        ("tally_cache_corrupt_dropped_total", "corrupt_dropped"),
    ] {
        let line = metrics
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_default();
        check!(
            line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()) == stats[key].as_u64(),
            "{name} reads {line:?}, tally cache stats says {}",
            stats[key]
        );
    }
    // Still the same content everywhere (evicted objects' links stay).
    let seen = try_or_fail!(sha256_inside(env, &cts[n - 1], "/srv/data/f0"), "sha256sum");
    check!(seen == original, "after eviction f0 reads {seen}");
    Outcome::Pass
}

/// `count` files of `size` pseudo-random bytes (seeded) in `dir`: f0, f1, ...
pub(crate) fn make_files(dir: &Path, count: usize, size: usize, seed: u64) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    let mut out = Vec::new();
    for i in 0..count {
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        data.truncate(size);
        let name = if seed == 1 {
            format!("f{i}")
        } else {
            format!("extra{i}")
        };
        let p = dir.join(name);
        std::fs::write(&p, &data)?;
        out.push(p);
    }
    Ok(out)
}

/// The store object holding `file`'s content.
fn object_of(env: &Env, file: &Path) -> Result<PathBuf> {
    let hex = tally::ct::cache::hash(file)?;
    let p = env.instance.root.join("cache/objects").join(&hex[..2]).join(&hex[2..]);
    if !p.exists() {
        bail!("no object {}", p.display());
    }
    Ok(p)
}

pub(crate) fn on_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// The exporter's text (from 127.0.0.1: loopback only).
fn scrape(addr: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}
