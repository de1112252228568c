//! Wildcards over the server's names (`get '*.pdf'`, `rm 'old/*'`), matched with `globset`
//! against a listing the caller already has.
//!
//! The rules are the shell's: `*` and `?` stay within one folder level (`old/*` does not reach
//! `old/x/y`), `**/` crosses any number of levels (none included), `[abc]` is a class, and `\` makes the next character
//! literal (a server name never holds a backslash, so it is free for this). It sends nothing.

use crate::protocol::ListingEntry;

/// Whether `text` holds a wildcard, and so is worth matching rather than taking as a name.
#[must_use]
pub fn is_pattern(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// The entries whose names match `pattern`, in the listing's order.
///
/// # Errors
/// The pattern's syntax error (an unclosed `[`, say).
pub fn select<'a>(
    entries: &'a [ListingEntry],
    pattern: &str,
) -> Result<Vec<&'a ListingEntry>, globset::Error> {
    let matcher = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()?
        .compile_matcher();
    Ok(entries
        .iter()
        .filter(|e| matcher.is_match(e.name.as_str()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::FileName;
    use crate::protocol::FileId;

    #[test]
    fn wildcards_stay_within_a_level() -> Result<(), Box<dyn std::error::Error>> {
        let entries: Vec<ListingEntry> =
            ["a.pdf", "b.txt", "old/x.pdf", "old/deep/y.pdf", "c*.pdf"]
                .into_iter()
                .map(|n| {
                    Ok(ListingEntry {
                        id: FileId([0; 16]),
                        name: FileName::parse(n)?,
                        size: 0,
                    })
                })
                .collect::<Result<_, crate::name::NameError>>()?;
        let names = |p: &str| -> Result<Vec<String>, globset::Error> {
            Ok(select(&entries, p)?
                .iter()
                .map(|e| e.name.to_string())
                .collect())
        };
        assert_eq!(names("*.pdf")?, ["a.pdf", "c*.pdf"]);
        assert_eq!(names("old/*")?, ["old/x.pdf"]);
        assert_eq!(
            names("**/*.pdf")?,
            ["a.pdf", "old/x.pdf", "old/deep/y.pdf", "c*.pdf"]
        );
        assert_eq!(names("c\\*.pdf")?, ["c*.pdf"]);
        assert_eq!(names("?.txt")?, ["b.txt"]);
        assert!(names("[").is_err());
        assert!(is_pattern("*.pdf") && is_pattern("a?") && !is_pattern("plain.txt"));
        Ok(())
    }
}
