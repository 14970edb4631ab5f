//! Shapes in messages, as a person writes them: `(100, 1, 28, 20)` for a tensor (the
//! notation of the messages' expected shapes, `(B, 1, H, W)`), `784 × 3` for the
//! dimensions of a data file's array (Rust's `[100, 1, 28, 20]` read as code).

/// `(a, b, c)`.
pub(crate) fn tuple_text(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("({})", parts.join(", "))
}

/// `a × b × c` (`a scalar` for no dimensions).
pub(crate) fn times_text(dims: &[usize]) -> String {
    if dims.is_empty() {
        return "a scalar".into();
    }
    let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
    parts.join(" × ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_read_as_written() {
        assert_eq!(tuple_text(&[100, 1, 28, 20]), "(100, 1, 28, 20)");
        assert_eq!(tuple_text(&[7]), "(7)");
        assert_eq!(times_text(&[784, 3]), "784 × 3");
        assert_eq!(times_text(&[]), "a scalar");
    }
}
