//! The "VM" test tier: boot stock Debian kernels in qemu and run test binaries inside.
//!
//! Why this shape:
//! * The tier has to prove that BPF LSM and a pure cgroup2 hierarchy work on the kernels people
//!   actually run, so it uses Debian's own cloud images (downloaded with apt, never built here).
//! * The guest has no disk: everything (static busybox, the test binaries, their shared
//!   libraries, kernel modules, and a shell `/init`) goes into a newc initramfs that we write
//!   ourselves, so building it needs neither root nor loop devices.
//! * The only channel out of the guest is the serial console. `/init` frames the payload's output
//!   with marker lines so it can be cut out of the kernel's own chatter afterwards.

use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A Debian kernel extracted into the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// "debian-6.1" or "debian-6.12".
    pub name: String,
    /// What `uname -r` prints inside the guest.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// The kernel's /boot/config-* file.
    pub config: PathBuf,
    /// The extracted lib/modules/<release> directory.
    pub modules_dir: PathBuf,
}

/// What to put into the guest and run there.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// Host file -> absolute path inside the guest. Dynamically linked ELF binaries also get
    /// their shared libraries and the dynamic loader, at the same paths as on the host.
    pub files: Vec<(PathBuf, String)>,
    /// Kernel modules to load before the command (e.g. "veth"), dependencies included.
    /// Modules built into the kernel are silently skipped.
    pub modules: Vec<String>,
    /// Run by busybox `/bin/sh`, cwd "/", environment PATH=/bin:/sbin:/usr/bin:/usr/sbin and
    /// HOME=/, stdin /dev/null, stdout and stderr on the serial console.
    pub command: String,
}

/// How a boot went.
#[derive(Debug, Clone)]
pub struct BootResult {
    /// "kvm" or "tcg".
    pub accel: String,
    /// The command's exit status; None if the guest died (e.g. a kernel panic) before reporting it.
    pub exit_code: Option<i32>,
    /// What the command printed (carriage returns removed).
    pub output: String,
    /// The full serial console log.
    pub console_log: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// One kernel to fetch: the suites that carry it and the release prefix it must have.
struct KernelSpec {
    name: &'static str,
    release_prefix: &'static str,
    /// (archive, suite) pairs; the security suite is included because that is where Debian
    /// publishes kernel updates between point releases, i.e. where the newest image lives.
    suites: &'static [(&'static str, &'static str)],
}

const KERNEL_SPECS: &[KernelSpec] = &[
    KernelSpec {
        name: "debian-6.1",
        release_prefix: "6.1.",
        suites: &[
            ("debian", "bookworm"),
            ("debian", "bookworm-updates"),
            ("debian-security", "bookworm-security"),
        ],
    },
    KernelSpec {
        name: "debian-6.12",
        release_prefix: "6.12.",
        suites: &[
            ("debian", "trixie"),
            ("debian", "trixie-updates"),
            ("debian-security", "trixie-security"),
        ],
    },
];

/// The metapackage that always depends on the suite's current cloud image, so no ABI number
/// (like 6.1.0-56) has to be written down anywhere.
const CLOUD_METAPACKAGE: &str = "linux-image-cloud-amd64";
const DEBIAN_MIRROR: &str = "http://deb.debian.org";
const ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Written last when a kernel is fully extracted; its presence is what makes later calls
/// offline. It records the package and version that were downloaded.
const EXTRACTED_STAMP: &str = "tally-extracted";

/// Downloads (once) and extracts Debian's newest bookworm 6.1 and trixie 6.12 cloud kernels
/// under `cache_dir`. Later calls only look at the cache. Delete a kernel's directory (or the
/// whole cache) to pick up a newer Debian kernel.
pub fn ensure_kernels(cache_dir: &Path) -> Result<Vec<Kernel>> {
    fs::create_dir_all(cache_dir).with_context(|| format!("creating the kernel cache {}", cache_dir.display()))?;
    // Parallel xtask runs sharing a target dir must not download into the same place at once.
    let lock = File::create(cache_dir.join("tally-vm.lock"))?;
    lock.lock().context("locking the kernel cache")?;
    KERNEL_SPECS.iter().map(|spec| ensure_kernel(cache_dir, spec)).collect()
}

fn ensure_kernel(cache_dir: &Path, spec: &KernelSpec) -> Result<Kernel> {
    let dir = cache_dir.join(spec.name);
    if !dir.join(EXTRACTED_STAMP).exists() {
        fetch_kernel(&dir, spec)
            .with_context(|| format!("fetching the {} kernel into {}", spec.name, dir.display()))?;
    }
    kernel_from_dir(spec, &dir)
}

fn fetch_kernel(dir: &Path, spec: &KernelSpec) -> Result<()> {
    // Without the stamp whatever is there is the leftover of an interrupted run.
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    let apt = PrivateApt::create(&dir.join("apt"), spec.suites)?;
    apt.update()?;
    let package = apt.image_package()?;
    let version = apt.candidate_version(&package)?;
    let download_dir = dir.join("download");
    fs::create_dir_all(&download_dir)?;
    apt.download(&package, &download_dir)?;
    let deb = download_dir.join(format!("{package}_{}_amd64.deb", version.replace(':', "%3a")));
    ensure!(deb.is_file(), "apt-get download did not produce {}", deb.display());
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.join("root")))?;
    fs::write(dir.join(EXTRACTED_STAMP), format!("{package} {version}\n"))?;
    Ok(())
}

