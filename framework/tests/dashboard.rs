//! The web dashboard in headless Chromium against a running job: the page renders every vertex
//! of the job graph, the vertex table and a filled checkpoint table, and a screenshot is saved
//! under the test's temporary directory (`target/tmp/dashboard/`).
//!
//! Skips with a message when `chromium` is not installed (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use eichhorn::connectors::{CollectionSource, RateLimitedSource};
use eichhorn::prelude::*;
use eichhorn::rest::{JobState, RestServer};

const WAIT: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium on `url` with `args`, in its own profile directory, killed after two
/// minutes at most; returns its stdout.
fn run_chromium(chromium: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let output = Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_running_job() {
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium; .ci/run does)");
        return;
    };
    let server = RestServer::bind("127.0.0.1:0").await.expect("bind");
    let addr = server.local_addr();
    let env = StreamEnv::new();
    env.set_rest_server(&server);
    env.set_parallelism(2);
    env.enable_checkpointing(20);
    // Slow enough to still run while the browser looks: at most 2,000 records/s per subtask.
    let source = RateLimitedSource::new(CollectionSource::new((0..1_000_000u64).collect()), 2_000);
    env.add_source(source, "numbers")
        .map(|x: u64| (x % 10, 1u64))
        .key_by(|(k, _): &(u64, u64)| *k)
        .reduce(|(k, a), (_, b)| (k, a + b))
        .filter(|(_, n): &(u64, u64)| n % 100 == 0)
        .collect_sink();
    let job = env.execute_async("dashboard demo").await.expect("start");
    let status = job.status_source();
    // A completed checkpoint, so the table has something to show.
    tokio::time::timeout(WAIT, async {
        loop {
            let view = status.view();
            if view.state == JobState::Running && view.checkpoints.completed >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("checkpoints complete");
    let view = status.view();

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let screenshot = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = format!("http://{addr}/");
    let (dom, shot) = {
        let chromium = chromium.clone();
        let dir = dir.clone();
        let screenshot = screenshot.clone();
        // The browser is an outside process the test waits for, not the data path: it must
        // not block the runtime that serves the job and its REST answers.
        #[allow(clippy::disallowed_methods)]
        tokio::task::spawn_blocking(move || {
            let dom = run_chromium(&chromium, &dir.join("profile-dom"), &url, &["--dump-dom"]);
            let shot = format!("--screenshot={}", screenshot.display());
            run_chromium(
                &chromium,
                &dir.join("profile-shot"),
                &url,
                &[&shot, "--window-size=1400,1600"],
            );
            (dom, screenshot)
        })
        .await
        .expect("chromium task")
    };
    job.cancel();
    let _ = job.join().await;

    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page rendered:\n{dom}"
    );
    assert!(!dom.contains("cannot reach the job"), "{dom}");
    for vertex in &view.vertices {
        assert!(
            dom.contains(&format!("id=\"vertex-{}\"", vertex.id)),
            "vertex {} ({}) drawn:\n{dom}",
            vertex.id,
            vertex.name
        );
    }
    assert_eq!(
        dom.matches("class=\"vertex-row\"").count(),
        view.vertices.len(),
        "a table row per vertex"
    );
    for edge in &view.edges {
        assert!(
            dom.contains(&edge.partitioning),
            "edge label {}",
            edge.partitioning
        );
    }
    assert!(
        dom.contains("class=\"checkpoint-row COMPLETED\""),
        "the checkpoint table has completed checkpoints:\n{dom}"
    );
    assert!(dom.contains("class=\"taskmanager-row\""));
    assert!(dom.contains("dashboard demo"));
    let bytes = std::fs::metadata(&shot).expect("a screenshot").len();
    assert!(bytes > 10_000, "a real screenshot ({bytes} bytes)");
    eprintln!("dashboard screenshot: {}", shot.display());
}
