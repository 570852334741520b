#!/usr/bin/env bash
# Builds the OCI images that the OCI tests push to a loopback registry
# (scripts/test-registry.sh) and pull back through void-box's normal code
# path. The tests cannot reach any container registry, so every image is made
# here from Debian packages and plain files.
#
# Output, as OCI image layouts (oci-layout + index.json + blobs/sha256/...):
#   target/test-images/python   Debian 12 (mmdebstrap --variant=apt) with
#                               python3, nodejs, curl, jq (+ ca-certificates), one gzip
#                               layer; config with
#                               Env, WorkingDir=/srv/app, User=app (uid 1234,
#                               in the image's /etc/passwd) and Cmd. Tag: latest.
#   target/test-images/layers   a tiny synthetic image (busybox + files) with
#                               3 layers: gzip (hardlink, symlink, setuid file
#                               owned 1234:5678, xattr user.test=hello), gzip
#                               (whiteout /a/.wh.gone, opaque /d) and zstd.
#                               Tags: latest = an image index (linux/arm64
#                               dummy first, then linux/amd64), amd64 = the
#                               amd64 manifest alone.
#   target/test-images/layers.expected.json   what the merged amd64 rootfs
#                               must (and must not) contain.
#   target/test-images/claude-code   the python image's layer plus one with
#                               the real claude-code CLI from npm under
#                               /usr/local (no User: the sandbox user). Tag:
#                               latest.
#
# Each image is rebuilt only when its inputs change (this script, which holds
# the package lists, and for `layers` the busybox binary): a second run is
# instant. `--force` rebuilds anyway. Layer tarballs are written by GNU tar
# (python) and Python's tarfile (layers), compressed by gzip -n / zstd, and
# the config/manifest/index JSON by the small Python program below, so every
# byte is under our control and reproducible from the same package versions.
#
# Needs (Debian 12): mmdebstrap (+ gpg, which it uses for its signed-by
# check), zstd, busybox-static, python3; run as root
# (mmdebstrap's root mode: chroot, mount /proc).
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

out=target/test-images
# The system python: a PATH python (pyenv, venv) may be anything.
py=/usr/bin/python3
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# ca-certificates: Debian's node warns on every start without its CA bundle.
python_packages=(python3 nodejs ca-certificates curl jq)
# The claude-code CLI of the claude-code image (npm's @anthropic-ai/claude-code).
claude_version=2.1.332
# Every timestamp in the images (file mtimes, config "created").
export SOURCE_DATE_EPOCH=1700000000
force=false
[ "${1:-}" = "--force" ] && force=true

for tool in mmdebstrap zstd gzip tar sha256sum npm "$py" /bin/busybox; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-test-images: $tool not found (scripts/setup.sh installs it)" >&2
    exit 1
  fi
done
mkdir -p "$out"

