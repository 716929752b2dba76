//! Runs one `scs` command with a hard deadline and captures what a user sees.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long one CLI command may take before the test fails. The client's own
/// retry window is 5 s; this is the backstop for a hang.
pub const CLI_DEADLINE: Duration = Duration::from_secs(60);

/// What one `scs` run printed and how it exited.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Output {
    /// The exit code (`None` if a signal ended it).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics with the whole output unless the command exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Output {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Asserts exit code `code` and a stderr naming the problem: its last line
    /// is `scs: ...` and contains `needle`. Returns that line.
    #[track_caller]
    pub fn assert_error(&self, code: i32, needle: &str) -> String {
        assert_eq!(self.code(), Some(code), "wrong exit code:\n{self}");
        let line = self.error_line();
        assert!(
            line.starts_with("scs: ") && line.contains(needle),
            "expected a last stderr line `scs: ...{needle}...`:\n{self}"
        );
        line
    }

    /// Like [`Output::assert_error`] with exit code 1, and the message is the
    /// only thing on stderr (the CLI contract: one line).
    #[track_caller]
    pub fn assert_one_line_error(&self, needle: &str) -> String {
        let line = self.assert_error(1, needle);
        assert_eq!(self.stderr.trim_end().lines().count(), 1, "expected exactly one line on stderr:\n{self}");
        line
    }

    /// The last non-empty line of stderr.
    pub fn error_line(&self) -> String {
        self.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stdout = self.stdout_text();
        let stdout = if stdout.len() > 2000 {
            let mut end = 2000;
            while !stdout.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &stdout[..end], stdout.len())
        } else {
            stdout
        };
        write!(
            f,
            "  $ {}\n  exit: {:?} after {:.2?}\n  stdout: {}\n  stderr: {}",
            self.command,
            self.status,
            self.elapsed,
            stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// `program args` with piped output and the environment a user has by
/// default: no inherited log filter, no key path from the environment.
pub fn user_command(program: &Path, args: &[OsString]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .env_remove("SCS_SECRET_FILE");
    cmd
}

/// Runs `program args` with `deadline`; kills it and panics when it is late.
///
/// The child dies with the test thread that started it (PR_SET_PDEATHSIG),
/// so a test runner killed from outside leaves nothing behind.
pub fn run(program: &Path, args: &[OsString], deadline: Duration) -> Output {
    run_with_env(program, args, &[], deadline)
}

/// [`run`] with these variables set in the child's environment
/// (`XDG_CONFIG_HOME`, say).
pub fn run_with_env(program: &Path, args: &[OsString], env: &[(&str, &Path)], deadline: Duration) -> Output {
    let command = env
        .iter()
        .map(|(k, v)| format!("{k}={}", shell_quote(&v.to_string_lossy())))
        .chain(std::iter::once(program.display().to_string()))
        .chain(args.iter().map(|a| shell_quote(&a.to_string_lossy())))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = user_command(program, args);
    cmd.envs(env.iter().copied());
    die_with_parent(&mut cmd);
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_until(&mut child, start + deadline).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`{command}` did not finish within {deadline:?}: a hang (killed it)");
    });
    let elapsed = start.elapsed();
    let stdout = stdout.join().expect("stdout reader");
    let stderr = String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned();
    Output { command, status, stdout, stderr, elapsed }
}

/// Polls `child` until it exits or `until` passes (`None`).
pub fn wait_until(child: &mut Child, until: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= until => return None,
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for a child process: {e}"),
        }
    }
}

/// Asks the kernel to SIGKILL the child when the thread that spawned it dies.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
