//! The human view of beancounters, in the spirit of vzubc: sizes in units, held and maxheld as
//! a percentage of barrier and limit, failcnt or its rise since the last look, rows near their
//! limits only on request, colour on a terminal.

use std::{collections::BTreeMap, fmt::Write};

use super::{Beancounter, Resource, Unit, UNLIMITED};

#[derive(Clone, Debug, Default)]
pub struct HumanOptions {
    /// Only rows at or above `NEAR` of their barrier or limit, or whose failcnt rose.
    pub quiet: bool,
    /// ANSI colours: red where failcnt rose or held reached the limit, yellow when near.
    pub colour: bool,
    /// failcnt seen last time, by (container, row): the FAIL column shows the rise.
    pub previous: Option<BTreeMap<(String, String), u64>>,
    pub page_size: u64,
}

/// A row counts as near its limit from this share of barrier or limit.
pub const NEAR: f64 = 0.9;

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}")
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[i])
    } else {
        format!("{v:.0}{}", UNITS[i])
    }
}

fn value(r: Resource, v: u64, page: u64) -> String {
    match (v, r.unit()) {
        (UNLIMITED, _) | (0, _) => "-".into(),
        (v, Unit::Items) => v.to_string(),
        (v, Unit::Bytes) => size(v),
        (v, Unit::Pages) => size(v.saturating_mul(page)),
    }
}

fn percent(v: u64, of: u64) -> String {
    if of == UNLIMITED || of == 0 || v == 0 {
        "-".into()
    } else {
        format!("{:.0}%", v as f64 * 100.0 / of as f64)
    }
}

fn share(v: u64, of: u64) -> f64 {
    if of == UNLIMITED || of == 0 {
        0.0
    } else {
        v as f64 / of as f64
    }
}

