//! A server-side HTTP/1.1 codec for transports that own their sockets (the io_uring
//! transport): request heads parsed in place with `httparse`, message bodies framed by
//! `Content-Length` or decoded from `chunked`, and responses written straight into a
//! connection's send buffer. It does no I/O, so it is tested on byte strings.
//!
//! What it follows from RFC 9112: keep-alive by default on HTTP/1.1 and only on request
//! on HTTP/1.0; a request with both `Transfer-Encoding` and `Content-Length`, differing
//! `Content-Length`s, or a transfer coding other than a final `chunked` is refused (each
//! is a request-smuggling vector, so the connection is closed after the answer);
//! `Expect: 100-continue` is answered with `100 Continue` only once the body is wanted.

use crate::api::{self, Method};

/// Longest request head accepted (request line and headers); a longer one gets 431, as
/// hyper's 64 KiB read buffer does on the other transport.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields in one request (hyper's limit too).
pub const MAX_HEADERS: usize = 100;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head, borrowing from the receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub request: api::Request<'a>,
    /// Bytes the head took (the body, if any, starts here).
    pub len: usize,
    pub body: BodyFraming,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// An HTTP/1.0 request: keeping its connection open must be confirmed with
    /// `Connection: keep-alive`.
    pub http10: bool,
    /// `Expect: 100-continue`: the client waits for `100 Continue` before the body.
    pub expect_continue: bool,
}

/// A request the codec refuses. The connection is closed after the answer: where the
/// head is unreadable, there is no telling where the next request would start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

impl Refusal {
    const fn new(status: u16, code: &'static str, message: &'static str) -> Refusal {
        Refusal {
            status,
            code,
            message,
        }
    }

    /// The JSON error answer.
    pub fn response(&self) -> api::Response {
        api::Response::error(self.status, self.code, self.message)
    }
}

const HEAD_TOO_LARGE: Refusal = Refusal::new(
    431,
    "head_too_large",
    "the request line and headers are limited to 64 KiB and 64 fields",
);
const MALFORMED: Refusal = Refusal::new(
    400,
    "malformed_request",
    "the request is not valid HTTP/1.1",
);
const BAD_TARGET: Refusal = Refusal::new(
    400,
    "malformed_request",
    "the request target must be a path (origin form) or an absolute http URL",
);
const BAD_LENGTH: Refusal = Refusal::new(
    400,
    "invalid_content_length",
    "Content-Length must be one decimal number",
);
const LENGTH_AND_CHUNKED: Refusal = Refusal::new(
    400,
    "invalid_framing",
    "a request may not carry both Transfer-Encoding and Content-Length",
);
const UNSUPPORTED_CODING: Refusal = Refusal::new(
    501,
    "unsupported_transfer_coding",
    "only Transfer-Encoding: chunked, once, is supported",
);
const CODING_ON_HTTP10: Refusal = Refusal::new(
    400,
    "invalid_framing",
    "Transfer-Encoding is not defined for HTTP/1.0",
);
const BAD_EXPECT: Refusal = Refusal::new(
    417,
    "expectation_failed",
    "only Expect: 100-continue is supported",
);

