//! Bridged networking: a container's veth on tally's bridge, reaching the host both ways.
//! Before any traffic the test checks that the host routes the address where it should.

use std::{
    io::{Read, Write},
    net::Ipv4Addr,
    time::Duration,
};

use anyhow::Result;
use tally::ct::{net, CtId};

use crate::{
    check,
    env::Env,
    harness::{connect_via, ok, Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![Test {
        name: "bridged_veth_joins_tallys_bridge_and_reaches_the_host_both_ways",
        run: bridged,
    }]
}

/// `create --bridge`: eth0's host end is a port of tally's bridge (made on first use with the
/// gateway on it), the address sits on the bridge's subnet, host and container reach each
/// other both ways; the bridge goes with its last port. Bad bridges and addresses change
/// nothing.
fn bridged(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("networking (netlink) does not depend on the tier") {
        return o;
    }
    const CT: &str = "120";
    let br = net::DEFAULT_BRIDGE;
    let addr = Ipv4Addr::new(10, 77, 20, 2);
    let sys = std::path::Path::new("/sys/class/net").join(br);
    if sys.exists() {
        return Outcome::Fail(format!("{br} exists before the test: another tally uses it"));
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let before = env.state();
    for (args, what) in [
        (
            vec!["create", CT, "--ipadd", "10.77.20.2", "--bridge", "nosuch-br0"],
            "a bridge that is not there",
        ),
        (
            vec!["create", CT, "--ipadd", "10.77.20.2", "--bridge", "lo"],
            "an interface that is no bridge",
        ),
        (
            vec!["create", CT, "--ipadd", "10.77.20.2", "--bridge", "tally/x"],
            "a bad bridge name",
        ),
        (
            vec!["create", CT, "--ipadd", "192.0.2.7", "--bridge"],
            "an address off tally's bridge",
        ),
    ] {
        let out = try_or_fail!(env.tally(&args), "create");
        check!(
            out.status.code() == Some(21) && env.state() == before && !sys.exists(),
            "{what}: exit {:?} ({}); state {before:?} -> {:?}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim(),
            env.state()
        );
    }
    try_or_fail!(
        ok(env, &["create", CT, "--ipadd", &addr.to_string(), "--bridge"]),
        "create --bridge"
    );
    let conf = try_or_fail!(
        std::fs::read_to_string(env.instance.config_path(&CtId::parse(CT).unwrap())),
        "reading the config"
    );
    check!(conf.contains("NETIF=\"ifname=eth0,bridge=tallybr0\""), "config: {conf}");
    try_or_fail!(ok(env, &["start", CT, "--wait"]), "start");
    let veth = net::host_interface(&env.instance.name, &CtId::parse(CT).unwrap());
    let master = std::fs::read_link(format!("/sys/class/net/{veth}/master")).unwrap_or_default();
    check!(
        master.file_name().is_some_and(|m| m == br),
        "{veth}'s master is {master:?}, not {br}"
    );
    let inside = try_or_fail!(
        ok(env, &["exec", CT, "--", "ip", "-4", "addr", "show", "eth0"]),
        "ip addr"
    );
    check!(inside.contains("10.77.20.2/16"), "eth0 in the container: {inside}");

    // Host -> container: a busybox httpd on its address, through the bridge.
    try_or_fail!(
        ok(env, &["exec", CT, "--", "httpd", "-p", "8080", "-h", "/var/www"]),
        "httpd"
    );
    let page = (|| -> Result<String> {
        let mut s = connect_via(br, addr, 8080, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /index.html HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })();
    let page = try_or_fail!(page, "GET from the host");
    check!(page.contains("tally busybox container"), "httpd answered {page:?}");

    // Container -> host: the gateway address on the bridge, where the test listens.
    let listener = try_or_fail!(
        std::net::TcpListener::bind((net::GATEWAY, 0)),
        "listening on the gateway"
    );
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || -> Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf)?;
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhello bridge")?;
        Ok(())
    });
    // timeout(1), not wget's -T: busybox 1.35's wget crashes with it.
    let got = try_or_fail!(
        ok(
            env,
            &[
                "exec",
                CT,
                "--",
                "timeout",
                "10",
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{}:{port}/", net::GATEWAY)
            ]
        ),
        "wget from the container to the host"
    );
    check!(got == "hello bridge", "the host answered {got:?}");
    try_or_fail!(
        server
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("server panicked"))),
        "serving"
    );

    try_or_fail!(ok(env, &["stop", CT]), "stop");
    check!(!sys.exists(), "{br} outlived its last port");
    try_or_fail!(ok(env, &["destroy", CT]), "destroy");
    Outcome::Pass
}
