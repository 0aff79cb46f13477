//! `cargo xtask test`: unit tests, then the host tier (this machine's kernel, as root), then the
//! VM tier (Debian's 6.1 and 6.12 kernels with BPF LSM and pure cgroup2, in qemu). Each tier's
//! counts come from its runner's own closing line; a tier that did not report counts as failed.
//! Ends with `N passed, N failed, N skipped` over all tiers.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, Result};

use crate::{boot_with_tally, build_binaries, expect, root, setup, vm};

#[derive(clap::Args)]
pub struct Args {
    /// Run only these tiers (unit, host, vm); all when not given.
    #[arg(long, value_delimiter = ',')]
    tier: Vec<String>,
    /// Only integration tests whose name contains this.
    #[arg(long, default_value = "")]
    filter: String,
}

#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

struct TierResult {
    label: String,
    counts: Counts,
    /// Why the tier did not report, if it did not.
    problem: Option<String>,
    /// The runner's `test NAME ... FAILED (..): why` lines, repeated in the summary so that
    /// the end of a long log says what failed and why.
    failures: Vec<String>,
    /// How long the part took, as the summary says it.
    took: String,
}

pub fn run(args: Args) -> Result<()> {
    let wants = |t: &str| args.tier.is_empty() || args.tier.iter().any(|a| a == t);
    let started = Instant::now();
    setup::run()?;
    let mut results = Vec::new();
    if wants("unit") {
        let t = Instant::now();
        let mut r = unit_tier()?;
        r.took = format!("{:.0} s", t.elapsed().as_secs_f32());
        results.push(r);
    }
    if wants("host") || wants("vm") {
        let bins = build_binaries()?;
        if wants("host") {
            let t = Instant::now();
            let mut r = host_tier(&bins, &args.filter)?;
            r.took = format!("{:.0} s", t.elapsed().as_secs_f32());
            results.push(r);
        }
        if wants("vm") {
            results.extend(vm_tier(&bins, &args.filter)?);
        }
    }

    println!("\n== summary ({:.0} s)", started.elapsed().as_secs_f32());
    let mut total = Counts::default();
    for r in &results {
        let c = &r.counts;
        match &r.problem {
            None => println!(
                "{:<34} {} passed, {} failed, {} skipped  ({})",
                r.label, c.passed, c.failed, c.skipped, r.took
            ),
            Some(p) => println!("{:<34} FAILED: {p}  ({})", r.label, r.took),
        }
        for f in &r.failures {
            println!("    {f}");
        }
        total.passed += c.passed;
        total.failed += c.failed + u64::from(r.problem.is_some());
        total.skipped += c.skipped;
    }
    println!(
        "{} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    );
    if total.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `cargo test` over the default members (no root needed).
fn unit_tier() -> Result<TierResult> {
    println!("== unit tests");
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["test", "--color", "never"])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{text}");
    let mut counts = Counts::default();
    for line in text.lines().filter_map(|l| l.strip_prefix("test result: ")) {
        // "ok. 17 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
        for part in line.split(|c| c == ';' || c == '.') {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) {
                match what {
                    "passed" => counts.passed += n,
                    "failed" => counts.failed += n,
                    "ignored" => counts.skipped += n,
                    _ => {}
                }
            }
        }
    }
    let problem = (!out.status.success() && counts.failed == 0).then(|| format!("cargo test exited {}", out.status));
    let failures = text
        .lines()
        .filter(|l| l.starts_with("test ") && l.ends_with(" FAILED"))
        .map(str::to_string)
        .collect();
    Ok(TierResult {
        label: "unit".into(),
        counts,
        problem,
        failures,
        took: String::new(),
    })
}

fn host_tier(bins: &Path, filter: &str) -> Result<TierResult> {
    let release = nix::sys::utsname::uname()?.release().to_string_lossy().into_owned();
    let label = format!("host {release}");
    println!("== host tier: {release}");
    if !nix::unistd::geteuid().is_root() {
        return Ok(TierResult {
            label,
            counts: Counts::default(),
            problem: Some("the host tier needs root".into()),
            failures: Vec::new(),
            took: String::new(),
        });
    }
    // The package of the binaries under test, for the test that installs it.
    let deb = crate::deb::build(false).context("building the Debian package")?;
    let mut cmd = Command::new(bins.join("tally-itest"));
    cmd.arg(filter)
        .env("TALLY_ITEST_DEBIAN_DEBS", crate::setup::debian_debs_path())
        .env("TALLY_ITEST_DEB", deb);
    if let Some(e) = expect::for_release(&release) {
        cmd.env("TALLY_EXPECT_TIER", e.tier);
        if let Some(r) = e.reason {
            cmd.env("TALLY_EXPECT_REASON", r);
        }
    }
    let out = cmd.output().context("running tally-itest")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}{}", String::from_utf8_lossy(&out.stderr));
    Ok(parse_run(label, &text))
}