# The OCI writer: `oci.py python LAYOUT ROOTFS_TAR` or `oci.py layers LAYOUT`.
oci_py=$(cat <<'PYEOF'
import gzip, hashlib, io, json, os, shutil, subprocess, sys, tarfile, time

EPOCH = int(os.environ["SOURCE_DATE_EPOCH"])
CREATED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
MT = {
    "layout": "application/vnd.oci.image.layout.v1+json",
    "index": "application/vnd.oci.image.index.v1+json",
    "manifest": "application/vnd.oci.image.manifest.v1+json",
    "config": "application/vnd.oci.image.config.v1+json",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()

class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def _path(self, digest):
        return os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])

    def put_bytes(self, data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(self._path(digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def put_json(self, obj, media_type):
        return self.put_bytes(json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n", media_type)

    def put_layer(self, tar_path, compression):
        """Compresses an uncompressed layer tarball into a blob (the tarball
        is removed); returns (descriptor, diff_id)."""
        diff_id = sha256_file(tar_path)
        packed = tar_path + "." + compression
        cmd = ["gzip", "-n", "-6", "-c"] if compression == "gzip" else ["zstd", "-q", "-19", "-c"]
        with open(tar_path, "rb") as src, open(packed, "wb") as dst:
            subprocess.run(cmd, stdin=src, stdout=dst, check=True)
        os.unlink(tar_path)
        digest = sha256_file(packed)
        size = os.path.getsize(packed)
        shutil.move(packed, self._path(digest))
        return {"mediaType": MT[compression], "digest": digest, "size": size}, diff_id

    def put_image(self, layers, config, arch, created_by, variant=None):
        """layers: [(tar_path, compression)]; returns the manifest descriptor
        (with platform, for an index)."""
        descs, diff_ids = [], []
        for tar_path, compression in layers:
            d, diff_id = self.put_layer(tar_path, compression)
            descs.append(d)
            diff_ids.append(diff_id)
        cfg = {
            "created": CREATED,
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": CREATED, "created_by": c} for c in created_by],
        }
        if variant:
            cfg["variant"] = variant
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT["manifest"],
            "config": self.put_json(cfg, MT["config"]),
            "layers": descs,
        }
        desc = self.put_json(manifest, MT["manifest"])
        desc["platform"] = {"architecture": arch, "os": "linux"}
        if variant:
            desc["platform"]["variant"] = variant
        return desc

    def put_index(self, manifests):
        return self.put_json({"schemaVersion": 2, "mediaType": MT["index"], "manifests": manifests}, MT["index"])

    def write_refs(self, refs):
        """refs: [(tag, descriptor)] -> index.json, each entry named by the
        org.opencontainers.image.ref.name annotation (skopeo's oci:DIR:TAG)."""
        entries = []
        for tag, desc in refs:
            e = dict(desc)
            e["annotations"] = {"org.opencontainers.image.ref.name": tag}
            entries.append(e)
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": MT["index"], "manifests": entries}, f, indent=2, sort_keys=True)
            f.write("\n")

def build_python(root, rootfs_tar):
    lay = Layout(root)
    config = {
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "VOIDBOX_IMAGE_TEST=1",
            "LANG=C.UTF-8",
        ],
        "WorkingDir": "/srv/app",
        "User": "app",
        "Cmd": ["python3", "/srv/app/hello.py"],
        "Labels": {"org.opencontainers.image.title": "voidbox-test-python"},
    }
    desc = lay.put_image([(rootfs_tar, "gzip")], config, "amd64",
                         ["mmdebstrap --variant=apt --include=python3,nodejs,ca-certificates bookworm (scripts/build-test-images.sh)"])
    lay.write_refs([("latest", desc)])

class TarWriter:
    """A layer tarball with fully chosen metadata (no dependence on the build
    machine's filesystem: owners, modes and xattrs are set per entry)."""
    def __init__(self, path):
        self.tf = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)

    def _info(self, name, type_, mode, uid=0, gid=0, xattrs=None):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = type_, mode, uid, gid, EPOCH
        ti.uname = ti.gname = ""
        if xattrs:
            ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
        return ti

    def dir(self, name, mode=0o755, **kw):
        self.tf.addfile(self._info(name, tarfile.DIRTYPE, mode, **kw))

    def file(self, name, data, mode=0o644, **kw):
        if isinstance(data, str):
            data = data.encode()
        ti = self._info(name, tarfile.REGTYPE, mode, **kw)
        ti.size = len(data)
        self.tf.addfile(ti, io.BytesIO(data))

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tf.addfile(ti)

    def hardlink(self, name, target):
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = target
        self.tf.addfile(ti)

    def close(self):
        self.tf.close()

def build_layers(root, busybox):
    lay = Layout(root)
    tmp = root + ".tars"
    os.makedirs(tmp, exist_ok=True)
    with open(busybox, "rb") as f:
        busybox_bytes = f.read()

    # Layer 1 (gzip): the base tree.
    l1 = os.path.join(tmp, "l1.tar")
    t = TarWriter(l1)
    t.dir("a"); t.file("a/keep", "keep\n"); t.file("a/gone", "gone\n")
    t.file("arch", "amd64\n")
    t.dir("bin"); t.file("bin/busybox", busybox_bytes, 0o755); t.symlink("bin/sh", "busybox")
    t.dir("d"); t.file("d/old1", "old1\n"); t.file("d/old2", "old2\n")
    t.dir("h"); t.file("h/one", "hardlinked\n"); t.hardlink("h/two", "h/one")
    t.symlink("s", "/a/keep")
    t.dir("tmp", 0o1777)
    t.dir("x")
    t.file("x/suid", "#!/bin/sh\necho suid\n", 0o4755, uid=1234, gid=5678)
    t.file("x/xattr", "has an xattr\n", xattrs={"user.test": "hello"})
    t.close()

    # Layer 2 (gzip): a whiteout and an opaque directory.
    l2 = os.path.join(tmp, "l2.tar")
    t = TarWriter(l2)
    t.dir("a"); t.file("a/.wh.gone", b"")
    t.dir("d"); t.file("d/.wh..wh..opq", b""); t.file("d/new", "new\n")
    t.close()

    # Layer 3 (zstd): a new directory and an overwrite of layer 2's /d/new.
    l3 = os.path.join(tmp, "l3.tar")
    t = TarWriter(l3)
    t.dir("d"); t.file("d/new", "new v3\n")
    t.dir("z"); t.file("z/zstd", "from a zstd layer\n")
    t.close()

    config = {
        "Env": ["PATH=/bin", "VOIDBOX_IMAGE_TEST=layers"],
        "WorkingDir": "/",
        "Cmd": ["/bin/sh", "-c", "cat /a/keep /arch"],
    }
    amd64 = lay.put_image([(l1, "gzip"), (l2, "gzip"), (l3, "zstd")], config, "amd64",
                          ["layer 1: base tree", "layer 2: whiteout + opaque dir", "layer 3: zstd"])

    # The arm64 dummy: one layer whose /arch says arm64 (and no /bin, so a
    # runtime that picks it can not pass a test by accident).
    la = os.path.join(tmp, "arm64.tar")
    t = TarWriter(la)
    t.file("arch", "arm64\n"); t.file("WRONG-PLATFORM", "linux/arm64 was picked\n")
    t.close()
    arm64 = lay.put_image([(la, "gzip")], dict(config, Cmd=["/bin/false"]), "arm64",
                          ["arm64 dummy"], variant="v8")

    index = lay.put_index([arm64, amd64])
    lay.write_refs([("latest", index), ("amd64", amd64)])
    os.rmdir(tmp)

    expected = {
        "files": {
            "a/keep": "keep\n", "arch": "amd64\n", "d/new": "new v3\n", "h/one": "hardlinked\n",
            "h/two": "hardlinked\n", "z/zstd": "from a zstd layer\n", "x/xattr": "has an xattr\n",
        },
        "absent": ["a/gone", "a/.wh.gone", "d/old1", "d/old2", "d/.wh..wh..opq", "WRONG-PLATFORM"],
        "symlinks": {"s": "/a/keep", "bin/sh": "busybox"},
        "hardlinks": [["h/one", "h/two"]],
        "modes": {"x/suid": {"mode": "4755", "uid": 1234, "gid": 5678}, "tmp": {"mode": "1777", "uid": 0, "gid": 0}},
        "xattrs": {"x/xattr": {"user.test": "hello"}},
        "manifest_digests": {"index": index["digest"], "amd64": amd64["digest"], "arm64": arm64["digest"]},
    }
    with open(root + ".expected.json", "w") as f:
        json.dump(expected, f, indent=2, sort_keys=True)
        f.write("\n")

def build_claude(root, base, layer_tar, version):
    """The python image's layer (the same blob) plus one with claude-code."""
    lay = Layout(root)
    with open(os.path.join(base, "index.json")) as f:
        entry = json.load(f)["manifests"][0]
    def blob(digest):
        return os.path.join(base, "blobs", "sha256", digest.split(":", 1)[1])
    with open(blob(entry["digest"])) as f:
        manifest = json.load(f)
    with open(blob(manifest["config"]["digest"])) as f:
        base_config = json.load(f)
    for layer in manifest["layers"]:
        os.link(blob(layer["digest"]), lay._path(layer["digest"]))
    desc, diff_id = lay.put_layer(layer_tar, "gzip")
    config = dict(base_config["config"])
    # The engine's own user (the image's unprivileged default) and no Cmd.
    config.pop("User", None)
    config.pop("Cmd", None)
    config["WorkingDir"] = "/workspace"
    config["Labels"] = {"org.opencontainers.image.title": "voidbox-test-claude-code"}
    cfg = {
        "created": CREATED, "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": base_config["rootfs"]["diff_ids"] + [diff_id]},
        "history": base_config["history"] + [
            {"created": CREATED, "created_by": "npm install -g @anthropic-ai/claude-code@" + version}],
    }
    out = {
        "schemaVersion": 2, "mediaType": MT["manifest"],
        "config": lay.put_json(cfg, MT["config"]),
        "layers": manifest["layers"] + [desc],
    }
    mdesc = lay.put_json(out, MT["manifest"])
    mdesc["platform"] = {"architecture": "amd64", "os": "linux"}
    lay.write_refs([("latest", mdesc)])

