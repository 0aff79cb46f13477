//! A container's config file in vzctl's CTID.conf syntax: shell-style `KEY="value"` lines,
//! beancounters as `NUMPROC="barrier:limit"`. Unknown keys are kept as they are; writes are
//! atomic (temporary file, fsync, rename).

use std::{collections::BTreeMap, fs, io::Write, path::Path};

use crate::ubc::{parse_barrier_limit, ParseError, Resource, UNLIMITED};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}:{line}: {message}")]
    Syntax { file: String, line: usize, message: String },
    #[error("{file}: {source}")]
    Value { file: String, source: ParseError },
    #[error("{file}: {source}")]
    Io { file: String, source: std::io::Error },
}

/// The CPU settings of a config (None: not set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuConfig {
    pub units: Option<u64>,
    pub limit: Option<u64>,
    pub cpus: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CtConfig {
    /// Every key, in file order of first appearance (BTreeMap: sorted, stable output).
    pub values: BTreeMap<String, String>,
}

impl CtConfig {
    pub fn parse(file: &str, text: &str) -> Result<CtConfig, ConfigError> {
        let mut values = BTreeMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |message: &str| ConfigError::Syntax {
                file: file.to_string(),
                line: n + 1,
                message: message.to_string(),
            };
            let (key, value) = line.split_once('=').ok_or_else(|| syntax("expected KEY=\"value\""))?;
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(syntax("a key is letters, digits and _"));
            }
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(rest) => rest.strip_suffix('"').ok_or_else(|| syntax("unterminated quote"))?,
                None => value,
            };
            values.insert(key.to_string(), value.to_string());
        }
        let config = CtConfig { values };
        config.limits().map_err(|source| ConfigError::Value {
            file: file.to_string(),
            source,
        })?;
        config.cpu().map_err(|message| ConfigError::Syntax {
            file: file.to_string(),
            line: 0,
            message,
        })?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<CtConfig, ConfigError> {
        let file = path.display().to_string();
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
        CtConfig::parse(&file, &text)
    }

    pub fn render(&self) -> String {
        self.values.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect()
    }

    /// Atomic: readers see the old file or the new one, and a crash leaves one of them.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let file = path.display().to_string();
        let io = |source| ConfigError::Io {
            file: file.clone(),
            source,
        };
        let tmp = path.with_extension("conf.tmp");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(self.render().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// Every beancounter row the file sets, as (barrier, limit).
    pub fn limits(&self) -> Result<BTreeMap<Resource, (u64, u64)>, ParseError> {
        let mut out = BTreeMap::new();
        for (key, value) in &self.values {
            if let Some(r) = Resource::from_name(key) {
                out.insert(r, parse_barrier_limit(r, value)?);
            }
        }
        Ok(out)
    }

    /// CPUUNITS (8..500000), CPULIMIT (percent of one CPU, 0 = none) and CPUS (0 = all).
    pub fn cpu(&self) -> Result<CpuConfig, String> {
        let get = |key: &str, range: std::ops::RangeInclusive<u64>| -> Result<Option<u64>, String> {
            let Some(v) = self.values.get(key) else {
                return Ok(None);
            };
            match v.trim().parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(format!(
                    "{key}=\"{v}\": expected a number from {} to {}",
                    range.start(),
                    range.end()
                )),
            }
        };
        Ok(CpuConfig {
            units: get("CPUUNITS", 8..=500_000)?,
            limit: get("CPULIMIT", 0..=100_000)?,
            cpus: get("CPUS", 0..=4096)?,
        })
    }

    pub fn set_limit(&mut self, r: Resource, barrier: u64, limit: u64) {
        let show = |v: u64| {
            if v == UNLIMITED {
                "unlimited".to_string()
            } else {
                v.to_string()
            }
        };
        self.values.insert(
            r.name().to_ascii_uppercase(),
            format!("{}:{}", show(barrier), show(limit)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vzctl_syntax() {
        let c = CtConfig::parse(
            "101.conf",
            "# a comment\nNUMPROC=\"240:240\"\nHOSTNAME=\"ct101\"\nPRIVVMPAGES=65536:69632\n",
        )
        .unwrap();
        let l = c.limits().unwrap();
        assert_eq!(l[&Resource::NumProc], (240, 240));
        assert_eq!(l[&Resource::PrivVmPages], (65536, 69632));
        assert_eq!(c.values["HOSTNAME"], "ct101");
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let e = CtConfig::parse("x.conf", "NUMPROC=\"20:10\"\n").unwrap_err();
        assert!(e.to_string().contains("barrier 20 is above limit 10"), "{e}");
        let e = CtConfig::parse("x.conf", "\nno equals sign\n").unwrap_err();
        assert!(e.to_string().starts_with("x.conf:2:"), "{e}");
        assert!(CtConfig::parse("x.conf", "A=\"open\n").is_err());
    }

    #[test]
    fn save_is_atomic_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("101.conf");
        let mut c = CtConfig::default();
        c.set_limit(Resource::NumProc, 20, 20);
        c.set_limit(Resource::NumFile, 100, UNLIMITED);
        c.save(&path).unwrap();
        assert!(!path.with_extension("conf.tmp").exists());
        let back = CtConfig::load(&path).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.limits().unwrap()[&Resource::NumFile], (100, UNLIMITED));
    }
}