/// Finds the vmlinuz, config and modules of an extracted image. Bookworm ships modules under
/// lib/modules, trixie (merged /usr) under usr/lib/modules.
fn kernel_from_dir(spec: &KernelSpec, dir: &Path) -> Result<Kernel> {
    let root = dir.join("root");
    let boot = root.join("boot");
    let releases: Vec<String> = fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(|entry| {
            entry
                .ok()?
                .file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(String::from)
        })
        .collect();
    let [release] = releases.as_slice() else {
        bail!(
            "expected exactly one vmlinuz-* in {}, found {releases:?}",
            boot.display()
        );
    };
    ensure!(
        release.starts_with(spec.release_prefix),
        "{}: Debian now ships kernel {release}, expected {}*; update KERNEL_SPECS",
        spec.name,
        spec.release_prefix
    );
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|base| root.join(base).join(release))
        .find(|path| path.is_dir())
        .with_context(|| format!("no modules directory for {release} under {}", root.display()))?;
    Ok(Kernel {
        name: spec.name.to_string(),
        release: release.clone(),
        vmlinuz: boot.join(format!("vmlinuz-{release}")),
        config: boot.join(format!("config-{release}")),
        modules_dir,
    })
}

/// apt pointed at its own sources list, lists and cache so that the host's /etc/apt and
/// /var/lib/apt are never touched, while the host's keyring still verifies the signatures.
struct PrivateApt {
    root: PathBuf,
}

