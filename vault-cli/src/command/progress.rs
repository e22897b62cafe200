//! Progress bars on stderr (indicatif): only on a terminal, never with
//! --quiet or --json.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vault_client::{Progress, ProgressSink};

use crate::cli::Global;

struct Bar(ProgressBar);

impl ProgressSink for Bar {
    fn total(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A byte progress bar, or `None` when it must stay silent.
pub fn bar(g: &Global, verb: &str) -> Option<Progress> {
    if g.quiet || g.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(verb.to_owned());
    Some(Arc::new(Bar(pb)))
}
