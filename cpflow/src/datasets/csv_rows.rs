//! A strict reader for numeric CSV files: one sample per line, with an optional header line of
//! column names (the CLI's `.csv` data source uses it).
//!
//! The separator is read off the first line that is neither blank nor a comment: a semicolon
//! if it has one, else a comma, else a tab, else runs of spaces (`numpy.savetxt`'s default);
//! a line without any is a single column.
//!
//! Comments: a line whose first non-blank character is `#` is a comment wherever it is, and is
//! skipped like a blank line (`numpy.savetxt(f, a, header="x y")` writes `# x y` above the
//! rows; `numpy.loadtxt` skips such lines). A `#` after a field is not a comment (numpy's
//! inline comments are not read): `1,2 # note` is an error naming the field. A `# x,y` comment
//! above the rows is therefore a header only in name; a header of column names without `#`
//! still follows the header rule below, on the first line that is not a comment.
//!
//! Rules (whitespace around fields is ignored; blank lines are skipped; fields may be quoted
//! except with space separators):
//! - every data line has the same number of fields, each a number (`str::parse::<f64>`:
//!   `1`, `-2.5e-3`, `inf`, `NaN`; finiteness is the caller's business);
//! - a first line with a number among its fields is a data line: any other field that is not
//!   a number (`1,2,abc`; `1,2,` with an empty last field; `0x10,2`) is an error naming
//!   that line, never a silently skipped row;
//! - a first line without any number is a **header** only if it is plausible: it has as many
//!   fields as the line after it, and none is empty (`x,y`); otherwise (`x,` with an empty
//!   name, `x,y,z` above `1,2`, a lone `x,y`) it is an error naming line 1;
//! - a file of blank lines only has no data rows, and is an error.
//!
//! Every error is a [`DatasetError::Corrupt`] naming the file, the line and the field.

use std::path::Path;

use super::{DatasetError, Matrix};

/// Reads a numeric CSV file as a row-major `f64` matrix, one row per data line, with the
/// rules of [`parse_csv_matrix`].
///
/// ```
/// use cpflow::datasets::{DatasetError, read_csv_file};
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-read-csv-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("samples.csv");
/// std::fs::write(&path, "x,y\n0.5,-1\n2,3e-1\n").unwrap();
/// let m = read_csv_file(&path)?;
/// assert_eq!((m.rows(), m.cols(), m.data()), (2, 2, &[0.5, -1.0, 2.0, 0.3][..]));
/// // A missing file is an I/O error naming it.
/// let err = read_csv_file(&dir.join("missing.csv")).unwrap_err();
/// assert!(matches!(err, DatasetError::Io { .. }) && err.to_string().contains("missing.csv"));
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn read_csv_file(path: &Path) -> Result<Matrix<f64>, DatasetError> {
    Ok(read_csv_rows(path)?.matrix)
}

/// The rows of a numeric CSV file and the file line each was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRows {
    /// The rows, row-major, one per data line ([`parse_csv_matrix`]'s).
    pub matrix: Matrix<f64>,
    /// The (1-based) line of the file of each row: row `i` (counted from 0) is line
    /// `lines[i]`, past the header, comments and blank lines.
    pub lines: Vec<u64>,
}

/// [`read_csv_file`] that also gives the file line of every row, for messages that point a
/// user at a row of the file (`row 1 (line 3 of f.csv)`).
///
/// ```
/// use cpflow::datasets::read_csv_rows;
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-csv-rows-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("f.csv");
/// std::fs::write(&path, "# written by numpy\nx,y\n\n0.5,-1\n2,3\n").unwrap();
/// let rows = read_csv_rows(&path)?;
/// assert_eq!(rows.lines, [4, 5]);
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn read_csv_rows(path: &Path) -> Result<CsvRows, DatasetError> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    parse_csv_rows(path, &bytes)
}

