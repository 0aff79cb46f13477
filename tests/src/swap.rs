//! A swap device for tests that need one, removed again when dropped (also when the test
//! fails): the host's own swap when it has some; else a zram device where the kernel has zram
//! (the VMs load the module), else a swap file `tally-itest-swap-PID` on /var/tmp (ext4 on
//! the host). The swap header is written here (mkswap's format, version 1) and swapon(2)
//! turns it on: no mkswap or swapon binary is needed.

use std::{
    ffi::CString,
    io::Write,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

pub enum Swap {
    /// The host's own swap: nothing to undo.
    Existing,
    Zram(PathBuf),
    File(PathBuf),
}

const SIZE: u64 = 64 << 20;

impl Swap {
    /// A swap device of at least 64 MiB, or why there can be none here.
    pub fn enable() -> Result<Swap> {
        let swaps = std::fs::read_to_string("/proc/swaps").context("no /proc/swaps: no swap in this kernel")?;
        if swaps.lines().count() > 1 {
            return Ok(Swap::Existing);
        }
        if Path::new("/sys/block/zram0").exists() {
            let dev = PathBuf::from("/dev/zram0");
            std::fs::write("/sys/block/zram0/disksize", SIZE.to_string()).context("sizing zram0")?;
            let swap = Swap::Zram(dev.clone());
            write_header(&dev)?;
            swap_on(&dev)?;
            return Ok(swap);
        }
        let file = PathBuf::from(format!("/var/tmp/tally-itest-swap-{}", std::process::id()));
        let swap = Swap::File(file.clone());
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("creating {}", file.display()))?;
            // Written out, not sparse: swapon refuses files with holes.
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..(SIZE >> 20) {
                f.write_all(&zeros)?;
            }
            f.sync_all()?;
        }
        write_header(&file)?;
        swap_on(&file)?;
        Ok(swap)
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        let (Swap::Zram(path) | Swap::File(path)) = self else {
            return;
        };
        if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
            // SAFETY: swapoff(2) with a NUL-terminated path.
            unsafe { libc::swapoff(c.as_ptr()) };
        }
        match self {
            Swap::Zram(_) => {
                let _ = std::fs::write("/sys/block/zram0/reset", "1");
            }
            Swap::File(file) => {
                let _ = std::fs::remove_file(file);
            }
            Swap::Existing => {}
        }
    }
}

/// mkswap's version-1 header in the first page: version, last page, no bad pages, and the
/// "SWAPSPACE2" signature at the page's end.
fn write_header(path: &Path) -> Result<()> {
    let page = tally::ubc::page_size() as usize;
    let mut header = vec![0u8; page];
    header[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    let last_page = (SIZE / page as u64 - 1) as u32;
    header[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    header[page - 10..].copy_from_slice(b"SWAPSPACE2");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(&header)?;
    f.sync_all()?;
    Ok(())
}

fn swap_on(path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: swapon(2) with a NUL-terminated path and no flags.
    if unsafe { libc::swapon(c.as_ptr(), 0) } != 0 {
        bail!("swapon {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}
