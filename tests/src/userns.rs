//! User namespaces: each container's root mapped to its own host id range, and a state
//! directory that those ids cannot traverse named at tallyd's start and by each start.

use std::time::Duration;

use anyhow::Result;
use tally::ct::{rootfs::Rootfs, CtId};

use crate::{
    check,
    env::Env,
    harness::{container_http_get, init_pid, ok, Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "user_namespaces_map_each_containers_root_to_its_own_host_range",
            run: user_namespaces,
        },
        Test {
            name: "a_state_directory_others_cannot_search_is_named_at_startup_and_by_each_start",
            run: untraversable_root,
        },
    ]
}

/// By default a container's root is its own unprivileged range of host ids (where the host can
/// idmap the template: the template stays shared and owned by host root); two containers get
/// two ranges; what the root makes is owned by its range on the host; it binds ports below
/// 1024 in its own network namespace. `--privileged` keeps host ids.
fn user_namespaces(env: &mut Env) -> Outcome {
    if let Some(o) =
        crate::harness::shown_by_the_full_tier_run("user namespaces and idmapped layers do not depend on the tier")
    {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["template", "list"]), "template list (makes busybox)");
    let template = env.instance.root.join("template/busybox");
    if let Err(why) = tally::ct::userns::supported(&template) {
        // tallyd made the default containers privileged then; the check below shows it.
        try_or_fail!(ok(env, &["create", "150"]), "create");
        let conf = try_or_fail!(
            std::fs::read_to_string(env.instance.config_path(&CtId::parse("150").unwrap())),
            "config"
        );
        check!(
            conf.contains("PRIVILEGED=\"yes\"") && !conf.contains("USERNS_BASE"),
            "config without idmap support: {conf}"
        );
        return Outcome::Elsewhere(format!("no user namespaces on this host: {why}"));
    }
    let cts = [("150", "10.77.15.2"), ("151", "10.77.15.3")];
    for (ct, ip) in cts {
        try_or_fail!(ok(env, &["create", ct, "--ipadd", ip]), "create");
        try_or_fail!(ok(env, &["start", ct]), "start");
    }
    try_or_fail!(ok(env, &["create", "152", "--privileged"]), "create --privileged");
    try_or_fail!(ok(env, &["start", "152"]), "start");
    let mut bases = Vec::new();
    for (ct, _) in cts {
        let pid = try_or_fail!(init_pid(env, ct), "init pid");
        let map = try_or_fail!(uid_map(pid), "uid_map");
        check!(
            map.len() == 3 && map[0] == 0 && map[1] >= tally::ct::userns::FIRST_BASE as u64 && map[2] == 65536,
            "{ct}'s init has uid_map {map:?}"
        );
        let status = try_or_fail!(std::fs::read_to_string(format!("/proc/{pid}/status")), "status");
        let uid_line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default()
            .to_string();
        check!(
            uid_line.split_whitespace().nth(1) == Some(map[1].to_string().as_str()),
            "{ct}'s init runs as host {uid_line:?}, not {}",
            map[1]
        );
        bases.push(map[1]);
        // Root inside; the template's files are root's; what root makes is the range's.
        let id = try_or_fail!(ok(env, &["exec", ct, "--", "id", "-u"]), "id");
        check!(id.trim() == "0", "{ct}: id -u says {id:?}");
        let owner = try_or_fail!(
            ok(env, &["exec", ct, "--", "stat", "-c", "%u:%g", "/bin/busybox"]),
            "stat"
        );
        check!(
            owner.trim() == "0:0",
            "{ct}: the template's busybox is owned by {owner:?} inside"
        );
        try_or_fail!(
            ok(env, &["exec", ct, "--", "sh", "-c", "echo x > /root/made-inside"]),
            "write"
        );
        let upper = Rootfs::new(&env.instance.root, &CtId::parse(ct).unwrap())
            .private
            .join("upper/root/made-inside");
        let meta = try_or_fail!(std::fs::metadata(&upper), "the file in the private area");
        check!(
            std::os::unix::fs::MetadataExt::uid(&meta) as u64 == map[1],
            "{ct}: a file root made is owned by host uid {} (range base {})",
            std::os::unix::fs::MetadataExt::uid(&meta),
            map[1]
        );
        let tpl_meta = try_or_fail!(std::fs::metadata(template.join("bin/busybox")), "template");
        check!(
            std::os::unix::fs::MetadataExt::uid(&tpl_meta) == 0,
            "the shared template changed owner"
        );
    }
    check!(bases[0] != bases[1], "two containers share the range {}", bases[0]);
    // Its network namespace is its own: its root binds port 80 and the host gets the page.
    let (ct, ip) = cts[0];
    try_or_fail!(
        ok(env, &["exec", ct, "--", "httpd", "-p", "80", "-h", "/var/www"]),
        "httpd on port 80"
    );
    let page = try_or_fail!(
        container_http_get(env, ct, ip.parse().unwrap(), 80, "/index.html"),
        "GET :80 from the host"
    );
    check!(
        page.contains("tally busybox container"),
        "httpd on port 80 answered {page:?}"
    );
    // Privileged: host ids.
    let pid = try_or_fail!(init_pid(env, "152"), "init pid");
    let map = try_or_fail!(uid_map(pid), "uid_map");
    check!(
        map == [0, 0, 4294967295],
        "the privileged container has uid_map {map:?}"
    );
    for ct in ["150", "151", "152"] {
        try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    }
    Outcome::Pass
}

