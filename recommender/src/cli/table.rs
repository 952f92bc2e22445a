//! Aligned text columns for people.

/// A table of left-aligned columns separated by two spaces.
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(headers: [&str; N]) -> Self {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate().take(cols) {
                if i + 1 == cols {
                    text.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(["A", "LONGER", "C"]);
        t.row(vec!["wide cell".into(), "x".into(), "last".into()]);
        assert_eq!(
            t.render(),
            "A          LONGER  C\nwide cell  x       last\n"
        );
    }
}