impl PrivateApt {
    fn create(root: &Path, suites: &[(&str, &str)]) -> Result<Self> {
        fs::create_dir_all(root.join("lists/partial"))?;
        fs::create_dir_all(root.join("cache/archives/partial"))?;
        let sources: String = suites
            .iter()
            .map(|(archive, suite)| {
                format!("deb [signed-by={ARCHIVE_KEYRING}] {DEBIAN_MIRROR}/{archive} {suite} main\n")
            })
            .collect();
        fs::write(root.join("sources.list"), sources)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn command(&self, tool: &str) -> Command {
        let options = [
            format!("Dir::Etc::sourcelist={}", self.root.join("sources.list").display()),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={}", self.root.join("lists").display()),
            format!("Dir::Cache={}", self.root.join("cache").display()),
            // AppStream metadata and translations are megabytes that nothing here reads.
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_string(),
            "Acquire::Languages=none".to_string(),
            // apt's unprivileged _apt user usually cannot write into a workspace's target dir;
            // apt would fall back to root anyway, but with a warning on every download.
            "APT::Sandbox::User=root".to_string(),
        ];
        let mut cmd = Command::new(tool);
        cmd.arg("-q");
        for option in options {
            cmd.arg("-o").arg(option);
        }
        cmd
    }

    /// apt-get update exits 0 on some fetch and signature problems (it only warns and keeps
    /// going), so any W:/E: line counts as failure: a kernel from a half-read index is worse
    /// than a loud error.
    fn update(&self) -> Result<()> {
        let output = run(self.command("apt-get").arg("update"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("W:") || l.starts_with("E:"))
            .collect();
        ensure!(
            problems.is_empty(),
            "apt-get update against {} reported problems (network or signature?):\n{}",
            self.root.join("sources.list").display(),
            problems.join("\n")
        );
        Ok(())
    }

    /// The image package the metapackage's candidate version points at, e.g.
    /// linux-image-6.1.0-56-cloud-amd64.
    fn image_package(&self) -> Result<String> {
        let stanza = self.show(CLOUD_METAPACKAGE)?;
        let depends =
            control_field(&stanza, "Depends").with_context(|| format!("{CLOUD_METAPACKAGE} has no Depends field"))?;
        depends
            .split(',')
            .filter_map(|dep| dep.split_whitespace().next())
            .find(|name| name.starts_with("linux-image-"))
            .map(String::from)
            .with_context(|| format!("{CLOUD_METAPACKAGE} depends on no linux-image-*: {depends}"))
    }

    fn candidate_version(&self, package: &str) -> Result<String> {
        let stanza = self.show(package)?;
        control_field(&stanza, "Version").with_context(|| format!("{package} has no Version"))
    }

    fn show(&self, package: &str) -> Result<String> {
        let output = run(self.command("apt-cache").args(["show", "--no-all-versions", package]))
            .with_context(|| format!("{package} is not in the suites of {}", self.root.display()))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn download(&self, package: &str, into: &Path) -> Result<()> {
        run(self.command("apt-get").args(["download", package]).current_dir(into))
            .with_context(|| format!("downloading {package}"))?;
        Ok(())
    }
}

/// The value of a (single-line) field of a Debian control stanza.
fn control_field(stanza: &str, field: &str) -> Option<String> {
    stanza
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// Initramfs
// ---------------------------------------------------------------------------------------------

/// busybox-static's binary. It must be static: /init and the applets run before (and apart
/// from) whatever libraries the payload brings.
const BUSYBOX: &str = "/bin/busybox";
const GUEST_PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin";
const GUEST_COMMAND_FILE: &str = "/tally/command";
const BEGIN_MARKER: &str = "TALLY-VM-BEGIN";
const EXIT_MARKER: &str = "TALLY-VM-EXIT";
/// Exit code reported when a requested module does not load (the command is not run then).
const MODULE_LOAD_FAILED: i32 = 125;

/// Writes an uncompressed newc initramfs to `out`. Uncompressed because the kernel unpacks it
/// fastest that way and we need no compressor; the cost is only host disk and guest memory
/// (the archive and its unpacked copy coexist during boot, so size `mem_mb` accordingly).
pub fn build_initramfs(kernel: &Kernel, payload: &Payload, out: &Path) -> Result<()> {
    let mut tree = Tree::default();
    add_base_system(&mut tree)?;
    for (host, guest) in &payload.files {
        add_payload_file(&mut tree, host, guest).with_context(|| format!("adding {} as {guest}", host.display()))?;
    }
    let modules = resolve_modules(kernel, &payload.modules)?;
    let mut module_paths = Vec::new();
    for module in modules {
        tree.insert(&module.guest_path, Node::file(Data::Bytes(module.bytes), 0o644))?;
        module_paths.push(module.guest_path);
    }
    tree.insert(
        GUEST_COMMAND_FILE,
        Node::file(Data::Bytes(payload.command.clone().into_bytes()), 0o644),
    )?;
    tree.insert(
        "/init",
        Node::file(Data::Bytes(init_script(&module_paths).into_bytes()), 0o755),
    )?;
    write_cpio(&tree, out).with_context(|| format!("writing initramfs {}", out.display()))
}

/// busybox with all its applets, the device nodes the kernel needs before devtmpfs is mounted
/// (it opens /dev/console for /init), mount points, and just enough /etc for libc lookups of
/// root and localhost.
fn add_base_system(tree: &mut Tree) -> Result<()> {
    let busybox = Path::new(BUSYBOX);
    ensure!(
        shared_libraries(busybox)?.is_empty(),
        "{BUSYBOX} is dynamically linked; install busybox-static"
    );
    tree.insert(BUSYBOX, Node::file(Data::Host(busybox.to_path_buf()), 0o755))?;
    let applets = run(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if format!("/{applet}") != BUSYBOX {
            tree.insert(applet, Node::Symlink(BUSYBOX.to_string()))?;
        }
    }
    tree.insert("/dev/console", Node::CharDevice { major: 5, minor: 1 })?;
    tree.insert("/dev/null", Node::CharDevice { major: 1, minor: 3 })?;
    for dir in ["/proc", "/sys", "/tmp", "/run", "/root", "/mnt"] {
        tree.insert(dir, Node::Dir)?;
    }
    let etc: [(&str, &str); 3] = [
        ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("/etc/group", "root:x:0:\n"),
        ("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
    ];
    for (path, text) in etc {
        tree.insert(path, Node::file(Data::Bytes(text.as_bytes().to_vec()), 0o644))?;
    }
    Ok(())
}

/// Adds a host file plus, for a dynamic ELF, its libraries at their host paths: the guest's
/// loader has no ld.so.cache but searches Debian's multiarch directories by default, which is
/// where ldd finds system libraries. (Libraries found only through RPATH/LD_LIBRARY_PATH
/// elsewhere would need the same path inside the guest, which this gives them too.)
fn add_payload_file(tree: &mut Tree, host: &Path, guest: &str) -> Result<()> {
    ensure!(guest.starts_with('/'), "guest path {guest:?} is not absolute");
    // Keep the permission bits so executables stay executable in the guest.
    let mode = fs::metadata(host)?.permissions().mode() & 0o7777;
    tree.insert(guest, Node::file(Data::Host(host.to_path_buf()), mode))?;
    for lib in shared_libraries(host)? {
        let guest_lib = lib.to_str().context("non-UTF-8 library path")?.to_string();
        tree.insert(&guest_lib, Node::file(Data::Host(lib), 0o755))?;
    }
    Ok(())
}

/// The shared libraries and loader a file needs, per ldd; empty for anything that is not a
/// dynamically linked ELF (scripts, data, static and static-pie binaries). ldd is only asked
/// about files with a PT_INTERP header because it fails on everything else.
fn shared_libraries(path: &Path) -> Result<Vec<PathBuf>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if !Elf::parse(&bytes).is_some_and(|elf| elf.has_interpreter()) {
        return Ok(Vec::new());
    }
    let output = run(Command::new("ldd").arg(path))?;
    parse_ldd(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("resolving the libraries of {}", path.display()))
}

/// ldd lines look like `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)` or `linux-vdso.so.1 (0x...)` (no file: skipped).
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines() {
        ensure!(!line.contains("=> not found"), "missing library: {}", line.trim());
        let target = line.split("=>").last().unwrap_or_default().trim();
        let file = target.split(" (").next().unwrap_or_default();
        if file.starts_with('/') {
            libs.push(PathBuf::from(file));
        }
    }
    Ok(libs)
}

/// A decompressed module and where /init will insmod it from.
struct Module {
    guest_path: String,
    bytes: Vec<u8>,
}

/// The modules to load, dependencies first. Debian's image packages do not ship modules.dep
/// (postinst runs depmod on the installed system, and depmod is in kmod, which need not be on
/// the host), so dependencies come from where depmod itself reads them: each module's
/// `.modinfo` `depends=` entry.
fn resolve_modules(kernel: &Kernel, names: &[String]) -> Result<Vec<Module>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let index = ModuleIndex::load(&kernel.modules_dir)?;
    let mut visited = HashSet::new();
    let mut ordered = Vec::new();
    for name in names {
        index
            .visit(&module_key(name), kernel, &mut visited, &mut ordered)
            .with_context(|| format!("kernel module {name} for {}", kernel.release))?;
    }
    Ok(ordered)
}

/// Module names use '-' and '_' interchangeably (as modprobe does).
fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

struct ModuleIndex {
    /// Module key -> path relative to the modules dir, e.g. kernel/drivers/net/veth.ko.xz.
    files: HashMap<String, PathBuf>,
    builtin: HashSet<String>,
    modules_dir: PathBuf,
}

impl ModuleIndex {
    fn load(modules_dir: &Path) -> Result<Self> {
        let mut files = HashMap::new();
        walk_files(&modules_dir.join("kernel"), &mut |path| {
            if let Some(key) = module_key_of_file(path) {
                let relative = path.strip_prefix(modules_dir).unwrap_or(path).to_path_buf();
                files.insert(key, relative);
            }
        })?;
        let builtin_list = fs::read_to_string(modules_dir.join("modules.builtin"))
            .with_context(|| format!("reading modules.builtin in {}", modules_dir.display()))?;
        let builtin = builtin_list
            .lines()
            .filter_map(|l| module_key_of_file(Path::new(l)))
            .collect();
        Ok(Self {
            files,
            builtin,
            modules_dir: modules_dir.to_path_buf(),
        })
    }

    /// Depth-first, so every module lands after the modules it depends on.
    fn visit(
        &self,
        key: &str,
        kernel: &Kernel,
        visited: &mut HashSet<String>,
        ordered: &mut Vec<Module>,
    ) -> Result<()> {
        if !visited.insert(key.to_string()) || self.builtin.contains(key) {
            return Ok(());
        }
        let relative = self
            .files
            .get(key)
            .with_context(|| format!("no module {key} (neither loadable nor built in)"))?;
        let bytes = read_module(&self.modules_dir.join(relative))?;
        for dependency in modinfo_depends(&bytes)? {
            self.visit(&dependency, kernel, visited, ordered)?;
        }
        let uncompressed = strip_compression_suffix(relative.to_str().context("non-UTF-8 module path")?);
        ordered.push(Module {
            guest_path: format!("/lib/modules/{}/{uncompressed}", kernel.release),
            bytes,
        });
        Ok(())
    }
}

fn module_key_of_file(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let stem = strip_compression_suffix(name).strip_suffix(".ko")?;
    Some(module_key(stem))
}

fn strip_compression_suffix(name: &str) -> &str {
    name.strip_suffix(".xz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(name)
}

fn walk_files(dir: &Path, visit: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk_files(&entry.path(), visit)?;
        } else {
            visit(&entry.path());
        }
    }
    Ok(())
}

/// Busybox insmod hands the file straight to init_module(), and whether the kernel can
/// decompress modules itself depends on its config, so modules are decompressed here.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let decompressor = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    Ok(run(Command::new(decompressor).arg("-dc").arg(path))?.stdout)
}

