//! The command line's output on stdout. `println!` panics when stdout
//! cannot be written (`scs ls > /dev/full`); here the first failure is
//! kept instead, and the command ends with it as a one-line error.

use std::io::Write;
use std::sync::Mutex;

static FAILED: Mutex<Option<String>> = Mutex::new(None);

/// Writes one line of output.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        failed(e);
    }
}

/// Flushes the output; why it could not be written, if it could not.
pub fn finish() -> Option<String> {
    if let Err(e) = std::io::stdout().lock().flush() {
        failed(e);
    }
    FAILED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn failed(e: std::io::Error) {
    FAILED.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
}

/// `println!` for the command line's output (see the module docs).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}
pub(crate) use say;
