//! Building a job's command: which program runs it (configured, or found
//! on `PATH`, with a message that says how to fix a missing one), its
//! arguments in the order each tool expects, the wrapper that records the
//! job in its directory, and the command line as the log shows it.

use crate::jobdir;
use crate::LocalCluster;
use flow_core::{ClusterError, Job, Settings};
use std::borrow::Cow;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

/// The shell for [`Job::Shell`] and for the job wrapper; an absolute path so
/// a `PATH` in [`LocalOptions::env`] cannot take it away.
const SHELL: &str = "/bin/sh";

/// The prefix of the variables that carry secrets to jobs
/// ([`flow_core::context::secret_env_var`]).
const SECRET_ENV_PREFIX: &str = "FLOW_SECRET_";

/// An external program a job kind needs, and how to tell the user to get it.
/// Messages name the setting as `flow.toml` spells it (`[cluster] OPTION`),
/// which is also the [`LocalOptions`] field of the same name.
struct Tool<'a> {
    name: &'static str,
    product: &'static str,
    option: &'static str,
    configured: Option<&'a Path>,
}

impl LocalCluster {
    /// The program to run for `job` and its arguments.
    pub(crate) async fn command_line(
        &self,
        job: &Job,
    ) -> Result<(PathBuf, Vec<String>), ClusterError> {
        let tool = match job {
            Job::Shell { .. } => return Ok((PathBuf::from(SHELL), job_args(job))),
            Job::Spark { .. } => Tool {
                name: "spark-submit",
                product: "Spark",
                option: "spark_submit",
                configured: self.options().spark_submit.as_deref(),
            },
            Job::Pig { .. } => Tool {
                name: "pig",
                product: "Pig",
                option: "pig",
                configured: self.options().pig.as_deref(),
            },
            Job::HadoopJar { .. } => Tool {
                name: "hadoop",
                product: "Hadoop",
                option: "hadoop",
                configured: self.options().hadoop.as_deref(),
            },
        };
        let program = self
            .find_tool(&tool)
            .await
            .map_err(|message| self.job_failed(job.kind(), message))?;
        Ok((program, job_args(job)))
    }

    /// The configured program, else the one on `PATH`; the error tells the
    /// user how to fix it.
    async fn find_tool(&self, tool: &Tool<'_>) -> Result<PathBuf, String> {
        let Tool {
            name,
            product,
            option,
            configured,
        } = *tool;
        let search_path = self.search_path();
        match configured {
            // A bare name like `spark-submit-3.5` is looked up on PATH.
            Some(bare) if bare.components().count() == 1 && !bare.is_absolute() => {
                find_on_path(bare, search_path.as_deref()).await.ok_or_else(|| {
                    format!(
                        "{name} not found: `{}` (from `[cluster] {option}` in flow.toml) is not on PATH; install {product} or set `[cluster] {option}` to its path",
                        bare.display()
                    )
                })
            }
            Some(path) => {
                // Relative to the engine's directory, not the job's.
                let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                if is_executable_file(&path).await {
                    Ok(path)
                } else {
                    Err(format!(
                        "{name} not found: {} (from `[cluster] {option}` in flow.toml) is not an executable file; install {product} or fix `[cluster] {option}`",
                        path.display()
                    ))
                }
            }
            None => find_on_path(Path::new(name), search_path.as_deref())
                .await
                .ok_or_else(|| {
                    format!(
                        "{name} not found: install {product}, or set `[cluster] {option}` in flow.toml to its path (or put {name} on PATH)"
                    )
                }),
        }
    }

    /// The `PATH` jobs see: the options' own, else the engine's.
    fn search_path(&self) -> Option<OsString> {
        self.options()
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| OsString::from(v))
            .or_else(|| std::env::var_os("PATH"))
    }

    /// The wrapper running `program args` for the job directory `dir`.
    pub(crate) fn command(&self, dir: &Path, program: &Path, args: &[String]) -> Command {
        let mut command = Command::new(SHELL);
        command
            .arg("-c")
            .arg(jobdir::WRAPPER)
            .arg("flow-job")
            .arg(dir)
            .arg(program)
            .args(args)
            .current_dir(&self.options().work_dir);
        // The engine's environment minus where secrets come from; the
        // secrets a command refers to are added by `submit`.
        for name in &self.options().scrub_env {
            command.env_remove(name);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with(SECRET_ENV_PREFIX) {
                command.env_remove(name);
            }
        }
        command
            .envs(self.options().env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so cancelling reaches everything it starts.
            .process_group(0);
        command
    }

    pub(crate) async fn start_error(&self, program: &Path, e: &io::Error) -> String {
        let work_dir = &self.options().work_dir;
        if e.kind() == io::ErrorKind::NotFound && !is_dir(work_dir).await {
            format!(
                "cannot start {}: the work directory {} does not exist",
                program.display(),
                work_dir.display()
            )
        } else {
            format!("cannot start {}: {e}", program.display())
        }
    }
}

