//! OS templates and configs from elsewhere: a template imported from a tarball, an OpenVZ
//! CTID.conf taken as it is, and debian-12 from debootstrap running its sshd for the host.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Result;
use tally::{
    ct::{rootfs::Rootfs, CtId},
    ubc::Resource,
};

use crate::{
    check,
    env::Env,
    harness::{connect_to, dir_names, ok, status, Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "template_import_makes_a_template_from_a_tarball",
            run: template_import,
        },
        Test {
            name: "import_openvz_takes_an_openvz_config_as_it_is",
            run: import_openvz,
        },
        Test {
            name: "debian_12_template_from_debootstrap_runs_its_sshd_for_the_host",
            run: debian_service,
        },
    ]
}

/// `tally template import`: a gzipped tarball of a root tree (here: the busybox template
/// plus a marker file) becomes a template containers start from; bad names, missing files
/// and a name taken are refused with their exit codes and leave the store as it was.
fn template_import(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("templates are files, whatever the tier") {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["template", "list"]), "template list (makes busybox)");
    let archive = try_or_fail!(
        env.busybox_archive(&[("etc/tally-import-marker", b"imported\n")]),
        "making the archive"
    );
    let path = archive.display().to_string();
    let before = templates_state(env);
    for (args, code, what) in [
        (
            vec!["template", "import", "../x", path.as_str()],
            47,
            "a name with a path in it",
        ),
        (
            vec!["template", "import", "imp", "/nonexistent/tally.tar"],
            21,
            "a missing archive",
        ),
        (
            vec!["template", "import", "busybox", path.as_str()],
            44,
            "the built-in name",
        ),
    ] {
        let out = try_or_fail!(env.tally(&args), "template import");
        check!(
            out.status.code() == Some(code),
            "{what}: exit {:?} (want {code}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        check!(templates_state(env) == before, "{what} changed the template store");
    }
    try_or_fail!(ok(env, &["template", "import", "imp", &path]), "template import");
    let list = try_or_fail!(ok(env, &["template", "list"]), "template list");
    check!(
        list.lines().any(|l| l.starts_with("imp ") && l.contains("SIGUSR2")),
        "imported template listed with busybox init's halt signal: {list}"
    );
    let out = try_or_fail!(env.tally(&["template", "import", "imp", &path]), "import again");
    check!(
        out.status.code() == Some(44),
        "a taken name: exit {:?}",
        out.status.code()
    );
    try_or_fail!(
        ok(env, &["create", "811", "--ostemplate", "imp", "--ipadd", "10.77.16.2"]),
        "create from the imported template"
    );
    try_or_fail!(ok(env, &["start", "811"]), "start");
    let marker = try_or_fail!(
        ok(env, &["exec", "811", "--", "cat", "/etc/tally-import-marker"]),
        "exec"
    );
    check!(
        marker.trim() == "imported",
        "the marker file in the container: {marker:?}"
    );
    try_or_fail!(ok(env, &["destroy", "811"]), "destroy");
    Outcome::Pass
}

