//! Container networking through netlink (rtnetlink), OpenVZ venet style: each container gets
//! its own network namespace with a veth whose host end is named `tallyXXXXXXXX` (a hash of
//! the instance and the CTID: interface names have 15 bytes) and whose inner end is `eth0`.
//! The container's addresses are routed /32s: on the host a route per address to the host
//! end, in the container a default route to the gateway 10.77.0.1, which every host end
//! carries. Containers reach the host and the host reaches them; each container's traffic
//! crosses only its own veth, so no container sees another's.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, OwnedFd},
};

use futures_util::TryStreamExt;
use nix::sched::{unshare, CloneFlags};
use rtnetlink::{
    packet_route::route::{RouteAttribute, RouteScope},
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder,
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

/// Whether `addr` is in tally's own range (and not the gateway or the range's ends).
pub fn in_range(addr: Ipv4Addr) -> bool {
    let (net, len) = RANGE;
    let mask = u32::MAX << (32 - len);
    let a = u32::from(addr);
    a & mask == u32::from(net) & mask && addr != GATEWAY && a & !mask != 0 && a & !mask != !mask
}

/// Makes a new network namespace for container `ct` with lo up and, when it has addresses,
/// its veth, addresses and routes. Returns the namespace (kept alive by the descriptor until
/// the container's init has joined it).
pub fn create(instance: &str, ct: &CtId, addrs: &[Ipv4Addr]) -> Result<OwnedFd, NetError> {
    let host_if = host_interface(instance, ct);
    let addrs = addrs.to_vec();
    // unshare(CLONE_NEWNET) moves only the calling thread: a thread of its own does it, and
    // its netlink socket, opened after the unshare, talks to the new namespace.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(sys("tokio runtime"))?;
        rt.block_on(configure(host_if, addrs))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetError::Sys {
            what: "network setup thread",
            source: std::io::Error::other("panicked"),
        })
    })
}

async fn configure(host_if: String, addrs: Vec<Ipv4Addr>) -> Result<OwnedFd, NetError> {
    let (conn, host, _) = rtnetlink::new_connection().map_err(sys("netlink socket"))?;
    tokio::spawn(conn);
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Sys {
        what: "unshare(CLONE_NEWNET)",
        source: e.into(),
    })?;
    let netns: OwnedFd = File::open("/proc/thread-self/ns/net")
        .map_err(sys("opening the new network namespace"))?
        .into();
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
    let result = wire(&host, &inner, &host_if, &peer, &netns, &addrs).await;
    if result.is_err() {
        let _ = delete_link(&host, &host_if).await;
    }
    result.map(|()| netns)
}

async fn wire(
    host: &Handle,
    inner: &Handle,
    host_if: &str,
    peer: &str,
    netns: &OwnedFd,
    addrs: &[Ipv4Addr],
) -> Result<(), NetError> {
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

async fn delete_link(handle: &Handle, name: &str) -> Result<(), NetError> {
    let i = index(handle, name).await?;
    handle.link().del(i).execute().await?;
    Ok(())
}

/// Runs `f` with a netlink handle to the host's namespace on a runtime of its own.
fn with_host_netlink<T>(f: impl AsyncFnOnce(Handle) -> Result<T, NetError>) -> Result<T, NetError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(sys("tokio runtime"))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(sys("netlink socket"))?;
        tokio::spawn(conn);
        f(handle).await
    })
}

/// Removes container `ct`'s veth if it is still there (its namespace usually takes it along).
pub fn remove(instance: &str, ct: &CtId) -> Result<(), NetError> {
    let name = host_interface(instance, ct);
    // A runtime of its own, on a thread of its own: callers may be inside tokio already.
    std::thread::spawn(move || {
        with_host_netlink(async |h| match delete_link(&h, &name).await {
            Err(NetError::NoInterface(_)) => Ok(()),
            other => other,
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
            let link = h.link().get().match_index(oif).execute().try_next().await?;
            Ok(link.and_then(|l| {
                l.attributes.iter().find_map(|a| match a {
                    rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
            }))
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
    fn range_is_tallys_own() {
        assert!(in_range(Ipv4Addr::new(10, 77, 0, 2)));
        assert!(!in_range(GATEWAY));
        assert!(!in_range(Ipv4Addr::new(10, 77, 255, 255)));
        assert!(!in_range(Ipv4Addr::new(10, 78, 0, 2)));
        assert!(!in_range(Ipv4Addr::new(192, 0, 2, 1)));
    }
}
