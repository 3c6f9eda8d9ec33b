//! How answers are printed: the API's JSON (`-j`, and the commands that show
//! an object), the conventions of the human lines, and stdout writes.

use std::fmt::Display;
use std::io::{self, Write};

use serde_json::Value;

/// The JSON indented, with a final newline.
pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// A text field in a line: missing or empty as `-`.
pub fn or_dash(text: Option<&str>) -> &str {
    match text {
        Some(t) if !t.is_empty() => t,
        _ => "-",
    }
}

/// A number in a line: missing as `-`.
pub fn number_or_dash(n: Option<impl Display>) -> String {
    n.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// Items joined by `,`, or `-` for none.
pub fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

/// Text squeezed onto one line of at most 200 characters.
pub fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > 200 {
        let cut: String = joined.chars().take(200).collect();
        format!("{cut}...")
    } else {
        joined
    }
}

/// `200 <command> OK`, or the answer's JSON with `-j`.
pub fn write_ok(out: &mut dyn Write, name: &str, json: bool, answer: &Value) -> io::Result<()> {
    if json {
        out.write_all(pretty(answer).as_bytes())
    } else {
        writeln!(out, "200 {name} OK")
    }
}

/// The answer's JSON with `-j`, else the lines `human` makes.
pub fn write_answer(
    out: &mut dyn Write,
    json: bool,
    answer: &Value,
    human: impl FnOnce() -> String,
) -> io::Result<()> {
    let text = if json { pretty(answer) } else { human() };
    out.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashes_and_lines() {
        assert_eq!(or_dash(Some("")), "-");
        assert_eq!(or_dash(None), "-");
        assert_eq!(or_dash(Some("x")), "x");
        assert_eq!(number_or_dash(Some(-1i64)), "-1");
        assert_eq!(number_or_dash(None::<u64>), "-");
        assert_eq!(list_or_dash(&[]), "-");
        assert_eq!(one_line("a\n  b"), "a b");
        assert_eq!(one_line(&"x".repeat(201)).len(), 203);
    }
}
