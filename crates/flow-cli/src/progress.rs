//! Live progress of a run on stderr: a bar on a terminal, plain lines
//! otherwise (CI logs, pipes, files), so the output stays readable in both.

use flow_core::{FlowKey, RunMode, StepState};
use flow_engine::RunObserver;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// The bar on screen, if any, so log lines can be printed above it instead
/// of tearing it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active_bar() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    ACTIVE_BAR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Prints a line on stderr, above the progress bar if one is shown.
pub fn print_line(text: &str) {
    let bar = active_bar().clone();
    match bar {
        Some(bar) => bar.println(flow_core::mask(text)),
        None => errln!("{text}"),
    }
}

/// Shows a run's progress; hand it to the engine as its observer.
pub struct Progress {
    /// `None` when stderr is not a terminal: plain lines.
    bar: Option<ProgressBar>,
    /// Steps running now, in start order, for the bar's message.
    running: Mutex<Vec<String>>,
}

impl Progress {
    /// A bar if stderr is a terminal, plain lines otherwise.
    pub fn for_stderr() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            *active_bar() = Some(bar.clone());
            bar
        });
        Progress {
            bar,
            running: Mutex::new(Vec::new()),
        }
    }

    /// Prints a line without tearing the bar.
    pub fn line(&self, text: &str) {
        print_line(text);
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            active_bar().take();
            bar.finish_and_clear();
        }
    }

    fn update_message(&self, running: &[String]) {
        if let Some(bar) = &self.bar {
            if running.is_empty() {
                bar.set_message("");
            } else {
                bar.set_message(format!("running: {}", running.join(", ")));
            }
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The command a run mode comes from, for messages.
pub fn mode_word(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Nominal => "run",
        RunMode::Recovery => "recover",
        RunMode::RunOne => "run-one",
        RunMode::RunFrom => "run-from",
        RunMode::Rollback => "rollback",
    }
}

impl RunObserver for Progress {
    fn definition_changed(&self, flow: &FlowKey, change: &flow_engine::DefinitionChange) {
        print_line(&format!(
            "note: {} [{}]: {change}",
            flow.flow_name, flow.timeperiod
        ));
    }

    fn run_started(&self, flow: &FlowKey, mode: RunMode, steps_to_run: usize, clusters: usize) {
        let text = format!(
            "{} [{}]: {} of {steps_to_run} step(s) on {clusters} cluster(s)",
            flow.flow_name,
            flow.timeperiod,
            mode_word(mode)
        );
        match &self.bar {
            Some(bar) => {
                bar.set_length(steps_to_run as u64);
                bar.println(text);
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            None => errln!("{text}"),
        }
    }

    fn step_started(&self, step: &str, cluster: &str) {
        let mut running = self.running();
        running.push(step.to_string());
        match &self.bar {
            Some(_) => self.update_message(&running),
            None => errln!("{step} started on {cluster}"),
        }
    }

    fn step_finished(&self, step: &str, state: StepState, elapsed: Duration) {
        let mut running = self.running();
        if let Some(i) = running.iter().position(|s| s == step) {
            running.remove(i);
        }
        let text = format!("{step} {state} in {}", format_duration(elapsed));
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                self.update_message(&running);
                bar.println(text);
            }
            None => errln!("{text}"),
        }
    }
}

/// A short human duration: `8ms`, `12.5s`, `3m 05s`, `2h 07m`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 1 {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short() {
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_millis(12_540)), "12.5s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(format_duration(Duration::from_secs(7620)), "2h 07m");
    }
}
