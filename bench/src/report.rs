//! Output: a Markdown report printed as it is produced (and optionally
//! copied to a file), small statistics, and tables.

use std::io::Write;

/// Lines printed to stdout as they come, kept for `--out`.
#[derive(Default)]
pub struct Report {
    text: String,
}

impl Report {
    pub fn line(&mut self, s: impl AsRef<str>) {
        let s = s.as_ref();
        println!("{s}");
        let _ = std::io::stdout().flush();
        self.text.push_str(s);
        self.text.push('\n');
    }

    pub fn blank(&mut self) {
        self.line("");
    }

    pub fn table(&mut self, t: &Table) {
        for l in t.render() {
            self.line(l);
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Progress messages go to stderr, so stdout stays the report.
pub fn progress(s: impl AsRef<str>) {
    eprintln!("  .. {}", s.as_ref());
}

/// A Markdown table with aligned columns.
pub struct Table {
    head: Vec<String>,
    /// Right-align (numbers) per column.
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns; a leading `>` in a name right-aligns the column.
    pub fn new(cols: &[&str]) -> Table {
        Table {
            head: cols
                .iter()
                .map(|c| c.trim_start_matches('>').to_string())
                .collect(),
            right: cols.iter().map(|c| c.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.head.len(), "table row width");
        self.rows.push(cells);
    }

    fn render(&self) -> Vec<String> {
        let n = self.head.len();
        let mut w: Vec<usize> = self.head.iter().map(|h| h.chars().count().max(3)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let fmt = |cells: &[String]| {
            let mut s = String::from("|");
            for i in 0..n {
                let pad = w[i] - cells[i].chars().count();
                if self.right[i] {
                    s.push_str(&format!(" {}{} |", " ".repeat(pad), cells[i]));
                } else {
                    s.push_str(&format!(" {}{} |", cells[i], " ".repeat(pad)));
                }
            }
            s
        };
        let mut out = vec![fmt(&self.head)];
        let mut sep = String::from("|");
        for (wi, right) in w.iter().zip(&self.right) {
            if *right {
                sep.push_str(&format!(" {}: |", "-".repeat(wi - 1)));
            } else {
                sep.push_str(&format!(" {} |", "-".repeat(*wi)));
            }
        }
        out.push(sep);
        out.extend(self.rows.iter().map(|r| fmt(r)));
        out
    }
}

pub fn median(v: &[f64]) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

pub fn mean(v: &[f64]) -> f64 {
    assert!(!v.is_empty(), "mean of nothing");
    v.iter().sum::<f64>() / v.len() as f64
}

pub fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

pub fn verdict(ok: bool) -> String {
    if ok { "PASS" } else { "MISS" }.to_string()
}

/// Output of a command, first from its own `key=` fields; a readable error
/// when the key is absent.
pub fn field(out: &str, key: &str) -> Result<f64, String> {
    let pat = format!("{key}=");
    let w = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&pat))
        .ok_or_else(|| format!("no {key}= in output:\n{out}"))?;
    w.trim_end_matches(',')
        .parse()
        .map_err(|e| format!("{key}={w} is not a number ({e}) in:\n{out}"))
}

/// An integer `key=` field (times in ns do not all fit an f64 exactly).
pub fn field_u64(out: &str, key: &str) -> Result<u64, String> {
    let pat = format!("{key}=");
    let w = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&pat))
        .ok_or_else(|| format!("no {key}= in output:\n{out}"))?;
    w.trim_end_matches(',')
        .parse()
        .map_err(|e| format!("{key}={w} is not an integer ({e}) in:\n{out}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_fields() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min_max(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
        let out = "launch_ns=12.5 t_start=1234567890123456789\nOK FAILS=0";
        assert_eq!(field(out, "launch_ns").unwrap(), 12.5);
        assert_eq!(
            field_u64(out, "t_start").unwrap(),
            1_234_567_890_123_456_789
        );
        assert!(field(out, "nope").is_err());
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["name", ">n"]);
        t.row(vec!["a".into(), "1.5".into()]);
        t.row(vec!["longer".into(), "10".into()]);
        assert_eq!(
            t.render(),
            vec![
                "| name   |   n |",
                "| ------ | --: |",
                "| a      | 1.5 |",
                "| longer |  10 |",
            ]
        );
    }
}
