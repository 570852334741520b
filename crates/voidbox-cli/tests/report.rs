//! A saved run becomes an HTML timeline that a real browser renders: runs
//! a two-stage pipeline in real VMs with `--output json`, renders it with
//! `voidbox report`, then opens the page in headless Chromium, takes a
//! screenshot and reads the rendered DOM.

use std::path::Path;
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium(args: &[&str]) -> std::process::Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `scripts/setup.sh --with-test-tools` installs Debian's chromium"
    );
    let profile = tempfile::tempdir().unwrap();
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("run chromium")
}

#[test]
fn saved_run_renders_as_a_timeline_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/specs/quick_demo.yaml"
    );
    let run = Command::new(env!("CARGO_BIN_EXE_voidbox"))
        .args(["run", "--file", spec, "--output", "json"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let jsonl = dir.path().join("run.jsonl");
    std::fs::write(&jsonl, &run.stdout).unwrap();
    for line in String::from_utf8(run.stdout.clone()).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("every line is JSON");
        assert!(v["ts_ms"].is_u64(), "{line}");
    }

    let html = dir.path().join("run.html");
    let report = Command::new(env!("CARGO_BIN_EXE_voidbox"))
        .args([
            "report",
            jsonl.to_str().unwrap(),
            "-o",
            html.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let url = format!("file://{}", html.display());

    let dom = chromium(&["--dump-dom", &url]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<h1>quick-demo</h1>"), "{dom}");
    for stage in ["scout", "reporter"] {
        assert!(
            dom.contains(&format!(
                "<tr class=\"stage-row\"><td>{stage}</td><td class=\"ok\">succeeded</td>"
            )),
            "stage {stage} missing from the page: {dom}"
        );
        assert!(
            dom.contains(&format!("<title>{stage}: ")),
            "no bar for {stage}"
        );
    }

    let shot = dir.path().join("shot.png");
    let taken = chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1100,500",
        &url,
    ]);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1100, 500));
    let channels = frame.line_size / frame.width as usize;
    let has = |rgb: [u8; 3]| pixels.chunks(channels).any(|p| p[..3] == rgb);
    // The boot, model and tool bars were really painted.
    assert!(has([0x9a, 0xa5, 0xb1]), "no boot bar in the screenshot");
    assert!(has([0x4a, 0x7b, 0xd0]), "no model bar in the screenshot");
    assert!(has([0x3a, 0xa8, 0x76]), "no tool bar in the screenshot");
    std::fs::copy(
        &shot,
        concat!(env!("CARGO_TARGET_TMPDIR"), "/report-screenshot.png"),
    )
    .unwrap();
}