/// Parses numeric CSV text; `path` is used in error messages only.
///
/// The separator is read off the first line that is neither blank nor a `#` comment: a
/// semicolon if it has one, else a comma, else a tab, else runs of spaces
/// (`numpy.savetxt`'s default). Lines whose first non-blank character is `#` are comments,
/// skipped wherever they are (`numpy.savetxt`'s `header=` and `footer=`).
///
/// Rules (whitespace around fields is ignored; blank lines are skipped; fields may be quoted
/// except with space separators):
/// - every data line has the same number of fields, each a number (`str::parse::<f64>`:
///   `1`, `-2.5e-3`, `inf`, `NaN`; finiteness is the caller's business);
/// - a first line with a number among its fields is a data line: any other field that is not
///   a number (`1,2,abc`; `1,2,` with an empty last field; `0x10,2`) is an error naming
///   that line, never a silently skipped row;
/// - a first line without any number is a **header** only if it is plausible: it has as many
///   fields as the line after it, and none is empty (`x,y`); otherwise (`x,` with an empty
///   name, `x,y,z` above `1,2`, a lone `x,y`) it is an error naming line 1;
/// - a file of blank lines only has no data rows, and is an error.
///
/// Every error is a [`DatasetError::Corrupt`] naming the file, the line and the field.
///
/// ```
/// use cpflow::datasets::parse_csv_matrix;
/// let m = parse_csv_matrix("a.csv".as_ref(), b"x,y\n1,2\n3,4\n")?;
/// assert_eq!((m.rows(), m.cols(), m.data()), (2, 2, &[1.0, 2.0, 3.0, 4.0][..]));
/// // A first line that is neither numbers nor names is an error, not a skipped row.
/// assert!(parse_csv_matrix("b.csv".as_ref(), b"1,2,abc\n3,4,5\n").is_err());
/// // Semicolons, tabs and spaces separate fields too (read off the first line).
/// let spaces = parse_csv_matrix("c.txt".as_ref(), b"1.0e+00 2.0e+00\n3.0e+00  4.0e+00\n")?;
/// assert_eq!(spaces, m);
/// // `numpy.savetxt(f, a, header="x y")`: a `#` comment above the rows.
/// assert_eq!(parse_csv_matrix("d.txt".as_ref(), b"# x y\n1 2\n3 4\n")?, m);
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn parse_csv_matrix(path: &Path, text: &[u8]) -> Result<Matrix<f64>, DatasetError> {
    Ok(parse_csv_rows(path, text)?.matrix)
}

/// [`parse_csv_matrix`] that also gives the file line of every row ([`CsvRows`]).
pub fn parse_csv_rows(path: &Path, text: &[u8]) -> Result<CsvRows, DatasetError> {
    let (text, comments) = blank_comment_lines(text);
    if !text.is_empty() && text.trim_ascii().is_empty() {
        return Err(DatasetError::corrupt(
            path,
            if comments {
                "no data rows (only blank lines and `#` comments)"
            } else {
                "no data rows (only blank lines)"
            },
        ));
    }
    let separator = Separator::of_first_line(&text);
    let lines = match separator.separator {
        Separator::Byte(delimiter) => delimited_records(path, &text, delimiter)?,
        Separator::Spaces => space_separated_records(&text),
    };
    rows_to_matrix(path, &lines, separator)
}

/// `text` with every comment line (first non-blank byte `#`) emptied, its line break kept so
/// that lines keep their numbers, and whether there was one.
fn blank_comment_lines(text: &[u8]) -> (std::borrow::Cow<'_, [u8]>, bool) {
    let is_comment = |l: &[u8]| l.trim_ascii_start().first() == Some(&b'#');
    if !text.split(|&b| b == b'\n').any(is_comment) {
        return (text.into(), false);
    }
    let mut out = Vec::with_capacity(text.len());
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        if !is_comment(line) {
            out.extend_from_slice(line);
        }
    }
    (out.into(), true)
}