/// The arguments after the program, in the order each tool expects.
pub(crate) fn job_args(job: &Job) -> Vec<String> {
    let mut args = Vec::new();
    match job {
        Job::Shell { command, .. } => {
            args.push("-c".to_string());
            args.push(command.clone());
        }
        Job::Spark {
            application,
            main_class,
            conf,
            args: app_args,
            ..
        } => {
            if let Some(class) = main_class {
                args.push("--class".to_string());
                args.push(class.clone());
            }
            for (key, value) in conf {
                args.push("--conf".to_string());
                args.push(format!("{key}={value}"));
            }
            args.push(application.clone());
            args.extend(app_args.iter().cloned());
        }
        Job::Pig { script, params, .. } => {
            for (key, value) in params {
                args.push("-param".to_string());
                args.push(format!("{key}={value}"));
            }
            args.push("-f".to_string());
            args.push(script.clone());
        }
        Job::HadoopJar {
            jar,
            main_class,
            args: jar_args,
        } => {
            args.push("jar".to_string());
            args.push(jar.clone());
            args.extend(main_class.iter().cloned());
            args.extend(jar_args.iter().cloned());
        }
    }
    args
}

/// The command line for the log: quoted where needed so it reads like the
/// argv it is, with every secret value replaced by `***`.
pub(crate) fn display_command(program: &Path, args: &[String], settings: &Settings) -> String {
    let program = program.to_string_lossy();
    let words: Vec<String> = std::iter::once(program.as_ref())
        .chain(args.iter().map(String::as_str))
        // Redact before quoting: quoting a `'` inside a secret would split it.
        .map(|word| quote(&settings.redact(word)).into_owned())
        .collect();
    settings.redact(&words.join(" "))
}

pub(crate) fn quote(word: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b);
    if !word.is_empty() && word.bytes().all(plain) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

async fn find_on_path(name: &Path, search_path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    for dir in std::env::split_paths(search_path?) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let candidate = dir.join(name);
        if is_executable_file(&candidate).await {
            return Some(candidate);
        }
    }
    None
}

async fn is_executable_file(path: &Path) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn is_dir(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn argv_of_each_kind() {
        assert_eq!(
            job_args(&Job::Shell {
                command: "echo hi".into(),
                env: vec![],
            }),
            strings(&["-c", "echo hi"])
        );
        assert_eq!(
            job_args(&Job::Spark {
                application: "app.py".into(),
                main_class: None,
                conf: vec![],
                secret_conf: vec![],
                args: strings(&["a"]),
            }),
            strings(&["app.py", "a"])
        );
        assert_eq!(
            job_args(&Job::Pig {
                script: "s.pig".into(),
                params: vec![("a".into(), "1".into()), ("b".into(), "x y".into())],
                secret_params: vec![],
            }),
            strings(&["-param", "a=1", "-param", "b=x y", "-f", "s.pig"])
        );
        assert_eq!(
            job_args(&Job::HadoopJar {
                jar: "j.jar".into(),
                main_class: Some("M".into()),
                args: strings(&["in", "out"]),
            }),
            strings(&["jar", "j.jar", "M", "in", "out"])
        );
        assert_eq!(
            job_args(&Job::HadoopJar {
                jar: "j.jar".into(),
                main_class: None,
                args: strings(&["in"]),
            }),
            strings(&["jar", "j.jar", "in"])
        );
    }

    #[test]
    fn logged_command_lines_are_quoted_and_redacted() {
        let settings = Settings::new().with_secret("token", "it's-secret");
        let line = display_command(
            Path::new("/bin/sh"),
            &strings(&["-c", "curl -H it's-secret", "plain", ""]),
            &settings,
        );
        assert_eq!(line, "/bin/sh -c 'curl -H ***' plain ''");
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }
}
