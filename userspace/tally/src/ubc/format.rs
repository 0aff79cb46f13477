//! The /proc/user_beancounters text, byte for byte as the 64-bit OpenVZ kernel prints it.

use std::fmt::Write;

use super::{Beancounter, Resource};

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
}