/// Parses a request head from the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head<'_>>, Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(HEAD_TOO_LARGE),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HEAD_TOO_LARGE),
        Err(_) => return Err(MALFORMED),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HEAD_TOO_LARGE);
    }
    let method = match parsed.method.ok_or(MALFORMED)? {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let (path, query) = split_target(parsed.path.ok_or(MALFORMED)?)?;
    let http10 = parsed.version == Some(0);

    let mut request = api::Request {
        method,
        path,
        query,
        accept: None,
        if_none_match: None,
        authorization: None,
    };
    let mut content_length: Option<u64> = None;
    // Transfer codings over every Transfer-Encoding field, in order.
    let mut codings = 0usize;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        let value = field.value;
        // Match on length first: most fields are none of these.
        match name.len() {
            6 if name.eq_ignore_ascii_case(b"accept") => request.accept = Some(value),
            6 if name.eq_ignore_ascii_case(b"expect") => {
                if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(BAD_EXPECT);
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            13 if name.eq_ignore_ascii_case(b"authorization") => {
                request.authorization = Some(value)
            }
            13 if name.eq_ignore_ascii_case(b"if-none-match") => {
                request.if_none_match = Some(value)
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let parsed = parse_length(value).ok_or(BAD_LENGTH)?;
                if content_length.is_some_and(|seen| seen != parsed) {
                    return Err(BAD_LENGTH);
                }
                content_length = Some(parsed);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                // Exactly one coding, `chunked`, over all the fields: any other coding
                // would have to be undone, chunked twice is invalid, and an empty list
                // element is where parsers disagree (request smuggling lives there).
                for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    codings += 1;
                    if codings > 1 || !coding.eq_ignore_ascii_case(b"chunked") {
                        return Err(UNSUPPORTED_CODING);
                    }
                }
            }
            _ => {}
        }
    }
    let transfer_encoding = codings > 0;
    if transfer_encoding && http10 {
        return Err(CODING_ON_HTTP10);
    }
    let body = match (transfer_encoding, content_length) {
        (true, Some(_)) => return Err(LENGTH_AND_CHUNKED),
        (true, None) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::Empty,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    let keep_alive = if http10 {
        keep_alive_token && !close
    } else {
        !close
    };
    Ok(Some(Head {
        request,
        len,
        body,
        keep_alive,
        http10,
        expect_continue: expect_continue && !http10 && body != BodyFraming::Empty,
    }))
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Path and query of a request target: origin form (`/p?q`), absolute form
/// (`http://host/p?q`, as sent to proxies) or the asterisk form (`*`, which no route
/// has, so it answers 404).
fn split_target(target: &str) -> Result<(&str, Option<&str>), Refusal> {
    let origin = if target.starts_with('/') || target == "*" {
        target
    } else {
        let rest = strip_prefix_ignore_case(target, "http://")
            .or_else(|| strip_prefix_ignore_case(target, "https://"))
            .ok_or(BAD_TARGET)?;
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            // `http://host?q` has an empty path, which means `/`.
            Some(i) => return Ok(("/", Some(&rest[i + 1..]))),
            None => "/",
        }
    };
    Ok(match origin.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (origin, None),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not `chunk-size [ext] CRLF data CRLF … 0 CRLF [trailers] CRLF`.
    Malformed,
    /// The decoded body would exceed the limit.
    TooLarge,
}

/// Decodes `Transfer-Encoding: chunked` incrementally: feed it what arrives, it appends
/// the data to the body and says when the last chunk and trailers are through.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hexadecimal size; `digits` so far.
    #[default]
    Start,
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeSpace {
        size: u64,
    },
    /// Skipping a chunk extension up to CRLF.
    Extension {
        size: u64,
    },
    /// After the size line's CR.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    /// After a chunk's data: CR then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field, up to CRLF.
    Trailer,
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
    Done,
}

