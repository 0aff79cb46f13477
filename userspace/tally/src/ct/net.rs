//! Container networking through netlink (rtnetlink), OpenVZ venet style: each container gets
//! its own network namespace with a veth whose host end is named `tallyXXXXXXXX` (a hash of
//! the instance and the CTID: interface names have 15 bytes) and whose inner end is `eth0`.
//! The container's addresses are routed /32s: on the host a route per address to the host
//! end, in the container a default route to the gateway 10.77.0.1, which every host end
//! carries. Containers reach the host and the host reaches them; each container's traffic
//! crosses only its own veth, so no container sees another's.
//!
//! Bridged (vzctl's veth with `bridge=`): the host end is a port of a bridge instead, and the
//! container's eth0 carries its addresses with the bridge's prefix and a default route to the
//! bridge's address, as on a LAN. A bridge named `tally*` is tally's: made on first use with
//! the gateway 10.77.0.1/16 on it, removed when its last port goes. Another bridge (an
//! administrator's `br0` on the LAN, say) is joined as it is and never changed.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, OwnedFd},
};

use futures_util::TryStreamExt;
use nix::sched::{unshare, CloneFlags};
use rtnetlink::{
    packet_route::route::{RouteAttribute, RouteScope},
    Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::CtId;

/// The private range tally's default container addresses come from.
pub const RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 16);
/// The containers' gateway: on every host end of a container veth.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: std::io::Error },
    #[error("no interface {0}")]
    NoInterface(String),
    #[error("{0}")]
    Bridge(String),
}

fn sys(what: &'static str) -> impl FnOnce(std::io::Error) -> NetError {
    move |source| NetError::Sys { what, source }
}

/// The host end of container `ct`'s veth.
pub fn host_interface(instance: &str, ct: &CtId) -> String {
    // FNV-1a: stable across builds and hosts (the name must survive a tallyd upgrade).
    let hash = format!("{instance}/{ct}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
    format!("tally{:08x}", hash as u32)
}

/// The bridge `tally create --bridge` joins when it names none.
pub const DEFAULT_BRIDGE: &str = "tallybr0";

/// Whether `name` can name a bridge: an interface name (1 to 15 bytes, no '/', ':', ',',
/// '=', ';' or white space).
pub fn valid_bridge_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && !b"/:,=;".contains(&b))
}

/// The bridge in a NETIF value (vzctl's `ifname=eth0,bridge=br0`), if any.
pub fn netif_bridge(netif: &str) -> Option<&str> {
    netif
        .split(';')
        .flat_map(|iface| iface.split(','))
        .find_map(|kv| kv.strip_prefix("bridge="))
        .filter(|b| !b.is_empty())
}

/// The NETIF value of an eth0 bridged to `bridge`.
pub fn netif_value(bridge: &str) -> String {
    format!("ifname=eth0,bridge={bridge}")
}

/// Whether a bridge can be used for a new container: there, and a bridge, or a `tally*` name
/// tally will make.
pub fn check_bridge(name: &str) -> Result<(), String> {
    if !valid_bridge_name(name) {
        return Err(format!("invalid bridge name '{name}'"));
    }
    let sys = std::path::Path::new("/sys/class/net").join(name);
    match (sys.exists(), sys.join("bridge").exists()) {
        (true, true) => Ok(()),
        (true, false) => Err(format!("{name} is not a bridge")),
        (false, _) if owns_bridge(name) => Ok(()),
        (false, _) => Err(format!(
            "there is no bridge {name} (tally makes only bridges named tally*)"
        )),
    }
}

/// Whether tally makes and removes bridge `name` itself.
pub fn owns_bridge(name: &str) -> bool {
    name.starts_with("tally")
}

/// Whether `addr` is in tally's own range (and not the gateway or the range's ends).
pub fn in_range(addr: Ipv4Addr) -> bool {
    let (net, len) = RANGE;
    let mask = u32::MAX << (32 - len);
    let a = u32::from(addr);
    a & mask == u32::from(net) & mask && addr != GATEWAY && a & !mask != 0 && a & !mask != !mask
}