pub fn render_human(containers: &[(String, Vec<Beancounter>)], opts: &HumanOptions) -> String {
    let page = if opts.page_size == 0 { 4096 } else { opts.page_size };
    let rule = "-".repeat(78);
    let mut out = String::new();
    for (ctid, rows) in containers {
        let _ = writeln!(out, "{rule}");
        let _ = writeln!(
            out,
            "{:<13}|{:>6} {:>5} {:>5} |{:>6} {:>5} {:>5} |{:>7} |{:>7} |{:>6}",
            format!("CT {ctid}"),
            "HELD",
            "Bar%",
            "Lim%",
            "MAXH",
            "Bar%",
            "Lim%",
            "BAR",
            "LIM",
            "FAIL"
        );
        let _ = writeln!(out, "{rule}");
        for (r, b) in Resource::ALL.iter().zip(rows).filter(|(r, _)| !r.is_dummy()) {
            let rise = opts.previous.as_ref().map(|p| {
                let before = p.get(&(ctid.clone(), r.name().to_string())).copied().unwrap_or(0);
                b.failcnt.saturating_sub(before)
            });
            let failed = rise.unwrap_or(b.failcnt) > 0;
            let at_limit = b.limit != UNLIMITED && b.held >= b.limit && b.limit > 0;
            let near = share(b.held, b.barrier) >= NEAR || share(b.held, b.limit) >= NEAR;
            if opts.quiet && !(near || failed) {
                continue;
            }
            let fail = match rise {
                Some(0) | None if b.failcnt == 0 => "-".to_string(),
                Some(0) => "-".to_string(),
                Some(d) => format!("+{d}"),
                None => b.failcnt.to_string(),
            };
            let line = format!(
                "{:>12} |{:>6} {:>5} {:>5} |{:>6} {:>5} {:>5} |{:>7} |{:>7} |{:>6}",
                r.name(),
                value(*r, b.held, page),
                percent(b.held, b.barrier),
                percent(b.held, b.limit),
                value(*r, b.maxheld, page),
                percent(b.maxheld, b.barrier),
                percent(b.maxheld, b.limit),
                value(*r, b.barrier, page),
                value(*r, b.limit, page),
                fail
            );
            let colour = match (opts.colour, failed || at_limit, near) {
                (false, _, _) => None,
                (true, true, _) => Some("\x1b[31m"),
                (true, false, true) => Some("\x1b[33m"),
                _ => None,
            };
            match colour {
                Some(c) => {
                    let _ = writeln!(out, "{c}{line}\x1b[0m");
                }
                None => {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_common::RESOURCE_COUNT;

    fn rows() -> Vec<(String, Vec<Beancounter>)> {
        let mut r = vec![Beancounter::unlimited(); RESOURCE_COUNT];
        r[Resource::NumProc.index()] = Beancounter {
            held: 19,
            maxheld: 20,
            barrier: 20,
            limit: 20,
            failcnt: 11,
        };
        r[Resource::PhysPages.index()] = Beancounter {
            held: 2048,
            maxheld: 4096,
            barrier: 0,
            limit: 8192,
            failcnt: 0,
        };
        r[Resource::KmemSize.index()] = Beancounter {
            held: 3 << 20,
            maxheld: 12 << 20,
            ..Beancounter::unlimited()
        };
        vec![("101".into(), r)]
    }

    #[test]
    fn shows_units_and_percentages() {
        let text = render_human(&rows(), &HumanOptions::default());
        let numproc = text.lines().find(|l| l.trim_start().starts_with("numproc")).unwrap();
        assert_eq!(
            numproc,
            "     numproc |    19   95%   95% |    20  100%  100% |     20 |     20 |    11"
        );
        let phys = text.lines().find(|l| l.trim_start().starts_with("physpages")).unwrap();
        assert_eq!(
            phys,
            "   physpages |  8.0M     -   25% |   16M     -   50% |      - |    32M |     -"
        );
        let kmem = text.lines().find(|l| l.trim_start().starts_with("kmemsize")).unwrap();
        assert!(kmem.contains("3.0M") && kmem.contains("12M"), "{kmem}");
        assert!(text.starts_with(&"-".repeat(78)));
        assert!(text.contains("CT 101"));
        assert!(!text.contains("dummy"));
    }

    #[test]
    fn quiet_keeps_rows_near_their_limits_or_failing() {
        let text = render_human(
            &rows(),
            &HumanOptions {
                quiet: true,
                ..Default::default()
            },
        );
        let shown: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" |"))
            .map(|l| l.split('|').next().unwrap().trim())
            .collect();
        assert_eq!(shown, vec!["CT 101", "numproc"]);
    }

    #[test]
    fn relative_mode_shows_the_failcnt_rise() {
        let mut previous = BTreeMap::new();
        previous.insert(("101".to_string(), "numproc".to_string()), 8);
        let text = render_human(
            &rows(),
            &HumanOptions {
                previous: Some(previous.clone()),
                ..Default::default()
            },
        );
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("numproc") && l.ends_with("+3")),
            "{text}"
        );
        previous.insert(("101".to_string(), "numproc".to_string()), 11);
        let quiet = render_human(
            &rows(),
            &HumanOptions {
                quiet: true,
                previous: Some(previous),
                ..Default::default()
            },
        );
        let numproc = quiet.lines().find(|l| l.trim_start().starts_with("numproc")).unwrap();
        assert!(
            numproc.ends_with("     -"),
            "no rise, but still near its limit: {numproc}"
        );
    }

    #[test]
    fn colour_marks_failing_rows_red() {
        let text = render_human(
            &rows(),
            &HumanOptions {
                colour: true,
                ..Default::default()
            },
        );
        let numproc = text.lines().find(|l| l.contains("numproc")).unwrap();
        assert!(numproc.starts_with("\x1b[31m") && numproc.ends_with("\x1b[0m"));
        let plain = render_human(&rows(), &HumanOptions::default());
        assert!(!plain.contains('\x1b'));
    }
}
