//! Secrets swapped at the edge, in plain HTTP: the guest holds a
//! placeholder, and on a connection to one of the secret's hosts the
//! placeholder in each request's *headers* becomes the real value. Bodies
//! and everything else pass as they are. Bodies are framed by
//! `Content-Length` or chunked transfer coding; a request this reader
//! cannot frame for sure (upgrades, `CONNECT`, both framings at once, a
//! malformed chunk, a head over 64 KiB) turns it into a plain relay for the
//! rest of the connection: later placeholders then stay placeholders,
//! which fails closed.

/// Most bytes of one request head, and of a chunked body's trailers.
const MAX_HEAD: usize = 64 * 1024;
/// Most bytes of one chunk-size line (the size and its extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// One secret: what the guest has, what the destination gets.
#[derive(Clone)]
pub struct Swap {
    /// The placeholder in the guest's environment.
    pub placeholder: Vec<u8>,
    /// The real value.
    pub value: Vec<u8>,
}

impl std::fmt::Debug for Swap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Swap(..)")
    }
}

enum State {
    /// Reading a request head.
    Head(Vec<u8>),
    /// Passing this many body bytes.
    Body(u64),
    /// Passing a chunked body.
    Chunked(Chunks),
    /// Passing everything from here on.
    Raw,
}

/// Where a chunked body is. Its bytes pass as they come; only their
/// framing is read.
enum Chunks {
    /// In a chunk-size line: its bytes so far.
    Size(Vec<u8>),
    /// In a chunk's data: bytes left.
    Data(u64),
    /// In the CRLF after a chunk's data: bytes of it seen.
    DataEnd(usize),
    /// In the trailers after the last chunk: the current line, and the
    /// section's bytes so far.
    Trailers(Vec<u8>, usize),
}

/// What one step through a chunked body found.
enum Chunked {
    /// More to come.
    More,
    /// The body is over: a request head comes next.
    Done,
    /// Not chunked framing after all.
    Broken,
}

/// Rewrites the guest's requests on one connection.
pub struct HeaderSwapper {
    swaps: Vec<Swap>,
    state: State,
}

impl HeaderSwapper {
    /// A swapper for `swaps` (at least one).
    pub fn new(swaps: Vec<Swap>) -> HeaderSwapper {
        HeaderSwapper {
            swaps,
            state: State::Head(Vec::new()),
        }
    }

    /// Takes the guest's next bytes; appends what goes to the destination
    /// to `out` (a head is held until it is complete).
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.state {
                State::Raw => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Chunked(chunks) => match chunks.step(&mut input, out) {
                    Chunked::More => {}
                    Chunked::Done => self.state = State::Head(Vec::new()),
                    Chunked::Broken => self.state = State::Raw,
                },
                State::Body(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Head(head) => {
                    // Only what can still belong to this head is taken.
                    let before = head.len();
                    head.extend_from_slice(input);
                    let end = find_head_end(head);
                    if end.map_or(head.len(), |e| e) > MAX_HEAD {
                        // Too big to be sure of: untouched, from here on.
                        out.extend_from_slice(head);
                        self.state = State::Raw;
                        return;
                    }
                    let Some(end) = end else { return };
                    let rest = head.split_off(end);
                    let consumed = end - before.min(end);
                    let taken = std::mem::take(head);
                    let next = self.after_head(&taken);
                    out.extend_from_slice(&self.rewrite(&taken));
                    self.state = next;
                    input = &input[consumed.min(input.len())..];
                    debug_assert_eq!(rest.len(), input.len());
                }
            }
        }
    }

    /// What follows a complete head.
    fn after_head(&self, head: &[u8]) -> State {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
            return State::Raw;
        }
        if request.method == Some("CONNECT") {
            return State::Raw;
        }
        let mut length: Option<u64> = None;
        let mut chunked = false;
        for h in request.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("upgrade") {
                return State::Raw;
            }
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Only a body that is chunked and nothing else is framed.
                if chunked || !value.eq_ignore_ascii_case("chunked") {
                    return State::Raw;
                }
                chunked = true;
            }
            if h.name.eq_ignore_ascii_case("content-length") {
                match (value.parse::<u64>(), length) {
                    (Ok(n), None) => length = Some(n),
                    // Two lengths, or a bad one: no sure framing.
                    _ => return State::Raw,
                }
            }
        }
        match (chunked, length) {
            // Both framings: the destination may read either (smuggling).
            (true, Some(_)) => State::Raw,
            (true, None) => State::Chunked(Chunks::Size(Vec::new())),
            (false, Some(n)) if n > 0 => State::Body(n),
            _ => State::Head(Vec::new()),
        }
    }

    /// The head with every placeholder in its header lines (not the
    /// request line) replaced.
    fn rewrite(&self, head: &[u8]) -> Vec<u8> {
        let line_end = head
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(head.len(), |i| i + 2);
        let (request_line, headers) = head.split_at(line_end);
        let mut out = request_line.to_vec();
        let mut rest = headers.to_vec();
        for swap in &self.swaps {
            rest = replace_all(&rest, &swap.placeholder, &swap.value);
        }
        out.extend_from_slice(&rest);
        out
    }
}

