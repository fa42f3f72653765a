//! The environment a build sees: variables orch itself sets for one build (`ORCH_TICK`
//! in an aligned `orch watch`) come before the process's own. Keys, the no-op shortcut
//! and the commands all read variables through here, so they agree on every value.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::RwLock;

static SET: RwLock<BTreeMap<String, String>> = RwLock::new(BTreeMap::new());

/// Sets `name` for the builds that follow (None: the process's own value again).
pub fn set(name: &str, value: Option<String>) {
    let mut set = SET.write().unwrap_or_else(|e| e.into_inner());
    match value {
        Some(v) => set.insert(name.to_owned(), v),
        None => set.remove(name),
    };
}

/// The value of `name` for a build.
pub fn var_os(name: &str) -> Option<OsString> {
    let set = SET.read().unwrap_or_else(|e| e.into_inner());
    match set.get(name) {
        Some(v) => Some(OsString::from(v)),
        None => std::env::var_os(name),
    }
}

/// Every variable orch sets for a build, sorted: each command gets them.
pub fn set_by_orch() -> Vec<(String, String)> {
    let set = SET.read().unwrap_or_else(|e| e.into_inner());
    set.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_set_by_orch_comes_first_and_can_be_taken_back() {
        let name = "ORCH_TEST_ENV_OVERRIDE_7F3A";
        assert_eq!(var_os(name), None);
        set(name, Some("2026-11-28T18:00:00Z".to_owned()));
        assert_eq!(var_os(name), Some(OsString::from("2026-11-28T18:00:00Z")));
        assert!(set_by_orch().iter().any(|(k, _)| k == name));
        set(name, None);
        assert_eq!(var_os(name), None);
    }
}
