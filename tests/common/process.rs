//! Child processes for interop tests: temp files, pipe draining, bounded waits.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a running child is polled.
const POLL: Duration = Duration::from_millis(50);

/// A file removed when dropped (e.g. the certificate handed to a client).
pub struct TempFile(PathBuf);

impl TempFile {
    /// Writes `contents` to a file whose name is unique to this process and test.
    pub fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("keepwire-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write the temp file");
        Self(path)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Drains a child's pipe on its own thread (so the child never blocks on a full pipe).
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for the child until `deadline` (bounded polling); kills it if it is still running then.
fn wait_bounded(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait().expect("poll the child process") {
            Some(status) => return Some(status),
            None if started.elapsed() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => std::thread::sleep(POLL),
        }
    }
}

/// Runs `cmd` with no stdin and both outputs captured, killing it if it is still running after
/// `deadline`: (exit status, or `None` on timeout; stdout; stderr).
pub fn run_bounded(cmd: &mut Command, deadline: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_bounded(&mut child, deadline);
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}
