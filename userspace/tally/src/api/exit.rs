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
            ExitCode::PermissionDenied => 12,
            ExitCode::NoSuchContainer => 14,
            ExitCode::BadArgument => 20,
            ExitCode::BadValue => 21,
            ExitCode::DaemonUnreachable => 75,
            ExitCode::ConfigSaveFailed => 139,
        }
    }

    /// The HTTP status tallyd answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ExitCode::NoSuchContainer => 404,
            ExitCode::ResourceShortage => 409,
            ExitCode::BadArgument | ExitCode::BadValue => 400,
            ExitCode::PermissionDenied => 403,
            _ => 500,
        }
    }
}