fn modinfo_depends(module: &[u8]) -> Result<Vec<String>> {
    let modinfo = Elf::parse(module)
        .and_then(|elf| elf.section(".modinfo"))
        .context("module has no .modinfo section")?;
    let depends = modinfo
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"depends="))
        .unwrap_or_default();
    Ok(String::from_utf8_lossy(depends)
        .split(',')
        .filter(|d| !d.is_empty())
        .map(module_key)
        .collect())
}

/// Just enough of 64-bit little-endian ELF (x86_64) for two questions: does a binary need a
/// dynamic loader, and what is in a module's .modinfo. Any out-of-range offset reads as None.
struct Elf<'a>(&'a [u8]);

impl<'a> Elf<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let is_elf64_le = bytes.starts_with(b"\x7fELF") && bytes.get(4) == Some(&2) && bytes.get(5) == Some(&1);
        is_elf64_le.then_some(Self(bytes))
    }

    fn bytes<const N: usize>(&self, offset: u64) -> Option<[u8; N]> {
        let start = usize::try_from(offset).ok()?;
        self.0.get(start..start.checked_add(N)?)?.try_into().ok()
    }

    fn u16(&self, offset: u64) -> Option<u64> {
        self.bytes(offset).map(|b| u64::from(u16::from_le_bytes(b)))
    }

    fn u32(&self, offset: u64) -> Option<u64> {
        self.bytes(offset).map(|b| u64::from(u32::from_le_bytes(b)))
    }

    fn u64(&self, offset: u64) -> Option<u64> {
        self.bytes(offset).map(u64::from_le_bytes)
    }

    fn has_interpreter(&self) -> bool {
        const PT_INTERP: u64 = 3;
        let table = || -> Option<bool> {
            let (offset, size, count) = (self.u64(0x20)?, self.u16(0x36)?, self.u16(0x38)?);
            Some((0..count).any(|i| self.u32(offset + i * size) == Some(PT_INTERP)))
        };
        table().unwrap_or(false)
    }

    fn section(&self, wanted: &str) -> Option<&'a [u8]> {
        let (offset, size, count, names_index) = (self.u64(0x28)?, self.u16(0x3a)?, self.u16(0x3c)?, self.u16(0x3e)?);
        let header = |i: u64| offset + i * size;
        let names_offset = self.u64(header(names_index) + 0x18)?;
        (0..count).find_map(|i| {
            let name_start = usize::try_from(names_offset + self.u32(header(i))?).ok()?;
            let name = self.0.get(name_start..)?.split(|&b| b == 0).next()?;
            if name != wanted.as_bytes() {
                return None;
            }
            let start = usize::try_from(self.u64(header(i) + 0x18)?).ok()?;
            let len = usize::try_from(self.u64(header(i) + 0x20)?).ok()?;
            self.0.get(start..start.checked_add(len)?)
        })
    }
}

