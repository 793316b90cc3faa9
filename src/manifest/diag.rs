//! Diagnostics: what is wrong with a manifest, and exactly where (`FILE:LINE:COL`).

use super::node::Pos;
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a manifest. `Display` gives `FILE:LINE:COL: error: message` followed by an
/// indented `help:` line when there is a suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Arc<str>,
    pub pos: Pos,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(file: &Arc<str>, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.clone(),
            pos,
            message: message.into(),
            help: None,
        }
    }

    pub fn warning(file: &Arc<str>, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, pos, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `FILE:LINE:COL`, the form editors and terminals turn into links.
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.file, self.pos.line, self.pos.col)
    }

    /// The diagnostic followed by the offending source line and a caret under the column.
    pub fn render(&self, source: Option<&str>) -> String {
        let mut out = self.to_string();
        let line = source.and_then(|s| s.lines().nth((self.pos.line as usize).saturating_sub(1)));
        if let Some(line) = line {
            let n = self.pos.line.to_string();
            let pad = " ".repeat(n.len());
            let caret_col = (self.pos.col as usize).saturating_sub(1).min(line.len());
            let indent: String = line
                .chars()
                .take(caret_col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out = format!(
                "{out}\n {pad} |\n {n} | {line}\n {pad} | {indent}^",
                out = out
            );
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}: {what}: {}", self.location(), self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// The closest candidate to `word`, if any is close enough to be what the user meant.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        if c.to_ascii_lowercase() == lower {
            return Some(c);
        }
        let score = strsim::jaro_winkler(&lower, &c.to_ascii_lowercase());
        if score >= 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("pinn", ["pin", "chip", "line"]), Some("pin"));
        assert_eq!(did_you_mean("on", ["On", "Off", "OnDemand"]), Some("On"));
        assert_eq!(
            did_you_mean("Wroker", ["Worker", "Workload"]),
            Some("Worker")
        );
        assert_eq!(did_you_mean("zzz", ["Worker", "Workload"]), None);
    }

    #[test]
    fn render_points_at_column() {
        let file: Arc<str> = Arc::from("a.yaml");
        let d = Diagnostic::error(&file, Pos { line: 2, col: 3 }, "bad");
        let r = d.render(Some("x: 1\n  pin: 3\n"));
        assert!(r.starts_with("a.yaml:2:3: error: bad"), "{r}");
        assert!(r.ends_with(" |   ^"), "{r}");
    }
}
