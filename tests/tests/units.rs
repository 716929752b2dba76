//! `make install` puts the binaries, the `mount.scs` helper and the systemd
//! units in place, and `systemd-analyze verify` accepts the installed units.

use std::path::Path;
use std::process::Command;

use scs_tests::bins::bin_dir;

#[test]
fn installed_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("skipped: systemd-analyze is not installed (make deps installs it)");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let out = Command::new("make")
        .current_dir(repo)
        .arg("install-files")
        .arg(format!("BINSRC={}", bin_dir().display()))
        .arg(format!("PREFIX={}", root.join("usr").display()))
        .arg(format!("UNITDIR={}", root.join("system").display()))
        .arg(format!("USERUNITDIR={}", root.join("user").display()))
        .arg(format!("SYSCONFDIR={}", root.join("etc").display()))
        .arg(format!("ROOTSBINDIR={}", root.join("sbin").display()))
        .output()
        .expect("run make");
    assert!(out.status.success(), "make install-files failed:\n{}", String::from_utf8_lossy(&out.stderr));
    for b in ["scs-node", "scs", "scs-mount"] {
        assert!(root.join("usr/bin").join(b).is_file(), "{b} was not installed");
    }
    assert!(root.join("etc/scs/node.toml.example").is_file());
    // mount(8) runs /sbin/mount.<type>: both links lead to scs-mount, whose name picks the helper's ways.
    for helper in [root.join("usr/sbin/mount.scs"), root.join("sbin/mount.scs")] {
        let target = std::fs::canonicalize(&helper).unwrap_or_else(|e| panic!("{}: {e}", helper.display()));
        assert_eq!(target, std::fs::canonicalize(root.join("usr/bin/scs-mount")).unwrap(), "{}", helper.display());
        let out = Command::new(&helper).arg("--help").output().expect("run mount.scs --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && help.contains("Usage: mount.scs"),
            "{} is not the helper:\n{help}",
            helper.display()
        );
    }
    let units = [
        root.join("system/scs-node@.service"),
        root.join("system/scs-mount-shared.service"),
        root.join("user/scs-mount.service"),
    ];
    for u in &units {
        let text = std::fs::read_to_string(u).expect("unit installed");
        assert!(text.contains(&root.join("usr/bin").display().to_string()), "ExecStart points at the binaries: {text}");
        assert!(!text.contains("@BINDIR@"));
    }
    let out = Command::new("systemd-analyze").arg("verify").args(&units).output().expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
}

#[test]
fn the_example_config_is_a_valid_node_config() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let example = repo.join("systemd/node.toml.example");
    // Every key must be known and every value valid.
    let settings = scs_common::config::NodeSettings::from_file(&example).expect("the example parses");
    scs_common::config::NodeConfig::resolve(settings).expect("the example is valid");
}