if sys.argv[1] == "python":
    build_python(sys.argv[2], sys.argv[3])
elif sys.argv[1] == "claude":
    build_claude(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
else:
    build_layers(sys.argv[2], sys.argv[3])
PYEOF
)

# fresh NAME INPUTS: true when $out/NAME was built from these inputs.
fresh() {
  ! $force && [ -f "$out/$1/index.json" ] && [ "$(cat "$out/$1.inputs" 2>/dev/null)" = "$2" ]
}

build_python() {
  local inputs
  inputs=$(sha256sum <"$self" | cut -d' ' -f1)
  if fresh python "$inputs"; then return; fi
  local work="$out/python.work"
  rm -rf "$work" "$out/python" "$out/python.inputs"
  mkdir -p "$work/tmp"

  # Runs inside mmdebstrap (customize stage) with the rootfs as $1: the
  # image's user, working directory and a hello program for each runtime.
  cat >"$work/customize.sh" <<'EOF'
#!/bin/sh
set -eu
root=$1
echo 'app:x:1234:1234:app:/home/app:/bin/sh' >>"$root/etc/passwd"
echo 'app:x:1234:' >>"$root/etc/group"
if [ -f "$root/etc/shadow" ]; then echo 'app:!:19000::::::' >>"$root/etc/shadow"; fi
mkdir -p "$root/home/app" "$root/srv/app"
echo 'import os; print("hello from python", os.getuid(), os.getcwd(), os.environ.get("VOIDBOX_IMAGE_TEST"))' >"$root/srv/app/hello.py"
echo 'console.log("hello from node", process.getuid(), process.cwd(), process.env.VOIDBOX_IMAGE_TEST)' >"$root/srv/app/hello.js"
chown -R 1234:1234 "$root/home/app" "$root/srv/app"
# Not needed in a test image: apt's caches, docs that dpkg's path-exclude
# does not cover, and files that change on every build.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
  "$root"/var/lib/dpkg/*-old "$root"/var/log/* "$root"/etc/resolv.conf "$root"/etc/hostname
EOF
  chmod +x "$work/customize.sh"

  local t0=$SECONDS t1
  # Only Debian's archive: the host's other apt sources (and its apt.conf)
  # are not used by mmdebstrap. The merged-usr hook sets up the /bin ->
  # usr/bin symlinks itself and installs usr-is-merged, or apt would satisfy
  # init-system-helpers' "usrmerge | usr-is-merged" with usrmerge, which
  # drags in ~47 MB of perl.
  TMPDIR="$PWD/$work/tmp" mmdebstrap --mode=root --variant=apt --format=directory \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="$(IFS=,; echo "${python_packages[*]}")" \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook="$PWD/$work/customize.sh" \
    "$suite" "$work/rootfs" \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb $security_mirror $suite-security main" \
    >"$work/mmdebstrap.log" 2>&1 || {
    tail -n 30 "$work/mmdebstrap.log" >&2
    echo "build-test-images: mmdebstrap failed; full log in $work/mmdebstrap.log" >&2
    exit 1
  }
  t1=$SECONDS
  # The layer: names without a leading ./ (as other image builders write
  # them), no device nodes in /dev, sorted, numeric owners, fixed mtimes.
  (cd "$work/rootfs" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort |
    tar --create --file=- --format=pax --numeric-owner --xattrs --sort=name \
      --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      --anchored --exclude='dev/*' --files-from=-) >"$work/rootfs.tar"
  du -sb "$work/rootfs" | cut -f1 >"$work/rootfs.bytes"
  rm -rf "$work/rootfs"
  "$py" -c "$oci_py" python "$work/layout" "$work/rootfs.tar"
  mv "$work/layout" "$out/python"
  mv "$work/rootfs.bytes" "$out/python.rootfs-bytes"
  mv "$work/mmdebstrap.log" "$out/python.mmdebstrap.log"
  rm -rf "$work"
  echo "$inputs" >"$out/python.inputs"
  echo "build-test-images: python: mmdebstrap $((t1 - t0)) s, layer + OCI $((SECONDS - t1)) s," \
    "rootfs $(($(cat "$out/python.rootfs-bytes") / 1000000)) MB," \
    "blobs $(($(du -sb "$out/python" | cut -f1) / 1000000)) MB" >&2
}

build_layers() {
  local inputs
  inputs=$(cat "$self" /bin/busybox | sha256sum | cut -d' ' -f1)
  if fresh layers "$inputs"; then return; fi
  rm -rf "$out/layers" "$out/layers.tmp" "$out/layers.tmp.tars" "$out/layers.inputs"
  "$py" -c "$oci_py" layers "$out/layers.tmp" /bin/busybox
  mv "$out/layers.tmp.expected.json" "$out/layers.expected.json"
  mv "$out/layers.tmp" "$out/layers"
  echo "$inputs" >"$out/layers.inputs"
}

# claude-code: the python image plus the real claude-code CLI from npm
# (a native binary in an optional dependency, for linux-x64 glibc),
# installed by the host's npm under /usr/local.
build_claude() {
  local inputs
  inputs=$( (cat "$self" "$out/python/index.json"; echo "$claude_version") | sha256sum | cut -d' ' -f1)
  if fresh claude-code "$inputs"; then return; fi
  local work="$out/claude-code.work"
  rm -rf "$work" "$out/claude-code" "$out/claude-code.inputs"
  mkdir -p "$work/prefix"
  npm install --global --prefix "$work/prefix" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$claude_version" >"$work/npm.log" 2>&1 || {
    cat "$work/npm.log" >&2
    echo "build-test-images: npm install @anthropic-ai/claude-code@$claude_version failed" >&2
    exit 1
  }
  "$work/prefix/bin/claude" --version >/dev/null
  (cd "$work/prefix" && find bin lib | LC_ALL=C sort |
    tar --create --file=- --format=pax --numeric-owner --owner=0 --group=0 --sort=name \
      --mtime="@$SOURCE_DATE_EPOCH" --transform='s,^,usr/local/,S' \
      --pax-option=delete=atime,delete=ctime --no-recursion --files-from=-) >"$work/claude.tar"
  "$py" -c "$oci_py" claude "$work/layout" "$out/python" "$work/claude.tar" "$claude_version"
  mv "$work/layout" "$out/claude-code"
  rm -rf "$work"
  echo "$inputs" >"$out/claude-code.inputs"
}

build_layers
build_python
build_claude
echo "$out/python"
echo "$out/layers"
echo "$out/claude-code"
