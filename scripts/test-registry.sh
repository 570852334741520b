#!/usr/bin/env bash
# Runs a real OCI distribution registry on loopback for the OCI tests and
# pushes the images of scripts/build-test-images.sh into it, so the tests pull
# them through void-box's normal registry code path (no container registry is
# reachable from here, and tests must not depend on one).
#
# The registry is Debian's docker-registry (CNCF distribution 2.8) with the
# filesystem storage driver; images are pushed with skopeo. Each instance has
# a name and lives in target/test-registry/NAME/:
#   config.yml  registry.pid  registry.log  env  storage/  (htpasswd | token/)
#
# Usage:
#   scripts/test-registry.sh start [--name N] [--port P] [--auth none|basic|token]
#                                  [--creds USER:PASS]
#       Starts instance N (default: default) on 127.0.0.1:P (default 5055; not
#       5000, the Debian service's port) in the background. --auth basic:
#       htpasswd (bcrypt) basic auth. --auth token: bearer tokens from a small
#       token server on 127.0.0.1:P+1 (the flow Docker Hub and GHCR use: 401
#       with `WWW-Authenticate: Bearer realm=...`, GET realm?service&scope with
#       basic creds, RS256 JWT signed by a throwaway key). Credentials default
#       to voidbox:voidbox-test. Writes NAME/env (REGISTRY=127.0.0.1:P, ...).
#   scripts/test-registry.sh start-fg ...   the same, in the foreground.
#   scripts/test-registry.sh push [--name N] [IMAGE:TAG[=REPO:TAG]]...
#       skopeo copy --all --preserve-digests oci:target/test-images/IMAGE:TAG
#       to REPO:TAG (default REPO:TAG = IMAGE:TAG). With no image given:
#       python:latest layers:latest layers:amd64.
#   scripts/test-registry.sh verify [--name N] [IMAGE:TAG[=REPO:TAG]]...
#       Fetches each manifest with curl (auth challenge: 401 without
#       credentials, 200 with) and checks its digest against the OCI layout.
#   scripts/test-registry.sh blob-path [--name N] DIGEST
#       Prints where the registry keeps that blob on disk (to tamper with it).
#   scripts/test-registry.sh stop [--name N] | stop-all
#
# Storage layout (distribution's filesystem driver), under NAME/storage/:
#   docker/registry/v2/blobs/sha256/<first 2 hex>/<64 hex>/data    blob bytes
#   docker/registry/v2/repositories/REPO/_manifests/tags/TAG/current/link
#   docker/registry/v2/repositories/REPO/_manifests/revisions/sha256/<hex>/link
#   docker/registry/v2/repositories/REPO/_layers/sha256/<hex>/link
# Manifests are blobs too. The registry serves `data` as it is on disk (it
# does not re-hash on reads), so overwriting bytes of `data` (same size keeps
# Content-Length right) makes it serve a blob that no longer matches its
# digest: what a client's digest verification must catch.
#
# Needs (Debian 12): docker-registry, skopeo, curl, apache2-utils (htpasswd,
# for --auth basic), openssl and python3 (for --auth token).
set -euo pipefail
cd "$(dirname "$0")/.."

images=target/test-images
state_root=target/test-registry
py=/usr/bin/python3
default_pushes=(python:latest layers:latest layers:amd64)

die() { echo "test-registry: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found (scripts/setup.sh installs it)"; }

cmd=${1:-}
[ -n "$cmd" ] || die "usage: $0 start|start-fg|push|verify|blob-path|stop|stop-all [options]"
shift
name=default port=5055 auth=none creds=voidbox:voidbox-test
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --auth) auth=$2; shift 2 ;;
    --creds) creds=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
dir="$state_root/$name"
# Absolute paths: the registry and the token server read them from config.
mkdir -p "$state_root"
absdir="$PWD/$dir"

# alive PIDFILE: the pid in it runs one of our servers.
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q -e docker-registry -e voidbox-token-server
}

