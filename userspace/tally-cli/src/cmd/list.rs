//! `tally list [-a] [-H] [-j] [-o FIELD,...] [-s [-]FIELD]`, like vzlist. Default columns:
//! CTID NPROC STATUS IP_ADDR HOSTNAME. A beancounter row is a field too: `numproc` is its
//! held value, `numproc.m` maxheld, `.b` barrier, `.l` limit, `.f` failcnt.

use std::cmp::Ordering;

use tally::{
    api::{Client, ContainerView, ExitCode},
    ubc::{Resource, UNLIMITED},
};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Containers to show (default: all).
    ctids: Vec<String>,
    /// Stopped containers too (default: running only).
    #[arg(short, long)]
    all: bool,
    /// No header line.
    #[arg(short = 'H', long)]
    no_header: bool,
    /// JSON: one object per container with the chosen fields.
    #[arg(short, long)]
    json: bool,
    /// Fields, comma-separated.
    #[arg(short, long, value_delimiter = ',', default_value = "ctid,nproc,status,ip,hostname")]
    output: Vec<String>,
    /// Sort by this field ('-' in front: descending).
    #[arg(short, long, value_name = "FIELD")]
    sort: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Num(u64),
    Text(String),
}

impl Value {
    fn show(&self) -> String {
        match self {
            Value::Num(n) if *n == UNLIMITED => "unlimited".into(),
            Value::Num(n) => n.to_string(),
            Value::Text(t) => t.clone(),
        }
    }
    fn json(&self) -> serde_json::Value {
        match self {
            Value::Num(n) if *n == UNLIMITED => serde_json::Value::String("unlimited".into()),
            Value::Num(n) => serde_json::Value::from(*n),
            Value::Text(t) => serde_json::Value::String(t.clone()),
        }
    }
    fn cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Num(a), Value::Num(b)) => a.cmp(b),
            (a, b) => a.show().cmp(&b.show()),
        }
    }
}

/// A field: its header and how to read it from a container.
struct Field {
    name: String,
    header: String,
    get: Box<dyn Fn(&ContainerView) -> Value>,
}

fn field(name: &str) -> Option<Field> {
    let text = |f: fn(&ContainerView) -> String| -> Box<dyn Fn(&ContainerView) -> Value> {
        Box::new(move |v| Value::Text(f(v)))
    };
    let (header, get): (&str, Box<dyn Fn(&ContainerView) -> Value>) = match name {
        "ctid" => ("CTID", text(|v| v.ctid.to_string())),
        "nproc" => ("NPROC", Box::new(|v: &ContainerView| Value::Num(v.pids.len() as u64))),
        "status" => ("STATUS", text(|v| status_word(v).to_string())),
        "ip" => (
            "IP_ADDR",
            text(|v| {
                if v.ip_address.is_empty() {
                    "-".into()
                } else {
                    v.ip_address.join(" ")
                }
            }),
        ),
        "hostname" => (
            "HOSTNAME",
            text(|v| {
                if v.hostname.is_empty() {
                    "-".into()
                } else {
                    v.hostname.clone()
                }
            }),
        ),
        "ostemplate" => ("OSTEMPLATE", text(|v| v.ostemplate.clone())),
        _ => {
            let (row, suffix) = name.split_once('.').unwrap_or((name, ""));
            let r = Resource::from_name(row).filter(|r| !r.is_dummy())?;
            let pick: fn(&tally::ubc::Beancounter) -> u64 = match suffix {
                "" => |b| b.held,
                "m" => |b| b.maxheld,
                "b" => |b| b.barrier,
                "l" => |b| b.limit,
                "f" => |b| b.failcnt,
                _ => return None,
            };
            return Some(Field {
                name: name.to_string(),
                header: name.to_ascii_uppercase(),
                get: Box::new(move |v| Value::Num(v.beancounters.get(r.index()).map_or(0, pick))),
            });
        }
    };
    Some(Field {
        name: name.to_string(),
        header: header.to_string(),
        get,
    })
}

