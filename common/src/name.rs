//! User-supplied file names: validation, and path arithmetic on valid names.
//!
//! A name is a relative, `/`-separated UTF-8 path ("photos/cat.png"). It only
//! ever becomes an index key (its sha256), never a path on disk.

use crate::error::{Error, Result};

/// Longest component, as NAME_MAX.
pub const NAME_MAX: usize = 255;
/// Longest whole name, as PATH_MAX less the terminating NUL.
pub const PATH_MAX: usize = 4095;
/// The name at the top of the cluster where mounts show the trash: no
/// file or directory of that name can be made there.
pub const TRASH_DIR: &str = ".scs-trash";

/// Checks a file or directory name, returning it unchanged when valid.
///
/// # Errors
/// [`Error::BadName`] for an empty name, a leading `/`, an empty, `.` or `..`
/// component, or a NUL byte; [`Error::NameTooLong`] past NAME_MAX or PATH_MAX.
pub fn validate(name: &str) -> Result<&str> {
    let bad = |why: &str| Err(Error::BadName(format!("{why}: {:?}", truncate(name))));
    if name.is_empty() {
        return bad("empty name");
    }
    if name.len() > PATH_MAX {
        return Err(Error::NameTooLong(format!("name is {} bytes, the limit is {PATH_MAX}", name.len())));
    }
    if name.contains('\0') {
        return bad("name contains a NUL byte");
    }
    if name.starts_with('/') {
        return bad("name must be relative (no leading /)");
    }
    for component in name.split('/') {
        match component {
            "" => return bad("empty path component"),
            "." | ".." => return bad("path component . or .. is not allowed"),
            c if c.len() > NAME_MAX => {
                return Err(Error::NameTooLong(format!("component is {} bytes, the limit is {NAME_MAX}", c.len())))
            }
            _ => {}
        }
    }
    Ok(name)
}

/// Checks one path component: a name within a directory.
///
/// # Errors
/// [`Error::BadName`] for an empty name, `.`, `..`, a `/` or a NUL byte;
/// [`Error::NameTooLong`] past NAME_MAX.
pub fn validate_component(name: &str) -> Result<&str> {
    let bad = |why: &str| Err(Error::BadName(format!("{why}: {:?}", truncate(name))));
    match name {
        "" => bad("empty name"),
        "." | ".." => bad("the name . or .. cannot be made or removed"),
        n if n.len() > NAME_MAX => {
            Err(Error::NameTooLong(format!("component is {} bytes, the limit is {NAME_MAX}", n.len())))
        }
        n if n.contains('/') => bad("name contains a /"),
        n if n.contains('\0') => bad("name contains a NUL byte"),
        n => Ok(n),
    }
}

/// Turns what a person typed ("/photos/", "./a", "photos//b") into a name,
/// or "" for the root. Then validates it.
pub fn normalize(input: &str) -> Result<String> {
    let parts: Vec<&str> = input.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let joined = parts.join("/");
    if joined.is_empty() {
        return Ok(String::new());
    }
    validate(&joined)?;
    Ok(joined)
}

/// Validates a directory prefix for listing: "" is the root.
pub fn validate_dir(dir: &str) -> Result<&str> {
    if dir.is_empty() {
        Ok(dir)
    } else {
        validate(dir)
    }
}

/// The directory holding `name` ("" for the root).
pub fn parent(name: &str) -> &str {
    match name.rfind('/') {
        Some(i) => &name[..i],
        None => "",
    }
}

/// The last component of `name`.
pub fn base(name: &str) -> &str {
    match name.rfind('/') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// `dir/child`, or `child` in the root.
pub fn join(dir: &str, child: &str) -> String {
    if dir.is_empty() {
        child.to_string()
    } else {
        format!("{dir}/{child}")
    }
}

/// Whether `name` lies strictly inside directory `dir` ("" = root).
pub fn is_inside(name: &str, dir: &str) -> bool {
    if dir.is_empty() {
        return !name.is_empty();
    }
    name.len() > dir.len() + 1 && name.starts_with(dir) && name.as_bytes()[dir.len()] == b'/'
}

/// Every ancestor directory of `name`, outermost first ("a/b/c" → ["a", "a/b"]).
pub fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(i, _)| &name[..i])
}

fn truncate(name: &str) -> String {
    if name.len() <= 80 {
        return name.to_string();
    }
    let mut end = 80;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for n in ["a", "photos/cat.png", "un été/ça va.txt", "a b/c d", ".hidden", "a/..b", "日本/語"] {
            assert_eq!(validate(n).unwrap(), n);
        }
    }

    #[test]
    fn names_that_could_escape_or_confuse_are_rejected() {
        for n in ["", "/etc/passwd", "a/../b", "..", ".", "a/./b", "a//b", "a/", "a\0b"] {
            assert!(matches!(validate(n), Err(Error::BadName(_))), "{n:?} accepted");
        }
    }

    #[test]
    fn limits_are_name_max_and_path_max() {
        let c255 = "x".repeat(255);
        assert!(validate(&c255).is_ok());
        assert!(matches!(validate(&"x".repeat(256)), Err(Error::NameTooLong(_))));
        let long_ok = vec!["y".repeat(200); 20].join("/");
        assert!(long_ok.len() == 4019 && validate(&long_ok).is_ok());
        let too_long = vec!["y".repeat(200); 21].join("/");
        assert!(matches!(validate(&too_long), Err(Error::NameTooLong(_))));
    }

    #[test]
    fn components_are_single_names() {
        assert_eq!(validate_component("a b.txt").unwrap(), "a b.txt");
        for n in ["", ".", "..", "a/b", "a\0"] {
            assert!(matches!(validate_component(n), Err(Error::BadName(_))), "{n:?} accepted");
        }
        assert!(matches!(validate_component(&"x".repeat(256)), Err(Error::NameTooLong(_))));
    }

    #[test]
    fn normalize_trims_slashes_and_dots() {
        assert_eq!(normalize("/photos//cat.png").unwrap(), "photos/cat.png");
        assert_eq!(normalize("./a/").unwrap(), "a");
        assert_eq!(normalize("/").unwrap(), "");
        assert!(normalize("a/../b").is_err());
    }

    #[test]
    fn path_arithmetic() {
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("c"), "");
        assert_eq!(base("a/b/c"), "c");
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a", "x"), "a/x");
        assert!(is_inside("a/b", "a"));
        assert!(!is_inside("ab/c", "a"));
        assert!(!is_inside("a", "a"));
        assert!(is_inside("a", ""));
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), vec!["a", "a/b"]);
    }
}
