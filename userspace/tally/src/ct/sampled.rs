//! Rows sampled from the container's processes when they are read, because no hook can
//! count them as they change: privvmpages from each process's private memory, and the four
//! socket-buffer rows from the kernel's own per-socket memory figures (sock_diag), summed over
//! the sockets the container's processes hold.
//!
//! The socket-buffer rows, as OpenVZ split them:
//! - tcpsndbuf: TCP send queues (`sk_wmem_queued`);
//! - tcprcvbuf: TCP receive queues (`sk_rmem_alloc`);
//! - othersockbuf: what other sockets have sent and not yet had freed (`sk_wmem_alloc`: UDP
//!   datagrams in flight, unix data queued at the peer, which the kernel charges to the sender);
//! - dgramrcvbuf: other sockets' receive queues (`sk_rmem_alloc`: unread UDP datagrams).
//!
//! Sockets are found through the processes' descriptors (`socket:[INODE]`) and looked up in
//! each network namespace those processes are in, so a container that shares the host's
//! namespace is counted as well as one with its own.
//!
//! numiptent: the netfilter entries of the container's own network namespaces (never the
//! host's, which a container without a namespace of its own only shares): nftables rules,
//! counted through an nfnetlink dump, plus the entries of each legacy iptables table
//! (`IPT_SO_GET_INFO`'s count, built-in policies included, as OpenVZ charged whole tables).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, TCP_LISTEN},
    inet::{nlas::Nla as InetNla, ExtensionFlags, InetRequest, SocketId, StateFlags},
    unix::{nlas::Nla as UnixNla, ShowFlags, StateFlags as UnixStateFlags, UnixRequest},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use crate::ubc::page_size;

/// The four socket-buffer rows, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    pub tcp_send: u64,
    pub tcp_receive: u64,
    pub other_send: u64,
    pub datagram_receive: u64,
}

/// privvmpages, as the kernel accounts private memory per process: private writable mappings
/// (VmData) and stacks (VmStk) of every process in the container, in pages. Not refused
/// (vm_enough_memory, the hook that could, is closed to BPF on these kernels).
pub fn private_vm_pages(pids: &[u32]) -> u64 {
    let kib: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .map(|status| {
            status
                .lines()
                .filter_map(|l| {
                    let (key, rest) = l.split_once(':')?;
                    matches!(key, "VmData" | "VmStk")
                        .then(|| rest.split_whitespace().next()?.parse::<u64>().ok())
                        .flatten()
                })
                .sum::<u64>()
        })
        .sum();
    kib * 1024 / page_size()
}

/// numsiginfo of a container with a user namespace of its own: the signals queued to its
/// processes and not yet taken. The kernel counts them per user of a user namespace (the
/// ucounts behind RLIMIT_SIGPENDING, charged to the receiving task, shown as SigQ in
/// /proc/PID/status), so the container's count is the sum over the users of its own user
/// namespace. A namespace nested inside the container charges its signals up to the
/// container's namespace too, so only the container's own (the one whose parent is the host's)
/// is summed. None when no process has a user namespace below the host's (a privileged
/// container shares the host's per-user counts: its row is not kept).
pub fn pending_signals(pids: &[u32]) -> Option<u64> {
    use std::collections::hash_map::Entry;
    let host = std::fs::metadata("/proc/self/ns/user").ok()?.ino();
    // userns inode -> whether its parent is the host's; (userns, uid) -> pending count.
    let mut top: HashMap<u64, bool> = HashMap::new();
    let mut counts: HashMap<(u64, u32), u64> = HashMap::new();
    for &pid in pids {
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/user")).map(|m| m.ino()) else {
            continue;
        };
        if ns == host {
            continue;
        }
        let is_top = match top.entry(ns) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => *e.insert(parent_userns(pid) == Some(host)),
        };
        if !is_top {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| {
                    rest.split(|c: char| c.is_whitespace() || c == '/')
                        .find(|w| !w.is_empty())
                })
                .and_then(|w| w.parse::<u64>().ok())
        };
        if let (Some(uid), Some(queued)) = (field("Uid:"), field("SigQ:")) {
            counts.insert((ns, uid as u32), queued);
        }
    }
    top.values().any(|&t| t).then(|| counts.values().sum())
}

/// The inode of the parent of `pid`'s user namespace (NS_GET_PARENT).
fn parent_userns(pid: u32) -> Option<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const NS_GET_PARENT: libc::c_ulong = 0xb702; // _IO(0xb7, 0x2)
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).ok()?;
    // SAFETY: the ioctl takes no argument and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor the ioctl handed to us alone.
    let parent = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    parent.metadata().ok().map(|m| m.ino())
}