fn status_word(v: &ContainerView) -> &'static str {
    match (v.status.running, v.status.mounted) {
        (true, _) => "running",
        (false, true) => "mounted",
        (false, false) => "stopped",
    }
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let fields: Vec<Field> = args
        .output
        .iter()
        .map(|n| {
            field(n.trim()).ok_or_else(|| {
                Failure::new(
                    ExitCode::BadArgument,
                    format!("unknown field '{n}' (ctid nproc status ip hostname ostemplate, or ROW[.m|.b|.l|.f])"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let sort = match &args.sort {
        None => None,
        Some(s) => {
            let (desc, name) = s.strip_prefix('-').map_or((false, s.as_str()), |n| (true, n));
            let f = field(name)
                .ok_or_else(|| Failure::new(ExitCode::BadArgument, format!("unknown sort field '{name}'")))?;
            Some((desc, f))
        }
    };
    let mut views: Vec<ContainerView> = if args.ctids.is_empty() {
        client.get("/v1/containers").await?
    } else {
        let mut out = Vec::new();
        for raw in &args.ctids {
            let ct = crate::ctid(raw)?;
            out.push(client.get(&format!("/v1/containers/{ct}")).await?);
        }
        out
    };
    if !args.all && args.ctids.is_empty() {
        views.retain(|v| v.status.running);
    }
    if let Some((desc, f)) = &sort {
        views.sort_by(|a, b| {
            let o = (f.get)(a).cmp(&(f.get)(b));
            if *desc {
                o.reverse()
            } else {
                o
            }
        });
    }
    let rows: Vec<Vec<Value>> = views
        .iter()
        .map(|v| fields.iter().map(|f| (f.get)(v)).collect())
        .collect();
    if args.json {
        let out: Vec<serde_json::Map<String, serde_json::Value>> = rows
            .iter()
            .map(|row| {
                fields
                    .iter()
                    .zip(row)
                    .map(|(f, v)| (f.name.clone(), v.json()))
                    .collect()
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).expect("serializable"));
        return Ok(0);
    }
    print!("{}", render(&fields, &rows, !args.no_header));
    Ok(0)
}

/// vzlist's layout: numbers right-aligned, text left-aligned, the last column unpadded.
fn render(fields: &[Field], rows: &[Vec<Value>], header: bool) -> String {
    let width = |i: usize| {
        let head = if header { fields[i].header.len() } else { 0 };
        rows.iter().map(|r| r[i].show().len()).chain([head]).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..fields.len()).map(width).collect();
    let numeric: Vec<bool> = (0..fields.len())
        .map(|i| {
            matches!(fields[i].name.as_str(), "ctid" | "nproc")
                || fields[i].name.contains('.')
                || rows.iter().any(|r| matches!(r[i], Value::Num(_)))
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut out: Vec<String> = Vec::new();
        for (i, c) in cells.into_iter().enumerate() {
            let last = i + 1 == fields.len();
            out.push(if numeric[i] {
                format!("{c:>w$}", w = widths[i])
            } else if last {
                c
            } else {
                format!("{c:<w$}", w = widths[i])
            });
        }
        out.join(" ").trim_end().to_string() + "\n"
    };
    let mut s = String::new();
    if header {
        s += &line(fields.iter().map(|f| f.header.clone()).collect());
    }
    for r in rows {
        s += &line(r.iter().map(Value::show).collect());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_with_suffixes() {
        assert!(field("numproc.f").is_some());
        assert!(field("numproc.x").is_none());
        assert!(field("dummy4").is_none());
        assert!(field("nosuch").is_none());
        assert_eq!(field("ip").unwrap().header, "IP_ADDR");
    }

    #[test]
    fn layout_aligns_numbers_right() {
        let fields = vec![
            field("ctid").unwrap(),
            field("nproc").unwrap(),
            field("hostname").unwrap(),
        ];
        let rows = vec![
            vec![Value::Text("101".into()), Value::Num(3), Value::Text("ct101".into())],
            vec![Value::Text("2".into()), Value::Num(12), Value::Text("web".into())],
        ];
        assert_eq!(
            render(&fields, &rows, true),
            "CTID NPROC HOSTNAME\n 101     3 ct101\n   2    12 web\n"
        );
    }
}
