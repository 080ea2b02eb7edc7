//! How commands print: a table for people, JSON or YAML for scripts.

use serde::Serialize;

/// `-o table|json|yaml`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// The output flag of the commands that print data.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Output {
    /// How to print: a table, or the objects as JSON or YAML.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `--watch` on the commands whose answer changes.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Watch {
    /// Print again every time what is shown changes, until interrupted.
    #[arg(short = 'w', long = "watch")]
    pub watch: bool,
}

/// Prints `data` as JSON or YAML; `false` when the format is a table, which the
/// command prints itself.
pub fn print_data<T: Serialize>(format: Format, data: &T) -> bool {
    match format {
        Format::Table => return false,
        Format::Json => match serde_json::to_string_pretty(data) {
            Ok(json) => println!("{json}"),
            Err(error) => eprintln!("summit-config: cannot print JSON: {error}"),
        },
        Format::Yaml => match serde_yaml_ng::to_string(data) {
            Ok(yaml) => print!("{yaml}"),
            Err(error) => eprintln!("summit-config: cannot print YAML: {error}"),
        },
    }
    true
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("   ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A line on stderr saying what a command waits for, rewritten in place; only on a
/// terminal, so that scripts and logs see nothing of it.
pub struct Progress(bool);

impl Progress {
    pub fn on_terminal() -> Self {
        Self(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    }

    pub fn show(&self, line: &str) {
        if self.0 {
            eprint!("\r\x1b[K{line}");
        }
    }

    pub fn clear(&self) {
        if self.0 {
            eprint!("\r\x1b[K");
        }
    }
}
