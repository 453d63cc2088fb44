//! A minimal HTTP/1.1 keep-alive client for loopback servers, one request in flight per
//! connection.
//!
//! The benchmark shares two cores with the server it measures, so every microsecond the client
//! spends is taken from the server. A general-purpose client (pools, redirects, a connection
//! task per socket) costs several times what this one does: it writes a request and reads one
//! `Content-Length` answer on the task that asked. It refuses anything but a loopback address.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head and body accepted; the gateway's answers are well under both.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long one request may take before the client gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no usable answer.
#[derive(Debug)]
pub enum ClientError {
    Io(std::io::Error),
    Timeout,
    Closed,
    Malformed(&'static str),
}

impl std::error::Error for ClientError {}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
            ClientError::Timeout => write!(f, "no answer within {REQUEST_TIMEOUT:?}"),
            ClientError::Closed => write!(f, "the server closed the connection"),
            ClientError::Malformed(why) => write!(f, "malformed HTTP answer: {why}"),
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// The head of an HTTP answer, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes up to and including the blank line.
    pub len: usize,
    pub status: u16,
    pub content_length: usize,
    /// The server will close the connection after this answer.
    pub close: bool,
}

/// Parses an answer's head from the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(ClientError::Malformed("head too long"));
        }
        return Ok(None);
    };
    let text =
        std::str::from_utf8(&buf[..end]).map_err(|_| ClientError::Malformed("head not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ClientError::Malformed("not HTTP/1.x"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(ClientError::Malformed("no status code"))?;
    let mut content_length = None;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ClientError::Malformed("header without a colon"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| ClientError::Malformed("bad content-length"))?;
            if n > MAX_BODY_BYTES {
                return Err(ClientError::Malformed("body too large"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The servers measured here always send a length; a chunked answer would need a
            // decoder this client does not carry.
            return Err(ClientError::Malformed("transfer-encoding is not supported"));
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(Head {
        len: end + 4,
        status,
        content_length: content_length.unwrap_or(0),
        close,
    }))
}

/// The request bytes of a POST (form body) or a GET (empty body).
pub fn encode_request(out: &mut Vec<u8>, method: &str, path: &str, body: &[u8]) {
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    if method == "POST" {
        out.extend_from_slice(b"content-type: application/x-www-form-urlencoded\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<not UTF-8>")
    }

    /// True when the body holds `needle` (the checks look for fixed JSON fragments, which is
    /// much cheaper for the client than parsing every answer).
    pub fn contains(&self, needle: &str) -> bool {
        let n = needle.as_bytes();
        self.body.windows(n.len()).any(|w| w == n)
    }
}

/// One keep-alive connection.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    read: Vec<u8>,
    write: Vec<u8>,
}

impl Conn {
    /// A connection to `addr`, opened lazily on the first request.
    pub fn new(addr: SocketAddr) -> anyhow::Result<Conn> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the benchmark only loads loopback addresses, not {addr}"
        );
        Ok(Conn {
            addr,
            stream: None,
            read: Vec::with_capacity(4096),
            write: Vec::with_capacity(1024),
        })
    }

    pub async fn post(&mut self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        self.request("POST", path, body).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, ClientError> {
        self.request("GET", path, b"").await
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Answer, ClientError> {
        encode_request(&mut self.write, method, path, body);
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange()).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout),
        };
        if result.is_err() {
            // Whatever state the socket is in, it is not fit for the next request.
            self.stream = None;
            self.read.clear();
        }
        result
    }

    async fn exchange(&mut self) -> Result<Answer, ClientError> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.read.clear();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(ClientError::Closed);
        };
        stream.write_all(&self.write).await?;
        let head = loop {
            if let Some(h) = parse_head(&self.read)? {
                break h;
            }
            if stream.read_buf(&mut self.read).await? == 0 {
                return Err(ClientError::Closed);
            }
        };
        let total = head.len + head.content_length;
        while self.read.len() < total {
            self.read.reserve(total - self.read.len());
            if stream.read_buf(&mut self.read).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
        let body = self.read[head.len..total].to_vec();
        self.read.drain(..total);
        if head.close {
            self.stream = None;
        }
        Ok(Answer {
            status: head.status,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_head_is_parsed() {
        let buf = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 12\r\n\
                    date: x\r\n\r\n{\"a\":\"b\"}xyz";
        let head = parse_head(buf).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                len: buf.len() - 12,
                status: 200,
                content_length: 12,
                close: false
            }
        );
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        assert_eq!(parse_head(b"").unwrap(), None);
    }

    #[test]
    fn close_chunked_and_garbage() {
        let h = parse_head(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.content_length, h.close), (503, 0, true));
        assert!(
            parse_head(b"HTTP/1.0 200 OK\r\n\r\n")
                .unwrap()
                .unwrap()
                .close
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD_BYTES + 1]).is_err());
    }

    #[test]
    fn requests_carry_length_and_form_type() {
        let mut out = Vec::new();
        encode_request(&mut out, "POST", "/app-data-search/v3/refund", b"a=1&b=2");
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "POST /app-data-search/v3/refund HTTP/1.1\r\nhost: 127.0.0.1\r\n\
             content-type: application/x-www-form-urlencoded\r\ncontent-length: 7\r\n\r\na=1&b=2"
        );
        encode_request(&mut out, "GET", "/metrics", b"");
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("content-length: 0\r\n\r\n"));
    }

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(Conn::new("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(Conn::new("[::1]:8080".parse().unwrap()).is_ok());
        assert!(Conn::new("10.0.0.1:8080".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn a_keep_alive_exchange_with_a_scripted_server() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for answer in ["first", "second"] {
                let mut got = Vec::new();
                // Read one request: head plus the 3-byte body.
                while !got.ends_with(b"\r\n\r\nx=1") {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&buf[..n]);
                }
                // Answer in two writes to exercise partial reads.
                let text = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                );
                s.write_all(text.as_bytes()).await.unwrap();
                s.flush().await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let mut conn = Conn::new(addr).unwrap();
        let a = conn.post("/p", b"x=1").await.unwrap();
        assert_eq!((a.status, a.body_text()), (200, "first"));
        let b = conn.post("/p", b"x=1").await.unwrap();
        assert_eq!(b.body_text(), "second");
        assert!(b.contains("cond"));
        server.await.unwrap();
    }
}
