//! The one place that turns an SCS error into the errno a program sees.
//!
//! Everything the cluster can say maps to what a local file system would
//! answer for the same mistake; anything about reaching the cluster is EIO.

use fuser::Errno;

use scs_common::Error;

/// The errno for an error from the cluster.
pub fn errno(e: &Error) -> Errno {
    match e {
        Error::NotFound(_) => Errno::ENOENT,
        Error::Exists(_) => Errno::EEXIST,
        Error::NotDir(_) => Errno::ENOTDIR,
        Error::IsDir(_) => Errno::EISDIR,
        Error::NotEmpty(_) => Errno::ENOTEMPTY,
        Error::BadName(_) | Error::Invalid(_) => Errno::EINVAL,
        Error::NameTooLong(_) => Errno::ENAMETOOLONG,
        Error::NoSpace(_) => Errno::ENOSPC,
        Error::Auth(_) => Errno::EACCES,
        Error::NotPermitted(_) => Errno::EPERM,
        Error::Loop(_) => Errno::ELOOP,
        Error::NoAttr(_) => Errno::ENODATA,
        Error::Range(_) => Errno::ERANGE,
        Error::TooBig(_) => Errno::E2BIG,
        Error::NotSupported(_) => Errno::EOPNOTSUPP,
        Error::ReadOnly(_) => Errno::EROFS,
        Error::Unavailable(_)
        | Error::NoQuorum(_)
        | Error::Stale(_)
        | Error::NotLeader(_)
        | Error::Io(_)
        | Error::Local(_)
        | Error::Protocol(_)
        | Error::Corrupt(_)
        | Error::Config(_)
        | Error::Internal(_) => Errno::EIO,
    }
}

/// The errno for a local I/O error (staging and cache files): its own code
/// when it has one, else EIO.
pub fn io_errno(e: &std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(code) if code > 0 => Errno::from_i32(code),
        _ => Errno::EIO,
    }
}

/// Whether an error says something about the request itself (the same
/// request would fail again), rather than about reaching the cluster.
pub fn is_final(e: &Error) -> bool {
    errno(e) != Errno::EIO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_mistakes_get_the_errno_of_a_local_file_system() {
        let cases = [
            (Error::NotFound("a".into()), libc::ENOENT),
            (Error::Exists("a".into()), libc::EEXIST),
            (Error::NotDir("a".into()), libc::ENOTDIR),
            (Error::IsDir("a".into()), libc::EISDIR),
            (Error::NotEmpty("a".into()), libc::ENOTEMPTY),
            (Error::BadName("a".into()), libc::EINVAL),
            (Error::Invalid("a".into()), libc::EINVAL),
            (Error::NameTooLong("a".into()), libc::ENAMETOOLONG),
            (Error::NoSpace("a".into()), libc::ENOSPC),
            (Error::Auth("a".into()), libc::EACCES),
            (Error::NotPermitted("a".into()), libc::EPERM),
            (Error::Loop("a".into()), libc::ELOOP),
            (Error::NoAttr("a".into()), libc::ENODATA),
            (Error::Range("a".into()), libc::ERANGE),
            (Error::TooBig("a".into()), libc::E2BIG),
            (Error::NotSupported("a".into()), libc::EOPNOTSUPP),
            (Error::ReadOnly("a".into()), libc::EROFS),
        ];
        for (e, want) in cases {
            assert_eq!(errno(&e).code(), want, "{e}");
            assert!(is_final(&e), "{e} should not be retried");
        }
    }

    #[test]
    fn trouble_reaching_the_cluster_is_eio() {
        for e in [
            Error::Unavailable("x".into()),
            Error::NoQuorum("x".into()),
            Error::Stale("x".into()),
            Error::NotLeader(None),
            Error::Io("x".into()),
            Error::Protocol("x".into()),
            Error::Corrupt("x".into()),
            Error::Internal("x".into()),
        ] {
            assert_eq!(errno(&e).code(), libc::EIO, "{e}");
            assert!(!is_final(&e), "{e} may go away on a retry");
        }
    }

    #[test]
    fn local_io_errors_keep_their_code() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(io_errno(&full).code(), libc::ENOSPC);
        let other = std::io::Error::other("no code");
        assert_eq!(io_errno(&other).code(), libc::EIO);
    }
}