/// Makes a network namespace for container `ct` ready: lo up and, when it has addresses,
/// its veth, addresses and routes. Returns the namespace (kept alive by the descriptor until
/// the container's init has joined it).
/// `netns`: a namespace made already (one owned by the container's user namespace), else a
/// new one is made here.
pub fn create(
    instance: &str,
    ct: &CtId,
    addrs: &[Ipv4Addr],
    bridge: Option<&str>,
    netns: Option<OwnedFd>,
) -> Result<OwnedFd, NetError> {
    let host_if = host_interface(instance, ct);
    let addrs = addrs.to_vec();
    let bridge = bridge.map(str::to_string);
    // unshare(CLONE_NEWNET) moves only the calling thread: a thread of its own does it, and
    // its netlink socket, opened after the unshare, talks to the new namespace.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(sys("tokio runtime"))?;
        rt.block_on(configure(host_if, addrs, bridge, netns))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetError::Sys {
            what: "network setup thread",
            source: std::io::Error::other("panicked"),
        })
    })
}

async fn configure(
    host_if: String,
    addrs: Vec<Ipv4Addr>,
    bridge: Option<String>,
    netns: Option<OwnedFd>,
) -> Result<OwnedFd, NetError> {
    let (conn, host, _) = rtnetlink::new_connection().map_err(sys("netlink socket"))?;
    tokio::spawn(conn);
    let netns = match netns {
        Some(ns) => {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Sys {
                what: "setns(CLONE_NEWNET)",
                source: e.into(),
            })?;
            ns
        }
        None => {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Sys {
                what: "unshare(CLONE_NEWNET)",
                source: e.into(),
            })?;
            File::open("/proc/thread-self/ns/net")
                .map_err(sys("opening the new network namespace"))?
                .into()
        }
    };
    let (conn, inner, _) = rtnetlink::new_connection().map_err(sys("netlink socket"))?;
    tokio::spawn(conn);
    let lo = index(&inner, "lo").await?;
    inner
        .link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await?;
    if addrs.is_empty() {
        return Ok(netns);
    }
    let peer = format!("{host_if}c");
    host.link()
        .add(LinkVeth::new(&host_if, &peer).build())
        .execute()
        .await?;
    let veth = Veth {
        host: &host,
        inner: &inner,
        host_if: &host_if,
        peer: &peer,
        netns: &netns,
    };
    let result = match &bridge {
        None => wire(&veth, &addrs).await,
        Some(b) => wire_bridged(&veth, &addrs, b).await,
    };
    if result.is_err() {
        let _ = delete_link(&host, &host_if).await;
        if let Some(b) = &bridge {
            let _ = release_bridge(&host, b).await;
        }
    }
    result.map(|()| netns)
}

/// A container's veth being wired: netlink to both namespaces, the two ends' names.
struct Veth<'a> {
    host: &'a Handle,
    inner: &'a Handle,
    host_if: &'a str,
    peer: &'a str,
    netns: &'a OwnedFd,
}

/// Moves the peer into the container's namespace as eth0, up.
async fn inner_eth0(v: &Veth<'_>) -> Result<u32, NetError> {
    let Veth {
        host,
        inner,
        peer,
        netns,
        ..
    } = *v;
    let peer_index = index(host, peer).await?;
    host.link()
        .set(
            LinkUnspec::new_with_index(peer_index)
                .setns_by_fd(netns.as_raw_fd())
                .build(),
        )
        .execute()
        .await?;
    let eth = index(inner, peer).await?;
    inner
        .link()
        .set(LinkUnspec::new_with_index(eth).name("eth0").build())
        .execute()
        .await?;
    inner
        .link()
        .set(LinkUnspec::new_with_index(eth).up().build())
        .execute()
        .await?;
    Ok(eth)
}