stop_pidfile() {
  local pidfile=$1 pid
  if alive "$pidfile"; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pidfile" || break; sleep 0.1; done
    if alive "$pidfile"; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# load: the instance's settings as start wrote them.
load() {
  [ -f "$dir/env" ] || die "no registry '$name' (run: $0 start --name $name)"
  # shellcheck disable=SC1091
  . "$dir/env"
}

# The token server: GET /token?service=S&scope=repository:R:pull,push with
# basic credentials -> {"token": JWT, "access_token": JWT, ...}; every scope
# asked for is granted to the one user; no credentials -> 401.
token_server_py=$(cat <<'PYEOF'
import base64, json, subprocess, sys, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# argv[0] is "-c": the name that `stop` recognises is in argv[1].
_, port, key, cert, creds, service, issuer = sys.argv[1:8]
der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                     capture_output=True, check=True).stdout
x5c = base64.b64encode(der).decode()
want = "Basic " + base64.b64encode(creds.encode()).decode()
user = creds.split(":", 1)[0]

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def jwt(claims):
    head = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
    signing_input = b64(json.dumps(head).encode()) + "." + b64(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(),
                         capture_output=True, check=True).stdout
    return signing_input + "." + b64(sig)

class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/token":
            return self.reply(404, {"error": "not found"})
        if self.headers.get("Authorization", "") != want:
            return self.reply(401, {"error": "bad credentials"},
                              [("WWW-Authenticate", 'Basic realm="voidbox-test-token"')])
        q = parse_qs(url.query)
        access = []
        for scope in q.get("scope", []):
            for one in scope.split(" "):
                typ, rest = one.split(":", 1)
                repo, actions = rest.rsplit(":", 1)
                access.append({"type": typ, "name": repo, "actions": actions.split(",")})
        now = int(time.time())
        token = jwt({"iss": issuer, "sub": user, "aud": q.get("service", [service])[0],
                     "exp": now + 300, "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                     "access": access})
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        self.reply(200, {"token": token, "access_token": token, "expires_in": 300, "issued_at": issued})

    def log_message(self, fmt, *a):
        sys.stderr.write("token-server: " + (fmt % a) + "\n")

ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
PYEOF
)

start() { # foreground?
  local fg=$1
  need docker-registry
  need curl
  case "$auth" in none | basic | token) ;; *) die "--auth must be none, basic or token" ;; esac
  if alive "$dir/registry.pid"; then
    die "registry '$name' already runs (pid $(cat "$dir/registry.pid")); stop it first"
  fi
  port_busy "$port" && die "127.0.0.1:$port is already in use"
  # Fresh state each start: tests push what they need.
  rm -rf "$dir"
  mkdir -p "$dir/storage"
  local token_port=$((port + 1)) auth_yaml=""
  case "$auth" in
    basic)
      need htpasswd
      # distribution's htpasswd support takes bcrypt entries only (-B).
      htpasswd -Bbn "${creds%%:*}" "${creds#*:}" >"$dir/htpasswd"
      auth_yaml="auth:
  htpasswd:
    realm: voidbox-test
    path: $absdir/htpasswd"
      ;;
    token)
      need openssl
      port_busy "$token_port" && die "127.0.0.1:$token_port (token server) is already in use"
      mkdir -p "$dir/token"
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=voidbox-test-token \
        -keyout "$dir/token/key.pem" -out "$dir/token/cert.pem" 2>/dev/null
      auth_yaml="auth:
  token:
    realm: http://127.0.0.1:$token_port/token
    service: voidbox-test-registry
    issuer: voidbox-test-issuer
    rootcertbundle: $absdir/token/cert.pem"
      ;;
  esac
  # No blob descriptor cache: what is on disk is what is served, so a
  # test's tampering takes effect at once.
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $absdir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: voidbox-test-registry-secret
$auth_yaml
EOF
  {
    echo "REGISTRY=127.0.0.1:$port"
    echo "REGISTRY_AUTH=$auth"
    if [ "$auth" != none ]; then echo "REGISTRY_CREDS='$creds'"; fi
    if [ "$auth" = token ]; then echo "REGISTRY_TOKEN_REALM=http://127.0.0.1:$token_port/token"; fi
    echo "REGISTRY_STORAGE=$absdir/storage"
    echo "REGISTRY_BLOBS=$absdir/storage/docker/registry/v2/blobs/sha256"
  } >"$dir/env"

  if [ "$auth" = token ]; then
    nohup "$py" -c "$token_server_py" voidbox-token-server "$token_port" "$absdir/token/key.pem" \
      "$absdir/token/cert.pem" "$creds" voidbox-test-registry voidbox-test-issuer \
      >>"$dir/token.log" 2>&1 </dev/null &
    echo $! >"$dir/token.pid"
  fi
  if $fg; then
    # The registry's log on stdout; INT/TERM/exit stop both servers.
    echo "test-registry: '$name' on 127.0.0.1:$port (auth: $auth), Ctrl-C stops it" >&2
    docker-registry serve "$dir/config.yml" </dev/null &
    echo $! >"$dir/registry.pid"
    trap 'stop_pidfile "$dir/registry.pid"; stop_pidfile "$dir/token.pid"' EXIT
    trap 'exit 130' INT TERM
    wait "$(cat "$dir/registry.pid")"
    return
  fi
  nohup docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null &
  echo $! >"$dir/registry.pid"
  local code
  for _ in $(seq 100); do
    alive "$dir/registry.pid" || { tail -n 20 "$dir/registry.log" >&2; die "registry '$name' exited"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
    if [ "$code" = 200 ] || [ "$code" = 401 ]; then
      if [ "$auth" != token ] || curl -s -o /dev/null "http://127.0.0.1:$token_port/"; then
        echo "$dir/env"
        return
      fi
    fi
    sleep 0.1
  done
  die "registry '$name' did not answer on 127.0.0.1:$port in 10 s (log: $dir/registry.log)"
}

