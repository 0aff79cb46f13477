//! The exit-code catalogue, modelled on vzctl's numbers where vzctl has one. tallyd puts the
//! code in every error body; the CLI exits with it. Documented in docs/exit-codes.md.

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCode {
    /// 1: a beancounter parameter could not be set (vzctl: "failed to set a UBC parameter").
    SetUbcFailed,
    /// 3: a system call or kernel operation failed.
    SystemError,
    /// 5: this kernel cannot run tally (vzctl: "kernel lacks support").
    KernelUnsupported,
    /// 6: a container's beancounter is at its barrier (vzctl: "not enough system resources").
    ResourceShortage,
    /// 7: the container could not be started (vzctl: "unable to start").
    StartFailed,
    /// 9: another operation on the container is under way (vzctl: "container is locked").
    Locked,
    /// 12: not root.
    PermissionDenied,
    /// 14: no such container (vzctl: "container config file does not exist").
    NoSuchContainer,
    /// 20: invalid command line or request.
    BadArgument,
    /// 21: invalid value (a limit, a container id).
    BadValue,
    /// 75: tallyd is not running or not reachable on its socket.
    DaemonUnreachable,
    /// 31: the container is not running (vzctl's number).
    NotRunning,
    /// 32: the container is running (vzctl's number).
    Running,
    /// 33: the container could not be stopped (vzctl's number).
    StopFailed,
    /// 34: an address is in use by another container (vzctl: "unable to add IP").
    AddressInUse,
    /// 41: the container's root is mounted (vzctl's number).
    Mounted,
    /// 44: a container with this id already exists (vzctl: "private area already exists").
    Exists,
    /// 47: no such OS template (vzctl: "bad template").
    NoTemplate,
    /// 139: the container's config could not be saved (vzctl's number).
    ConfigSaveFailed,
}

impl ExitCode {
    pub fn number(self) -> i32 {
        match self {
            ExitCode::SetUbcFailed => 1,
            ExitCode::SystemError => 3,
            ExitCode::KernelUnsupported => 5,
            ExitCode::ResourceShortage => 6,
            ExitCode::StartFailed => 7,
            ExitCode::Locked => 9,
            ExitCode::PermissionDenied => 12,
            ExitCode::NoSuchContainer => 14,
            ExitCode::BadArgument => 20,
            ExitCode::BadValue => 21,
            ExitCode::NotRunning => 31,
            ExitCode::Running => 32,
            ExitCode::StopFailed => 33,
            ExitCode::AddressInUse => 34,
            ExitCode::Mounted => 41,
            ExitCode::Exists => 44,
            ExitCode::NoTemplate => 47,
            ExitCode::DaemonUnreachable => 75,
            ExitCode::ConfigSaveFailed => 139,
        }
    }

    /// The HTTP status tallyd answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ExitCode::NoSuchContainer => 404,
            ExitCode::ResourceShortage
            | ExitCode::Locked
            | ExitCode::NotRunning
            | ExitCode::Running
            | ExitCode::Mounted
            | ExitCode::Exists
            | ExitCode::AddressInUse => 409,
            ExitCode::NoTemplate => 404,
            ExitCode::BadArgument | ExitCode::BadValue => 400,
            ExitCode::PermissionDenied => 403,
            _ => 500,
        }
    }
}
