//! Name validation and normalization, as run on every name a user types or
//! a peer sends: never a panic, and whatever is accepted obeys the rules
//! (no empty, `.` or `..` component, no NUL, no leading `/`, components of
//! at most NAME_MAX bytes, at most PATH_MAX in all).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scs_common::name::{self, NAME_MAX, PATH_MAX};
use scs_common::Error;

fn assert_obeys_the_rules(n: &str) {
    assert!(!n.is_empty() && n.len() <= PATH_MAX, "accepted a name of {} bytes", n.len());
    assert!(!n.contains('\0') && !n.starts_with('/'), "accepted {n:?}");
    for c in n.split('/') {
        assert!(!c.is_empty() && c != "." && c != "..", "accepted component {c:?} in {n:?}");
        assert!(c.len() <= NAME_MAX, "accepted a component of {} bytes", c.len());
    }
}

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 never becomes a name (msgpack strings are checked when
    // decoded); the lossy form stands for what a client might make of it.
    let owned;
    let input = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(_) => {
            owned = String::from_utf8_lossy(data).into_owned();
            &owned
        }
    };
    match name::validate(input) {
        Ok(n) => {
            assert_eq!(n, input);
            assert_obeys_the_rules(n);
            assert_eq!(name::join(name::parent(n), name::base(n)), n);
            for a in name::ancestors(n) {
                assert!(name::validate(a).is_ok() && name::is_inside(n, a));
            }
        }
        Err(Error::BadName(_) | Error::NameTooLong(_)) => {}
        Err(e) => panic!("unexpected error {e:?}"),
    }
    if let Ok(n) = name::normalize(input) {
        if !n.is_empty() {
            assert_obeys_the_rules(&n);
        }
        assert_eq!(name::normalize(&n).as_ref(), Ok(&n), "normalizing twice changed {n:?}");
    }
    let _ = name::validate_dir(input);
});
