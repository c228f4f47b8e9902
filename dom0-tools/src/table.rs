//! Plain-text tables: left-aligned text columns, right-aligned numbers.

use std::fmt::Write;

/// A table under construction.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), rows: Vec::new() }
    }

    /// Appends a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, header first.
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let cell = |row: &Vec<String>, i: usize| row.get(i).cloned().unwrap_or_default();
        let width = |i: usize| {
            self.rows.iter().map(|r| cell(r, i).chars().count()).chain([self.headers[i].len()]).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..cols).map(width).collect();
        // A column is numeric when every non-empty cell starts with a digit.
        let numeric: Vec<bool> = (0..cols)
            .map(|i| {
                let mut cells = self.rows.iter().map(|r| cell(r, i)).filter(|c| !c.is_empty() && c != "-");
                cells.all(|c| c.starts_with(|ch: char| ch.is_ascii_digit()))
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for i in 0..cols {
                let text = cell(row, i);
                let sep = if i == 0 { "" } else { "  " };
                let w = widths[i];
                let _ = if numeric[i] { write!(line, "{sep}{text:>w$}") } else { write!(line, "{sep}{text:<w$}") };
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn aligns_text_left_and_numbers_right() {
        let mut t = Table::new(&["VIF", "PKTS"]);
        t.row(vec!["vif1.0".into(), "5".into()]);
        t.row(vec!["vif12.0".into(), "1234".into()]);
        assert_eq!(t.render(), "VIF      PKTS\nvif1.0      5\nvif12.0  1234\n");
    }
}
