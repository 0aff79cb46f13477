//! The cpu controller as containers get it: CPUUNITS shares between busy containers and a
//! CPULIMIT cap.

use std::time::Duration;

use anyhow::Result;

use crate::{
    check,
    env::Env,
    harness::{ok, Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "cpuunits_200_100_100_50_share_cpu_44_22_22_11",
            run: cpu_fairness,
        },
        Test {
            name: "cpulimit_50_caps_a_busy_container_at_half_a_cpu",
            run: cpulimit,
        },
    ]
}

/// Four containers, each loading both CPUs, with CPUUNITS 200/100/100/50: over 20 s each gets
/// its share of the CPU time they used together (from cgroup CPU accounting), within 3 points.
fn cpu_fairness(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("CPU shares come from the cpu controller alone") {
        return o;
    }
    const CTS: [(&str, u64); 4] = [("601", 200), ("602", 100), ("603", 100), ("604", 50)];
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let mut loads = Vec::new();
    for (ct, units) in CTS {
        try_or_fail!(ok(env, &["create", ct]), "create");
        try_or_fail!(ok(env, &["set", ct, "--cpuunits", &units.to_string(), "--save"]), "set");
        try_or_fail!(ok(env, &["start", ct]), "start");
        loads.push(try_or_fail!(cpu_load(env, ct), "starting a CPU load"));
    }
    let usage =
        |env: &Env| -> Result<Vec<u64>> { CTS.iter().map(|(ct, _)| Ok(env.cgroup(ct)?.cpu_usage_us()?)).collect() };
    std::thread::sleep(Duration::from_secs(2));
    let before = try_or_fail!(usage(env), "cpu usage");
    std::thread::sleep(Duration::from_secs(20));
    let after = try_or_fail!(usage(env), "cpu usage");
    for (ct, _) in CTS {
        try_or_fail!(ok(env, &["stop", ct, "--fast"]), "stop");
    }
    for mut l in loads {
        let _ = l.kill();
        let _ = l.wait();
    }
    let used: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: u64 = used.iter().sum();
    let units: u64 = CTS.iter().map(|(_, u)| u).sum();
    let shares: Vec<String> = used
        .iter()
        .map(|u| format!("{:.1}%", *u as f64 * 100.0 / total as f64))
        .collect();
    println!(
        "    CPU shares over 20 s: {shares:?} of {:.1} CPU-seconds",
        total as f64 / 1e6
    );
    check!(total > 0, "no CPU time was used");
    for ((ct, u), used) in CTS.iter().zip(&used) {
        let want = *u as f64 * 100.0 / units as f64;
        let got = *used as f64 * 100.0 / total as f64;
        check!(
            (got - want).abs() <= 3.0,
            "CT {ct} (CPUUNITS {u}) got {got:.1}% of the CPU time, expected {want:.1}% +-3: {shares:?}"
        );
    }
    Outcome::Pass
}

/// CPULIMIT 50 (half of one CPU) on a container loading both CPUs: over 6 s it gets 0.5 CPU
/// (+-20%); CPUS 1 then lets it have one CPU, not two.
fn cpulimit(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("CPULIMIT is the cpu controller's quota alone") {
        return o;
    }
    const CT: &str = "951";
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["create", CT]), "create");
    try_or_fail!(ok(env, &["start", CT]), "start");
    let mut load = try_or_fail!(cpu_load(env, CT), "starting a CPU load");
    let measure = |env: &Env| -> Result<f64> {
        let cg = env.cgroup(CT)?;
        std::thread::sleep(Duration::from_secs(1));
        let (u0, t0) = (cg.cpu_usage_us()?, std::time::Instant::now());
        std::thread::sleep(Duration::from_secs(6));
        Ok((cg.cpu_usage_us()? - u0) as f64 / t0.elapsed().as_micros() as f64)
    };
    let result = (|| -> Result<(f64, f64)> {
        ok(env, &["set", CT, "--cpulimit", "50"])?;
        let half = measure(env)?;
        ok(env, &["set", CT, "--cpulimit", "0", "--cpus", "1"])?;
        let one = measure(env)?;
        Ok((half, one))
    })();
    let _ = ok(env, &["stop", CT, "--fast"]);
    let _ = load.kill();
    let _ = load.wait();
    let (half, one) = try_or_fail!(result, "measuring");
    println!("    CPU used: {half:.2} CPUs at CPULIMIT 50, {one:.2} at CPUS 1");
    check!((0.4..=0.6).contains(&half), "CPULIMIT 50 gave {half:.2} CPUs");
    check!((0.8..=1.2).contains(&one), "CPUS 1 gave {one:.2} CPUs");
    Outcome::Pass
}

/// Two busy loops in container `ct`: enough to load both CPUs of this machine.
fn cpu_load(env: &Env, ct: &str) -> std::io::Result<std::process::Child> {
    env.tally_command()
        .args([
            "exec",
            ct,
            "--",
            "sh",
            "-c",
            "while :; do :; done & while :; do :; done",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
}
