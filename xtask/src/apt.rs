//! Debian packages that peers need (Chromium, Prometheus), installed with
//! apt where a program is missing and apt can be used (as root). Nothing is
//! downloaded from anywhere else. Also how a peer's program is found
//! ([`configured`]) and tried ([`answers`]).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The program `var` names, else `default`.
pub fn configured(var: &str, default: &str) -> PathBuf {
    env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// `program --version` succeeds.
pub fn answers(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `apt-get install packages` (after an update), quietly. `skip_var` set
/// to anything but `0` installs nothing. `Err(why)` when nothing was
/// installed.
pub fn install(packages: &[&str], skip_var: &str) -> Result<(), String> {
    let list = packages.join(" ");
    if env::var_os(skip_var).is_some_and(|v| !v.is_empty() && v != "0") {
        return Err(format!("{skip_var} is set"));
    }
    if !is_root() {
        return Err(format!("not root, so apt cannot install {list}"));
    }
    eprintln!("xtask: installing {list} with apt");
    let quiet = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
    };
    let mut install = vec!["install", "-y", "-qq"];
    install.extend_from_slice(packages);
    match quiet(&["-qq", "update"]).and_then(|_| quiet(&install)) {
        Ok(status) if status.success() => {
            eprintln!("xtask: installed {list}");
            Ok(())
        }
        Ok(status) => Err(format!("apt-get install {list} failed ({status})")),
        Err(e) => Err(format!("cannot run apt-get: {e}")),
    }
}
