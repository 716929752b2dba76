//! `scs`: the SCS command line client.

fn main() -> std::process::ExitCode {
    scs_mount::cli::main()
}