impl Chunks {
    /// Passes what `input` holds of the body to `out`, reading its framing.
    fn step(&mut self, input: &mut &[u8], out: &mut Vec<u8>) -> Chunked {
        while !input.is_empty() {
            match self {
                Chunks::Data(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    *input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Chunks::DataEnd(0);
                    }
                }
                Chunks::DataEnd(seen) => {
                    if input[0] != b"\r\n"[*seen] {
                        return Chunked::Broken;
                    }
                    out.push(input[0]);
                    *input = &input[1..];
                    *seen += 1;
                    if *seen == 2 {
                        *self = Chunks::Size(Vec::new());
                    }
                }
                Chunks::Size(line) => {
                    let Some(end) = take_line(line, input, out) else {
                        if line.len() > MAX_CHUNK_LINE {
                            return Chunked::Broken;
                        }
                        continue;
                    };
                    let text = std::str::from_utf8(&line[..end]).unwrap_or("");
                    let size = text.split(';').next().unwrap_or("").trim();
                    match u64::from_str_radix(size, 16) {
                        Ok(0) => *self = Chunks::Trailers(Vec::new(), 0),
                        Ok(n) if !size.starts_with('+') => *self = Chunks::Data(n),
                        _ => return Chunked::Broken,
                    }
                }
                Chunks::Trailers(line, total) => {
                    let before = line.len();
                    let done = take_line(line, input, out);
                    *total += line.len() - before;
                    match done {
                        Some(0) => return Chunked::Done,
                        Some(_) => line.clear(),
                        None => {}
                    }
                    if *total > MAX_HEAD {
                        return Chunked::Broken;
                    }
                }
            }
        }
        Chunked::More
    }
}

/// Moves bytes from `input` to `line` (and `out`) up to and including a
/// LF; returns the line's length without its CRLF once it is whole.
fn take_line(line: &mut Vec<u8>, input: &mut &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let (n, whole) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (i + 1, true),
        None => (input.len(), false),
    };
    line.extend_from_slice(&input[..n]);
    out.extend_from_slice(&input[..n]);
    *input = &input[n..];
    if !whole {
        return None;
    }
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    Some(body.strip_suffix(b"\r").unwrap_or(body).len())
}

/// Where a head ends (just past its blank line).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swapper() -> HeaderSwapper {
        HeaderSwapper::new(vec![Swap {
            placeholder: b"PLACEHOLDER".to_vec(),
            value: b"real-secret".to_vec(),
        }])
    }

    fn all(s: &mut HeaderSwapper, parts: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for p in parts {
            s.feed(p, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn headers_are_swapped_bodies_and_request_lines_are_not() {
        let req: &[u8] = b"POST /PLACEHOLDER HTTP/1.1\r\nAuthorization: Bearer PLACEHOLDER\r\nContent-Length: 11\r\n\r\nPLACEHOLDERGET / HTTP/1.1\r\nX-Key: PLACEHOLDER\r\n\r\n";
        let out = all(&mut swapper(), &[req]);
        assert_eq!(
            out,
            "POST /PLACEHOLDER HTTP/1.1\r\nAuthorization: Bearer real-secret\r\nContent-Length: 11\r\n\r\nPLACEHOLDERGET / HTTP/1.1\r\nX-Key: real-secret\r\n\r\n"
        );
        // The same bytes in any pieces give the same result.
        for cut in 1..req.len() {
            let (a, b) = req.split_at(cut);
            assert_eq!(all(&mut swapper(), &[a, b]), out, "cut at {cut}");
        }
    }

    #[test]
    fn chunked_bodies_are_framed_and_passed_as_they_are() {
        let req: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nA: PLACEHOLDER\r\n\r\n5;ext=1\r\nPLACE\r\nb\r\nHOLDER\r\n0\r\n\r\n0\r\nT: PLACEHOLDER\r\n\r\nGET / HTTP/1.1\r\nB: PLACEHOLDER\r\n\r\n";
        let out = all(&mut swapper(), &[req]);
        let want = String::from_utf8_lossy(req)
            .replacen("A: PLACEHOLDER", "A: real-secret", 1)
            .replacen("B: PLACEHOLDER", "B: real-secret", 1);
        assert_eq!(
            out, want,
            "bodies and trailers untouched, both heads swapped"
        );
        for cut in 1..req.len() {
            let (a, b) = req.split_at(cut);
            assert_eq!(all(&mut swapper(), &[a, b]), out, "cut at {cut}");
        }
    }

    #[test]
    fn what_cannot_be_framed_passes_untouched_from_there_on() {
        let tail = "GET / HTTP/1.1\r\nB: PLACEHOLDER\r\n\r\n";
        for framing in [
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            "Upgrade: websocket\r\n\r\n",
        ] {
            let req = format!("POST / HTTP/1.1\r\nA: PLACEHOLDER\r\n{framing}{tail}");
            let out = all(&mut swapper(), &[req.as_bytes()]);
            assert!(
                out.starts_with("POST / HTTP/1.1\r\nA: real-secret"),
                "{out}"
            );
            assert!(out.ends_with("B: PLACEHOLDER\r\n\r\n"), "{framing}: {out}");
        }
        let two_lengths = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxyGET / HTTP/1.1\r\nB: PLACEHOLDER\r\n\r\n";
        assert!(all(&mut swapper(), &[two_lengths]).ends_with("B: PLACEHOLDER\r\n\r\n"));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        huge.extend_from_slice(b"PLACEHOLDER\r\n\r\n");
        let out = all(&mut swapper(), &[&huge]);
        assert!(out.ends_with("PLACEHOLDER\r\n\r\n"));
        assert_eq!(out.len(), huge.len());
    }
}
