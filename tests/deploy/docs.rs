//! Facts the documentation states, checked against the one place each is
//! defined: the README's configuration table against the flags clap knows
//! (name, environment variable, default).

use clap::CommandFactory as _;

use crate::checks::{checks, text};

/// One row of the README's configuration table.
struct Row {
    flag: String,
    env: String,
    default: String,
}

fn readme_rows() -> Vec<Row> {
    let cell = |c: &str| c.trim().trim_matches('`').to_owned();
    text("README.md")
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            Row {
                flag: cell(cells[0]).trim_start_matches("--").to_owned(),
                env: cell(cells.get(1).copied().unwrap_or("")),
                default: cells.get(2).copied().unwrap_or("").trim().to_owned(),
            }
        })
        .collect()
}

#[test]
fn the_readme_configuration_table_is_the_flags_clap_knows() {
    let command = wsgate::Cli::command();
    let rows = readme_rows();
    checks("README.md's configuration table", |c| {
        c.check(
            rows.len() > 20,
            format!("the table was read ({} rows)", rows.len()),
        );
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let Some(row) = rows.iter().find(|r| r.flag == long) else {
                c.check(false, format!("--{long} has no row"));
                continue;
            };
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or("");
            c.check(
                row.env == env,
                format!("--{long}: the row says `{}`, clap reads `{env}`", row.env),
            );
            if let Some(default) = arg.get_default_values().first() {
                let default = default.to_string_lossy();
                c.check(
                    row.default.contains(&format!("`{default}`")),
                    format!(
                        "--{long}: the row's default is {}, clap's is `{default}`",
                        row.default
                    ),
                );
            }
        }
        for row in &rows {
            c.check(
                command
                    .get_arguments()
                    .any(|a| a.get_long() == Some(&row.flag)),
                format!("the row for --{} names no flag", row.flag),
            );
        }
    });
}
