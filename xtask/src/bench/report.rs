//! What every benchmark's report goes to: its section of docs/benchmarks.md.

use std::path::Path;

use anyhow::{Context as _, Result};

/// Replaces the generated section of docs/benchmarks.md (between the markers) with `report`.
pub(super) fn write_section(path: &Path, which: &str, report: &str) -> Result<()> {
    let begin = format!("<!-- bench {which}: begin -->");
    let end = format!("<!-- bench {which}: end -->");
    let (begin, end) = (begin.as_str(), end.as_str());
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|_| format!("# Benchmarks\n\n{begin}\n{end}\n"));
    let (head, rest) = text
        .split_once(begin)
        .context("docs/benchmarks.md lacks the begin marker")?;
    let (_, tail) = rest
        .split_once(end)
        .context("docs/benchmarks.md lacks the end marker")?;
    std::fs::write(path, format!("{head}{begin}\n{report}{end}{tail}"))?;
    Ok(())
}
