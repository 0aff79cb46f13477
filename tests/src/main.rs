//! tally-itest: the root-only integration tests, run by `cargo xtask test` on the host (this
//! machine's kernel) and inside VMs booting Debian kernels. It runs real tallyd and tally
//! binaries (found beside this one) against the real kernel, counts skips itself (a skipped
//! test is never a pass), and ends with `N passed, N failed, N skipped`.
//!
//! Usage: tally-itest [FILTER]            run the tests whose name contains FILTER
//!        tally-itest workload ARGS...    (internal) a workload run inside a container
//!        tally-itest bench fork           the fork benchmark (cargo xtask bench fork)
//!        tally-itest bench start|density  tally against runc/crun; N containers at once

mod abuse;
mod api;
mod bench;
mod bench_dedup;
mod bench_density;
mod bench_scrape;
mod bench_start;
mod cache;
mod concurrency;
mod containers;
mod cpu;
mod drive;
mod env;
mod escape;
mod exact;
mod harness;
mod network;
mod numproc;
mod package;
mod probe;
mod prometheus;
mod reads;
mod restart;
mod rows;
mod swap;
mod templates;
mod userns;
mod views;
mod workload;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("workload") => std::process::exit(workload::main(&args[1..])),
        Some("bench") => std::process::exit(bench::main(&args[1..])),
        Some("escape") => std::process::exit(escape::main(&args[1..])),
        _ => {}
    }
    let filter = args.first().cloned().unwrap_or_default();
    let mut tests = Vec::new();
    tests.extend(probe::tests());
    tests.extend(numproc::tests());
    tests.extend(rows::tests());
    tests.extend(views::tests());
    tests.extend(exact::tests());
    tests.extend(abuse::tests());
    tests.extend(containers::tests());
    tests.extend(templates::tests());
    tests.extend(network::tests());
    tests.extend(userns::tests());
    tests.extend(cpu::tests());
    tests.extend(escape::tests());
    tests.extend(prometheus::tests());
    tests.extend(restart::tests());
    tests.extend(api::tests());
    tests.extend(reads::tests());
    tests.extend(cache::tests());
    tests.extend(concurrency::tests());
    tests.extend(package::tests());
    std::process::exit(harness::run(tests, &filter));
}