# ref IMAGE:TAG[=REPO:TAG] -> sets src_image src_tag dst_repo dst_tag
ref() {
  local src=${1%%=*} dst=${1#*=}
  src_image=${src%%:*} src_tag=${src#*:}
  [ "$src_tag" != "$src" ] || src_tag=latest
  dst_repo=${dst%%:*} dst_tag=${dst#*:}
  [ "$dst_tag" != "$dst" ] || dst_tag=$src_tag
}

# layout_digest IMAGE TAG: the digest index.json names TAG by.
layout_digest() {
  "$py" - "$images/$1/index.json" "$2" <<'EOF'
import json, sys
for m in json.load(open(sys.argv[1]))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"]); break
else:
    sys.exit("no tag %s in %s" % (sys.argv[2], sys.argv[1]))
EOF
}

push() {
  need skopeo
  load
  local r cred_args=()
  [ "$REGISTRY_AUTH" = none ] || cred_args=(--dest-creds "$REGISTRY_CREDS")
  [ ${#args[@]} -gt 0 ] || args=("${default_pushes[@]}")
  for r in "${args[@]}"; do
    ref "$r"
    [ -f "$images/$src_image/index.json" ] || die "no image $images/$src_image (run scripts/build-test-images.sh)"
    # --insecure-policy: no /etc/containers/policy.json needed; plain HTTP
    # to loopback needs --dest-tls-verify=false; --preserve-digests makes
    # skopeo fail rather than rewrite a manifest; --all copies a whole index.
    skopeo --insecure-policy copy --quiet --all --preserve-digests --dest-tls-verify=false \
      "${cred_args[@]}" "oci:$images/$src_image:$src_tag" "docker://$REGISTRY/$dst_repo:$dst_tag"
    echo "$REGISTRY/$dst_repo:$dst_tag@$(layout_digest "$src_image" "$src_tag")"
  done
}

accept='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json'

verify() {
  need curl
  load
  local r url code headers body want got www realm service token auth_args
  [ ${#args[@]} -gt 0 ] || args=("${default_pushes[@]}")
  headers=$(mktemp) body=$(mktemp)
  trap 'rm -f "$headers" "$body"' RETURN
  for r in "${args[@]}"; do
    ref "$r"
    want=$(layout_digest "$src_image" "$src_tag")
    url="http://$REGISTRY/v2/$dst_repo/manifests/$dst_tag"
    auth_args=()
    code=$(curl -s -D "$headers" -o "$body" -w '%{http_code}' -H "Accept: $accept" "$url")
    case "$REGISTRY_AUTH" in
      none) ;;
      basic)
        [ "$code" = 401 ] || die "$url without credentials: HTTP $code, want 401"
        grep -qi '^www-authenticate: basic realm="voidbox-test"' "$headers" ||
          die "$url: no Basic challenge: $(grep -i www-authenticate "$headers")"
        auth_args=(-u "$REGISTRY_CREDS")
        ;;
      token)
        [ "$code" = 401 ] || die "$url without a token: HTTP $code, want 401"
        www=$(grep -i '^www-authenticate: bearer ' "$headers" | tr -d '\r') ||
          die "$url: no Bearer challenge"
        realm=$(sed -n 's/.*realm="\([^"]*\)".*/\1/p' <<<"$www")
        service=$(sed -n 's/.*service="\([^"]*\)".*/\1/p' <<<"$www")
        code=$(curl -s -o /dev/null -w '%{http_code}' "$realm?service=$service&scope=repository:$dst_repo:pull")
        [ "$code" = 401 ] || die "token server without credentials: HTTP $code, want 401"
        token=$(curl -fsS -u "$REGISTRY_CREDS" "$realm?service=$service&scope=repository:$dst_repo:pull" |
          "$py" -c 'import json,sys; print(json.load(sys.stdin)["token"])')
        auth_args=(-H "Authorization: Bearer $token")
        ;;
    esac
    if [ "$REGISTRY_AUTH" != none ]; then
      code=$(curl -s -D "$headers" -o "$body" -w '%{http_code}' -H "Accept: $accept" "${auth_args[@]}" "$url")
    fi
    [ "$code" = 200 ] || die "$url: HTTP $code, want 200: $(cat "$body")"
    got="sha256:$(sha256sum "$body" | cut -d' ' -f1)"
    [ "$got" = "$want" ] || die "$url: body digest $got, layout has $want"
    grep -qi "^docker-content-digest: $want" "$headers" || die "$url: Docker-Content-Digest is not $want"
    echo "ok $REGISTRY/$dst_repo:$dst_tag $want ($(grep -i '^content-type:' "$headers" | cut -d' ' -f2 | tr -d '\r'), auth: $REGISTRY_AUTH)"
  done
}

case "$cmd" in
  start) start false ;;
  start-fg) start true ;;
  push) push ;;
  verify) verify ;;
  blob-path)
    load
    [ ${#args[@]} -eq 1 ] || die "usage: $0 blob-path [--name N] sha256:HEX"
    hex=${args[0]#sha256:}
    echo "$REGISTRY_BLOBS/${hex:0:2}/$hex/data"
    ;;
  stop)
    stop_pidfile "$dir/registry.pid"
    stop_pidfile "$dir/token.pid"
    ;;
  stop-all)
    for d in "$state_root"/*/; do
      [ -d "$d" ] || continue
      stop_pidfile "$d/registry.pid"
      stop_pidfile "$d/token.pid"
    done
    ;;
  *) die "unknown command $cmd" ;;
esac