/// The socket buffers of the sockets `pids` hold. Processes that exit while this runs, and
/// namespaces that cannot be entered, are left out rather than failing the whole read.
pub fn socket_buffers(pids: &[u32]) -> SocketBuffers {
    // Socket inodes per network namespace (keyed by the namespace's inode), with one pid
    // whose /proc/PID/ns/net leads into it.
    let mut by_netns: HashMap<u64, (u32, HashSet<u32>)> = HashMap::new();
    for &pid in pids {
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let inodes: HashSet<u32> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|target| socket_inode(&target.to_string_lossy()))
            .collect();
        if !inodes.is_empty() {
            by_netns
                .entry(ns.ino())
                .or_insert_with(|| (pid, HashSet::new()))
                .1
                .extend(inodes);
        }
    }
    let own_netns = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    let mut total = SocketBuffers::default();
    for (ns, (pid, inodes)) in by_netns {
        let sum = if Some(ns) == own_netns {
            sum_in_current_netns(&inodes)
        } else {
            in_netns_of(pid, move || sum_in_current_netns(&inodes))
        };
        match sum {
            Ok(s) => {
                total.tcp_send += s.tcp_send;
                total.tcp_receive += s.tcp_receive;
                total.other_send += s.other_send;
                total.datagram_receive += s.datagram_receive;
            }
            Err(e) => log::debug!("socket buffers in netns {ns} (pid {pid}): {e}"),
        }
    }
    total
}

/// Netfilter entries in the network namespaces of `pids` other than tallyd's own.
pub fn netfilter_entries(pids: &[u32]) -> u64 {
    let own_netns = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    let mut seen = HashSet::new();
    let mut total = 0;
    for &pid in pids {
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if Some(ns.ino()) == own_netns || !seen.insert(ns.ino()) {
            continue;
        }
        match in_netns_of(pid, || Ok(nftables_rules()? + legacy_iptables_entries())) {
            Ok(n) => total += n,
            Err(e) => log::debug!("netfilter entries in netns {} (pid {pid}): {e}", ns.ino()),
        }
    }
    total
}

/// nftables rules in this thread's network namespace: the answers to one NFT_MSG_GETRULE dump
/// over every family. No table (or no nf_tables at all) is zero rules.
fn nftables_rules() -> std::io::Result<u64> {
    const NETLINK_NETFILTER: isize = 12;
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_NEWRULE: u16 = 6;
    const NFT_MSG_GETRULE: u16 = 7;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    // nlmsghdr (len, type, flags, seq, pid) + nfgenmsg (family AF_UNSPEC, version 0, res_id 0).
    let mut request = Vec::with_capacity(20);
    request.extend_from_slice(&20u32.to_ne_bytes());
    request.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE).to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[0, 0, 0, 0]);
    socket.send(&request, 0)?;
    let mut rules = 0;
    let mut receive = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let mut offset = 0;
        while offset + 16 <= size {
            let field = |at: usize, n: usize| &receive[offset + at..offset + at + n];
            let len = u32::from_ne_bytes(field(0, 4).try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(field(4, 2).try_into().expect("2 bytes"));
            match kind {
                NLMSG_DONE => return Ok(rules),
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(field(16, 4).try_into().expect("4 bytes"));
                    // No nf_tables in this kernel, or nothing to dump: no rules.
                    return match -errno {
                        0 => Ok(rules),
                        libc::EPROTONOSUPPORT | libc::ENOENT | libc::EAFNOSUPPORT => Ok(0),
                        e => Err(std::io::Error::from_raw_os_error(e)),
                    };
                }
                k if k == (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE) => rules += 1,
                _ => {}
            }
            if len < 16 {
                break;
            }
            offset += (len + 3) & !3;
        }
    }
}