/// How the fields of a line are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Separator {
    /// One byte: `,`, `;` or a tab (the csv crate's reader, with quoting).
    Byte(u8),
    /// Runs of spaces.
    Spaces,
}

/// The separator of a file and the (1-based) line it was read off, for the messages that
/// count fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSeparator {
    separator: Separator,
    line: u64,
}

impl Separator {
    /// The separator of the first non-blank line (comments already blanked) and its number:
    /// a semicolon if it has one (a `;` file may have decimal commas), else a comma, else a
    /// tab, else spaces between its fields; a comma (one column) otherwise.
    fn of_first_line(text: &[u8]) -> FileSeparator {
        let (line, first) = text
            .split(|&b| b == b'\n')
            .map(|l| l.trim_ascii())
            .enumerate()
            .find(|(_, l)| !l.is_empty())
            .unwrap_or_default();
        let line = line as u64 + 1;
        for delimiter in [b';', b',', b'\t'] {
            if first.contains(&delimiter) {
                return FileSeparator {
                    separator: Separator::Byte(delimiter),
                    line,
                };
            }
        }
        let separator = if first.contains(&b' ') {
            Separator::Spaces
        } else {
            Separator::Byte(b',')
        };
        FileSeparator { separator, line }
    }
}

impl FileSeparator {
    /// How the fields were counted, for a message that gives a count: "fields separated by
    /// `,` (the separator of line 1)". The count is the reader's, which can differ from what
    /// the eye sees on a line that uses another separator (`1;2` under commas is one field).
    fn counted(self) -> String {
        let by = match self.separator {
            Separator::Byte(b'\t') => "tabs".to_string(),
            Separator::Byte(b) => format!("`{}`", b as char),
            Separator::Spaces => "spaces".to_string(),
        };
        format!(
            "fields separated by {by}, the separator of line {}",
            self.line
        )
    }
}

/// "1 field", "2 fields".
fn fields(n: usize) -> String {
    format!("{n} field{}", if n == 1 { "" } else { "s" })
}

/// The records of `delimiter`-separated text with the (1-based) line each starts on.
fn delimited_records(
    path: &Path,
    text: &[u8],
    delimiter: u8,
) -> Result<Vec<(u64, csv::StringRecord)>, DatasetError> {
    let reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text);
    // Line numbers are counted here: the csv crate's positions (line and byte) point at the
    // blank lines it skipped before a record, so those are skipped first.
    let (mut counted_to, mut line) = (0usize, 1u64);
    let mut lines = Vec::new();
    for rec in reader.into_records() {
        let rec = rec.map_err(|e| DatasetError::corrupt(path, e.to_string()))?;
        let mut start = rec
            .position()
            .and_then(|p| usize::try_from(p.byte()).ok())
            .unwrap_or(counted_to)
            .clamp(counted_to, text.len());
        while matches!(text.get(start), Some(b'\n' | b'\r')) {
            start += 1;
        }
        line += text[counted_to..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        counted_to = start;
        // A line of only whitespace is blank (the csv crate returns it as one empty field).
        let end = text[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| start + i);
        if text[start..end].trim_ascii().is_empty() {
            continue;
        }
        lines.push((line, rec));
    }
    Ok(lines)
}

/// The records of space-separated text (fields split at runs of whitespace, no quoting) with
/// the (1-based) line of each; blank lines are skipped.
fn space_separated_records(text: &[u8]) -> Vec<(u64, csv::StringRecord)> {
    String::from_utf8_lossy(text)
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (i as u64 + 1, csv::StringRecord::from(fields))
        })
        .collect()
}