fn import_openvz(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("a config import does not depend on the tier") {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let dir = env.instance.root.join("openvz");
    try_or_fail!(std::fs::create_dir_all(&dir), "mkdir");
    let file = dir.join("801.conf");
    try_or_fail!(std::fs::write(&file, OPENVZ_CONF), "writing the config");
    let path = file.display().to_string();
    let before = env.state();
    // Its template is not here: refused, nothing made.
    let out = try_or_fail!(env.tally(&["import-openvz", &path]), "import");
    check!(
        out.status.code() == Some(47),
        "missing template: exit {:?}",
        out.status.code()
    );
    let bad = dir.join("802.conf");
    try_or_fail!(std::fs::write(&bad, "NUMPROC=\"20:10\"\n"), "writing the config");
    let out = try_or_fail!(env.tally(&["import-openvz", &bad.display().to_string()]), "import");
    check!(
        out.status.code() == Some(21),
        "barrier above limit: exit {:?}",
        out.status.code()
    );
    check!(env.state() == before, "refused imports changed state");

    try_or_fail!(ok(env, &["import-openvz", &path, "--ostemplate", "busybox"]), "import");
    let conf = try_or_fail!(
        std::fs::read_to_string(env.instance.config_path(&CtId::parse("801").unwrap())),
        "config"
    );
    check!(
        conf.contains("NAMESERVER=\"192.0.2.53\"") && conf.contains("ONBOOT=\"yes\"") && !conf.contains("VE_ROOT"),
        "imported config: {conf}"
    );
    let numproc = try_or_fail!(env.ubc_row("801", Resource::NumProc), "numproc");
    check!(numproc.barrier == 240 && numproc.limit == 240, "numproc {numproc:?}");
    let ram = try_or_fail!(env.ubc_row("801", Resource::PhysPages), "physpages");
    check!(ram.limit == 262_144, "physpages {ram:?}");
    let privvm = try_or_fail!(env.ubc_row("801", Resource::PrivVmPages), "privvmpages");
    check!(
        privvm.limit == tally::ubc::UNLIMITED,
        "LONG_MAX is unlimited: {privvm:?}"
    );
    try_or_fail!(ok(env, &["start", "801"]), "start");
    let hostname = try_or_fail!(ok(env, &["exec", "801", "--", "hostname"]), "hostname");
    check!(hostname.trim() == "ct801.example.com", "hostname {hostname:?}");
    let list = try_or_fail!(ok(env, &["list", "-H", "-o", "ctid,ip"]), "list");
    check!(
        list.split_whitespace().collect::<Vec<_>>() == ["801", "10.77.15.2"],
        "list: {list}"
    );
    try_or_fail!(ok(env, &["destroy", "801"]), "destroy");
    Outcome::Pass
}

/// `tally template create debian-12` (debootstrap, offline from the packages `cargo xtask
/// setup` downloaded), a container from it whose own init (sysvinit) starts Debian's OpenSSH
/// server, reachable from the host on the container's address; `stop` powers it off through
/// the template's halt signal.
fn debian_service(env: &mut Env) -> Outcome {
    const CT: &str = "112";
    let Some(debs) = std::env::var_os("TALLY_ITEST_DEBIAN_DEBS")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file())
    else {
        return Outcome::Elsewhere(
            "needs debian-12's packages (TALLY_ITEST_DEBIAN_DEBS: cargo xtask setup downloads them; the host tier runs this)".into(),
        );
    };
    let addr = Ipv4Addr::new(10, 77, 12, 2);
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let before = templates_state(env);
    let bad = try_or_fail!(env.tally(&["template", "create", "debian-99"]), "template create");
    check!(
        bad.status.code() == Some(47) && templates_state(env) == before,
        "an unknown distribution: exit {:?} ({}), templates {before:?} -> {:?}",
        bad.status.code(),
        String::from_utf8_lossy(&bad.stderr).trim(),
        templates_state(env)
    );
    let debs = debs.display().to_string();
    try_or_fail!(
        ok(env, &["template", "create", "debian-12", "--debs", &debs]),
        "template create debian-12"
    );
    let list = try_or_fail!(ok(env, &["template", "list"]), "template list");
    check!(
        list.lines()
            .any(|l| l.split_whitespace().take(2).eq(["debian-12", "SIGPWR"])),
        "template list: {list}"
    );
    let again = try_or_fail!(
        env.tally(&["template", "create", "debian-12", "--debs", &debs]),
        "template create"
    );
    check!(
        again.status.code() == Some(44),
        "a second debian-12: exit {:?}",
        again.status.code()
    );

    try_or_fail!(
        ok(
            env,
            &[
                "create",
                CT,
                "--ostemplate",
                "debian-12",
                "--hostname",
                "deb1",
                "--ipadd",
                &addr.to_string()
            ]
        ),
        "create"
    );
    try_or_fail!(ok(env, &["start", CT, "--wait"]), "start");
    let version = try_or_fail!(ok(env, &["exec", CT, "--", "cat", "/etc/debian_version"]), "exec");
    check!(version.starts_with("12."), "/etc/debian_version: {version:?}");
    let init = try_or_fail!(ok(env, &["exec", CT, "--", "readlink", "/proc/1/exe"]), "exec");
    check!(
        init.trim() == "/usr/sbin/init" || init.trim() == "/sbin/init",
        "PID 1 runs {init:?}"
    );
    // Debian's own init scripts start sshd (runlevel 2); it greets whoever connects.
    let banner = (|| -> Result<String> {
        let mut s = connect_to(env, CT, addr, 22, Duration::from_secs(90))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut s), &mut line)?;
        Ok(line)
    })();
    let banner = try_or_fail!(banner, "connecting to sshd from the host");
    check!(
        banner.starts_with("SSH-2.0-OpenSSH_") && banner.contains("Debian"),
        "sshd's banner: {banner:?}"
    );
    let ps = try_or_fail!(ok(env, &["exec", CT, "--", "ps", "-e", "-o", "comm="]), "ps");
    check!(ps.lines().any(|l| l.trim() == "sshd"), "no sshd among {ps}");
    // Its host keys are its own: made at its first boot, in its private area, not shared
    // through the template.
    let key = "etc/ssh/ssh_host_ed25519_key";
    let private = Rootfs::new(&env.instance.root, &CtId::parse(CT).unwrap()).private;
    check!(
        !env.instance.root.join("template/debian-12").join(key).exists() && private.join("upper").join(key).is_file(),
        "ssh host keys: in the template {}, in the container's private area {}",
        env.instance.root.join("template/debian-12").join(key).exists(),
        private.join("upper").join(key).exists()
    );

    // stop asks sysvinit to power off (SIGPWR -> runlevel 0 -> halt), well before the
    // timeout after which it would kill.
    let started = std::time::Instant::now();
    try_or_fail!(ok(env, &["stop", CT]), "stop");
    let took = started.elapsed();
    let s = try_or_fail!(status(env, CT), "status");
    check!(s == format!("CTID {CT} exist unmounted down"), "after stop: {s}");
    check!(
        took < tally::ct::STOP_TIMEOUT,
        "stop took {took:?}: the init did not power off on its halt signal"
    );
    try_or_fail!(ok(env, &["destroy", CT]), "destroy");
    Outcome::Pass
}

/// An OpenVZ 101.conf as vzctl writes it (LONG_MAX for unlimited, $VEID in paths, a template
/// tally does not have).
const OPENVZ_CONF: &str = r#"# Copyright (C) 2000-2011, Parallels, Inc. All rights reserved.
ONBOOT="yes"
PHYSPAGES="0:262144"
SWAPPAGES="0:524288"
KMEMSIZE="14372700:14790164"
NUMPROC="240:240"
NUMFILE="9312:9312"
NUMTCPSOCK="unlimited"
PRIVVMPAGES="9223372036854775807:9223372036854775807"
CPUUNITS="1000"
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
OSTEMPLATE="centos-6-x86_64"
ORIGIN_SAMPLE="vswap-256m"
HOSTNAME="ct801.example.com"
IP_ADDRESS="10.77.15.2"
NAMESERVER="192.0.2.53"
"#;

/// The template directory's entries (templates and their metadata).
fn templates_state(env: &Env) -> Vec<String> {
    dir_names(&env.instance.root.join("template"))
}
