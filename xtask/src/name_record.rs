//! The record files of `cargo xtask download` in `<dir>/.downloads`, one `<value>  <name>`
//! line per record, a later line of a name replacing an earlier one: the sha256 of a first
//! download (`SHA256SUMS`, [`crate::install`]) and the size of an installed file
//! (`INSTALLED`, [`crate::installed_sizes`]).

/// The values recorded for `name` in the record text `text`, in order (the last one holds).
pub fn recorded_values<'a>(
    text: &'a str,
    name: &'a str,
) -> impl DoubleEndedIterator<Item = &'a str> {
    text.lines()
        .filter_map(|l| l.split_once("  "))
        .filter(move |(_, n)| n.trim() == name)
        .map(|(v, _)| v.trim())
}

/// The lines of the record text `text` (each with its newline) that record no name `drop`
/// accepts, and whether any line did.
pub fn without_names(text: &str, drop: impl Fn(&str) -> bool) -> (String, bool) {
    let mut dropped = false;
    let mut kept = String::new();
    for l in text.lines() {
        if l.split_once("  ").is_some_and(|(_, n)| drop(n.trim())) {
            dropped = true;
        } else {
            kept.push_str(l);
            kept.push('\n');
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_record_of_a_name_holds_and_records_are_dropped_by_name() {
        let text = "aa  x.tar\n12  y/a.npy\nbb  x.tar\nnot a record\n";
        assert_eq!(
            recorded_values(text, "x.tar").collect::<Vec<_>>(),
            ["aa", "bb"]
        );
        assert_eq!(recorded_values(text, "z").count(), 0);
        let (kept, dropped) = without_names(text, |n| n == "x.tar");
        assert_eq!(
            (kept.as_str(), dropped),
            ("12  y/a.npy\nnot a record\n", true)
        );
        assert!(!without_names(text, |n| n == "z").1);
    }
}
