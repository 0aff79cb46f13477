//! CPU: OpenVZ's CPUUNITS (a relative weight), CPULIMIT (a cap in percent of one CPU) and
//! CPUS (a cap in whole CPUs), on cgroup v1's cpu.shares/cfs quota or v2's cpu.weight/cpu.max;
//! and CPU time used, from cgroup2's cpu.stat (present on every cgroup2 directory, with or
//! without the cpu controller).

use std::fs;

use super::{container::keyed_value, io_err, CgroupError, ContainerCgroup, Controller, Flavor};

/// The scheduler period tally's caps use (the kernel's default).
pub const PERIOD_US: u64 = 100_000;
/// OpenVZ's default CPUUNITS.
pub const DEFAULT_UNITS: u64 = 1000;

/// CPUUNITS as a v2 weight (1..10000, default 100 = 1000 units).
pub fn units_to_weight(units: u64) -> u64 {
    (units / 10).clamp(1, 10_000)
}

/// CPUUNITS as v1 shares (2..262144, default 1024 = 1000 units).
pub fn units_to_shares(units: u64) -> u64 {
    (units.saturating_mul(1024) / 1000).clamp(2, 262_144)
}

/// The cap as a quota per PERIOD_US: the smaller of CPULIMIT% and CPUS whole CPUs.
pub fn quota_us(limit_percent: Option<u64>, cpus: Option<u64>) -> Option<u64> {
    let from_limit = limit_percent.filter(|p| *p > 0).map(|p| p * PERIOD_US / 100);
    let from_cpus = cpus.filter(|c| *c > 0).map(|c| c * PERIOD_US);
    match (from_limit, from_cpus) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl ContainerCgroup {
    /// Applies CPUUNITS (None: the default) and the cap (None: none).
    pub fn set_cpu(&self, units: Option<u64>, quota_us: Option<u64>) -> Result<(), CgroupError> {
        let (dir, flavor) = self
            .controllers
            .get(&Controller::Cpu)
            .ok_or(CgroupError::MissingController(Controller::Cpu))?;
        let write = |file: &str, value: String| {
            let path = dir.join(file);
            fs::write(&path, value).map_err(io_err(&path))
        };
        let units = units.unwrap_or(DEFAULT_UNITS);
        match flavor {
            Flavor::V2 => {
                write("cpu.weight", units_to_weight(units).to_string())?;
                write(
                    "cpu.max",
                    format!("{} {PERIOD_US}", quota_us.map_or("max".to_string(), |q| q.to_string())),
                )?;
            }
            Flavor::V1 => {
                write("cpu.shares", units_to_shares(units).to_string())?;
                write("cpu.cfs_period_us", PERIOD_US.to_string())?;
                write("cpu.cfs_quota_us", quota_us.map_or("-1".to_string(), |q| q.to_string()))?;
            }
        }
        Ok(())
    }

    /// CPU time the container's processes used, in microseconds.
    pub fn cpu_usage_us(&self) -> Result<u64, CgroupError> {
        let path = self.unified.join("cpu.stat");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(keyed_value(&text, "usage_usec").unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openvz_units_map_onto_the_kernels_scales() {
        assert_eq!(units_to_weight(1000), 100);
        assert_eq!(units_to_shares(1000), 1024);
        assert_eq!(units_to_weight(8), 1);
        assert_eq!(units_to_weight(500_000), 10_000);
        assert_eq!(units_to_shares(1), 2);
    }

    #[test]
    fn the_cap_is_the_smaller_of_limit_and_cpus() {
        assert_eq!(quota_us(None, None), None);
        assert_eq!(quota_us(Some(50), None), Some(50_000));
        assert_eq!(quota_us(Some(300), Some(2)), Some(200_000));
        assert_eq!(quota_us(Some(0), Some(1)), Some(100_000));
    }
}
