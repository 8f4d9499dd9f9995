//! What the CLI tests share: running an example binary with a kill timeout, so a hung job fails
//! its test instead of hanging the suite.
//!
//! The timeout only guards against hangs; no result depends on how long a run takes.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a run may take before it is killed: far above any normal run, even of a debug build
/// on a loaded machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `bin` with `args`, stdin closed, and returns its exit status, stdout and stderr.
///
/// # Panics
///
/// The binary cannot be started, or it runs longer than [`RUN_TIMEOUT`] (it is killed first).
pub(crate) fn run(bin: &str, args: &[&str]) -> Output {
    run_with_env(bin, args, &[])
}

/// [`run`] with the environment variables `vars` set for the child.
///
/// # Panics
///
/// As [`run`].
pub(crate) fn run_with_env(bin: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {bin}: {error}"));
    // Drain both pipes while the child runs, so a full pipe cannot block it.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).expect("read a child's output");
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().expect("stderr reader");
            panic!(
                "{bin} {args:?} did not finish within {RUN_TIMEOUT:?} and was killed; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
