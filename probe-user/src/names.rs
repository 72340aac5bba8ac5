//! Parsing the values of a [`Named`] set (`Format`, `Backend`, `CountBy`): one name table each,
//! defined with the type, serves parsing, printing and the list of choices in errors.

use std::fmt;

pub use probe_common::Named;

/// A name that is not one of a [`Named`] set's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{name}' (expected one of: {})", .choices.join(", "))]
pub struct UnknownName {
    /// What was named (`"format"`, `"backend"`).
    pub what: &'static str,
    /// The name given.
    pub name: String,
    /// Every accepted name.
    pub choices: Vec<&'static str>,
}

/// The value of `T` called `name`; `also` lists further names the caller accepts itself (such
/// as `auto`), for the error.
pub fn parse<T: Named>(
    what: &'static str,
    name: &str,
    also: &[&'static str],
) -> Result<T, UnknownName> {
    T::from_name(name).ok_or_else(|| UnknownName {
        what,
        name: name.to_owned(),
        choices: also
            .iter()
            .copied()
            .chain(T::ALL.iter().map(|v| v.name()))
            .collect(),
    })
}

/// Writes a [`Named`] value's name (for `Display` impls).
pub(crate) fn write<T: Named>(value: T, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(value.name())
}