/// The matrix of the records (a plausible header line skipped) with the line of each row,
/// or the first bad line.
fn rows_to_matrix(
    path: &Path,
    lines: &[(u64, csv::StringRecord)],
    separator: FileSeparator,
) -> Result<CsvRows, DatasetError> {
    let Some((first_line, first)) = lines.first() else {
        return Err(DatasetError::corrupt(path, "no data rows (empty file)"));
    };
    let skip = match parse_numbers(first) {
        Ok(_) => 0,
        // A line with a number among its fields is a data line, whatever else is wrong with
        // it (`1,2,` with an empty last field; `0x10,2`): its own error says what.
        Err(detail) if first.iter().any(|f| f.parse::<f64>().is_ok()) => {
            return Err(DatasetError::corrupt(
                path,
                format!("line {first_line}: {detail}"),
            ));
        }
        Err(_) => {
            check_header(path, *first_line, first, lines.get(1), separator)?;
            1
        }
    };
    let data_lines = &lines[skip..];
    let Some((_, width_rec)) = data_lines.first() else {
        return Err(DatasetError::corrupt(path, "no data rows after the header"));
    };
    let cols = width_rec.len();
    let mut data = Vec::with_capacity(cols * data_lines.len());
    for (line, rec) in data_lines {
        if rec.len() != cols {
            return Err(DatasetError::corrupt(
                path,
                format!(
                    "line {line} has {}, expected {cols} ({})",
                    fields(rec.len()),
                    separator.counted()
                ),
            ));
        }
        let values = parse_numbers(rec)
            .map_err(|detail| DatasetError::corrupt(path, format!("line {line}: {detail}")))?;
        data.extend(values);
    }
    Ok(CsvRows {
        matrix: Matrix::new(data_lines.len(), cols, data)?,
        lines: data_lines.iter().map(|(line, _)| *line).collect(),
    })
}

/// The fields of a record as numbers, or what is wrong with the first bad field.
fn parse_numbers(rec: &csv::StringRecord) -> Result<Vec<f64>, String> {
    rec.iter()
        .enumerate()
        .map(|(j, s)| {
            if s.is_empty() {
                Err(format!("field {} is empty", j + 1))
            } else {
                s.parse::<f64>()
                    .map_err(|_| format!("field {} ({s:?}) is not a number", j + 1))
            }
        })
        .collect()
}