/// Most bytes of chunk extensions and trailers accepted (they are skipped, not kept).
const MAX_CHUNK_METADATA: usize = 16 * 1024;

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder::default()
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes from `input`, appending chunk data to `body` (which may not grow past
    /// `limit`). Returns how many bytes of `input` it used: all of them unless the body
    /// ended inside `input` (the rest is the next request).
    pub fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        limit: usize,
        metadata: &mut usize,
    ) -> Result<usize, ChunkError> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                Start => match hex(b) {
                    Some(d) => Size {
                        size: u64::from(d),
                        digits: 1,
                    },
                    None => return Err(ChunkError::Malformed),
                },
                Size { size, digits } => match (hex(b), b) {
                    (Some(d), _) if digits < 15 => Size {
                        size: size << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    (Some(_), _) => return Err(ChunkError::TooLarge),
                    (None, b';') => Extension { size },
                    (None, b' ' | b'\t') => SizeSpace { size },
                    (None, b'\r') => SizeLf { size },
                    _ => return Err(ChunkError::Malformed),
                },
                SizeSpace { size } => match b {
                    b' ' | b'\t' => SizeSpace { size },
                    b';' => Extension { size },
                    b'\r' => SizeLf { size },
                    _ => return Err(ChunkError::Malformed),
                },
                Extension { size } => {
                    *metadata += 1;
                    if *metadata > MAX_CHUNK_METADATA {
                        return Err(ChunkError::Malformed);
                    }
                    match b {
                        b'\r' => SizeLf { size },
                        b'\n' => return Err(ChunkError::Malformed),
                        _ => Extension { size },
                    }
                }
                SizeLf { size } => match b {
                    b'\n' if size == 0 => TrailerStart,
                    b'\n' => {
                        if body.len() as u64 + size > limit as u64 {
                            return Err(ChunkError::TooLarge);
                        }
                        // Grown as the data arrives: a size line alone reserves little.
                        body.reserve((size as usize).min(1 << 20));
                        Data { left: size }
                    }
                    _ => return Err(ChunkError::Malformed),
                },
                Data { left } => {
                    let take = (left as usize).min(input.len() - i);
                    body.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { DataCr } else { Data { left } };
                    continue;
                }
                DataCr => match b {
                    b'\r' => DataLf,
                    _ => return Err(ChunkError::Malformed),
                },
                DataLf => match b {
                    b'\n' => Start,
                    _ => return Err(ChunkError::Malformed),
                },
                TrailerStart => match b {
                    b'\r' => EndLf,
                    b'\n' => return Err(ChunkError::Malformed),
                    _ => Trailer,
                },
                Trailer => {
                    *metadata += 1;
                    if *metadata > MAX_CHUNK_METADATA {
                        return Err(ChunkError::Malformed);
                    }
                    match b {
                        b'\r' => TrailerLf,
                        b'\n' => return Err(ChunkError::Malformed),
                        _ => Trailer,
                    }
                }
                TrailerLf => match b {
                    b'\n' => TrailerStart,
                    _ => return Err(ChunkError::Malformed),
                },
                EndLf => match b {
                    b'\n' => {
                        self.state = Done;
                        return Ok(i + 1);
                    }
                    _ => return Err(ChunkError::Malformed),
                },
                Done => return Ok(i),
            };
            i += 1;
        }
        Ok(i)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for the `Date` header.
pub type HttpDate = [u8; 29];

/// Formats `unix_secs` as an IMF-fixdate.
pub fn http_date(unix_secs: u64) -> HttpDate {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = crate::render::civil_from_days(days as i64);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two_digits(&mut out[5..7], day as u64);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let year = year as u64;
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    two_digits(&mut out[17..19], secs / 3600);
    two_digits(&mut out[20..22], secs / 60 % 60);
    two_digits(&mut out[23..25], secs % 60);
    out
}

fn two_digits(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// What an answer says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Nothing: HTTP/1.1 keeps connections open by default.
    Default,
    /// `Connection: keep-alive`, which an HTTP/1.0 client needs to keep it open.
    KeepAlive,
    /// `Connection: close`: the last answer on this connection.
    Close,
}

