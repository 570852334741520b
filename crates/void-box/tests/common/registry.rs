//! A real OCI distribution registry (Debian's `docker-registry`, CNCF
//! distribution 2.8) on 127.0.0.1, started by the test that needs it, with
//! the test images of `scripts/build-test-images.sh` pushed by `skopeo`.
//! It stops when dropped, and with the test process (PR_SET_PDEATHSIG on a
//! thread that lives as long as the process).

// Shared by several test binaries; each uses a part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where the test images are (built by `scripts/setup.sh --with-test-tools`).
pub fn test_images() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-images");
    assert!(
        dir.join("python/index.json").is_file() && dir.join("layers/index.json").is_file(),
        "the test images are missing from {}: run scripts/build-test-images.sh \
         (scripts/setup.sh --with-test-tools does)",
        dir.display()
    );
    dir
}

/// A running registry.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// `user:password` when basic auth is on.
    pub creds: Option<String>,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

/// Spawns children from one thread that never ends, so that their
/// PR_SET_PDEATHSIG fires with the test process, not with the test thread
/// that asked (the kernel ties it to the spawning thread).
fn spawn_from_a_lasting_thread(mut cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
            // The channel lives in a static: this loop never ends.
        });
        Mutex::new(tx)
    });
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((cmd, tx))
        .expect("the spawner thread runs");
    rx.recv().expect("the spawner answers")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestRegistry {
    /// An anonymous registry.
    pub fn start() -> TestRegistry {
        Self::start_with(None)
    }

    /// A registry that wants `user:password` (htpasswd, bcrypt).
    pub fn start_with(creds: Option<&str>) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let mut auth = String::new();
        if let Some(creds) = creds {
            let (user, password) = creds.split_once(':').unwrap();
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect(
                    "htpasswd runs (apache2-utils; scripts/setup.sh --with-test-tools installs it)",
                );
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: voidbox-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n  secret: voidbox-test\n{auth}",
            dir.path().join("storage").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = spawn_from_a_lasting_thread(cmd)
            .expect("docker-registry starts (scripts/setup.sh --with-test-tools installs it)");
        let registry = TestRegistry {
            address,
            creds: creds.map(str::to_string),
            dir,
            child: Mutex::new(Some(child)),
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.address).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the registry did not listen on {}: {}",
            self.address,
            self.log()
        );
    }

    /// Pushes test image `image:tag` as `repo:tag` (digests kept).
    pub fn push(&self, image: &str, tag: &str, repo: &str) {
        let source = format!("oci:{}:{tag}", test_images().join(image).display());
        let dest = format!("docker://{}/{repo}:{tag}", self.address);
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
        ])
        .arg("--dest-tls-verify=false");
        if let Some(creds) = &self.creds {
            cmd.arg("--dest-creds").arg(creds);
        }
        let out = cmd
            .arg(&source)
            .arg(&dest)
            .output()
            .expect("skopeo runs (scripts/setup.sh --with-test-tools installs it)");
        assert!(
            out.status.success(),
            "skopeo copy {source} {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ADDRESS/repo:tag`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.address)
    }

    /// Where the registry keeps a blob's bytes (to tamper with them).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// How many times a blob was downloaded (GET, from the access log).
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest}")))
            .filter(|l| l.contains("\" 200 "))
            .count()
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Stops it (dropping does the same).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The storage directory.
    pub fn storage(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test image's manifest digest for `tag` (from its OCI layout).
pub fn layout_digest(image: &str, tag: &str) -> String {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(test_images().join(image).join("index.json")).unwrap(),
    )
    .unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .unwrap()
        .to_string()
}

/// The digests of the layers of test image `image:tag`'s manifest (an
/// index's amd64 manifest).
pub fn layer_digests(image: &str, tag: &str) -> Vec<String> {
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(
            &std::fs::read(test_images().join(image).join("blobs/sha256").join(hex)).unwrap(),
        )
        .unwrap()
    };
    let mut manifest = blob(&layout_digest(image, tag));
    if let Some(list) = manifest["manifests"].as_array() {
        let amd64 = list
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")
            .unwrap();
        manifest = blob(amd64["digest"].as_str().unwrap());
    }
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}
