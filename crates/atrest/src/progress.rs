//! Progress of long commands on stderr: a bar on a terminal (shown once the work has taken
//! a second), a plain line every few seconds otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use atrest_ops::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const SHOW_AFTER: Duration = Duration::from_secs(1);
const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Phase {
    name: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

/// Progress for the command line.
#[derive(Debug)]
pub struct CliProgress {
    terminal: bool,
    quiet: bool,
    phase: Mutex<Option<Phase>>,
}

impl CliProgress {
    /// `quiet`: report nothing (`-o json` keeps stderr for errors only).
    pub fn new(quiet: bool) -> Self {
        CliProgress {
            terminal: std::io::stderr().is_terminal(),
            quiet,
            phase: Mutex::new(None),
        }
    }

    fn bar(total: Option<u64>) -> ProgressBar {
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        // The template is a constant known to be valid; fall back to the default style.
        let style =
            ProgressStyle::with_template("{msg:10} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar
    }
}

impl Progress for CliProgress {
    fn phase(&self, name: &str, total: Option<u64>) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = phase.take() {
            if let Some(bar) = old.bar {
                bar.finish_and_clear();
            }
        }
        let now = Instant::now();
        *phase = Some(Phase {
            name: name.to_string(),
            total,
            done: 0,
            started: now,
            last_line: now,
            bar: None,
        });
    }

    fn advance(&self, n: u64) {
        if self.quiet {
            return;
        }
        let mut guard = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let Some(phase) = guard.as_mut() else {
            return;
        };
        phase.done += n;
        let now = Instant::now();
        if self.terminal {
            if phase.bar.is_none() && now - phase.started >= SHOW_AFTER {
                let bar = Self::bar(phase.total);
                bar.set_message(phase.name.clone());
                phase.bar = Some(bar);
            }
            if let Some(bar) = &phase.bar {
                bar.set_position(phase.done);
            }
        } else if now - phase.last_line >= LINE_EVERY {
            phase.last_line = now;
            let rate = phase.done as f64 / (now - phase.started).as_secs_f64().max(0.001);
            match phase.total {
                Some(t) if t > 0 => eprintln!(
                    "atrest: {}: {}/{} ({:.0}%, {:.0}/s)",
                    phase.name,
                    phase.done,
                    t,
                    phase.done as f64 * 100.0 / t as f64,
                    rate
                ),
                _ => eprintln!("atrest: {}: {} ({:.0}/s)", phase.name, phase.done, rate),
            }
        }
    }

    fn finish(&self) {
        let mut guard = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(phase) = guard.take() {
            if let Some(bar) = phase.bar {
                bar.finish_and_clear();
            }
        }
    }
}