/// One boot per kernel; inside, the suite runs twice: with tallyd's own tier choice (full: no
/// test may skip) and forced to the fallback tier (cgroup v2 controllers enforce). One kernel
/// after the other: side by side (TALLY_VM_SIDE_BY_SIDE=1), each guest ran 1.7 times slower
/// here (its TCG thread shares the machine with the other's), so the pair took as long and
/// came near the boot's time limit.
fn vm_tier(bins: &Path, filter: &str) -> Result<Vec<TierResult>> {
    let cache = root().join("target/tally-vm");
    let kernels = vm::ensure_kernels(&cache)?;
    if std::env::var_os("TALLY_VM_SIDE_BY_SIDE").is_none_or(|v| v != "1") {
        let mut results = Vec::new();
        for kernel in &kernels {
            let (output, runs) = one_vm(kernel, bins, filter);
            print!("{output}");
            results.extend(runs);
        }
        return Ok(results);
    }
    let boots: Vec<(String, Vec<TierResult>)> = std::thread::scope(|s| {
        let running: Vec<_> = kernels
            .iter()
            .map(|kernel| s.spawn(move || one_vm(kernel, bins, filter)))
            .collect();
        running
            .into_iter()
            .zip(&kernels)
            .map(|(h, kernel)| {
                h.join().unwrap_or_else(|_| {
                    (
                        String::new(),
                        vec![TierResult {
                            label: format!("vm {}", kernel.name),
                            counts: Counts::default(),
                            problem: Some("the VM's thread panicked".into()),
                            failures: Vec::new(),
                            took: String::new(),
                        }],
                    )
                })
            })
            .collect()
    });
    let mut results = Vec::new();
    // Each guest's output whole, one after the other.
    for (output, runs) in boots {
        print!("{output}");
        results.extend(runs);
    }
    Ok(results)
}

/// Boots one kernel for both runs; returns what to print and the two runs' results.
fn one_vm(kernel: &vm::Kernel, bins: &Path, filter: &str) -> (String, Vec<TierResult>) {
    let mut printed = format!("== VM tier: {} ({})\n", kernel.name, kernel.release);
    let expectation = expect::for_release(&kernel.release);
    let expect_env = match &expectation {
        Some(e) => format!("export TALLY_EXPECT_TIER={};", e.tier),
        None => String::new(),
    };
    let started = Instant::now();
    let command = format!(
        "{expect_env} echo '== run full'; TALLY_ITEST_NO_SKIP=1 tally-itest '{filter}'; a=$?; \
         echo '== run fallback'; TALLY_ITEST_TIER=fallback tally-itest '{filter}'; b=$?; exit $((a|b))"
    );
    let boot = boot_with_tally(kernel, bins, &command, "tally-itest");
    let secs = started.elapsed().as_secs_f32();
    let mut results = Vec::new();
    match boot {
        Ok(b) => {
            printed.push_str(&b.output);
            printed.push_str(&format!(
                "(booted under {}, {secs:.0} s; console log {})\n",
                b.accel,
                b.console_log.display()
            ));
            for (section, tier) in [("== run full", "full"), ("== run fallback", "fallback")] {
                let text = b
                    .output
                    .split(section)
                    .nth(1)
                    .map(|t| t.split("== run ").next().unwrap_or(t))
                    .unwrap_or("");
                let label = format!("vm {} tallyd {tier}", kernel.name);
                let mut r = parse_run(label, text);
                r.took = format!("tests {:.0} s of a {secs:.0} s boot", test_seconds(text));
                results.push(r);
            }
        }
        Err(e) => results.push(TierResult {
            label: format!("vm {}", kernel.name),
            counts: Counts::default(),
            problem: Some(format!("boot failed: {e:#}")),
            failures: Vec::new(),
            took: format!("{secs:.0} s"),
        }),
    }
    (printed, results)
}

/// The sum of the `(12.3s)` a run prints after each test.
fn test_seconds(text: &str) -> f32 {
    text.lines()
        .filter(|l| l.starts_with("test "))
        .filter_map(|l| {
            // "test NAME ... ok (12.3s)", "test NAME ... FAILED (12.3s): why"
            let after = l.split(" ... ").nth(1)?;
            let open = after.find('(')?;
            after[open + 1..].split("s)").next()?.parse::<f32>().ok()
        })
        .fold(0.0, |a, b| a + b)
}

/// Reads a tally-itest run's closing `N passed, N failed, N skipped` line.
fn parse_run(label: String, text: &str) -> TierResult {
    let counts = text.lines().rev().find_map(|l| {
        let nums: Vec<u64> = l
            .split(", ")
            .map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()))
            .collect::<Option<Vec<u64>>>()?;
        (nums.len() == 3 && l.ends_with(" skipped")).then(|| Counts {
            passed: nums[0],
            failed: nums[1],
            skipped: nums[2],
        })
    });
    let failures = text
        .lines()
        .filter(|l| l.starts_with("test ") && l.contains(" ... FAILED"))
        .map(str::to_string)
        .collect();
    match counts {
        Some(counts) => TierResult {
            label,
            counts,
            problem: None,
            failures,
            took: String::new(),
        },
        None => TierResult {
            label,
            counts: Counts::default(),
            problem: Some("the run reported no result line".into()),
            failures,
            took: String::new(),
        },
    }
}

#[derive(clap::Args)]
pub struct VmRunArgs {
    /// debian-6.1 or debian-6.12.
    kernel: String,
    /// The shell command (busybox sh), run in /tmp with tally's binaries on PATH.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Boots one VM kernel with tally's binaries and runs a command: for looking at what the
/// full tier does by hand.
pub fn vm_run(args: VmRunArgs) -> Result<()> {
    setup::run()?;
    let bins = build_binaries()?;
    let cache = root().join("target/tally-vm");
    let kernels = vm::ensure_kernels(&cache)?;
    let kernel = kernels
        .iter()
        .find(|k| k.name == args.kernel)
        .context("no such VM kernel")?;
    let b = boot_with_tally(kernel, &bins, &args.command.join(" "), "vm-run")?;
    print!("{}", b.output);
    println!("(exit {:?})", b.exit_code);
    Ok(())
}