/// The guest's /init (busybox sh as PID 1).
///
/// Mount failures only warn: a kernel lacking, say, tracefs should still run tests that do
/// not need it, and the warning is in the console log. The BEGIN marker is printed before
/// modules are loaded on purpose: BEGIN means "the guest booted" (which is what the KVM probe
/// in `boot` waits for), and a module that fails to load shows up in the output, with exit
/// code 125, instead of looking like a broken hypervisor.
///
/// The command inherits no controlling terminal: PID 1 has none and /dev/console never
/// becomes one, so nothing gets SIGHUP when a session ends; stdin is /dev/null so nothing can
/// block reading a serial line nobody writes to.
fn init_script(module_paths: &[String]) -> String {
    let loads: String = module_paths.iter().map(|path| format!("load {path}\n")).collect();
    format!(
        r#"#!/bin/sh
export PATH={GUEST_PATH}
warn() {{ echo "tally-init: $*"; }}
# Leave the initramfs for a tmpfs, as a real system leaves it for its disk: pivot_root (which
# container starts use) refuses to move the initramfs's rootfs.
if [ "$$" = 1 ] && [ -z "$TALLY_SWITCHED" ]; then
  mkdir -p /tally-newroot && mount -t tmpfs -o mode=755 tally-root /tally-newroot && {{
    for f in /*; do [ "$f" = /tally-newroot ] || cp -a "$f" /tally-newroot/; done
    export TALLY_SWITCHED=1
    exec switch_root /tally-newroot /init
  }}
  warn "cannot leave the initramfs: containers will chroot instead of pivot_root"
fi
mnt() {{ mkdir -p "$3" && mount -t "$1" "$2" "$3" || warn "cannot mount $1 on $3"; }}
finish() {{ printf '\n{EXIT_MARKER} %d\n' "$1"; sync; poweroff -f; }}
load() {{ insmod "$1" || {{ warn "insmod $1 failed"; finish {MODULE_LOAD_FAILED}; }}; }}
mnt proc proc /proc
mnt sysfs sysfs /sys
mnt devtmpfs devtmpfs /dev
mnt devpts devpts /dev/pts
mnt tmpfs tmpfs /dev/shm
mnt securityfs securityfs /sys/kernel/security
mnt bpf bpffs /sys/fs/bpf
mnt tracefs tracefs /sys/kernel/tracing
mnt debugfs debugfs /sys/kernel/debug
mnt cgroup2 cgroup2 /sys/fs/cgroup
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || warn "cannot enable cgroup controller $c"
done
mnt tmpfs tmpfs /tmp
mnt tmpfs tmpfs /run
ip link set lo up || warn "cannot bring up lo"
echo {BEGIN_MARKER}
{loads}cd /
env -i HOME=/ PATH={GUEST_PATH} /bin/sh {GUEST_COMMAND_FILE} </dev/null >/dev/console 2>&1
finish $?
"#
    )
}

/// Files in the archive keyed by guest path without the leading '/'. A BTreeMap because a
/// parent's path is a prefix of its children's and so sorts first, which is the order the
/// kernel's unpacker needs (it does not create missing parent directories).
#[derive(Default)]
struct Tree(BTreeMap<String, Node>);

enum Node {
    Dir,
    File { data: Data, mode: u32 },
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

enum Data {
    /// Streamed from the host at write time: test binaries can be large.
    Host(PathBuf),
    Bytes(Vec<u8>),
}

impl Node {
    fn file(data: Data, mode: u32) -> Self {
        Node::File { data, mode }
    }
}

impl Tree {
    /// Inserts (or replaces, so payload files may override busybox applets) a node and creates
    /// its missing parent directories.
    fn insert(&mut self, guest_path: &str, node: Node) -> Result<()> {
        let path = guest_path.trim_start_matches('/');
        ensure!(
            !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
            "bad guest path {guest_path:?}"
        );
        for (slash, _) in path.match_indices('/') {
            let parent = &path[..slash];
            match self.0.get(parent) {
                None => {
                    self.0.insert(parent.to_string(), Node::Dir);
                }
                Some(Node::Dir) => {}
                Some(_) => bail!("{guest_path}: /{parent} is already a file in the initramfs"),
            }
        }
        self.0.insert(path.to_string(), node);
        Ok(())
    }
}

/// Writes the tree as a newc ("070701") cpio archive, via a temporary file so that an
/// interrupted build never leaves a truncated initramfs behind under the final name.
fn write_cpio(tree: &Tree, out: &Path) -> Result<()> {
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    let temporary = out.with_file_name(format!(
        "{}.tally-tmp",
        out.file_name()
            .context("initramfs path has no file name")?
            .to_string_lossy()
    ));
    let mut writer = CpioWriter {
        out: BufWriter::new(File::create(&temporary)?),
        next_inode: 1,
    };
    let written = tree
        .0
        .iter()
        .try_for_each(|(path, node)| writer.entry(path, node))
        .and_then(|()| writer.finish());
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    fs::rename(&temporary, out)?;
    Ok(())
}

struct CpioWriter {
    out: BufWriter<File>,
    next_inode: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl CpioWriter {
    fn entry(&mut self, path: &str, node: &Node) -> Result<()> {
        match node {
            Node::Dir => self.header(path, S_IFDIR | 0o755, 0, (0, 0)),
            Node::Symlink(target) => {
                self.header(path, S_IFLNK | 0o777, target.len(), (0, 0))?;
                self.data(target.as_bytes())
            }
            Node::CharDevice { major, minor } => self.header(path, S_IFCHR | 0o600, 0, (*major, *minor)),
            Node::File {
                data: Data::Bytes(bytes),
                mode,
            } => {
                self.header(path, S_IFREG | mode, bytes.len(), (0, 0))?;
                self.data(bytes)
            }
            Node::File {
                data: Data::Host(host),
                mode,
            } => self.host_file(path, host, *mode),
        }
    }

    fn host_file(&mut self, path: &str, host: &Path, mode: u32) -> Result<()> {
        let mut file = File::open(host).with_context(|| format!("opening {}", host.display()))?;
        let size = file.metadata()?.len();
        self.header(path, S_IFREG | mode, usize::try_from(size)?, (0, 0))?;
        let copied = io::copy(&mut Read::take(&mut file, size), &mut self.out)?;
        ensure!(copied == size, "{} shrank while being archived", host.display());
        self.pad(copied as usize)
    }

    /// newc: "070701", then 13 eight-digit hex fields (ino, mode, uid, gid, nlink, mtime,
    /// filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check), the NUL-terminated
    /// name, padding to a multiple of 4. Everything is owned by root with mtime 0, which keeps
    /// the archive reproducible.
    fn header(&mut self, path: &str, mode: u32, size: usize, rdev: (u32, u32)) -> Result<()> {
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields = [
            self.next_inode,
            mode,
            0,
            0,
            nlink,
            0,
            u32::try_from(size).context("file too large for newc (4 GiB)")?,
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(path.len() + 1)?,
            0,
        ];
        self.next_inode += 1;
        write!(self.out, "070701")?;
        for field in fields {
            write!(self.out, "{field:08x}")?;
        }
        self.out.write_all(path.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + path.len() + 1)
    }

    fn data(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.pad(bytes.len())
    }

    fn pad(&mut self, written: usize) -> Result<()> {
        let padding = (4 - written % 4) % 4;
        self.out.write_all(&[0; 3][..padding])?;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.header("TRAILER!!!", 0, 0, (0, 0))?;
        self.out.flush()?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Booting
// ---------------------------------------------------------------------------------------------

/// `lsm=` pins the active LSMs so every kernel runs the same set. (Debian's CONFIG_LSM already
/// ends in bpf, but behind landlock, yama, apparmor and tomoyo; 6.12 adds ipe, and always
/// appends ima and evm, even with `lsm=`.) `panic=-1` reboots at once on a panic, and with
/// qemu's -no-reboot that ends qemu instead of leaving a dead guest to run into the timeout.
const KERNEL_CMDLINE: &str = "console=ttyS0 lsm=lockdown,capability,bpf panic=-1 quiet";
/// How long a KVM guest gets to reach BEGIN before `auto` gives up on KVM; a healthy KVM boot
/// takes a few seconds. Sandboxed hosts can have a /dev/kvm that cannot run a stock kernel:
/// e.g. a nested PVM hypervisor (host kernel booted with nested_pvm=1) only runs PVM-aware
/// guests, and qemu there either aborts at once (-cpu host: "failed to set MSR 0x10a"), stops
/// with "KVM internal error", or hangs silently right after the boot loader.
const KVM_PROBE: Duration = Duration::from_secs(25);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            // Single-threaded TCG (the two vCPUs take turns on one host thread): with
            // thread=multi, the kernel's live code patching (text_poke_bp, when BPF programs
            // attach and flip static keys) raced with the other vCPU and a Debian 6.12 guest
            // died in an "Oops: int3" in the middle of a test run. "max" gives the guest every
            // CPU feature TCG can emulate.
            Accel::Tcg => ["-accel", "tcg,thread=single", "-cpu", "max"],
        }
    }
}

/// The `auto` decision, made once per process: probing KVM costs up to KVM_PROBE per boot.
static AUTO_ACCEL: Mutex<Option<Accel>> = Mutex::new(None);

/// Boots `kernel` with `initramfs` and waits for the guest to power off (or `timeout`).
/// TALLY_VM_ACCEL=kvm|tcg|auto (default auto) chooses the accelerator; auto tries KVM when
/// /dev/kvm can be opened and falls back to TCG if the guest does not reach BEGIN in time.
pub fn boot(kernel: &Kernel, initramfs: &Path, mem_mb: u32, timeout: Duration, log_path: &Path) -> Result<BootResult> {
    let guest = Guest {
        kernel,
        initramfs,
        mem_mb,
        timeout,
        log_path,
    };
    match requested_accel()? {
        Some(accel) => guest.run(accel),
        None => boot_auto(&guest),
    }
}

fn requested_accel() -> Result<Option<Accel>> {
    match std::env::var("TALLY_VM_ACCEL").as_deref() {
        Err(_) | Ok("auto") | Ok("") => Ok(None),
        Ok("kvm") => Ok(Some(Accel::Kvm)),
        Ok("tcg") => Ok(Some(Accel::Tcg)),
        Ok(other) => bail!("TALLY_VM_ACCEL={other:?}: expected kvm, tcg or auto"),
    }
}

fn boot_auto(guest: &Guest) -> Result<BootResult> {
    let decided = *AUTO_ACCEL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(accel) = decided {
        return guest.run(accel);
    }
    let remember = |accel| *AUTO_ACCEL.lock().unwrap_or_else(|e| e.into_inner()) = Some(accel);
    if !kvm_usable() {
        remember(Accel::Tcg);
        return guest.run(Accel::Tcg);
    }
    match guest.run_until(Accel::Kvm, Some(KVM_PROBE.min(guest.timeout)))? {
        Outcome::Finished(result) => {
            remember(Accel::Kvm);
            Ok(result)
        }
        Outcome::ProbeFailed(reason) => {
            // Keep the failed attempt's log for whoever investigates KVM on this host; the
            // TCG run reuses log_path.
            let kvm_log = guest.log_path.with_extension("kvm-failed.log");
            let _ = fs::rename(guest.log_path, &kvm_log);
            eprintln!(
                "tally vm: KVM unusable ({reason}; log in {}), using TCG for the rest of this run",
                kvm_log.display()
            );
            remember(Accel::Tcg);
            guest.run(Accel::Tcg)
        }
    }
}

/// /dev/kvm existing is not enough: it must be openable read-write by this user.
fn kvm_usable() -> bool {
    OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

struct Guest<'a> {
    kernel: &'a Kernel,
    initramfs: &'a Path,
    mem_mb: u32,
    timeout: Duration,
    log_path: &'a Path,
}

enum Outcome {
    Finished(BootResult),
    /// Only when probing: the guest did not reach BEGIN (hang, KVM error, early death).
    ProbeFailed(String),
}

impl Guest<'_> {
    fn run(&self, accel: Accel) -> Result<BootResult> {
        match self.run_until(accel, None)? {
            Outcome::Finished(result) => Ok(result),
            Outcome::ProbeFailed(reason) => unreachable!("probe failure without a probe: {reason}"),
        }
    }

    /// Runs qemu to completion. With `probe`, a guest that has not printed BEGIN within that
    /// time (or dies before it, or trips a KVM internal error) is killed and reported as
    /// ProbeFailed instead of as an error.
    fn run_until(&self, accel: Accel, probe: Option<Duration>) -> Result<Outcome> {
        let started = Instant::now();
        // qemu truncates the file itself, but only once it gets that far.
        let _ = fs::remove_file(self.log_path);
        let mut qemu = Qemu::spawn(self.qemu_command(accel))?;
        let mut begun = false;
        let status = loop {
            if let Some(status) = qemu.child.try_wait()? {
                break status;
            }
            let elapsed = started.elapsed();
            if let Some(probe) = probe.filter(|_| !begun) {
                begun = console_text(self.log_path).contains(BEGIN_MARKER);
                if !begun && qemu.stderr().contains("KVM internal error") {
                    return Ok(Outcome::ProbeFailed("KVM internal error".into()));
                }
                if !begun && elapsed > probe {
                    return Ok(Outcome::ProbeFailed(format!("no {BEGIN_MARKER} within {probe:?}")));
                }
            }
            if elapsed > self.timeout {
                qemu.kill();
                bail!(
                    "guest ({}, {}) did not power off within {:?}; qemu killed.\n{}",
                    self.kernel.name,
                    accel.name(),
                    self.timeout,
                    self.diagnostics(&qemu.stderr())
                );
            }
            thread::sleep(POLL_INTERVAL);
        };
        let stderr = qemu.finish();
        let console = console_text(self.log_path);
        if probe.is_some() && !console.contains(BEGIN_MARKER) {
            let last = stderr.lines().last().unwrap_or_default();
            return Ok(Outcome::ProbeFailed(format!(
                "qemu ended ({status}) before {BEGIN_MARKER}: {last}"
            )));
        }
        ensure!(
            status.success(),
            "qemu failed ({status}).\n{}",
            self.diagnostics(&stderr)
        );
        let (output, exit_code) = parse_console(&console);
        Ok(Outcome::Finished(BootResult {
            accel: accel.name().to_string(),
            exit_code,
            output,
            console_log: self.log_path.to_path_buf(),
        }))
    }

    /// No disk, no network device, no display: -nodefaults drops qemu's default NIC, VGA and
    /// monitor, leaving only the serial port we ask for.
    fn qemu_command(&self, accel: Accel) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-smp",
            "2",
        ])
        .args(["-m", &self.mem_mb.to_string()])
        .args(accel.qemu_args())
        .arg("-kernel")
        .arg(&self.kernel.vmlinuz)
        .arg("-initrd")
        .arg(self.initramfs)
        .args(["-append", KERNEL_CMDLINE])
        .arg("-serial")
        .arg(format!("file:{}", self.log_path.display()));
        cmd
    }

    fn diagnostics(&self, qemu_stderr: &str) -> String {
        const TAIL_LINES: usize = 40;
        let console = console_text(self.log_path);
        let lines: Vec<&str> = console.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        let stderr = match qemu_stderr.trim_end() {
            "" => String::new(),
            text => format!("qemu stderr:\n{text}\n"),
        };
        format!(
            "{stderr}last {TAIL_LINES} console lines ({}):\n{tail}",
            self.log_path.display()
        )
    }
}

/// The serial log without the carriage returns the tty adds to every newline.
fn console_text(log_path: &Path) -> String {
    let bytes = fs::read(log_path).unwrap_or_default();
    String::from_utf8_lossy(&bytes).replace('\r', "")
}

/// Cuts the command's output out of the console text. /init prints a newline before the exit
/// marker so the marker is on its own line even if the output did not end with one; that
/// newline is not part of the output.
fn parse_console(console: &str) -> (String, Option<i32>) {
    let begin = format!("{BEGIN_MARKER}\n");
    let Some(start) = console.find(&begin) else {
        return (String::new(), None);
    };
    let after = &console[start + begin.len()..];
    let exit = format!("\n{EXIT_MARKER} ");
    match after.rfind(&exit) {
        Some(end) => {
            let code = after[end + exit.len()..]
                .lines()
                .next()
                .and_then(|s| s.trim().parse().ok());
            (after[..end].to_string(), code)
        }
        None => (after.to_string(), None),
    }
}

/// A running qemu that is killed and reaped however the caller leaves (error, timeout, panic),
/// so no VM outlives the xtask. Its stderr is collected by a thread so qemu can never block
/// on a full pipe, and so a KVM error can be spotted while it runs.
struct Qemu {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Qemu {
    fn spawn(mut cmd: Command) -> Result<Self> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (is qemu-system-x86 installed?)")?;
        let mut pipe = child.stderr.take().context("qemu stderr pipe")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let reader = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Ok(Self {
            child,
            stderr,
            reader: Some(reader),
        })
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the stderr reader (qemu has exited, so the pipe is at EOF) and returns it.
    fn finish(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.stderr()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Runs a host tool, failing with its stderr when it exits non-zero.
fn run(cmd: &mut Command) -> Result<Output> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        output.status.success(),
        "{cmd:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim_end()
    );
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn cuts_output_between_markers() {
        let console = "boot noise\nTALLY-VM-BEGIN\nhello\nno newline\nTALLY-VM-EXIT 3\nreboot: Power down\n";
        assert_eq!(parse_console(console), ("hello\nno newline".to_string(), Some(3)));
        assert_eq!(parse_console("Kernel panic\n"), (String::new(), None));
    }

    #[test]
    fn tree_creates_parents_in_order() {
        let mut tree = Tree::default();
        tree.insert("/a/b/c", Node::Symlink("x".into())).unwrap();
        tree.insert("/a-b", Node::Dir).unwrap();
        let keys: Vec<&str> = tree.0.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "a-b", "a/b", "a/b/c"]);
        assert!(tree.insert("/a/b/c/d", Node::Dir).is_err());
        assert!(tree.insert("/a/../etc", Node::Dir).is_err());
    }
}
