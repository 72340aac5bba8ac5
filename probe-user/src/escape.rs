//! Escaping of untrusted names for text output: cgroup paths, container ids and task names are
//! anyone's choice who can make a cgroup (a delegated subtree, a rootless container) or call
//! `prctl(PR_SET_NAME)`, and a raw ESC, CR or LF in them would let that someone rewrite a
//! terminal, forge a line of a table or a log, or break a scrape.
//!
//! [`escape`] is the one rule every text output uses (count tables, Prometheus label values,
//! error lines); JSON output keeps serde_json's escaping, which is JSON's own. Escaped are:
//!
//! - control characters (C0, DEL and C1: `char::is_control`): `\t`, `\n`, `\r` by name, the
//!   others as `\u{1b}` (lowercase hex, as Rust's `escape_debug` writes them);
//! - the Unicode line and paragraph separators and the bidirectional overrides and isolates
//!   (U+2028, U+2029, U+202A..=U+202E, U+2066..=U+2069), which reorder or break what a terminal
//!   shows, as `\u{202e}`.
//!
//! Everything else is kept as it is, a backslash included (systemd's own escapes, such as the
//! `\x2d` of `app-firefox\x2desr.scope`, stay readable), except a backslash that would read as
//! the start of one of these escapes (one followed by `\`, `t`, `n`, `r`, `u` or an escaped
//! character), which is doubled: so two different names never escape to the same text
//! (`unescape` in the tests gives every name back).
//!
//! Names that are not UTF-8 reach this already decoded lossily (each invalid byte one U+FFFD),
//! where they were read (`ConnectEvent::comm`, cgroup paths).

use std::{borrow::Cow, fmt};

/// Whether `c` is written as an escape.
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether a backslash followed by `rest` must be doubled (see the module docs).
fn ambiguous_backslash(rest: &str) -> bool {
    rest.chars()
        .next()
        .is_some_and(|next| matches!(next, '\\' | 't' | 'n' | 'r' | 'u') || escaped(next))
}

/// `name` with control characters, line separators and bidirectional overrides escaped (see
/// the module docs); borrowed, without copying, when nothing needs escaping.
///
/// ```
/// use probe_user::escape::{Escaped, escape};
///
/// assert_eq!(escape("/system.slice/app-firefox\\x2desr.scope"), "/system.slice/app-firefox\\x2desr.scope");
/// assert_eq!(escape("evil\u{1b}[2J\r\nforged"), r"evil\u{1b}[2J\r\nforged");
/// assert_eq!(format!("{}", Escaped("a\tb")), r"a\tb");
/// ```
pub fn escape(name: &str) -> Cow<'_, str> {
    let clean = !name.chars().any(escaped)
        && !name
            .match_indices('\\')
            .any(|(at, _)| ambiguous_backslash(&name[at + 1..]));
    if clean {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(Escaped(name).to_string())
    }
}

/// `name` escaped as [`escape`] does, written by `Display` without allocating: for `write!`
/// into tables and `eprintln!`.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0;
        let mut clean_from = 0;
        for (at, c) in name.char_indices() {
            let escape = match c {
                '\\' if ambiguous_backslash(&name[at + 1..]) => Some(Replacement::Backslash),
                '\t' => Some(Replacement::Named('t')),
                '\n' => Some(Replacement::Named('n')),
                '\r' => Some(Replacement::Named('r')),
                c if escaped(c) => Some(Replacement::Code(c)),
                _ => None,
            };
            let Some(escape) = escape else {
                continue;
            };
            f.write_str(&name[clean_from..at])?;
            clean_from = at + c.len_utf8();
            match escape {
                Replacement::Backslash => f.write_str("\\\\")?,
                Replacement::Named(n) => write!(f, "\\{n}")?,
                Replacement::Code(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
        }
        f.write_str(&name[clean_from..])
    }
}

/// What one escaped character is written as.
enum Replacement {
    Backslash,
    Named(char),
    Code(char),
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The inverse of [`escape`], which shows that no two names escape alike.
    pub(crate) fn unescape(text: &str) -> String {
        let mut name = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('\\') {
            name.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (c, used) = match after.chars().next() {
                Some('\\') => ('\\', 1),
                Some('t') => ('\t', 1),
                Some('n') => ('\n', 1),
                Some('r') => ('\r', 1),
                Some('u') => {
                    let end = after.find('}').expect("an escape's closing brace");
                    let code = u32::from_str_radix(&after[2..end], 16).expect("hex digits");
                    (char::from_u32(code).expect("a char"), end + 1)
                }
                // A backslash of the name, as it was.
                _ => ('\\', 0),
            };
            name.push(c);
            rest = &after[used..];
        }
        name.push_str(rest);
        name
    }

    #[test]
    fn escapes_control_characters_and_keeps_the_rest() {
        assert_eq!(
            escape("/system.slice/nginx.service"),
            "/system.slice/nginx.service"
        );
        assert!(matches!(escape("plain"), Cow::Borrowed("plain")));
        assert_eq!(
            escape("a\u{1b}[31mred\r\n\tb\u{7f}"),
            r"a\u{1b}[31mred\r\n\tb\u{7f}"
        );
        assert_eq!(escape("c1\u{9b}x"), r"c1\u{9b}x");
        assert_eq!(escape("bidi\u{202e}txt"), r"bidi\u{202e}txt");
        assert_eq!(escape("nul\0"), r"nul\u{0}");
        // systemd's escapes and other backslashes are kept.
        assert_eq!(
            escape(r"app-firefox\x2desr.scope"),
            r"app-firefox\x2desr.scope"
        );
        assert_eq!(escape(r"a\b\"), r"a\b\");
        // A backslash that would read as an escape is doubled.
        assert_eq!(escape(r"\u{1b}"), r"\\u{1b}");
        assert_eq!(escape(r"a\nb"), r"a\\nb");
        assert_eq!(escape("\\\u{1b}"), r"\\\u{1b}");
        assert_eq!(escape(r"\\x"), r"\\\x");
        assert_eq!(escape("lossy\u{fffd}"), "lossy\u{fffd}");
    }

    /// A name of any characters, the escaped ones and backslashes often.
    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                any::<char>(),
                Just('\\'),
                Just('u'),
                Just('n'),
                Just('{'),
                Just('\u{1b}'),
                Just('\r'),
                Just('\n'),
                Just('\t'),
                Just('\u{7f}'),
                Just('\u{85}'),
                Just('\u{202e}'),
            ],
            0..24,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn output_holds_no_escaped_character(name in name()) {
            let text = escape(&name);
            prop_assert!(!text.chars().any(escaped), "{:?} -> {:?}", name, text);
        }

        #[test]
        fn names_without_escapes_or_backslashes_are_unchanged(name in "[^\\\\]{0,24}") {
            let name: String = name.chars().filter(|&c| !escaped(c)).collect();
            prop_assert_eq!(escape(&name), name.as_str());
        }

        #[test]
        fn no_two_names_escape_alike(name in name(), other in name()) {
            let text = escape(&name);
            prop_assert_eq!(unescape(&text), name.as_str());
            if name != other {
                prop_assert_ne!(text, escape(&other));
            }
        }

        #[test]
        fn display_and_escape_agree(name in name()) {
            prop_assert_eq!(Escaped(&name).to_string(), escape(&name));
        }
    }
}
