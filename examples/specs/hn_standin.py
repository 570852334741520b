#!/usr/bin/env python3
"""A stand-in for the Hacker News API (https://hacker-news.firebaseio.com/v0)
on 127.0.0.1: the same paths and JSON shapes, fixed data. For running
examples/specs/hackernews_agent.yaml offline.

    python3 examples/specs/hn_standin.py PORT
"""
import http.server
import json
import sys

STORIES = [
    (41000001, "Show HN: A micro-VM per agent stage", 412, 133, "voidbox"),
    (41000002, "The TCP/IP stack in 600 lines of Rust", 389, 97, "smol"),
    (41000003, "Why your sandbox should not trust its guest", 301, 88, "sec"),
    (41000004, "Secrets at the edge: placeholders instead of keys", 254, 61, "edge"),
    (41000005, "QEMU TCG is faster than you think", 198, 45, "tcg"),
    (41000006, "Ask HN: How do you run untrusted code?", 120, 230, "ask"),
]
ITEMS = {
    sid: {"by": by, "descendants": comments, "id": sid, "kids": [], "score": score,
          "time": 1764633600, "title": title, "type": "story",
          "url": f"https://example.com/{sid}"}
    for sid, title, score, comments, by in STORIES
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/v0/topstories.json":
            body = [s[0] for s in STORIES]
        elif self.path.startswith("/v0/item/") and self.path.endswith(".json"):
            try:
                body = ITEMS.get(int(self.path[len("/v0/item/"):-len(".json")]))
            except ValueError:
                body = None
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print(f"stand-in HN API on http://127.0.0.1:{server.server_port}/v0", flush=True)
    server.serve_forever()
