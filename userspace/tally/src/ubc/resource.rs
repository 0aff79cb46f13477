//! The rows of the OpenVZ table, in kernel order, dummies included so that indices match
//! /proc/user_beancounters and the BPF maps (tally_common::RESOURCE_COUNT).

use tally_common::RESOURCE_COUNT;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    KmemSize,
    LockedPages,
    PrivVmPages,
    ShmPages,
    Dummy4,
    NumProc,
    PhysPages,
    VmGuarPages,
    OomGuarPages,
    NumTcpSock,
    NumFlock,
    NumPty,
    NumSigInfo,
    TcpSndBuf,
    TcpRcvBuf,
    OtherSockBuf,
    DgramRcvBuf,
    NumOtherSock,
    DcacheSize,
    NumFile,
    Dummy20,
    Dummy21,
    Dummy22,
    NumIptEnt,
    SwapPages,
}

/// What a row counts in; decides which suffixes its values accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Pages,
    Items,
}

impl Resource {
    pub const ALL: [Resource; RESOURCE_COUNT] = [
        Resource::KmemSize,
        Resource::LockedPages,
        Resource::PrivVmPages,
        Resource::ShmPages,
        Resource::Dummy4,
        Resource::NumProc,
        Resource::PhysPages,
        Resource::VmGuarPages,
        Resource::OomGuarPages,
        Resource::NumTcpSock,
        Resource::NumFlock,
        Resource::NumPty,
        Resource::NumSigInfo,
        Resource::TcpSndBuf,
        Resource::TcpRcvBuf,
        Resource::OtherSockBuf,
        Resource::DgramRcvBuf,
        Resource::NumOtherSock,
        Resource::DcacheSize,
        Resource::NumFile,
        Resource::Dummy20,
        Resource::Dummy21,
        Resource::Dummy22,
        Resource::NumIptEnt,
        Resource::SwapPages,
    ];

    /// Index in kernel order (and in the BPF maps' row arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name as /proc/user_beancounters and vzctl spell it.
    pub fn name(self) -> &'static str {
        match self {
            Resource::KmemSize => "kmemsize",
            Resource::LockedPages => "lockedpages",
            Resource::PrivVmPages => "privvmpages",
            Resource::ShmPages => "shmpages",
            Resource::Dummy4 | Resource::Dummy20 | Resource::Dummy21 | Resource::Dummy22 => "dummy",
            Resource::NumProc => "numproc",
            Resource::PhysPages => "physpages",
            Resource::VmGuarPages => "vmguarpages",
            Resource::OomGuarPages => "oomguarpages",
            Resource::NumTcpSock => "numtcpsock",
            Resource::NumFlock => "numflock",
            Resource::NumPty => "numpty",
            Resource::NumSigInfo => "numsiginfo",
            Resource::TcpSndBuf => "tcpsndbuf",
            Resource::TcpRcvBuf => "tcprcvbuf",
            Resource::OtherSockBuf => "othersockbuf",
            Resource::DgramRcvBuf => "dgramrcvbuf",
            Resource::NumOtherSock => "numothersock",
            Resource::DcacheSize => "dcachesize",
            Resource::NumFile => "numfile",
            Resource::NumIptEnt => "numiptent",
            Resource::SwapPages => "swappages",
        }
    }

    pub fn is_dummy(self) -> bool {
        self.name() == "dummy"
    }

    pub fn unit(self) -> Unit {
        match self {
            Resource::KmemSize
            | Resource::TcpSndBuf
            | Resource::TcpRcvBuf
            | Resource::OtherSockBuf
            | Resource::DgramRcvBuf
            | Resource::DcacheSize => Unit::Bytes,
            Resource::LockedPages
            | Resource::PrivVmPages
            | Resource::ShmPages
            | Resource::PhysPages
            | Resource::VmGuarPages
            | Resource::OomGuarPages
            | Resource::SwapPages => Unit::Pages,
            _ => Unit::Items,
        }
    }

    /// Looks a row up by its name (case-insensitive, as in `--numproc` or `NUMPROC=`);
    /// dummy rows cannot be named.
    pub fn from_name(name: &str) -> Option<Resource> {
        let lower = name.to_ascii_lowercase();
        Resource::ALL.into_iter().find(|r| !r.is_dummy() && r.name() == lower)
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_kernel_order_with_dummies() {
        for (i, r) in Resource::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(Resource::NumProc.index(), tally_common::res::NUMPROC);
        assert_eq!(Resource::NumFile.index(), tally_common::res::NUMFILE);
        assert_eq!(Resource::NumFlock.index(), tally_common::res::NUMFLOCK);
        assert_eq!(Resource::NumPty.index(), tally_common::res::NUMPTY);
        assert_eq!(Resource::NumTcpSock.index(), tally_common::res::NUMTCPSOCK);
        assert_eq!(Resource::NumOtherSock.index(), tally_common::res::NUMOTHERSOCK);
        let dummies: Vec<usize> = Resource::ALL
            .iter()
            .filter(|r| r.is_dummy())
            .map(|r| r.index())
            .collect();
        assert_eq!(dummies, vec![4, 20, 21, 22]);
    }

    #[test]
    fn names_round_trip_and_dummies_cannot_be_named() {
        for r in Resource::ALL.iter().filter(|r| !r.is_dummy()) {
            assert_eq!(Resource::from_name(r.name()), Some(*r));
            assert_eq!(Resource::from_name(&r.name().to_uppercase()), Some(*r));
        }
        assert_eq!(Resource::from_name("dummy"), None);
        assert_eq!(Resource::from_name("numfiles"), None);
    }
}
