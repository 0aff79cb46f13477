//! The /proc/user_beancounters text, byte for byte as the 64-bit OpenVZ kernel prints it, its
//! parser (so that tools written for OpenVZ's file can be pointed at ours and back), and the
//! JSON form of the same rows.

use std::fmt::Write;

use super::{Beancounter, Resource};
use tally_common::RESOURCE_COUNT;

/// One container's rows, in kernel order (index = Resource::index()).
pub struct ContainerRows<'a> {
    pub id: &'a str,
    pub rows: &'a [Beancounter],
}

pub fn render_proc(containers: &[ContainerRows<'_>]) -> String {
    let mut out = String::from("Version: 2.5\n");
    let _ = writeln!(
        out,
        "{:>10}  {:<12} {:>20} {:>20} {:>20} {:>20} {:>20}",
        "uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt"
    );
    for ct in containers {
        for (i, (resource, bc)) in Resource::ALL.iter().zip(ct.rows.iter()).enumerate() {
            let (id, mark) = if i == 0 { (ct.id, ':') } else { ("", ' ') };
            let _ = writeln!(
                out,
                "{:>10}{} {:<12} {:>20} {:>20} {:>20} {:>20} {:>20}",
                id,
                mark,
                resource.name(),
                bc.held,
                bc.maxheld,
                bc.barrier,
                bc.limit,
                bc.failcnt
            );
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ProcParseError {
    pub line: usize,
    pub message: String,
}

/// Parses /proc/user_beancounters text (64- or 32-bit widths: columns are split on blanks)
/// into (id, rows in kernel order).
pub fn parse_proc(text: &str) -> Result<Vec<(String, Vec<Beancounter>)>, ProcParseError> {
    let err = |line: usize, message: &str| ProcParseError {
        line,
        message: message.to_string(),
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, v)) if v.starts_with("Version: 2.5") => {}
        _ => return Err(err(1, "expected 'Version: 2.5'")),
    }
    match lines.next() {
        Some((_, h))
            if h.split_whitespace()
                .eq(["uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt"]) => {}
        _ => return Err(err(2, "expected the column header")),
    }
    let mut out: Vec<(String, Vec<Beancounter>)> = Vec::new();
    for (n, line) in lines {
        let mut fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if let Some(id) = fields[0].strip_suffix(':') {
            out.push((id.to_string(), Vec::new()));
            fields.remove(0);
        }
        let Some((_, rows)) = out.last_mut() else {
            return Err(err(n + 1, "a row before any 'id:'"));
        };
        let [name, held, maxheld, barrier, limit, failcnt] = fields[..] else {
            return Err(err(n + 1, "expected resource held maxheld barrier limit failcnt"));
        };
        let expected = Resource::ALL
            .get(rows.len())
            .ok_or_else(|| err(n + 1, "more rows than the kernel has"))?;
        if expected.name() != name {
            return Err(err(
                n + 1,
                &format!("expected {} in kernel order, found {name}", expected.name()),
            ));
        }
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| err(n + 1, &format!("'{s}' is not a number")))
        };
        rows.push(Beancounter {
            held: num(held)?,
            maxheld: num(maxheld)?,
            barrier: num(barrier)?,
            limit: num(limit)?,
            failcnt: num(failcnt)?,
        });
    }
    if let Some((id, rows)) = out.iter().find(|(_, r)| r.len() != RESOURCE_COUNT) {
        return Err(err(
            0,
            &format!("container {id} has {} rows, not {RESOURCE_COUNT}", rows.len()),
        ));
    }
    Ok(out)
}

/// One container's rows as JSON: named rows (no dummies), in kernel order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UbcJson {
    pub ctid: String,
    pub beancounters: Vec<NamedRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamedRow {
    pub resource: String,
    #[serde(flatten)]
    pub row: Beancounter,
}

impl UbcJson {
    pub fn new(ctid: &str, rows: &[Beancounter]) -> UbcJson {
        let beancounters = Resource::ALL
            .iter()
            .zip(rows)
            .filter(|(r, _)| !r.is_dummy())
            .map(|(r, b)| NamedRow {
                resource: r.name().to_string(),
                row: *b,
            })
            .collect();
        UbcJson {
            ctid: ctid.to_string(),
            beancounters,
        }
    }