/// The bridged wiring: the host end a port of `bridge`, eth0 on the bridge's subnet.
async fn wire_bridged(v: &Veth<'_>, addrs: &[Ipv4Addr], bridge: &str) -> Result<(), NetError> {
    let Veth {
        host, inner, host_if, ..
    } = *v;
    let br = ensure_bridge(host, bridge).await?;
    let subnets = ipv4_addresses(host, br).await?;
    // Every address must be on one of the bridge's subnets; the first one's gateway is used.
    let mut gateway = None;
    let mut on_link = Vec::new();
    for addr in addrs {
        let Some((gw, len)) = subnets.iter().copied().find(|(gw, len)| same_subnet(*gw, *addr, *len)) else {
            return Err(NetError::Bridge(format!(
                "{addr} is on none of bridge {bridge}'s subnets ({})",
                subnets
                    .iter()
                    .map(|(a, l)| format!("{a}/{l}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        gateway.get_or_insert(gw);
        on_link.push((*addr, len));
    }
    let eth = inner_eth0(v).await?;
    for (addr, len) in on_link {
        inner.address().add(eth, IpAddr::V4(addr), len).execute().await?;
    }
    if let Some(gw) = gateway {
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(eth)
            .build();
        inner.route().add(default).execute().await?;
    }
    let hidx = index(host, host_if).await?;
    host.link()
        .set(LinkUnspec::new_with_index(hidx).controller(br).up().build())
        .execute()
        .await?;
    Ok(())
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len as u32) };
    u32::from(a) & mask == u32::from(b) & mask
}

/// The index of bridge `name`; a missing `tally*` bridge is made, with the gateway on it.
async fn ensure_bridge(host: &Handle, name: &str) -> Result<u32, NetError> {
    if let Ok(i) = index(host, name).await {
        return Ok(i);
    }
    if !owns_bridge(name) {
        return Err(NetError::Bridge(format!(
            "there is no bridge {name} (tally makes only bridges named tally*)"
        )));
    }
    match host.link().add(LinkBridge::new(name).build()).execute().await {
        // Another container's start made it meanwhile.
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::EEXIST => return index(host, name).await,
        other => other?,
    }
    let i = index(host, name).await?;
    host.address().add(i, IpAddr::V4(GATEWAY), RANGE.1).execute().await?;
    host.link()
        .set(LinkUnspec::new_with_index(i).up().build())
        .execute()
        .await?;
    Ok(i)
}

/// The IPv4 addresses on interface `index`, with their prefix lengths.
async fn ipv4_addresses(handle: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
    let mut out = Vec::new();
    let mut stream = handle.address().get().set_link_index_filter(index).execute();
    while let Some(msg) = stream.try_next().await? {
        for attr in &msg.attributes {
            if let rtnetlink::packet_route::address::AddressAttribute::Address(IpAddr::V4(a)) = attr {
                out.push((*a, msg.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Removes bridge `name` when it is tally's and no port is left on it.
async fn release_bridge(host: &Handle, name: &str) -> Result<(), NetError> {
    if !owns_bridge(name) {
        return Ok(());
    }
    let Ok(br) = index(host, name).await else {
        return Ok(());
    };
    let mut links = host.link().get().execute();
    while let Some(l) = links.try_next().await? {
        if l.attributes
            .iter()
            .any(|a| matches!(a, rtnetlink::packet_route::link::LinkAttribute::Controller(c) if *c == br))
        {
            return Ok(());
        }
    }
    host.link().del(br).execute().await?;
    Ok(())
}

/// The venet-style wiring: /32s in the container, a route per address on the host.
async fn wire(v: &Veth<'_>, addrs: &[Ipv4Addr]) -> Result<(), NetError> {
    let Veth {
        host, inner, host_if, ..
    } = *v;
    let eth = inner_eth0(v).await?;
    for addr in addrs {
        inner.address().add(eth, IpAddr::V4(*addr), 32).execute().await?;
    }
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(GATEWAY)
        .output_interface(eth)
        .onlink()
        .build();
    inner.route().add(default).execute().await?;

    let hidx = index(host, host_if).await?;
    host.address().add(hidx, IpAddr::V4(GATEWAY), 32).execute().await?;
    host.link()
        .set(LinkUnspec::new_with_index(hidx).up().build())
        .execute()
        .await?;
    for addr in addrs {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(*addr, 32)
            .output_interface(hidx)
            .scope(RouteScope::Link)
            .pref_source(GATEWAY)
            .build();
        host.route().add(route).execute().await?;
    }
    Ok(())
}

async fn index(handle: &Handle, name: &str) -> Result<u32, NetError> {
    handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .ok()
        .flatten()
        .map(|l| l.header.index)
        .ok_or_else(|| NetError::NoInterface(name.to_string()))
}

async fn link_name(handle: &Handle, index: u32) -> Option<String> {
    let l = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .ok()??;
    l.attributes.iter().find_map(|a| match a {
        rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

async fn delete_link(handle: &Handle, name: &str) -> Result<(), NetError> {
    let i = index(handle, name).await?;
    handle.link().del(i).execute().await?;
    Ok(())
}

/// Runs `f` with a netlink handle to the host's namespace on a runtime of its own.
fn with_host_netlink<T>(f: impl AsyncFnOnce(Handle) -> Result<T, NetError>) -> Result<T, NetError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(sys("tokio runtime"))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(sys("netlink socket"))?;
        tokio::spawn(conn);
        f(handle).await
    })
}

/// Removes container `ct`'s veth if it is still there (its namespace usually takes it along),
/// and its `tally*` bridge (`bridge`, or the veth's) if no port is left on it.
pub fn remove(instance: &str, ct: &CtId, bridge: Option<&str>) -> Result<(), NetError> {
    let name = host_interface(instance, ct);
    let bridge = bridge.map(str::to_string);
    // A runtime of its own, on a thread of its own: callers may be inside tokio already.
    std::thread::spawn(move || {
        with_host_netlink(async |h| {
            let mut bridge = bridge;
            if let Ok(Some(l)) = h.link().get().match_name(name.clone()).execute().try_next().await {
                let master = l.attributes.iter().find_map(|a| match a {
                    rtnetlink::packet_route::link::LinkAttribute::Controller(c) => Some(*c),
                    _ => None,
                });
                if let (None, Some(m)) = (&bridge, master) {
                    bridge = link_name(&h, m).await;
                }
            }
            // The veth may be going away with its namespace right now (the init was just
            // killed): it is a port of the bridge until it is gone, so wait for that (briefly)
            // before asking whether the bridge has ports left.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                match delete_link(&h, &name).await {
                    Err(NetError::NoInterface(_)) => break,
                    Ok(()) => {}
                    Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                    Err(_) => {}
                }
                if std::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            match bridge {
                Some(b) => release_bridge(&h, &b).await,
                None => Ok(()),
            }
        })
    })
    .join()
    .unwrap_or(Ok(()))
}

/// The interface the host routes `addr` through (tests check it before sending anything).
pub fn route_interface(addr: Ipv4Addr) -> Result<Option<String>, NetError> {
    std::thread::spawn(move || {
        with_host_netlink(async |h| {
            let query = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(addr, 32)
                .build();
            let route = match h.route().get(query).execute().try_next().await {
                Ok(Some(route)) => route,
                Ok(None) => return Ok(None),
                // No route at all (a host without a default route).
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENETUNREACH => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let Some(oif) = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            }) else {
                return Ok(None);
            };
            Ok(link_name(&h, oif).await)
        })
    })
    .join()
    .unwrap_or(Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_and_say_tally() {
        let ct = CtId::parse("a-very-long-container-name-0123456789").unwrap();
        let name = host_interface("tally-itest-12345-678", &ct);
        assert!(name.starts_with("tally") && name.len() <= 14, "{name}");
        assert_ne!(name, host_interface("tally", &ct));
    }

    #[test]
    fn netif_names_the_bridge() {
        assert_eq!(netif_bridge(&netif_value("tallybr0")), Some("tallybr0"));
        assert_eq!(
            netif_bridge("ifname=eth0,mac=00:11,host_ifname=veth101.0,bridge=vmbr0"),
            Some("vmbr0")
        );
        assert_eq!(netif_bridge("ifname=eth0"), None);
        assert_eq!(netif_bridge("ifname=eth0,bridge="), None);
        assert!(valid_bridge_name("tallybr0") && !valid_bridge_name("a/b") && !valid_bridge_name("0123456789abcdef"));
        assert!(check_bridge("tallybr-nosuch").is_ok(), "tally makes its own");
        assert!(check_bridge("nosuch-br").is_err());
        assert!(check_bridge("lo").is_err(), "lo is no bridge");
        assert!(same_subnet(
            Ipv4Addr::new(10, 77, 0, 1),
            Ipv4Addr::new(10, 77, 9, 9),
            16
        ));
        assert!(!same_subnet(
            Ipv4Addr::new(10, 77, 0, 1),
            Ipv4Addr::new(10, 78, 0, 1),
            16
        ));
    }

    #[test]
    fn range_is_tallys_own() {
        assert!(in_range(Ipv4Addr::new(10, 77, 0, 2)));
        assert!(!in_range(GATEWAY));
        assert!(!in_range(Ipv4Addr::new(10, 77, 255, 255)));
        assert!(!in_range(Ipv4Addr::new(10, 78, 0, 2)));
        assert!(!in_range(Ipv4Addr::new(192, 0, 2, 1)));
    }
}
