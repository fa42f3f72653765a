//! `--set NAME=VALUE`: command-line values that replace `[vars]` entries for one command.
//!
//! An override changes the variable before validation, so it reaches every placeholder
//! and every action key exactly as editing the Orchfile would. Only declared variables
//! may be overridden: a misspelt name must not silently leave the old value in place.

use std::collections::BTreeMap;

use super::load::RawProject;
use super::raw::RawVar;
use super::source::{ConfigError, ErrorKind, did_you_mean};

/// Applies `sets` (in order, a later one wins) to the project's variables, recording the
/// effective overrides in `raw.overrides`; an undeclared name is reported in `raw.errors`.
pub fn apply(raw: &mut RawProject, sets: &[(String, String)]) {
    let mut effective: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in sets {
        match raw.vars.get_mut(name) {
            Some(var) => {
                var.value = value_for(&var.value, value);
                effective.insert(name.clone(), value.clone());
            }
            None => raw.errors.push(unknown(name, value, raw.vars.keys())),
        }
    }
    raw.overrides = effective;
}

/// The new value of a variable declared as `declared`: a list variable takes a
/// comma-separated list (`--set langs=fr,de`), so a matrix over it keeps working.
fn value_for(declared: &RawVar, value: &str) -> RawVar {
    match declared {
        RawVar::One(_) => RawVar::One(value.to_owned()),
        RawVar::List(_) => RawVar::List(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    }
}

fn unknown<'a>(
    name: &str,
    value: &str,
    declared: impl Iterator<Item = &'a String> + Clone,
) -> ConfigError {
    let err = ConfigError::new(
        ErrorKind::UnknownVariable,
        format!("`--set {name}={value}` names `{name}`, which is not declared in `[vars]`"),
    );
    let list = declared
        .clone()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if list.is_empty() {
        return err.help(format!(
            "the Orchfile declares no variables; add `{name} = \"...\"` under `[vars]` to make it one"
        ));
    }
    match did_you_mean(name, declared.map(String::as_str)) {
        Some(s) => err.help(format!("did you mean `{s}`? declared variables: {list}")),
        None => err.help(format!("declared variables: {list}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_variables_take_comma_separated_values() {
        let list = RawVar::List(vec!["fr".into()]);
        match value_for(&list, "de, it,,") {
            RawVar::List(l) => assert_eq!(l, ["de", "it"]),
            RawVar::One(_) => panic!("a list stays a list"),
        }
        match value_for(&RawVar::One("fr".into()), "de,it") {
            RawVar::One(s) => assert_eq!(s, "de,it"),
            RawVar::List(_) => panic!("a string stays a string"),
        }
    }

    #[test]
    fn unknown_names_suggest_the_closest() {
        let declared = ["lang".to_owned(), "model".to_owned()];
        let e = unknown("lnag", "de", declared.iter());
        assert_eq!(e.kind, ErrorKind::UnknownVariable);
        let help = e.help.unwrap_or_default();
        assert!(help.contains("did you mean `lang`?"), "{help}");
        assert!(help.contains("`lang`, `model`"), "{help}");
        let e = unknown("x", "1", [].iter());
        assert!(e.help.unwrap_or_default().contains("declares no variables"));
    }
}
