//! `docs/c-api.md` against `include/btcore.h`: every function the header declares is
//! documented there, and every `btcore_*`/`BTCORE_*` name the page uses exists.

mod common;

use std::collections::BTreeSet;

/// The text without its `/* ... */` comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        match rest[i..].find("*/") {
            Some(j) => rest = &rest[i + j + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// Every identifier starting with `btcore_` or `BTCORE_` in `text`, and whether it is
/// followed by `(`; a name ending in `_` (`BTCORE_EVENT_*`, a family) is left out.
fn names(text: &str) -> Vec<(String, bool)> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if (b[i..].starts_with(b"btcore_") || b[i..].starts_with(b"BTCORE_"))
            && (i == 0 || !word(b[i - 1]))
        {
            let mut j = i;
            while j < b.len() && word(b[j]) {
                j += 1;
            }
            if !text[i..j].ends_with('_') {
                out.push((text[i..j].to_string(), b.get(j) == Some(&b'(')));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_c_api_page_documents_every_function_and_names_only_what_exists() {
    let root = common::root();
    let header = std::fs::read_to_string(root.join("include/btcore.h")).expect("header");
    let page = std::fs::read_to_string(root.join("docs/c-api.md")).expect("docs/c-api.md");
    let code = strip_comments(&header);
    let declared: BTreeSet<String> = names(&code).into_iter().map(|(n, _)| n).collect();
    let functions: BTreeSet<String> = names(&code)
        .into_iter()
        .filter(|(_, call)| *call)
        .map(|(n, _)| n)
        .collect();
    assert!(
        functions.len() > 50,
        "too few functions parsed: {functions:?}"
    );
    let used: BTreeSet<String> = names(&page).into_iter().map(|(n, _)| n).collect();
    let undocumented: Vec<_> = functions.difference(&used).collect();
    assert!(
        undocumented.is_empty(),
        "functions of btcore.h that docs/c-api.md does not mention: {undocumented:?}"
    );
    let unknown: Vec<_> = used.difference(&declared).collect();
    assert!(
        unknown.is_empty(),
        "names in docs/c-api.md that btcore.h does not declare: {unknown:?}"
    );
}