/// Appends `response` in HTTP/1.1 to `out`: status line, headers, body (left out for
/// `HEAD`, whose `Content-Length` is still the body's).
pub fn write_response(
    out: &mut Vec<u8>,
    response: &api::Response,
    head_only: bool,
    connection: Connection,
    date: &HttpDate,
) {
    out.reserve(160 + response.body.len());
    out.extend_from_slice(status_line(response.status));
    out.extend_from_slice(b"content-type: ");
    out.extend_from_slice(response.content_type.as_bytes());
    if let Some(etag) = &response.etag {
        out.extend_from_slice(b"\r\netag: ");
        out.extend_from_slice(etag);
    }
    if let Some(allow) = response.allow {
        out.extend_from_slice(b"\r\nallow: ");
        out.extend_from_slice(allow.as_bytes());
    }
    if response.authenticate {
        out.extend_from_slice(b"\r\nwww-authenticate: Bearer");
    }
    match connection {
        Connection::Default => {}
        Connection::KeepAlive => out.extend_from_slice(b"\r\nconnection: keep-alive"),
        Connection::Close => out.extend_from_slice(b"\r\nconnection: close"),
    }
    // 304 carries no body and no length of its own (RFC 9110 §15.4.5).
    if response.status != 304 {
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(response.body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only && response.status != 304 {
        out.extend_from_slice(&response.body);
    }
}

fn status_line(status: u16) -> &'static [u8] {
    match status {
        200 => b"HTTP/1.1 200 OK\r\n",
        304 => b"HTTP/1.1 304 Not Modified\r\n",
        400 => b"HTTP/1.1 400 Bad Request\r\n",
        401 => b"HTTP/1.1 401 Unauthorized\r\n",
        403 => b"HTTP/1.1 403 Forbidden\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\n",
        408 => b"HTTP/1.1 408 Request Timeout\r\n",
        409 => b"HTTP/1.1 409 Conflict\r\n",
        413 => b"HTTP/1.1 413 Payload Too Large\r\n",
        417 => b"HTTP/1.1 417 Expectation Failed\r\n",
        422 => b"HTTP/1.1 422 Unprocessable Entity\r\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        500 => b"HTTP/1.1 500 Internal Server Error\r\n",
        501 => b"HTTP/1.1 501 Not Implemented\r\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\n",
        _ => b"HTTP/1.1 500 Internal Server Error\r\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head<'_> {
        parse_head(raw.as_bytes())
            .expect("valid")
            .expect("complete")
    }

    fn refusal(raw: &str) -> Refusal {
        parse_head(raw.as_bytes()).expect_err("refused")
    }

    #[test]
    fn parses_a_get_with_the_headers_the_api_reads() {
        let raw = "GET /v1/prices/SKU-1?store=s1&channel=web HTTP/1.1\r\nHost: e\r\nAccept: application/x-flatbuffers\r\nIf-None-Match: W/\"ab\"\r\nAuthorization: Bearer t\r\n\r\nGET /next";
        let h = head(raw);
        assert_eq!(h.request.method, Method::Get);
        assert_eq!(h.request.path, "/v1/prices/SKU-1");
        assert_eq!(h.request.query, Some("store=s1&channel=web"));
        assert_eq!(h.request.accept, Some(&b"application/x-flatbuffers"[..]));
        assert_eq!(h.request.if_none_match, Some(&b"W/\"ab\""[..]));
        assert_eq!(h.request.authorization, Some(&b"Bearer t"[..]));
        assert_eq!(&raw[h.len..], "GET /next");
        assert!(h.keep_alive);
        assert_eq!(h.body, BodyFraming::Empty);
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(parse_head(b"GET /healthz HTTP/1.1\r\nHost: e\r\n")
            .unwrap()
            .is_none());
        assert!(parse_head(b"").unwrap().is_none());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn body_framing() {
        let h = head("POST /v1/quote HTTP/1.1\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.body, BodyFraming::Length(12));
        assert!(!h.expect_continue);
        let h = head(
            "POST /v1/quote HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(h.body, BodyFraming::Chunked);
        assert!(h.expect_continue);
        let h =
            head("POST /v1/quote HTTP/1.1\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(h.body, BodyFraming::Empty);
        assert!(!h.expect_continue, "nothing to wait for");
        // Repeated equal lengths are one length.
        let h = head("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.body, BodyFraming::Length(3));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n").code,
            "invalid_content_length"
        );
        for bad in ["-1", "+3", "3 3", "", "0x10", "99999999999999999999"] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(refusal(&raw).status, 400, "{bad:?}");
        }
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
                .code,
            "invalid_framing"
        );
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").status,
            501
        );
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").status,
            501
        );
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nExpect: something-else\r\n\r\n").status,
            417
        );
        // chunked once, alone, in one list: anything else is where parsers disagree.
        for te in ["chunked,", ", chunked", "chunked, chunked", "identity"] {
            let raw = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(refusal(&raw).status, 501, "{te:?}");
        }
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").status,
            501
        );
        assert_eq!(
            refusal("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").code,
            "invalid_framing"
        );
    }

    #[test]
    fn request_targets() {
        let h = head("GET http://edge:8080/v1/prices/A?store=s HTTP/1.1\r\n\r\n");
        assert_eq!(
            (h.request.path, h.request.query),
            ("/v1/prices/A", Some("store=s"))
        );
        let h = head("GET HTTP://edge?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!((h.request.path, h.request.query), ("/", Some("x=1")));
        let h = head("GET http://edge HTTP/1.1\r\n\r\n");
        assert_eq!((h.request.path, h.request.query), ("/", None));
        let h = head("OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!((h.request.method, h.request.path), (Method::Other, "*"));
        assert_eq!(
            refusal("GET v1/prices HTTP/1.1\r\n\r\n").code,
            "malformed_request"
        );
        assert_eq!(refusal("GET ftp://x/ HTTP/1.1\r\n\r\n").status, 400);
    }

    #[test]
    fn garbage_and_oversized_heads_are_refused() {
        assert_eq!(refusal("HELLO\r\n\r\n").status, 400);
        assert_eq!(refusal("GET / HTTP/1.1\r\nBad Header\r\n\r\n").status, 400);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert_eq!(
            refusal(&format!("GET / HTTP/1.1\r\n{many}\r\n")).status,
            431
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(MAX_HEAD_BYTES));
        assert_eq!(refusal(&long).status, 431);
    }

    fn dechunk(input: &[u8], split: usize, limit: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut metadata = 0;
        let mut used = decoder.decode(&input[..split], &mut body, limit, &mut metadata)?;
        if !decoder.is_done() {
            used += decoder.decode(&input[split..], &mut body, limit, &mut metadata)?;
        }
        assert!(decoder.is_done(), "body incomplete");
        Ok((body, used))
    }

    #[test]
    fn chunked_bodies_decode_however_they_arrive() {
        let raw = b"5;name=value\r\nhello\r\nB\r\n, chunked w\r\n3\r\norl\r\n1\r\nd\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..raw.len() {
            let (body, used) = dechunk(raw, split, 1 << 20).unwrap();
            assert_eq!(body, b"hello, chunked world", "split at {split}");
            assert_eq!(&raw[used..], b"NEXT", "split at {split}");
        }
    }

    #[test]
    fn malformed_or_oversized_chunks_are_refused() {
        let limit = 8;
        assert_eq!(
            dechunk(b"9\r\n123456789\r\n0\r\n\r\n", 3, limit).unwrap_err(),
            ChunkError::TooLarge
        );
        assert_eq!(
            dechunk(b"5\r\n1234\r\n0\r\n\r\n", 3, limit).unwrap_err(),
            ChunkError::Malformed
        );
        assert_eq!(
            dechunk(b"x\r\n", 1, limit).unwrap_err(),
            ChunkError::Malformed
        );
        assert_eq!(
            dechunk(b"5\n12345\r\n", 1, limit).unwrap_err(),
            ChunkError::Malformed
        );
        assert_eq!(
            dechunk(b"2 garbage\r\nab\r\n0\r\n\r\n", 1, limit).unwrap_err(),
            ChunkError::Malformed
        );
        let (body, _) = dechunk(b"2 \t;ext\r\nab\r\n0\r\n\r\n", 1, limit).unwrap();
        assert_eq!(body, b"ab", "whitespace before an extension is allowed");
        assert_eq!(
            dechunk(b"ffffffffffffffffff\r\n", 1, limit).unwrap_err(),
            ChunkError::TooLarge
        );
    }

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(1_709_251_199), b"Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(&http_date(4_102_444_800), b"Fri, 01 Jan 2100 00:00:00 GMT");
    }

    #[test]
    fn responses_carry_length_date_and_the_api_headers() {
        let date = http_date(784_111_777);
        let mut response = api::Response::error(405, "method_not_allowed", "no");
        response.allow = Some("GET, HEAD");
        let mut out = Vec::new();
        write_response(&mut out, &response, false, Connection::Close, &date);
        let text = String::from_utf8(out).unwrap();
        let body = String::from_utf8(response.body.clone()).unwrap();
        assert_eq!(
            text,
            format!("HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\nallow: GET, HEAD\r\nconnection: close\r\ncontent-length: {}\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n{body}", body.len())
        );
        let mut out = Vec::new();
        write_response(&mut out, &response, true, Connection::Default, &date);
        assert!(out.ends_with(b"GMT\r\n\r\n"), "HEAD has no body");
    }
}