/// tallyd's state directory under a directory that others may not search (as anything under
/// /root is): user-namespaced containers cannot reach their roots there. tallyd says so when it
/// starts and refuses each such start with the directory and the fix; privileged containers
/// are not affected, and once the directory may be searched the same container starts.
fn untraversable_root(env: &mut Env) -> Outcome {
    use std::os::unix::fs::PermissionsExt;
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("the state directory's modes do not depend on the tier")
    {
        return o;
    }
    let root = env.instance.root.clone();
    let mode = |m: u32| std::fs::set_permissions(&root, std::fs::Permissions::from_mode(m));
    try_or_fail!(mode(0o700), "chmod 0700 the state directory");
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["template", "list"]), "template list (makes busybox)");
    if let Err(why) = tally::ct::userns::supported(&root.join("template/busybox")) {
        return Outcome::Elsewhere(format!("no user namespaces on this host: {why}"));
    }
    let dir = root.display().to_string();
    let said = |text: &str| text.contains(&dir) && text.contains(&format!("chmod o+x {dir}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !env.tallyd_log().iter().any(|l| said(l)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    check!(
        env.tallyd_log().iter().any(|l| said(l)),
        "tallyd did not name {dir} and the fix at startup: {:#?}",
        env.tallyd_log()
    );
    try_or_fail!(ok(env, &["create", "160", "--ipadd", "10.77.17.2"]), "create");
    let out = try_or_fail!(env.tally(&["start", "160"]), "start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    check!(
        out.status.code() == Some(7) && said(&stderr),
        "start under a 0700 directory: exit {:?}, {stderr}",
        out.status.code()
    );
    let status = try_or_fail!(ok(env, &["status", "160"]), "status");
    check!(
        status.contains("down") && status.contains("unmounted"),
        "the refused start left {status}"
    );
    try_or_fail!(ok(env, &["create", "161", "--privileged"]), "create --privileged");
    try_or_fail!(ok(env, &["start", "161"]), "a privileged container starts");
    try_or_fail!(mode(0o755), "chmod 0755 the state directory");
    try_or_fail!(ok(env, &["start", "160"]), "start once others may search the directory");
    for ct in ["160", "161"] {
        try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    }
    Outcome::Pass
}

/// The first line of /proc/PID/uid_map, as numbers.
fn uid_map(pid: u32) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
    Ok(text
        .split_whitespace()
        .take(3)
        .map(str::parse)
        .collect::<Result<_, _>>()?)
}
