//! Located errors of a pipeline file: each names the file, the line, the column and the field.

use std::fmt;
use std::ops::Range;

/// One error in a pipeline file, located
/// (`pipelines/ads.toml:12:1: field `checkpoint.interval_ms`: must be at least 10`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineError {
    /// The file.
    pub file: String,
    /// 1-based line (0: the file could not be read).
    pub line: usize,
    /// 1-based column (0: the file could not be read).
    pub column: usize,
    /// The field (`section.key`, `reporting.reports[1].name`), when the error is about one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PipelineError {}

/// Every error found in a pipeline file (at least one), in the order of the file: one per line
/// when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineErrors(Vec<PipelineError>);

impl PipelineErrors {
    /// The errors, in the order of the file.
    pub fn errors(&self) -> &[PipelineError] {
        &self.0
    }
}

impl From<PipelineError> for PipelineErrors {
    fn from(error: PipelineError) -> Self {
        PipelineErrors(vec![error])
    }
}

impl fmt::Display for PipelineErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PipelineErrors {}

/// Gathers the errors of one file while it is resolved, so that all of them are reported.
pub(super) struct Collector<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<PipelineError>,
}

impl<'a> Collector<'a> {
    /// No errors yet, in `file` whose contents are `text`.
    pub(super) fn new(file: &'a str, text: &'a str) -> Self {
        Collector {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// An error about `field`, at byte range `span` of the text (`0..0`: a default value, reported
    /// at 1:1).
    pub(super) fn error(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(PipelineError {
            file: self.file.to_string(),
            line,
            column,
            field: Some(field.into()),
            message: message.into(),
        });
    }

    /// The byte range of the first `needle` in the text (`0..0` if it is not there): for
    /// errors about map keys, which carry no span of their own.
    pub(super) fn find(&self, needle: &str) -> Range<usize> {
        self.text
            .find(needle)
            .map_or(0..0, |start| start..start + needle.len())
    }

    /// Errors so far.
    pub(super) fn len(&self) -> usize {
        self.errors.len()
    }

    /// `value` when nothing was wrong, else every error in file order.
    pub(super) fn finish<T>(mut self, value: T) -> Result<T, PipelineErrors> {
        if self.errors.is_empty() {
            return Ok(value);
        }
        self.errors.sort_by_key(|e| (e.line, e.column));
        Err(PipelineErrors(self.errors))
    }
}

/// A TOML syntax, type or unknown-key error, located and naming its field. Reading stops at the
/// first of these (the rest of the file cannot be read reliably past it).
pub(super) fn parse_error(file: &str, text: &str, e: &toml::de::Error) -> PipelineError {
    let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
    let message = e.message().trim().to_string();
    // Type errors point at a value without naming it: name the field.
    let field = key_at_line(text, line).filter(|key| !message.contains(key));
    PipelineError {
        file: file.to_string(),
        line,
        column,
        field,
        message,
    }
}

/// `section.key` of the `key = value` on 1-based `line`, if that line holds one.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let (key, _) = here.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

/// 1-based line and column of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}