    pub fn row(&self, r: Resource) -> Option<&Beancounter> {
        self.beancounters
            .iter()
            .find(|n| n.resource == r.name())
            .map(|n| &n.row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_kernel_layout() {
        let mut rows = [Beancounter::unlimited(); tally_common::RESOURCE_COUNT];
        rows[0] = Beancounter {
            held: 12681216,
            maxheld: 14540800,
            ..Beancounter::unlimited()
        };
        let text = render_proc(&[ContainerRows { id: "101", rows: &rows }]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Version: 2.5");
        assert_eq!(
            lines[1],
            "       uid  resource                     held              maxheld              barrier                limit              failcnt"
        );
        assert_eq!(
            lines[2],
            "       101: kmemsize                 12681216             14540800  9223372036854775807  9223372036854775807                    0"
        );
        assert_eq!(
            lines[3],
            "            lockedpages                     0                    0  9223372036854775807  9223372036854775807                    0"
        );
        assert_eq!(lines.len(), 2 + 25);
        assert!(lines[6].contains(" dummy "));
    }

    /// Two containers with every kind of value: zero, small, unlimited, near the top.
    fn sample() -> Vec<(String, Vec<Beancounter>)> {
        let mut a = vec![Beancounter::unlimited(); RESOURCE_COUNT];
        a[Resource::KmemSize.index()] = Beancounter {
            held: 12681216,
            maxheld: 14540800,
            ..Beancounter::unlimited()
        };
        a[Resource::NumProc.index()] = Beancounter {
            held: 20,
            maxheld: 20,
            barrier: 20,
            limit: 20,
            failcnt: 11,
        };
        a[Resource::PhysPages.index()] = Beancounter {
            held: 8190,
            maxheld: 8192,
            barrier: 0,
            limit: 8192,
            failcnt: 3,
        };
        let mut b = vec![Beancounter::default(); RESOURCE_COUNT];
        b[Resource::NumFile.index()] = Beancounter {
            held: 1,
            maxheld: 40,
            barrier: 40,
            limit: 40,
            failcnt: u64::MAX / 2,
        };
        vec![("101".to_string(), a), ("web-2".to_string(), b)]
    }

    fn render(sample: &[(String, Vec<Beancounter>)]) -> String {
        let cts: Vec<ContainerRows> = sample.iter().map(|(id, rows)| ContainerRows { id, rows }).collect();
        render_proc(&cts)
    }

    #[test]
    fn proc_text_matches_the_golden_file() {
        assert_eq!(render(&sample()), include_str!("testdata/user_beancounters.txt"));
    }

    #[test]
    fn proc_text_parses_back_to_the_same_rows() {
        let s = sample();
        assert_eq!(parse_proc(&render(&s)).unwrap(), s);
        assert_eq!(parse_proc(include_str!("testdata/user_beancounters.txt")).unwrap(), s);
    }

    #[test]
    fn bad_proc_text_is_refused_with_its_line() {
        assert_eq!(parse_proc("Version: 2.4\n").unwrap_err().line, 1);
        let text = render(&sample()).replace("numproc ", "numprocs");
        assert!(parse_proc(&text).unwrap_err().message.contains("kernel order"));
        let cut: String = render(&sample()).lines().take(10).map(|l| format!("{l}\n")).collect();
        assert!(parse_proc(&cut).unwrap_err().message.contains("rows"));
    }

    #[test]
    fn json_matches_the_golden_file_and_parses_back() {
        let json: Vec<UbcJson> = sample().iter().map(|(id, rows)| UbcJson::new(id, rows)).collect();
        let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
        assert_eq!(text, include_str!("testdata/user_beancounters.json"));
        let back: Vec<UbcJson> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, json);
        assert_eq!(back[0].row(Resource::NumProc).unwrap().failcnt, 11);
        assert!(back[0].beancounters.iter().all(|r| r.resource != "dummy"));
    }
}