/// Accepts `first` (a line without any number) as a header only if it is a plausible one:
/// non-empty names, as many as the fields of the next line.
fn check_header(
    path: &Path,
    line: u64,
    first: &csv::StringRecord,
    next: Option<&(u64, csv::StringRecord)>,
    separator: FileSeparator,
) -> Result<(), DatasetError> {
    let bad = |why: String| {
        DatasetError::corrupt(
            path,
            format!("line {line} is neither a row of numbers nor a header of column names: {why}"),
        )
    };
    let Some((next_line, next)) = next else {
        return Err(bad("no data line follows it".into()));
    };
    if first.len() != next.len() {
        return Err(bad(format!(
            "it has {}, line {next_line} has {} ({})",
            fields(first.len()),
            next.len(),
            separator.counted()
        )));
    }
    for (j, name) in first.iter().enumerate() {
        if name.is_empty() {
            return Err(bad(format!("field {} is empty", j + 1)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Matrix<f64>, DatasetError> {
        parse_csv_matrix(Path::new("rows.csv"), text.as_bytes())
    }

    /// The error message, checked to be a `Corrupt` naming the file.
    fn error(text: &str) -> String {
        let err = parse(text).unwrap_err();
        assert!(matches!(err, DatasetError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("rows.csv"), "{msg}");
        msg
    }

    #[test]
    fn numbers_with_and_without_a_header() {
        let m = parse("1, 2.5\n-3e2,4\n").unwrap();
        assert_eq!(
            (m.rows(), m.cols(), m.data()),
            (2, 2, &[1.0, 2.5, -300.0, 4.0][..])
        );
        for text in ["x,y\n1,2.5\n-3e2,4\n", "\"x\", \"y y\"\n1,2.5\n\n-3e2,4"] {
            assert_eq!(parse(text).unwrap(), m, "{text:?}");
        }
        let col = parse("value\n1\n2\n3\n").unwrap();
        assert_eq!((col.rows(), col.cols()), (3, 1));
        // Non-finite numbers are numbers here; the caller decides whether to accept them.
        assert!(parse("nan,inf\n1,2\n").unwrap().data()[0].is_nan());
    }

    #[test]
    fn implausible_first_lines_are_errors_naming_line_1() {
        // Each of these was silently skipped before (any non-numeric first line was a header).
        for (text, why) in [
            ("x,y,z\n1,2\n", "it has 3 fields, line 2 has 2"),
            ("x,\n1,2\n", "field 2 is empty"),
            (",y\n1,2\n", "field 1 is empty"),
            ("x,y\n", "no data line follows"),
        ] {
            let msg = error(text);
            assert!(msg.contains("line 1 is neither"), "{text:?}: {msg}");
            assert!(msg.contains(why), "{text:?}: {why:?} not in {msg}");
        }
    }

    #[test]
    fn a_first_line_with_a_number_is_a_data_line_and_its_error_is_reported() {
        // These were diagnosed as headers ("field 1 (\"1\") is a number among names", "no
        // data line follows it"): a line holding a number is no header.
        for (text, want) in [
            ("1,2,\n3,4,\n", "line 1: field 3 is empty"),
            ("1;2;\n3;4;\n", "line 1: field 3 is empty"),
            ("0x10,2\n", "line 1: field 1 (\"0x10\") is not a number"),
            ("1_000,2\n", "line 1: field 1 (\"1_000\") is not a number"),
            (
                "1_000,2\n3,4\n",
                "line 1: field 1 (\"1_000\") is not a number",
            ),
            (
                "1,2,abc\n3,4,5\n",
                "line 1: field 3 (\"abc\") is not a number",
            ),
            (
                "1 2 abc\n3 4 5\n",
                "line 1: field 3 (\"abc\") is not a number",
            ),
            ("\n\nx,2\n", "line 3: field 1 (\"x\") is not a number"),
        ] {
            let msg = error(text);
            assert!(msg.contains(want), "{text:?}: {want:?} not in {msg}");
            assert!(!msg.contains("header"), "{text:?}: {msg}");
        }
    }

    #[test]
    fn blank_lines_only_are_no_data_rows() {
        // "\n\n  \n" said "line 3 is neither a row of numbers nor a header".
        for text in ["\n\n  \n", "  \n", "\t\n\r\n", " "] {
            let msg = error(text);
            assert!(
                msg.contains("no data rows (only blank lines)"),
                "{text:?}: {msg}"
            );
        }
        assert!(error("").contains("no data rows (empty file)"));
        // Whitespace-only lines among data lines are skipped like empty ones.
        let m = parse("1,2\n  \n3,4\n\t\n").unwrap();
        assert_eq!(m.data(), &[1.0, 2.0, 3.0, 4.0]);
        assert!(error("x,y\n \n").contains("no data line follows"));
    }

    #[test]
    fn semicolons_tabs_and_spaces_separate_fields() {
        let m = parse("1,2.5\n-3e2,4\n").unwrap();
        for text in [
            "1;2.5\n-3e2;4\n",
            "x; y\n1;2.5\n-3e2;4\n",
            "1\t2.5\n\n-3e2\t4\n",
            // numpy.savetxt's default: single spaces; aligned columns: runs of them.
            "1.000000000000000000e+00 2.500000000000000000e+00\n-3e2 4\n",
            "  x   y\n  1   2.5\n-3e2   4\n",
        ] {
            assert_eq!(parse(text).unwrap(), m, "{text:?}");
        }
        // A ';'-separated file had its first line taken as a one-column header and failed on
        // line 2 ("3;4" is not a number).
        let msg = error("1;2\n3;4\n5;x\n");
        assert!(msg.contains("line 3: field 2 (\"x\")"), "{msg}");
        assert!(error("1 2\n3\n").contains("line 2 has 1 field, expected 2"));
        // Separators are not mixed: the first line's is the file's.
        assert!(error("1;2\n3,4\n").contains("line 2 has 1 field, expected 2"));
        // Line numbers count blank lines with space separators too.
        assert!(error("\n1 2\n\n3 y\n").contains("line 4: field 2"));
        // A decimal comma under ';' separators is not a number, and says so.
        let msg = error("1,5;2,0\n3,5;4,0\n");
        assert!(
            msg.contains("line 2: field 1 (\"3,5\") is not a number"),
            "{msg}"
        );
    }

    #[test]
    fn bad_data_lines_name_the_line_and_field() {
        assert!(error("1,2\n3\n").contains("line 2 has 1 field, expected 2"));
        let msg = error("x,y\n1,2\n\n3,oops\n");
        assert!(msg.contains("line 4: field 2 (\"oops\")"), "{msg}");
        assert!(error("1,2\n3,\n").contains("line 2: field 2 is empty"));
        assert!(error("").contains("no data rows"));
        // Line numbers count the blank lines that the csv crate skips.
        assert!(error("\n\n1,2\n3\n").contains("line 4 has 1 field, expected 2"));
    }

    /// `numpy.savetxt(f, a, header="x y")` writes `# x y` above the rows: it said "line 1 is
    /// neither a row of numbers nor a header of column names: it has 3 fields, line 2 has 2".
    /// Comment lines are skipped wherever they are, and keep their line numbers.
    #[test]
    fn comment_lines_are_skipped_anywhere() {
        let m = parse("0.1 0.2\n0.3 0.4\n").unwrap();
        for text in [
            "# x y\n0.1 0.2\n0.3 0.4\n",
            "# x,y\n0.1 0.2\n0.3 0.4\n",
            "  # generated\n# x y\n0.1 0.2\n# middle\n0.3 0.4\n# footer\n",
            "# generated\nx y\n0.1 0.2\n0.3 0.4\n",
        ] {
            assert_eq!(parse(text).unwrap(), m, "{text:?}");
        }
        // `# generated` above comma-separated rows: the separator is the rows' (it was read
        // off the comment, spaces, and line 2 "had 1 field").
        let rows =
            parse_csv_rows(Path::new("g.csv"), b"# generated\n0.1,0.2\n\n0.3,0.4\n").unwrap();
        assert_eq!(rows.matrix.data(), &[0.1, 0.2, 0.3, 0.4]);
        assert_eq!(rows.lines, [2, 4]);
        assert!(error("# a\n1,2\n# b\n3\n").contains("line 4 has 1 field, expected 2"));
        assert!(error("# only a comment\n\n").contains("only blank lines and `#` comments"));
        // An inline `#` is not a comment: the field is named.
        assert!(error("1,2 # note\n").contains("field 2 (\"2 # note\") is not a number"));
    }

    /// A field count names the separator it was counted with, read off which line: "x y z"
    /// over "1,2" said "it has 3 fields, line 2 has 1", where the eye sees 2.
    #[test]
    fn field_counts_name_the_separator() {
        let msg = error("x y z\n1,2\n");
        assert!(
            msg.contains(
                "it has 3 fields, line 2 has 1 (fields separated by spaces, the separator of \
                 line 1)"
            ),
            "{msg}"
        );
        let msg = error("# c\n1;2\n3,4\n");
        assert!(
            msg.contains(
                "line 3 has 1 field, expected 2 (fields separated by `;`, the separator of \
                 line 2)"
            ),
            "{msg}"
        );
        assert!(error("1\t2\n3\n").contains("separated by tabs"));
    }

    #[test]
    fn read_csv_file_reports_io_errors() {
        let err = read_csv_file(Path::new("/nonexistent/cpflow/rows.csv")).unwrap_err();
        assert!(matches!(err, DatasetError::Io { .. }), "{err}");
        assert!(err.to_string().contains("rows.csv"), "{err}");
    }
}