/// The entries of each legacy iptables table (IPv4 and IPv6) in this thread's network
/// namespace; tables that are not loaded there count nothing.
fn legacy_iptables_entries() -> u64 {
    // struct ipt_getinfo / ip6t_getinfo: name[32], valid_hooks, hook_entry[5], underflow[5],
    // num_entries, size.
    #[repr(C)]
    struct GetInfo {
        name: [u8; 32],
        valid_hooks: u32,
        hook_entry: [u32; 5],
        underflow: [u32; 5],
        num_entries: u32,
        size: u32,
    }
    const SO_GET_INFO: libc::c_int = 64; // IPT_SO_GET_INFO and IP6T_SO_GET_INFO
    let mut total = 0;
    for (names, family, level) in [
        ("/proc/thread-self/net/ip_tables_names", libc::AF_INET, libc::IPPROTO_IP),
        (
            "/proc/thread-self/net/ip6_tables_names",
            libc::AF_INET6,
            libc::IPPROTO_IPV6,
        ),
    ] {
        let Ok(tables) = std::fs::read_to_string(names) else {
            continue;
        };
        // SAFETY: socket(2) with constant arguments; the fd is owned at once.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            continue;
        }
        // SAFETY: fd is a fresh socket nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        for table in tables.split_whitespace().filter(|t| t.len() < 32) {
            let mut info = GetInfo {
                name: [0; 32],
                valid_hooks: 0,
                hook_entry: [0; 5],
                underflow: [0; 5],
                num_entries: 0,
                size: 0,
            };
            info.name[..table.len()].copy_from_slice(table.as_bytes());
            let mut len = std::mem::size_of::<GetInfo>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `info`, a GetInfo that lives
            // across the call; fd is open.
            let r = unsafe {
                libc::getsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    level,
                    SO_GET_INFO,
                    (&mut info as *mut GetInfo).cast(),
                    &mut len,
                )
            };
            if r == 0 {
                total += u64::from(info.num_entries);
            }
        }
    }
    total
}

/// Runs `f` in the network namespace of `pid`, on a thread of its own (setns moves only the
/// calling thread, and tallyd's own threads stay where they are).
fn in_netns_of<T: Send + 'static>(
    pid: u32,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    std::thread::spawn(move || {
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
}

/// "socket:[12345]" → 12345.
fn socket_inode(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Sums the buffers of the sockets in `inodes` that this thread's network namespace has.
fn sum_in_current_netns(inodes: &HashSet<u32>) -> std::io::Result<SocketBuffers> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut sum = SocketBuffers::default();
    for family in [AF_INET, AF_INET6] {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            let request = SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol,
                extensions: ExtensionFlags::SKMEMINFO,
                states: StateFlags::all(),
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            });
            dump(&socket, request, |msg| {
                let SockDiagMessage::InetResponse(r) = msg else {
                    return;
                };
                if !inodes.contains(&r.header.inode) {
                    return;
                }
                for nla in &r.nlas {
                    if let InetNla::MemInfo(m) = nla {
                        if protocol == IPPROTO_TCP {
                            sum.tcp_send += u64::from(m.send_queue);
                            sum.tcp_receive += u64::from(m.receive_queue);
                        } else {
                            sum.other_send += u64::from(m.bottom_send_queues);
                            sum.datagram_receive += u64::from(m.receive_queue);
                        }
                    }
                }
            })?;
        }
    }
    let request = SockDiagMessage::UnixRequest(UnixRequest {
        state_flags: UnixStateFlags::all(),
        inode: 0,
        // UNIX_DIAG_RQLEN's second figure is the sender's sk_wmem_alloc, which is what unix
        // data queued at the peer is charged to (this crate's UNIX_DIAG_MEMINFO leaves that
        // slot out).
        show_flags: ShowFlags::RQLEN,
        cookie: [0xff; 8],
    });
    dump(&socket, request, |msg| {
        let SockDiagMessage::UnixResponse(r) = msg else {
            return;
        };
        // A listener's figures are its backlog, not memory.
        if !inodes.contains(&r.header.inode) || r.header.state == TCP_LISTEN {
            return;
        }
        for nla in &r.nlas {
            if let UnixNla::ReceiveQueueLength(_, write_queue) = nla {
                sum.other_send += u64::from(*write_queue);
            }
        }
    })?;
    Ok(sum)
}

/// Sends one dump request and hands each answer to `each` until the kernel says done.
fn dump(socket: &Socket, request: SockDiagMessage, mut each: impl FnMut(SockDiagMessage)) -> std::io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(header, request.into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut receive = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&receive[offset..size])
                .map_err(|e| std::io::Error::other(format!("sock_diag answer: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => each(m),
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(e.code.map_or_else(
                        || std::io::Error::other("sock_diag error"),
                        |c| std::io::Error::from_raw_os_error(-c.get()),
                    ))
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_give_their_inode() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    /// Real sockets of this process, in its own namespace: unread UDP datagrams show as
    /// dgramrcvbuf, unread TCP data over loopback as tcprcvbuf.
    #[test]
    fn unread_data_shows_in_the_rows() {
        use std::io::Write;
        let udp_rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..8 {
            udp_tx.send_to(&[7u8; 1000], udp_rx.local_addr().unwrap()).unwrap();
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        client.write_all(&[1u8; 20_000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let b = socket_buffers(&[std::process::id()]);
        assert!(b.datagram_receive >= 8000, "{b:?}");
        assert!(b.tcp_receive >= 20_000, "{b:?}");
    }
}
